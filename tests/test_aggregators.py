"""Aggregators and pre-aggregators against NumPy float64 references (our own
transcriptions of the formulas and of ByzFL's / Blades' semantics), invariances,
empirical (f, kappa) bounds, eager == vmap-row, state across rounds, bad inputs.

Every rule runs on ``[N, D] = [11, 20]`` inputs, so the eager call (compiled
``apply``), the references, the invariances and ``empirical_kappa`` share one
compiled program per rule structure.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, fields
from typing import Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import _kernels
from byzjax import aggregators as A
from byzjax import preaggregators as P
from byzjax._validation import _NEEDS, ConfigError
from byzjax.registry import registry
from byzjax.robustness import empirical_kappa, kappa_ratios
from references import np_adaptive_clipping, np_nnm, np_trmean

N, D, F = 11, 20, 2  # F: Byzantine count of the kappa tests
FMAX, FBULYAN = (N - 1) // 2, (N - 3) // 4  # largest f allowed (2f < n; n >= 4f + 3)
KEY = jax.random.key(7)
rng = np.random.default_rng(0)
# N - F points around +1 and F spread-out points around -2: no ties, some structure.
GAUSS = np.concatenate([1.0 + rng.normal(size=(N - F, D)), -2.0 + 3.0 * rng.normal(size=(F, D))])
# Small integers with duplicated rows: coordinate ties, equal distances (exact in float64).
TIES = rng.integers(-3, 4, size=(N, D)).astype(float)
TIES[[3, 9]] = TIES[0]
TIES[7] = TIES[5]
HONEST = 1.0 + rng.normal(size=(N - F, D))


# ----------------------------------------------------------------------------- references


def sq_dists(x):
    return np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)


# The random draws of the rules, reproduced from their keys (jitted: one compile each).
normal_draw = jax.jit(lambda key, t: jax.random.normal(jax.random.fold_in(key, t), (D,), jnp.float64))
coordinate_draws = jax.jit(
    lambda key, n_iters, b: jax.vmap(lambda k: jax.lax.top_k(jax.random.uniform(k, (D,)), b)[1])(
        jax.random.split(key, n_iters)),
    static_argnums=(1, 2),
)
permutation_draw = jax.jit(lambda key: jax.random.permutation(key, N))


def unit(v):
    v = np.asarray(v)
    return v / np.linalg.norm(v)


def clip_rows(x, threshold):
    norms = np.linalg.norm(x, axis=1)
    with np.errstate(divide="ignore"):
        return x * np.minimum(1.0, threshold / norms)[:, None]


def ref_gm(x, nu):
    y, z = x[np.isfinite(x).all(axis=1)], np.zeros(x.shape[1])
    for _ in range(3):
        beta = 1.0 / np.maximum(np.linalg.norm(y - z, axis=1), nu)
        z = beta @ y / beta.sum()
    return z


def ref_weiszfeld(x, nu, tol=1e-6, max_iter=100):
    """From the coordinate-wise median; stop when the step is <= tol * max(nu, median distance)."""
    y = x[np.isfinite(x).all(axis=1)]
    z = np.median(y, axis=0)
    for _ in range(max_iter):
        dist = np.linalg.norm(y - z, axis=1)
        beta = 1.0 / np.maximum(dist, nu)
        z_next = beta @ y / beta.sum()
        done = np.linalg.norm(z_next - z) <= tol * max(np.median(dist), nu)
        z = z_next
        if done:
            break
    return z


def krum_scores(x, f):  # ByzFL: mean squared distance to the n - f - 1 nearest others
    return np.sort(sq_dists(x), axis=1)[:, 1 : len(x) - f].mean(axis=1)


def ref_krum(x, f):
    return x[np.argmin(krum_scores(x, f))]


def ref_multikrum(x, f):
    return x[np.argsort(krum_scores(x, f), kind="stable")[: len(x) - f]].mean(axis=0)


def ref_cc(x, tau, L=3, v=None):
    v = np.zeros(x.shape[1]) if v is None else v
    for _ in range(L):
        v = v + clip_rows(x - v, tau).mean(axis=0)
    return v


def ref_mda(x, f):
    n, dist = len(x), np.sqrt(sq_dists(x))
    best, best_diameter = None, np.inf
    for subset in itertools.combinations(range(n), n - f):
        diameter = max((dist[i, j] for i, j in itertools.combinations(subset, 2)), default=0.0)
        if diameter < best_diameter:
            best, best_diameter = subset, diameter
    return x[list(best)].mean(axis=0)


def ref_monna(x, f, idx=0):
    return x[np.argsort(np.linalg.norm(x - x[idx], axis=1), kind="stable")[: len(x) - f]].mean(axis=0)


def ref_meamed(x, f):
    med, out = np.median(x, axis=0), np.empty(x.shape[1])
    for k in range(x.shape[1]):  # nearest to the median first; equal distance: smaller value first
        order = np.lexsort((x[:, k], np.abs(x[:, k] - med[k])))
        out[k] = x[order[: len(x) - f], k].mean()
    return out


def ref_meamed_byzfl(x, f):
    """ByzFL-torch: the lower middle value as the median; equal distances in row order."""
    n = len(x)
    med, out = np.sort(x, axis=0)[(n - 1) // 2], np.empty(x.shape[1])
    for k in range(x.shape[1]):
        order = np.argsort(np.abs(x[:, k] - med[k]), kind="stable")
        out[k] = x[order[: n - f], k].mean()
    return out


def ref_caf_exact(x, f):
    """CAF with the exact top eigenpair of the weighted covariance (d x d ``eigh``)."""
    n = len(x)
    c, best, best_mu = np.ones(n), np.inf, x.mean(axis=0)
    while c.sum() > n - 2 * f:
        mu = c @ x / c.sum()
        diffs = x - mu
        values, vectors = np.linalg.eigh((c[:, None] * diffs).T @ diffs / c.sum())
        if max(values[-1], 0.0) < best:
            best, best_mu = max(values[-1], 0.0), mu
        tau = (diffs @ vectors[:, -1]) ** 2
        tau_max = tau[c > 0].max()
        if tau_max <= 0:
            break
        c = np.where(tau >= tau_max, 0.0, c * (1.0 - tau / tau_max))
    return best_mu


def ref_caf(x, f, key):
    n, d = x.shape
    c, best, best_mu, t = np.ones(n), np.inf, x.mean(axis=0), 0
    while c.sum() > n - 2 * f:
        mu = c @ x / c.sum()
        diffs = x - mu
        w = (c * (diffs @ unit(normal_draw(key, t)))) @ diffs / c.sum()
        t += 1
        lam = np.linalg.norm(w)
        if lam < best:
            best, best_mu = lam, mu
        tau = (diffs @ (w / lam)) ** 2 if lam > 0 else np.zeros(n)
        tau_max = tau[c > 0].max()  # byzjax: max over rows still weighted (ByzFL: all rows)
        if tau_max <= 0:
            break
        c = c * (1.0 - tau / tau_max)
    return best_mu


def ref_smea(x, f, key, power_iters=1):
    n, d = x.shape
    v0, best, best_value = unit(jax.random.normal(key, (d,), jnp.float64)), None, np.inf
    for subset in itertools.combinations(range(n), n - f):
        diffs = x[list(subset)] - x[list(subset)].mean(axis=0)
        v = v0
        for _ in range(power_iters):  # ByzFL: weighted_sum = sum_i diffs_i <diffs_i, v>
            w = diffs.T @ (diffs @ v)
            lam, v = np.linalg.norm(w), w / np.linalg.norm(w)
        if lam < best_value:
            best, best_value = subset, lam
    return x[list(best)].mean(axis=0)


def ref_bulyan(x, f):
    d2, left, chosen = sq_dists(x), list(range(len(x))), []
    for _ in range(len(x) - 2 * f):
        scores = np.sort(d2[np.ix_(left, left)], axis=1)[:, : len(left) - f].sum(axis=1)
        chosen.append(left.pop(int(np.argmin(scores))))
    return ref_meamed(x[sorted(chosen)], 2 * f)


def ref_dnc(x, f, key, sub_dim=8, num_iters=3):
    n, d = x.shape
    benign = np.ones(n, bool)
    for cols in np.asarray(coordinate_draws(key, num_iters, sub_dim)):
        centred = x[:, cols] - x[:, cols].mean(axis=0)
        v = np.linalg.svd(centred, full_matrices=False)[2][0]
        good = np.zeros(n, bool)
        good[np.argsort((centred @ v) ** 2, kind="stable")[: n - f]] = True
        benign &= good
    return x[benign].mean(axis=0) if benign.any() else np.zeros(d)


def ref_two_means(points, iters=10):
    i, j = np.unravel_index(np.argmax(sq_dists(points)), (len(points),) * 2)
    centres = points[[i, j]].copy()
    second = lambda: np.sum((points - centres[1]) ** 2, 1) < np.sum((points - centres[0]) ** 2, 1)
    for _ in range(iters):
        s = second()
        for c, members in enumerate([~s, s]):
            if members.any():
                centres[c] = points[members].mean(axis=0)
    return second()


def ref_signguard(x, lower=0.1, upper=3.0):
    n, m = len(x), np.median(np.linalg.norm(x, axis=1))
    x = clip_rows(x, m)
    norms = np.linalg.norm(x, axis=1)
    in_range = (norms >= lower * m) & (norms <= upper * m * (1 + 1e-12))
    second = ref_two_means(np.stack([(x > 0).mean(1), (x < 0).mean(1), (x == 0).mean(1)], axis=1))
    chosen = in_range & (second == (second.sum() > n // 2))
    return x[chosen].mean(axis=0)


def ref_clusters(dist):
    """Naive average-linkage clustering into two clusters (linkage recomputed from scratch)."""
    clusters = [[i] for i in range(len(dist))]
    while len(clusters) > 2:
        _, p, q = min(
            (np.mean([dist[i, j] for i in clusters[p] for j in clusters[q]]), p, q)
            for p, q in itertools.combinations(range(len(clusters)), 2)
        )
        clusters[p] += clusters.pop(q)
    return clusters


def ref_clipped_clustering(x, past_norms=(), max_tau=1e5):
    n = len(x)
    history = np.concatenate([past_norms, np.linalg.norm(x, axis=1)])
    x = clip_rows(x, min(np.median(history), max_tau))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    first, second = ref_clusters(1.0 - unit @ unit.T)
    chosen = second if len(second) > n // 2 else first
    return x[sorted(chosen)].mean(axis=0), history


def ref_huber(x, delta=2.0, T=10):
    z = np.median(x, axis=0)
    for _ in range(T):
        r = np.linalg.norm(x - z, axis=1)
        thr = delta * np.median(r)
        w = np.array([1.0 if ri <= thr else thr / ri for ri in r])
        z = w @ x / w.sum()
    return z


def ref_fltrust(x, trusted=0):
    g0 = x[trusted]
    trust = np.array([max(0.0, xi @ g0 / (np.linalg.norm(xi) * np.linalg.norm(g0))) for xi in x])
    scaled = np.stack([xi * np.linalg.norm(g0) / np.linalg.norm(xi) for xi in x])
    return trust @ scaled / trust.sum()


def ref_bucketing(x, s, key):
    x = x[np.asarray(permutation_draw(key))]
    return np.stack([x[i : i + s].mean(axis=0) for i in range(0, len(x), s)])


def ref_arc(x, f):  # ByzFL's transcription: clip the k largest to the (n - k)-th smallest norm
    n, x = len(x), x.copy()
    magnitudes = sorted((np.linalg.norm(v), i) for i, v in enumerate(x))
    k = int((2 * f / n) * (n - f))
    threshold = magnitudes[n - k - 1][0]
    for norm, i in magnitudes[n - k :]:
        if norm > threshold:
            x[i] *= threshold / norm
    return x


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    make: Callable  # variant -> rule
    ref: Callable  # (x, variant, key) -> [d]
    variants: tuple  # f (or a swept real parameter), smallest to largest allowed
    datasets: tuple = ("gauss", "ties")
    permutation: bool = True
    translation: bool = True


CASES = {
    "Average": Case(lambda v: A.Average(), lambda x, v, k: x.mean(0), (0,)),
    "Median": Case(lambda v: A.Median(), lambda x, v, k: np.median(x, 0), (0,)),
    "TrMean": Case(A.TrMean, lambda x, f, k: np_trmean(x, f), (0, F, FMAX)),
    "GeometricMedian": Case(lambda nu: A.GeometricMedian(nu), lambda x, nu, k: ref_gm(x, nu), (0.1, 1.0), translation=False),
    "SmoothedWeiszfeld": Case(lambda nu: A.SmoothedWeiszfeld(nu), lambda x, nu, k: ref_weiszfeld(x, nu), (0.1, 1.0)),
    "Krum": Case(A.Krum, lambda x, f, k: ref_krum(x, f), (0, F, FMAX)),
    "MultiKrum": Case(A.MultiKrum, lambda x, f, k: ref_multikrum(x, f), (0, F, FMAX)),
    "CenteredClipping": Case(
        lambda tau: A.CenteredClipping(L=3, tau=tau), lambda x, tau, k: ref_cc(x, tau), (1.0, 10.0, 100.0), translation=False
    ),
    # MDA ties are inherent (subsets sharing their farthest pair have equal diameters):
    # the first in itertools order wins, so relabelling workers can change the choice.
    "MDA": Case(A.MDA, lambda x, f, k: ref_mda(x, f), (0, F, FMAX), permutation=False),
    "MoNNA": Case(A.MoNNA, lambda x, f, k: ref_monna(x, f), (0, F, FMAX), permutation=False),
    "MoNNA_idx4": Case(lambda f: A.MoNNA(f, idx=4), lambda x, f, k: ref_monna(x, f, 4), (F,), permutation=False),
    "Meamed": Case(A.Meamed, lambda x, f, k: ref_meamed(x, f), (0, F, FMAX)),
    "Meamed_byzfl": Case(lambda f: A.Meamed(f, ties="byzfl"), lambda x, f, k: ref_meamed_byzfl(x, f), (0, F, FMAX)),
    "CAF": Case(A.CAF, lambda x, f, k: ref_caf_exact(x, f), (0, F, FMAX)),
    "CAF_power_step": Case(lambda f: A.CAF(f, power_step=True), ref_caf, (0, F, FMAX), datasets=("gauss",)),
    "SMEA": Case(A.SMEA, ref_smea, (0, F, FMAX), datasets=("gauss",)),
    "Bulyan": Case(A.Bulyan, lambda x, f, k: ref_bulyan(x, f), (0, 1, FBULYAN)),
    "DnC": Case(lambda f: A.DnC(f, sub_dim=8, num_iters=3), ref_dnc, (0, F, FMAX), datasets=("gauss",)),
    "SignGuard": Case(lambda lo: A.SignGuard(lower=lo), lambda x, lo, k: ref_signguard(x, lo), (0.1, 0.5), datasets=("gauss",), translation=False),
    "ClippedClustering": Case(  # a short history: the round test below wraps it
        lambda tau: A.ClippedClustering(max_tau=tau, history=25),
        lambda x, tau, k: ref_clipped_clustering(x, max_tau=tau)[0],
        (1e5, 3.0), datasets=("gauss",), translation=False,
    ),
    "HuberMean": Case(lambda dl: A.HuberMean(dl), lambda x, dl, k: ref_huber(x, dl), (0.5, 2.0)),
    "AdaptiveClipping": Case(A.AdaptiveClipping, lambda x, f, k: np_adaptive_clipping(x, f), (0, 1, F, FMAX),
                             translation=False),
    "AdaptiveClipping_fixed": Case(lambda f: A.AdaptiveClipping(f, variant="fixed"),
                                   lambda x, f, k: np_adaptive_clipping(x, f, "fixed"), (0, F, FMAX), translation=False),
    "FLTrust": Case(lambda v: A.FLTrust(), lambda x, v, k: ref_fltrust(x), (0,), permutation=False, translation=False),
    "NNM+TrMean": Case(
        lambda f: P.Pipeline((P.NNM(f),), A.TrMean(f)), lambda x, f, k: np_trmean(np_nnm(x, f), f), (0, F, FMAX)
    ),
    "ARC+Krum": Case(
        lambda f: P.Pipeline((P.ARC(f),), A.Krum(f)), lambda x, f, k: ref_krum(ref_arc(x, f), f), (0, F, FMAX),
        translation=False,
    ),
    "Bucketing+Clipping+Median": Case(
        lambda c: P.Pipeline((P.Bucketing(4), P.Clipping(c)), A.Median()),
        lambda x, c, k: np.median(clip_rows(ref_bucketing(x, 4, jax.random.split(k, 3)[0]), c), axis=0),
        (1.0, 5.0), permutation=False, translation=False,
    ),
}
DATA = {"gauss": GAUSS, "ties": TIES}
ALL = sorted(CASES)


@pytest.fixture(params=sorted(registry("aggregator")) + sorted(registry("preaggregator")))
def registered(request):
    return request.param


def test_every_registered_rule_has_a_reference_case(registered):
    """A new aggregator needs a case named after it in CASES; a new pre-aggregator a pipeline case holding it."""
    assert any(registered in name.split("+") or name.split("_")[0] == registered for name in CASES), (
        f"no NumPy-reference case for {registered} in tests/test_aggregators.py CASES")


@pytest.mark.parametrize("name", ALL)
def test_matches_numpy_reference(name):
    """Eager NumPy-in/NumPy-out call == float64 reference, for f = 0 .. largest allowed."""
    case = CASES[name]
    for data in case.datasets:
        for v in case.variants:
            out = case.make(v)(DATA[data], KEY)
            assert isinstance(out, np.ndarray) and out.shape == (D,)
            np.testing.assert_allclose(out, case.ref(DATA[data], v, KEY), rtol=1e-9, atol=1e-9, err_msg=f"{data}, {v}")


@pytest.mark.parametrize("n", [1, 5, 17])
def test_sort_workers(n):
    x = np.random.default_rng(n).integers(-2, 3, size=(n, 6)).astype(float)  # many ties
    x[0, 0] = np.inf
    np.testing.assert_array_equal(jax.jit(_kernels.sort_rows)(x), np.sort(x, axis=0))


def test_coordinatewise_blocks_with_a_remainder_under_vmap():
    """Column blocks plus a remainder, and the item-by-item batching rule with a batched parameter."""
    xs = np.random.default_rng(3).normal(size=(2, 5, 2 * A.COLUMN_BLOCK + 37))
    fn = lambda cols, i: jnp.sum(jnp.where(jnp.arange(5)[:, None] >= i, _kernels.sort_rows(cols), 0.0), axis=0)
    out = jax.jit(jax.vmap(lambda x, i: A.coordinatewise(fn, x, i)))(xs, jnp.array([0, 3]))
    np.testing.assert_allclose(out[0], xs[0].sum(axis=0), atol=1e-12)
    np.testing.assert_allclose(out[1], np.sort(xs[1], axis=0)[3:].sum(axis=0), atol=1e-12)


def test_byzfl_documented_examples():
    """The outputs printed in ByzFL's docstrings for x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]."""
    x = np.arange(1.0, 10.0).reshape(3, 3)
    np.testing.assert_allclose(A.GeometricMedian()(x), [3.78788764, 4.78788764, 5.78788764], atol=1e-8)
    np.testing.assert_allclose(A.Meamed(1)(x), [2.5, 3.5, 4.5])  # a tie: ByzFL keeps the lower value
    np.testing.assert_allclose(A.Meamed(1, ties="byzfl")(x), [2.5, 3.5, 4.5])
    x4 = np.array([[0.0], [2.0], [3.0], [4.0]])  # even n: NumPy's median 2.5, ByzFL's lower middle value 2
    np.testing.assert_allclose(A.Meamed(1)(x4), [3.0])  # keeps 2, 3, 4
    np.testing.assert_allclose(A.Meamed(1, ties="byzfl")(x4), [5.0 / 3.0])  # 2, 3, then 0 (tie 0 | 4: lower row)
    np.testing.assert_allclose(P.ARC(1)(x)[2], [4.41004009, 5.04004582, 5.67005155], atol=1e-8)


def test_geometric_median_drops_inf_rows():
    x = GAUSS.copy()
    x[2, 5] = np.inf
    np.testing.assert_allclose(A.GeometricMedian()(x), ref_gm(x, 0.1), atol=1e-12)
    np.testing.assert_allclose(A.SmoothedWeiszfeld()(x), ref_weiszfeld(x, 0.1), atol=1e-12)


def test_smea_with_many_power_steps_is_exact_smea():
    best = min(
        itertools.combinations(range(N), N - F),
        key=lambda s: np.linalg.eigvalsh(np.cov(GAUSS[list(s)].T, bias=True))[-1],
    )
    np.testing.assert_allclose(A.SMEA(F, power_iters=300)(GAUSS), GAUSS[list(best)].mean(0), atol=1e-12)


@pytest.mark.parametrize("name", [n for n in ALL if CASES[n].permutation])
def test_permutation_invariance(name):
    rule = CASES[name].make(CASES[name].variants[-1])
    perm = np.random.default_rng(1).permutation(N)
    np.testing.assert_allclose(rule(GAUSS[perm], KEY), rule(GAUSS, KEY), atol=1e-9)


@pytest.mark.parametrize("name", [n for n in ALL if CASES[n].translation])
def test_translation_equivariance(name):
    rule = CASES[name].make(CASES[name].variants[-1])
    shift = 3.0 * np.random.default_rng(2).normal(size=D)
    tol = 1e-5 if name == "SmoothedWeiszfeld" else 1e-9  # equivariant up to its tolerance
    np.testing.assert_allclose(rule(GAUSS + shift, KEY), rule(GAUSS, KEY) + shift, atol=tol)


@pytest.mark.parametrize("name", ALL)
def test_identical_rows_give_that_row(name):
    """n copies of one row give that row (clipped, for the rules that clip to a fixed norm)."""
    row = GAUSS[0]  # norm ~6: clipped by Clipping(5) and ClippedClustering(max_tau=3)
    clip = {"Bucketing+Clipping+Median": 5.0, "ClippedClustering": 3.0}.get(name, np.inf)
    out = CASES[name].make(CASES[name].variants[-1])(np.tile(row, (N, 1)), KEY)
    np.testing.assert_allclose(out, clip_rows(row[None], clip)[0], atol=1e-9)


@pytest.mark.parametrize("name", ["TrMean", "CAF", "Bulyan", "NNM+TrMean", "CenteredClipping"])
def test_vmap_over_modules_matches_eager(name):
    """A stacked batch of modules (different f; tau for CenteredClipping) in one jit(vmap)
    == each eager call, which is the compiled ``apply`` of one module. One rule per
    mechanism: sorting, while_loop, traced loop bound, pipeline with rank masks, state."""
    case = CASES[name]
    rules = [case.make(v) for v in case.variants]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *rules)
    x = jnp.asarray(GAUSS)
    batched = jax.jit(jax.vmap(lambda r: r.aggregate(x, r.init(D, x.dtype), KEY)[0]))(stacked)
    for row, rule in zip(np.asarray(batched), rules):
        np.testing.assert_allclose(row, rule(GAUSS, KEY), atol=1e-9)


def test_batched_arrays_are_accepted_where_lists_are_not():
    """A batch axis (stacked components, sweeps) is an array: accepted; a Python list is refused above."""
    rule = A.TrMean(f=jnp.array([0, 2]))
    out = jax.vmap(lambda f: A.TrMean(f).aggregate(jnp.asarray(GAUSS), None, KEY)[0])(rule.f)
    np.testing.assert_allclose(out[1], np_trmean(GAUSS, 2), atol=1e-12)


def test_vmap_over_inputs_static_f():
    rule = A.MDA(F)  # (SMEA enumerates the same way)
    xs = jnp.stack([jnp.asarray(GAUSS), jnp.asarray(GAUSS[::-1]) * 2.0])
    batched = jax.jit(jax.vmap(lambda x: rule.aggregate(x, None, KEY)[0]))(xs)
    for row, x in zip(np.asarray(batched), np.asarray(xs)):
        np.testing.assert_allclose(row, rule(x, KEY), atol=1e-9)


def test_op_by_op_matches_compiled():
    rule = A.FLTrust()
    out, _ = rule.aggregate(jnp.asarray(GAUSS), None, KEY)  # not jitted: op by op
    np.testing.assert_allclose(out, rule(GAUSS, KEY), atol=1e-12)


# ----------------------------------------------------------------------------- absent rows

ABSENT_AT = (2, 6, N + 2)  # rows of the padded input that were not received (row 0 is: MoNNA, FLTrust)
SHUFFLING = {"Bucketing+Clipping+Median"}  # permutes the present rows: tested on its own below


@jax.jit
def masked_apply(rule, vectors, state, key, valid):
    """``rule.aggregate(vectors, state, key, valid)`` compiled once per rule structure (the rule's
    arrays, e.g. ``f``, are traced arguments, as in ``aggregators.apply``)."""
    return rule.aggregate(vectors, state, key, valid)


def with_absent_rows(x):
    """``x`` with three junk rows (NaN, +Inf, huge) inserted at ``ABSENT_AT``, and the mask of present rows."""
    valid = np.ones(len(x) + len(ABSENT_AT), bool)
    valid[list(ABSENT_AT)] = False
    padded = np.empty((len(valid), x.shape[1]))
    padded[valid] = x
    padded[~valid] = np.stack([np.full(x.shape[1], np.nan), np.full(x.shape[1], np.inf), np.full(x.shape[1], 1e30)])
    return jnp.asarray(padded), jnp.asarray(valid)


def test_adaptive_clipping_at_f0_authors_index_vs_fixed():
    """f = 0: the authors' index clips every row to the smallest norm (one pass from v = 0 is
    the mean of x_i min(1, r / ||x_i||), r = min_i ||x_i||); the fixed variant is the mean."""
    norms = np.linalg.norm(GAUSS, axis=1)
    one_pass = (GAUSS * np.minimum(1.0, norms.min() / norms)[:, None]).mean(axis=0)
    np.testing.assert_allclose(A.AdaptiveClipping(0, passes=1)(GAUSS), one_pass, atol=1e-12)
    np.testing.assert_allclose(A.AdaptiveClipping(0, variant="fixed")(GAUSS), GAUSS.mean(axis=0), atol=1e-12)
    assert np.linalg.norm(A.AdaptiveClipping(0)(GAUSS) - GAUSS.mean(axis=0)) > 0.1
    with pytest.raises(ConfigError, match=r"AdaptiveClipping: variant must be one of \['authors', 'fixed'\]"):
        A.AdaptiveClipping(0, variant="mean")


def test_clipped_clustering_with_row_0_absent():
    """The masked path labels clusters from the first present row, not row 0: == the present rows alone."""
    rule = A.ClippedClustering(max_tau=3.0, history=25)
    x = np.concatenate([np.full((1, D), np.nan), GAUSS])
    valid = np.arange(N + 1) > 0
    out, _ = masked_apply(rule, jnp.asarray(x), rule.init(D, x.dtype), KEY, jnp.asarray(valid))
    np.testing.assert_allclose(out, rule(GAUSS, KEY), rtol=1e-9, atol=1e-12)
    for order in (np.r_[1:N, 0], np.r_[2:N, 0, 1]):  # the majority cluster does not depend on which row is first
        np.testing.assert_allclose(rule(GAUSS[order], KEY), rule(GAUSS, KEY), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- non-finite rows

NONFINITE_REF = {  # rule -> its answer on [[0], [1], [2], [x]] with x non-finite (a row ranked last / infinitely far)
    "TrMean": (A.TrMean(1), 1.5),  # NumPy: sort([0, 1, 2, inf])[1:3].mean()
    "Median": (A.Median(), 1.5),
    "Meamed": (A.Meamed(1), 1.0),
    "Krum": (A.Krum(1), 1.0),
    "MultiKrum": (A.MultiKrum(1), 1.0),
    "GeometricMedian": (A.GeometricMedian(), ref_gm(np.array([[0.0], [1.0], [2.0]]), 0.1)[0]),
    "CenteredClipping": (A.CenteredClipping(), 0.75),  # weight 0, the mean over all four rows
    "CAF": (A.CAF(1), 1.0),
    "NNM+TrMean": (P.Pipeline((P.NNM(1),), A.TrMean(1)), None),
}


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("name", sorted(NONFINITE_REF))
def test_a_non_finite_row_is_infinitely_far(name, bad):
    rule, expected = NONFINITE_REF[name]
    x = np.array([[0.0], [1.0], [2.0], [bad]])
    out = rule(x)
    assert np.all(np.isfinite(out)), out
    if expected is not None:
        np.testing.assert_allclose(out, [expected], atol=1e-12)


def test_pre_aggregators_pass_non_finite_rows_on():
    x = np.concatenate([GAUSS, [np.full(D, np.inf)], [np.r_[np.nan, np.ones(D - 1)]]])
    for pre in (P.NNM(2), P.Clipping(1.0), P.ARC(2)):
        out = pre(x)
        assert np.all(np.isfinite(out[:N])), type(pre).__name__
        assert not np.isnan(out[N]).any() and not np.isfinite(out[N + 1]).all()  # Inf stays Inf (not NaN)
    np.testing.assert_allclose(P.Clipping(1.0)(x)[:N], clip_rows(GAUSS, 1.0), atol=1e-12)
    np.testing.assert_array_equal(P.Clipping(1.0)(x)[N], x[N])


def test_nnm_leaves_non_finite_rows_out_of_every_neighbourhood():
    """With f non-finite rows, each finite row averages its n - f nearest finite rows."""
    x = np.concatenate([GAUSS[: N - 2], np.full((2, D), np.nan)])
    order = np.argsort(np.sqrt(sq_dists(GAUSS[: N - 2])), axis=1, kind="stable")[:, : N - 2]
    np.testing.assert_allclose(P.NNM(2)(x)[: N - 2], GAUSS[: N - 2][order].mean(axis=1), atol=1e-12)


@pytest.mark.parametrize("name", [n for n in ALL if n not in SHUFFLING])
def test_absent_rows_are_ignored(name):
    """``aggregate(rows, valid=mask)`` == ``aggregate(present rows)``, whatever the absent rows hold,
    for every f; rules that cannot (MDA, SMEA) say so with a ConfigError."""
    case = CASES[name]
    padded, valid = with_absent_rows(GAUSS)
    for v in case.variants:
        rule = case.make(v)
        state = rule.init(D, padded.dtype)
        if not rule.supports_absent:
            with pytest.raises(ConfigError, match="absent workers"):
                rule.aggregate(padded, state, KEY, valid)
            return
        masked = masked_apply(rule, padded, state, KEY, valid)  # one program for every f (a traced leaf)
        np.testing.assert_allclose(masked[0], rule(GAUSS, KEY), rtol=1e-9, atol=1e-9, err_msg=str(v))


def test_absent_rows_mask_can_be_swept():
    """One program over a batch of masks (different numbers present): each == the present rows alone."""
    rule = P.Pipeline((P.NNM(2),), A.TrMean(2))
    padded, _ = with_absent_rows(GAUSS)
    masks = np.ones((3, N + 3), bool)
    masks[0, list(ABSENT_AT)] = False  # N present
    masks[1, [2, 6]] = False  # N + 1 present (the huge row counts as a real vector)
    masks[2, [1, 2, 3, 6, N + 2]] = False
    masks[:, [2, 6]] = False  # NaN / Inf rows never present
    out = jax.jit(jax.vmap(lambda m: rule.aggregate(padded, None, KEY, m)[0]))(jnp.asarray(masks))
    for row, m in zip(np.asarray(out), masks):
        np.testing.assert_allclose(row, np_trmean(np_nnm(np.asarray(padded)[m], 2), 2), rtol=1e-9)


@pytest.mark.parametrize("rule", [A.TrMean(2), A.Median(), A.Meamed(2)], ids=["TrMean", "Median", "Meamed"])
def test_absent_rows_in_column_blocks_under_vmap(rule):
    """The CPU column-block path (d >= 2 blocks, with a remainder) and its item-by-item batching,
    with a batch of masks: each == the rule on that item's present rows."""
    x = np.random.default_rng(4).normal(size=(N, 2 * A.COLUMN_BLOCK + 37))
    masks = np.ones((2, N), bool)
    masks[0, [1, 5]] = False
    masks[1, [0, 2, 3]] = False
    xs = np.where(masks[:, :, None], x[None], np.nan)  # absent rows hold NaN
    out = jax.jit(jax.vmap(lambda v, m: rule.aggregate(v, None, KEY, m)[0]))(jnp.asarray(xs), jnp.asarray(masks))
    for row, m in zip(np.asarray(out), masks):
        np.testing.assert_allclose(row, rule(x[m], KEY), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("s", [1, 3, 4])
def test_bucketing_with_absent_rows(s):
    """The m present rows, shuffled, fill ceil(m / s) buckets (the last one partial): every present
    row is used exactly once and the buckets past ceil(m / s) are marked absent."""
    padded, valid = with_absent_rows(GAUSS)
    pre = P.Bucketing(s)
    out, present = map(np.asarray, pre.pre_aggregate(padded, KEY, valid))
    n_buckets = math.ceil(N / s)
    assert out.shape == (math.ceil((N + 3) / s), D)
    np.testing.assert_array_equal(present, np.arange(len(present)) < n_buckets)
    sizes = np.minimum(s, N - s * np.arange(n_buckets))
    np.testing.assert_allclose(sizes @ out[:n_buckets], GAUSS.sum(axis=0), rtol=1e-9)
    if s == 1:  # a permutation of the present rows
        np.testing.assert_allclose(np.sort(out[:N], axis=0), np.sort(GAUSS, axis=0))


# ----------------------------------------------------------------------------- (f, kappa)

# Bounds for n = N, f = F (r = f / (n - 2f)). Upper bounds on kappa, so the
# empirical ratio must stay below them whatever the Byzantine rows.
r = F / (N - 2 * F)
CWTM = 6 * r * (1 + r)  # "Fixing by mixing", Allouah et al., AISTATS 2023, Table 1 (CWTM)
CWMED_GM = 4 * (1 + r) ** 2  # ibid. (coordinate-wise median; geometric median)
KRUM = 6 * (1 + r)  # ibid.; MultiKrum's bound is no worse (Bareilles et al., arXiv:2602.03899)
# MDA: S* has diameter <= diam(H) <= 2R (R = max_H ||x - mean_H||, R^2 <= (n-f) sigma^2);
# the <= f Byzantine rows of S* lie within 3R of mean_H, the <= f honest rows it leaves
# out within R, so ||MDA - mean_H|| <= 4 f R / (n - f): kappa <= 16 f^2 / (n - f).
MDA_BOUND = 16 * F**2 / (N - F)
# Exact SMEA: lambda_max(S*) <= lambda_max(H) <= sigma^2; with I = S* & H, |I| >= (1 - e)|S*|,
# e = f/(n-f), the resilience lemma ||mean_I - mean_T|| <= sqrt(lambda_T e) / (1 - e) for
# T = S*, H gives kappa <= 4 f (n - f) / (n - 2f)^2.
SMEA_BOUND = 4 * F * (N - F) / (N - 2 * F) ** 2
LITERATURE = {
    "TrMean": (A.TrMean(F), CWTM),
    "Median": (A.Median(), CWMED_GM),
    "SmoothedWeiszfeld": (A.SmoothedWeiszfeld(), CWMED_GM),
    "Krum": (A.Krum(F), KRUM),
    "MultiKrum": (A.MultiKrum(F), KRUM),
    # NNM o F is (f, 8f/(n-f) (kappa_F + 1))-robust (Allouah et al., AISTATS 2023, the NNM lemma).
    "NNM+TrMean": (P.Pipeline((P.NNM(F),), A.TrMean(F)), 8 * F / (N - F) * (CWTM + 1)),
    "NNM+Krum": (P.Pipeline((P.NNM(F),), A.Krum(F)), 8 * F / (N - F) * (KRUM + 1)),
    "MDA": (A.MDA(F), MDA_BOUND),
    "SMEA_exact": (A.SMEA(F, power_iters=300), SMEA_BOUND),
}


@pytest.mark.parametrize("name", sorted(LITERATURE))
def test_empirical_kappa_under_literature_bound(name):
    rule, bound = LITERATURE[name]
    assert empirical_kappa(rule, HONEST, F, KEY) <= bound


# Rules without a published kappa on these terms: a regression check that they stay
# within the median's bound on the same data (not a theorem).
SANITY = ["GeometricMedian", "CenteredClipping", "MoNNA", "Meamed", "CAF", "SMEA", "Bulyan", "DnC", "SignGuard",
          "ClippedClustering", "HuberMean", "AdaptiveClipping", "FLTrust", "ARC+Krum", "Bucketing+Clipping+Median"]


@pytest.mark.parametrize("name", SANITY)
def test_empirical_kappa_sanity(name):
    case = CASES[name]
    rule = case.make(F if F in case.variants else case.variants[0])
    assert empirical_kappa(rule, HONEST, F, KEY) <= CWMED_GM


def test_empirical_kappa_detects_non_robust_rules():
    """The measurement can fail: the mean's ratio grows with the distance of the far rows."""
    ratios = kappa_ratios(A.Average(), HONEST, F, KEY)
    assert ratios["far_3"] < ratios["far_30"] < ratios["far_1000"] and ratios["far_1000"] > 1e4
    assert empirical_kappa(A.Average(), HONEST, 0) <= 1e-20  # f = 0: the mean is exact


# ----------------------------------------------------------------------------- state, keys


def test_centered_clipping_carries_its_centre_across_rounds():
    xs = [GAUSS + t for t in range(3)]
    for rule, v in [(A.CenteredClipping(L=2, tau=2.0), np.zeros(D)), (A.CenteredClipping(GAUSS[1], 2, 2.0), GAUSS[1])]:
        state = rule.init(D, jnp.float64)
        for x in xs:
            out, state = A.apply(rule, jnp.asarray(x), state, KEY)
            v = ref_cc(x, 2.0, L=2, v=v)
            np.testing.assert_allclose(out, v, atol=1e-12)
            np.testing.assert_allclose(state, v, atol=1e-12)


def test_clipped_clustering_norm_history_across_rounds():
    history = 25  # the ring buffer wraps in the third round (33 norms)
    rule = A.ClippedClustering(history=history)
    state, past = rule.init(D, jnp.float64), np.zeros(0)
    for t in range(3):
        x = GAUSS * (1.0 + t)
        out, state = A.apply(rule, jnp.asarray(x), state, KEY)
        expected, past = ref_clipped_clustering(x, past[max(0, len(past) - (history - N)) :])
        np.testing.assert_allclose(out, expected, atol=1e-12)


def test_bucketing_is_a_function_of_its_key():
    bucketing = P.Bucketing(4)
    assert bucketing.output_rows(N) == 3  # buckets of 4, 4 and 3
    k1, k2 = jax.random.split(KEY)
    out = bucketing(GAUSS, k1)
    np.testing.assert_array_equal(out, bucketing(GAUSS, k1))
    np.testing.assert_allclose(out, ref_bucketing(GAUSS, 4, k1), atol=1e-12)
    assert not np.allclose(out, bucketing(GAUSS, k2))


@pytest.mark.parametrize("f", [0, 1, FMAX, N - 1])
def test_nnm_and_arc_references(f):
    np.testing.assert_allclose(P.NNM(f)(TIES), np_nnm(TIES, f), atol=1e-12)
    np.testing.assert_allclose(P.ARC(f)(GAUSS), ref_arc(GAUSS, f), atol=1e-12)
    np.testing.assert_allclose(P.Clipping(2.0)(GAUSS), clip_rows(GAUSS, 2.0), atol=1e-12)


# ----------------------------------------------------------------------------- bad inputs

BAD = [
    (lambda: A.TrMean(FMAX + 1).check(N), rf"TrMean: needs 2f < n, got f={FMAX + 1} with n={N} \(allowed: 0 <= f <= {FMAX}\)"),
    (lambda: A.TrMean(-1), r"f must be >= 0"),
    (lambda: A.Krum(1.5), r"expected an integer"),
    (lambda: A.Krum(FMAX + 1)(GAUSS), r"Krum: needs 2f < n"),
    (lambda: P.NNM(N).check(N), r"NNM: needs f < n"),
    (lambda: P.ARC(N + 1).check(N), r"ARC: needs f <= n"),
    (lambda: A.Bulyan(FBULYAN + 1).check(N), rf"Bulyan: needs n >= 4f \+ 3, got f={FBULYAN + 1} with n={N} \(allowed: 0 <= f <= {FBULYAN}\)"),
    (lambda: A.MDA(FMAX + 1).check(N), r"MDA: needs 2f < n"),
    (lambda: A.MDA(10)(np.zeros((30, 2))), r"MDA: C\(n, n-f\) = C\(30, 20\) = 30045015 subsets exceeds MAX_SUBSETS"),
    (lambda: A.SMEA(6).check(30), r"SMEA: C\(n, n-f\) = C\(30, 24\) = 593775 subsets exceeds"),
    (lambda: A.MoNNA(0, idx=N).check(N), r"MoNNA: needs idx < n"),
    (lambda: A.GeometricMedian(T=0), r"GeometricMedian: T must be an integer >= 1"),
    (lambda: A.GeometricMedian(nu=0.0), r"GeometricMedian: nu must be > 0"),
    (lambda: A.SmoothedWeiszfeld(tol=-1.0), r"tol must be >= 0"),
    (lambda: A.CenteredClipping(tau=-1.0), r"tau must be >= 0"),
    (lambda: A.CenteredClipping(L=-1), r"L must be >= 0"),
    (lambda: A.CenteredClipping(np.zeros(3))(GAUSS), r"m has 3 coordinates, the vectors have d=20"),
    (lambda: P.Clipping(0.0), r"Clipping: c must be > 0"),
    (lambda: P.Bucketing(0), r"Bucketing: s must be an integer >= 1"),
    (lambda: A.DnC(FMAX, filter_frac=3.0).check(N), rf"DnC: n - floor\(filter_frac \* f\) \(n={N}\) must be >= 1"),
    (lambda: A.ClippedClustering(history=10).check(N), r"needs n <= history"),
    (lambda: A.FLTrust(trusted=N).check(N), r"FLTrust: needs trusted < n"),
    (lambda: A.SignGuard(upper=0.5), r"SignGuard: upper must be >= 1"),
    (lambda: A.Median()(np.zeros(5)), r"must be a 2-D array"),
    (lambda: A.Median()(np.zeros((0, 3))), r"vectors must have at least one row, got shape \(0, 3\)"),
    (lambda: A.Median()(np.array([["a", "b"]])), r"vectors must be a numeric array"),
    (lambda: A.TrMean(1)(np.ones((4, 2), complex)), r"vectors must be real, got a complex array"),
    (lambda: P.NNM(1)(np.zeros((0, 2))), r"vectors must have at least one row"),
    (lambda: A.TrMean(f=[1, 2]), r"expected a single number, got the list \[1, 2\]; to sweep, give a list in the config"),
    (lambda: A.CenteredClipping(tau=(1.0, 2.0)), r"expected a single number, got the tuple .*byzjax.run_grid"),
    (lambda: A.Meamed(1, ties="torch"), r"Meamed: ties must be one of \['numpy', 'byzfl'\], got ties='torch'"),
    (lambda: P.Pipeline((P.Bucketing(4),), A.TrMean(2)).check(N), r"TrMean: needs 2f < n, got f=2 with n=3"),
    (lambda: empirical_kappa(A.TrMean(F), HONEST[:F], F), rf"TrMean: needs 2f < n, got f={F} with n={2 * F}"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_inputs_raise_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_every_rule_with_an_f_declares_its_requirement(registered):
    """A registered rule with ``f`` takes it from ``AbstractFRequirement``, declares ``needs`` (a key
    of ``_NEEDS``, or None), accepts the largest ``f`` it allows on ``N`` rows and refuses the next
    one with the one-line message naming its class and its requirement."""
    cls = {**registry("aggregator"), **registry("preaggregator")}[registered]
    if "f" not in {field.name for field in fields(cls)}:
        return
    assert issubclass(cls, A.AbstractFRequirement), f"{registered} has an f of its own"
    if cls.needs is None:
        cls(f=N).check(N + 1)  # no bound tying f to n (beyond the rule's own extra_check)
        return
    largest = _NEEDS[cls.needs][1](N)
    cls(f=largest).check(N)
    message = rf"^{registered}: needs {re.escape(cls.needs)}, got f={largest + 1} with n={N} "
    with pytest.raises(ConfigError, match=message):
        cls(f=largest + 1).check(N)
    with pytest.raises(ConfigError, match=rf"^{registered}: f must be"):
        cls(f=-1)


def test_error_messages_take_the_class_name_from_the_class():
    """A subclass's errors name the subclass (no rule spells its own name)."""

    class MyTrMean(A.TrMean):
        pass

    class MyMoNNA(A.MoNNA):
        pass

    class MyNNM(P.NNM):
        pass

    with pytest.raises(ConfigError, match=r"^MyTrMean: f must be >= 0, got f=\[-1\]$"):
        MyTrMean(-1)
    with pytest.raises(ConfigError, match=rf"^MyTrMean: needs 2f < n, got f=6 with n={N} \(allowed: 0 <= f <= 5\)$"):
        MyTrMean(6)(GAUSS)
    with pytest.raises(ConfigError, match=rf"^MyMoNNA: needs idx < n, got idx={N} with n={N}"):
        MyMoNNA(0, idx=N).check(N)
    with pytest.raises(ConfigError, match=r"^MyNNM: needs f < n"):
        MyNNM(N).check(N)


def test_pre_aggregators_return_the_present_rows_with_the_vectors(registered):
    """``pre_aggregate(x, key, valid) -> (vectors, valid)``: ``None`` stays ``None``, and a mask
    comes back with one entry per output row (row-wise rules: the mask itself)."""
    cls = registry("preaggregator").get(registered)
    if cls is None:
        return
    pre = cls()
    x = jnp.asarray(GAUSS)
    out, out_valid = pre.pre_aggregate(x, KEY)
    assert out_valid is None and out.shape == (pre.output_rows(N), D)
    valid = jnp.asarray(np.arange(N) % 3 != 1)
    out, out_valid = pre.pre_aggregate(x, KEY, valid)
    assert out.shape == (pre.output_rows(N), D) and out_valid.shape == (pre.output_rows(N),)
    if isinstance(pre, P.Bucketing):  # the m present rows, shuffled, fill the first ceil(m / s) buckets
        np.testing.assert_array_equal(out_valid, np.arange(len(out_valid)) < math.ceil(int(np.sum(valid)) / pre.s))
    else:
        np.testing.assert_array_equal(out_valid, valid)


@pytest.mark.parametrize("rule", [A.MDA, A.SMEA], ids=["MDA", "SMEA"])
def test_subset_limit_refuses_exactly_the_enumerations_past_max_subsets(rule):
    """``check(n)`` raises iff ``C(n, f) > MAX_SUBSETS``, for every ``2f < n`` up to n = 40
    (no program is compiled: the check counts before enumerating)."""
    refused = 0
    for n in range(1, 41):
        for f in range((n - 1) // 2 + 1):
            if math.comb(n, f) > A.MAX_SUBSETS:
                refused += 1
                with pytest.raises(ConfigError, match=rf"C\(n, n-f\) = C\({n}, {n - f}\) = {math.comb(n, f)} subsets"):
                    rule(f).check(n)
            else:
                rule(f).check(n)
    assert refused > 0
