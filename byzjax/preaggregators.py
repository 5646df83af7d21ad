"""Pre-aggregation rules ``[n, d] -> [n', d]`` and their composition with a rule.

``Pipeline(pre_aggs=(NNM(f),), agg=TrMean(f))`` is ByzFL's ``pre_agg_list``
followed by ``agg``; it is itself an aggregator. Rules: NNM, Bucketing, Clipping,
ARC (ByzFL names, parameters and defaults). All are pure: ByzFL's Clipping and ARC
modify their input in place, these return new arrays.

Absent workers: ``pre_aggregate(vectors, key, valid) -> (vectors, valid)`` ignores the
rows where the bool mask ``valid`` is False (as if only the present rows had been sent)
and returns, with the output rows, which of them are present (``None`` stays ``None``:
all present), so a ``Pipeline`` carries the mask through to its aggregator.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_count, check_param, float_array
from byzjax.aggregators import AbstractAggregator, Average, clip_scale, present_rows
from byzjax.aggregators._base import AbstractSweptF, eager_call
from byzjax.aggregators._common import finite_rows, rows


class AbstractPreAggregator(eqx.Module):
    """A pre-aggregation rule: ``n`` vectors in, ``output_rows(n)`` vectors out."""

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` if the rule cannot run on ``n`` input vectors."""

    def output_rows(self, n: int) -> int:
        return n

    supports_absent: ClassVar[bool] = True

    @abc.abstractmethod
    def pre_aggregate(self, vectors: jax.Array, key, valid=None) -> tuple[jax.Array, jax.Array | None]:
        """Transform ``vectors [n, d]`` -> ``([output_rows(n), d], output valid)``; pure and jittable.

        ``valid [n]`` (optional bool): the rows present; the others are ignored. The second
        output says which output rows are present (``[output_rows(n)]`` bool; row-wise rules
        return ``valid`` itself), and is ``None`` when ``valid`` is.
        """

    def __call__(self, vectors, key=None):
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array: the output rows
        (``eager_call``: compiled once per rule structure and input shape; NumPy in gives NumPy out)."""
        return eager_call(self, _pre_aggregate, vectors, key)


@jax.jit
def _pre_aggregate(pre: AbstractPreAggregator, vectors: jax.Array, key) -> jax.Array:
    """The eager call's program: the output rows of ``pre`` with every row present."""
    return pre.pre_aggregate(vectors, key)[0]


class AbstractFPreAggregator(AbstractSweptF, AbstractPreAggregator):
    """A pre-aggregator told ``f``: owns the field ``f`` (an array leaf, default 0), its
    construction check ``f >= 0`` and ``check(n)`` against the ClassVar ``needs``, plus the
    rule's ``extra_check(n)`` (shared with ``byzjax.aggregators.AbstractFRule``)."""


def nnm_mixing_matrix(sq_dists: jax.Array, f: jax.Array, valid=None) -> jax.Array:
    """Row-stochastic ``[n, n]`` matrix of NNM: row i averages its m-f nearest present
    vectors (``m`` present rows, all by default; absent columns are never chosen)."""
    n = sq_dists.shape[-1]
    m = n
    if valid is not None:
        m = jnp.sum(valid).astype(jnp.int32)
        sq_dists = jnp.where(valid[None, :], sq_dists, jnp.inf)
    mask = _kernels.k_smallest_mask(sq_dists, m - f)
    return mask.astype(sq_dists.dtype) / jnp.asarray(m - f, sq_dists.dtype)


class NNM(AbstractFPreAggregator):
    """Nearest-neighbour mixing (Allouah et al., 2023), as used in the experiments of arXiv 2602.03329.

    Each ``x_i`` is replaced by the mean of its ``n - f`` nearest vectors (itself
    included; ties to the lower index). Computed as one ``[n, n]`` mixing matrix
    times the ``[n, d]`` block: cost O(n^2 d) for the Gram distances plus O(n^2 log n)
    for the ranks (one stable argsort per row), never an ``n x (n-f) x d`` gather. Needs
    ``f < n``. A non-finite row is infinitely far (never among the neighbours of another
    row) and is passed on as it is.
    """

    needs: ClassVar[str] = "f < n"

    def pre_aggregate(self, vectors, key, valid=None):
        r = rows(vectors, valid)
        d2 = jnp.where(r.near[None, :], _kernels.pairwise_sq_dists(r.x), jnp.inf)
        mix = nnm_mixing_matrix(d2, self.f, valid)
        return jnp.where(finite_rows(vectors)[:, None], mix @ r.x, vectors), valid


def _pad_rows(x: jax.Array, w: jax.Array, s: int):
    """``x [n, ...]`` and ``w [n]`` padded with zeros / False to a multiple of ``s`` rows."""
    pad = -x.shape[0] % s
    return (jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]),
            jnp.concatenate([w, jnp.zeros(pad, w.dtype)]))


class Bucketing(AbstractPreAggregator):
    """Bucketing (Karimireddy, He & Jaggi, 2022).

    Rows are shuffled by ``jax.random.permutation(key, n)`` (so the output is a
    function of the key), then averaged in consecutive buckets of ``s``; a last,
    smaller bucket takes the ``n mod s`` leftover rows. ``ceil(n / s)`` rows out.
    ``s`` is static (it fixes the output shape); ``s >= 1``. Cost O(n d). Differs
    from ByzFL only in the source of randomness (ByzFL: the global NumPy/torch RNG).
    """

    s: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_count(self, "s", self.s, 1)

    def output_rows(self, n):
        return -(-n // self.s)

    def _order(self, key, valid):
        """A shuffled row order with the present rows first."""
        perm = jax.random.permutation(key, valid.shape[0])
        return perm[jnp.argsort(~valid[perm], stable=True)]

    def pre_aggregate(self, vectors, key, valid=None):
        n, d = vectors.shape
        if valid is None:
            x = vectors[jax.random.permutation(key, n)]
            full = n // self.s
            buckets = [jnp.mean(x[: full * self.s].reshape(full, self.s, d), axis=1)]
            if n % self.s:
                buckets.append(jnp.mean(x[full * self.s :], axis=0, keepdims=True))
            return jnp.concatenate(buckets), None
        # the m present rows, shuffled, fill ceil(m / s) buckets; the rest are absent
        order = self._order(key, valid)
        x, w = _pad_rows(present_rows(vectors, valid)[0][order], valid[order], self.s)
        w = w.reshape(-1, self.s)
        sums = jnp.einsum("bs,bsd->bd", w.astype(x.dtype), x.reshape(-1, self.s, d))
        return sums / jnp.maximum(jnp.sum(w, axis=1), 1)[:, None].astype(x.dtype), jnp.any(w, axis=1)


class Clipping(AbstractPreAggregator):
    """Static clipping: ``x_i <- min(1, c / ||x_i||) x_i``. Cost O(n d).

    A non-finite row is passed on as it is (ByzFL: an Inf row becomes NaN).

    Differs from ByzFL: pure (ByzFL rescales its input rows in place), and ``c > 0``
    is required (ByzFL accepts ``c = 0``, which sends every input to zero).
    """

    c: jax.Array = eqx.field(converter=float_array, default=2.0)

    def __check_init__(self):
        check_param(self, "c", self.c, lambda v: v > 0, "> 0")

    def pre_aggregate(self, vectors, key, valid=None):
        finite = finite_rows(vectors)
        x = jnp.where(finite[:, None], vectors, 0.0)
        scale = clip_scale(jnp.linalg.norm(x, axis=1), self.c.astype(vectors.dtype))
        return jnp.where(finite[:, None], x * scale[:, None], vectors), valid


class ARC(AbstractFPreAggregator):
    """Adaptive robust clipping (Allouah et al., 2024).

    The ``k = floor(2 f (n - f) / n)`` largest-norm inputs are clipped to the
    ``(n - k)``-th smallest norm (equivalently, every input is clipped to that
    norm); ``f = 0`` changes nothing. Needs ``f <= n``. Cost O(n d + n log n). A
    non-finite row has norm +inf (it is among the largest) and is passed on as it is.

    Differs from ByzFL: pure (ByzFL clips in place), and ``k`` is the exact integer
    floor; ByzFL's float ``int((2 f / n) (n - f))`` comes out one lower for a few
    ``(n, f)`` where the product is an integer, e.g. ``(121, 66)``.
    """

    needs: ClassVar[str] = "f <= n"

    def pre_aggregate(self, vectors, key, valid=None):
        x, m, present, near = rows(vectors, valid)
        norms = jnp.linalg.norm(x, axis=1)
        clipped = (2 * self.f * (m - self.f)) // m
        ranked = norms if valid is None else jnp.where(valid, norms, jnp.inf)
        sorted_norms = jnp.sort(jnp.where(near | ~present, ranked, jnp.inf))
        out = x * clip_scale(norms, sorted_norms[m - clipped - 1])[:, None]
        return jnp.where(finite_rows(vectors)[:, None], out, vectors), valid


class Pipeline(AbstractAggregator):
    """Pre-aggregators applied in order, then an aggregator (ByzFL's ``pre_agg_list``).

    Each stage gets its own key (``jax.random.split(key, len(pre_aggs) + 1)``);
    the state is the aggregator's.
    """

    pre_aggs: tuple[AbstractPreAggregator, ...]
    agg: AbstractAggregator

    def __init__(self, pre_aggs=(), agg=None):
        self.pre_aggs = tuple(pre_aggs)
        self.agg = Average() if agg is None else agg

    def check(self, n):
        for pre in self.pre_aggs:
            pre.check(n)
            n = pre.output_rows(n)
        self.agg.check(n)

    def init(self, d, dtype):
        return self.agg.init(d, dtype)

    @property
    def supports_absent(self) -> bool:
        return self.agg.supports_absent and all(p.supports_absent for p in self.pre_aggs)

    @property
    def robust(self) -> bool:
        return self.agg.robust

    def aggregate(self, vectors, state, key, valid=None):
        keys = jax.random.split(key, len(self.pre_aggs) + 1)
        for pre, k in zip(self.pre_aggs, keys[:-1]):
            vectors, valid = pre.pre_aggregate(vectors, k, valid)
        return self.agg.aggregate(vectors, state, keys[-1], valid)
