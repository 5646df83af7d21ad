"""Pre-aggregation rules ``[n, d] -> [n', d]`` and their composition with a rule.

``Pipeline(pre_aggs=(NNM(f),), agg=TrMean(f))`` is ByzFL's ``pre_agg_list``
followed by ``agg``; it is itself an aggregator.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import _kernels
from byzjax._validation import as_matrix, int_array
from byzjax.aggregators import AbstractAggregator, Average, check_f


class AbstractPreAggregator(eqx.Module):
    """A pre-aggregation rule: ``n`` vectors in, ``output_rows(n)`` vectors out."""

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` if the rule cannot run on ``n`` input vectors."""

    def output_rows(self, n: int) -> int:
        return n

    @abc.abstractmethod
    def pre_aggregate(self, vectors: jax.Array, key) -> jax.Array:
        """Transform ``vectors [n, d]`` -> ``[output_rows(n), d]``; pure and jittable."""

    def __call__(self, vectors, key=None):
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array."""
        was_numpy = isinstance(vectors, np.ndarray)
        vectors = as_matrix(vectors)
        self.check(vectors.shape[0])
        key = jax.random.key(0) if key is None else key
        out = self.pre_aggregate(vectors, key)
        return np.asarray(out) if was_numpy else out


def nnm_mixing_matrix(sq_dists: jax.Array, f: jax.Array) -> jax.Array:
    """Row-stochastic ``[n, n]`` matrix of NNM: row i averages its n-f nearest vectors."""
    n = sq_dists.shape[-1]
    mask = _kernels.k_smallest_mask(sq_dists, n - f)
    return mask.astype(sq_dists.dtype) / jnp.asarray(n - f, sq_dists.dtype)


class NNM(AbstractPreAggregator):
    """Nearest-neighbour mixing (Allouah et al., 2023), PAPER.md section 3.

    Each ``x_i`` is replaced by the mean of its ``n - f`` nearest vectors (itself
    included; ties to the lower index). Computed as one ``[n, n]`` mixing matrix
    times the ``[n, d]`` block: cost O(n^2 d) for the Gram distances plus O(n^3)
    for ranks, never an ``n x (n-f) x d`` gather. Needs ``f < n``.
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("NNM", self.f)

    def check(self, n):
        check_f("NNM", self.f, n, need="f < n")

    def pre_aggregate(self, vectors, key):
        mix = nnm_mixing_matrix(_kernels.pairwise_sq_dists(vectors), self.f)
        return mix @ vectors


class Pipeline(AbstractAggregator):
    """Pre-aggregators applied in order, then an aggregator (ByzFL's ``pre_agg_list``)."""

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

    def aggregate(self, vectors, state, key):
        keys = jax.random.split(key, len(self.pre_aggs) + 1)
        for pre, k in zip(self.pre_aggs, keys[:-1]):
            vectors = pre.pre_aggregate(vectors, k)
        return self.agg.aggregate(vectors, state, keys[-1])

