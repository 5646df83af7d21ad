"""Many workers: the distance rules at n = 1,000 (small d) equal NumPy float64 references, with ties,
and their programs hold no cubic intermediate (issue "Many workers": cost O(n^2 d + n^2 log n)).

Inputs are small integers, so every squared distance is an exact float64 integer (the Gram form
included) and equal distances are frequent: the tie rule (lower index first) is exercised at scale.
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from references import np_nnm, np_trmean

from byzjax import _kernels
from byzjax.aggregators import Krum, Median, MultiKrum, TrMean
from byzjax.preaggregators import NNM, Pipeline, nnm_mixing_matrix

N, D, F = 1000, 8, 50


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(13).integers(0, 3, size=(N, D)).astype(np.float64)


def np_sq_dists(x):
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def counting_rank_mask(d, k):
    """The definition: ``rank[i, j] = #{l : d[i,l] < d[i,j]} + #{l < j : d[i,l] = d[i,j]}``, kept iff < k."""
    a, b = d[:, :, None], d[:, None, :]
    earlier = np.arange(d.shape[1])[None, :] < np.arange(d.shape[1])[:, None]
    return ((b < a) | ((b == a) & earlier)).sum(-1) < k


def test_k_smallest_mask_is_the_counting_rank_with_traced_k():
    rng = np.random.default_rng(0)
    mask = jax.jit(_kernels.k_smallest_mask)  # k traced: one program per shape
    for _ in range(200):
        d = rng.integers(0, 4, size=(5, 9)).astype(np.float64)
        d[rng.random(d.shape) < 0.2] = np.inf
        d *= np.where(rng.random(d.shape) < 0.3, -1.0, 1.0)  # -0.0 ties with 0.0
        k = int(rng.integers(0, 11))
        np.testing.assert_array_equal(np.asarray(mask(jnp.asarray(d), k)), counting_rank_mask(d, k))


def test_nnm_mixing_matrix_at_n_1000_rows_sum_to_one_and_pick_the_stable_nearest(x):
    d2 = np_sq_dists(x)
    mix = np.asarray(jax.jit(nnm_mixing_matrix)(jnp.asarray(d2), F))
    np.testing.assert_allclose(mix.sum(axis=1), np.ones(N), rtol=0, atol=1e-12)
    rows = np.random.default_rng(1).choice(N, 40, replace=False)  # a subset: the reference sorts per row
    for i in rows:
        chosen = np.zeros(N, bool)
        chosen[np.argsort(d2[i], kind="stable")[: N - F]] = True
        np.testing.assert_array_equal(mix[i] > 0, chosen)


def test_nnm_then_trmean_at_n_1000(x):
    got = np.asarray(Pipeline([NNM(F)], TrMean(F))(x))
    np.testing.assert_allclose(got, np_trmean(np_nnm(x, F), F), rtol=0, atol=1e-12)


def test_nnm_rows_at_n_1000(x):
    got = np.asarray(NNM(F)(x))
    rows = np.random.default_rng(2).choice(N, 40, replace=False)
    d2 = ((x[rows][:, None, :] - x[None, :, :]) ** 2).sum(-1)
    want = np.stack([x[np.argsort(r, kind="stable")[: N - F]].mean(axis=0) for r in d2])
    np.testing.assert_allclose(got[rows], want, rtol=0, atol=1e-12)


def test_krum_and_median_at_n_1000(x):
    scores = np.sort(np_sq_dists(x), axis=1)[:, : N - F].sum(axis=1)  # itself included at distance 0
    np.testing.assert_array_equal(np.asarray(Krum(F)(x)), x[np.argmin(scores)])
    np.testing.assert_allclose(np.asarray(Median()(x)), np.median(x, axis=0), rtol=0, atol=0)


def _largest_intermediate(fn, *args):
    """The largest array (elements) any equation of ``fn``'s jaxpr produces, sub-jaxprs included."""
    def walk(jaxpr):
        sizes = [0]
        for eqn in jaxpr.eqns:
            sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                sizes.append(walk(sub))
        return max(sizes)
    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("name", ["NNM->TrMean", "Krum", "MultiKrum"])
def test_no_cubic_intermediate_at_n_1000(name):
    rule = {"NNM->TrMean": Pipeline([NNM(F)], TrMean(F)), "Krum": Krum(F), "MultiKrum": MultiKrum(F)}[name]
    v = jax.ShapeDtypeStruct((N, D), jnp.float64)
    largest = _largest_intermediate(lambda v: rule.aggregate(v, rule.init(D, v.dtype), jax.random.key(0))[0], v)
    assert largest <= 2 * N * N, f"{name}: an intermediate of {largest} elements at n = {N}"


@pytest.mark.parametrize("n", [5, 21, _kernels.COUNTING_RANKS_UP_TO + 7])
def test_both_rank_paths_follow_the_stable_sort_with_nan_last(n):
    """Short rows are ranked by counting, long ones by argsort: both equal a stable sort in which
    NaN comes after +inf, over many seeded rows with ties, +inf and NaN, for a traced k."""
    rng = np.random.default_rng(n)
    masks = jax.jit(_kernels.k_smallest_mask)
    for _ in range(40):
        d = rng.integers(0, 4, size=(3, n)).astype(float)
        d[rng.random((3, n)) < 0.1] = np.inf
        d[rng.random((3, n)) < 0.1] = np.nan
        k = int(rng.integers(0, n + 1))
        group = np.where(np.isnan(d), 2, np.where(np.isinf(d), 1, 0))
        ref = np.zeros(d.shape, bool)
        for i in range(3):
            order = sorted(range(n), key=lambda j: (group[i, j], 0.0 if group[i, j] else d[i, j], j))
            ref[i, order[:k]] = True
        np.testing.assert_array_equal(np.asarray(masks(jnp.asarray(d), k)), ref)
