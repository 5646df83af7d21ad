"""Clustering rules: SignGuard (2-means on sign statistics) and clipped clustering."""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax._validation import check_count, check_param, component_error, float_array
from byzjax.aggregators._base import AbstractAggregator
from byzjax.aggregators._common import _masked_mean, _median, _row, clip_scale, rows


def _two_means(points: jax.Array, iters: int, present: jax.Array) -> jax.Array:
    """Lloyd's 2-means of the present points from their farthest pair (lowest indices on
    ties); True = second cluster.

    The pair distances ``sum_c (p_ic - p_jc)^2`` are summed column by column (``d`` is the 3
    sign statistics): ``[n, n]`` memory, never an ``[n, n, d]`` tensor, and the exact
    difference form (not the Gram form, whose rounding could move the farthest pair on ties).
    """
    n = points.shape[0]
    cols = [points[:, c] for c in range(points.shape[1])]
    d2 = functools.reduce(jnp.add, [(c[:, None] - c[None, :]) ** 2 for c in cols])
    d2 = jnp.where(present[:, None] & present[None, :], d2, -1.0)
    i, j = jnp.divmod(jnp.argmax(d2), n)
    centres = points[jnp.stack([i, j])]

    def step(_, centres):
        second = jnp.sum((points - centres[1]) ** 2, 1) < jnp.sum((points - centres[0]) ** 2, 1)
        member = (jnp.stack([~second, second]) & present).astype(points.dtype)
        count = jnp.sum(member, axis=1, keepdims=True)
        return jnp.where(count > 0, member @ points / jnp.maximum(count, 1.0), centres)

    centres = jax.lax.fori_loop(0, iters, step, centres)
    return jnp.sum((points - centres[1]) ** 2, 1) < jnp.sum((points - centres[0]) ** 2, 1)


def _majority(second: jax.Array, present: jax.Array) -> jax.Array:
    """Blades' cluster choice: the second cluster iff it holds more than ``m // 2`` of the
    ``m`` present rows; absent rows are in neither."""
    m = jnp.sum(present)
    return present & (second == (jnp.sum(second & present) > m // 2))


class SignGuard(AbstractAggregator):
    """SignGuard (Xu et al., 2021) as in the Blades benchmark, beyond ByzFL.

    ``M`` = median input norm; inputs longer than ``M`` are clipped to ``M``; keep the
    inputs with ``lower * M <= ||x_i|| <= upper * M`` that fall in the majority
    cluster of a 2-means on the sign statistics (fractions of positive, negative
    and zero coordinates); return their mean (the zero vector if none). Cost O(n d).

    Differs from Blades: its sklearn ``KMeans(2, random_state=0)`` is replaced by
    ``kmeans_iters`` Lloyd steps from the farthest pair of points, with the second
    cluster chosen iff it has more than ``n // 2`` members (Blades' rule with
    labels numbered by that initialisation).
    """

    lower: jax.Array = eqx.field(converter=float_array, default=0.1)
    upper: jax.Array = eqx.field(converter=float_array, default=3.0)
    kmeans_iters: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_param(self, "lower", self.lower, lambda v: v >= 0, ">= 0")
        check_param(self, "upper", self.upper, lambda v: v >= 1, ">= 1")
        check_count(self, "kmeans_iters", self.kmeans_iters, 1)

    def aggregate(self, vectors, state, key, valid=None):
        dtype = vectors.dtype
        vectors, _, _, present = rows(vectors, valid)  # non-finite rows are left out (as absent)
        norms = jnp.linalg.norm(vectors, axis=1)
        m = _median(norms, present)
        x = vectors * clip_scale(norms, m)[:, None]
        clipped = jnp.minimum(norms, m)
        in_range = (clipped >= self.lower.astype(dtype) * m) & (clipped <= self.upper.astype(dtype) * m)
        signs = jnp.stack([jnp.mean(x > 0, 1), jnp.mean(x < 0, 1), jnp.mean(x == 0, 1)], axis=1).astype(dtype)
        majority = _majority(_two_means(signs, self.kmeans_iters, present), present)
        return _masked_mean(in_range & majority, x), state


class NormHistory(NamedTuple):
    """State of ``ClippedClustering``: a ring buffer of the input norms seen so far."""

    norms: jax.Array  # [history], +inf where not yet written
    count: jax.Array  # number of norms written so far


def _agglomerate_two(dist: jax.Array, m, first=0) -> jax.Array:
    """Average-linkage (UPGMA) agglomerative clustering of ``dist [n, n]`` into two clusters.

    Only the ``m`` present rows take part (absent ones at distance +inf from all).
    Merges the closest pair of clusters (lowest indices on ties) ``m - 2`` times,
    the merged cluster's distances being the size-weighted means (Lance-Williams).
    Returns True for the rows outside the cluster of ``first``, the first present row
    (row 0 when all are present).
    """
    n = dist.shape[0]
    dist = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist)

    def merge(_, carry):
        dist, size, rep = carry
        i, j = jnp.divmod(jnp.argmin(dist), n)
        a, b = jnp.minimum(i, j), jnp.maximum(i, j)
        row = (size[a] * dist[a] + size[b] * dist[b]) / (size[a] + size[b])
        row = row.at[a].set(jnp.inf).at[b].set(jnp.inf)
        dist = dist.at[a].set(row).at[:, a].set(row).at[b].set(jnp.inf).at[:, b].set(jnp.inf)
        return dist, size.at[a].add(size[b]).at[b].set(0.0), jnp.where(rep == b, a, rep)

    start = (dist, jnp.ones(n, dist.dtype), jnp.arange(n))
    merges = max(m - 2, 0) if isinstance(m, int) else jnp.maximum(m - 2, 0)
    rep = jax.lax.fori_loop(0, merges, merge, start)[2]
    return rep != rep[first]


class ClippedClustering(AbstractAggregator):
    """Clipped clustering (Li et al., 2023) as in the Blades benchmark, beyond ByzFL.

    Clip every input to ``min(median of all norms seen so far, max_tau)``; cluster
    the clipped inputs in two by average-linkage agglomerative clustering on the
    cosine distance ``1 - cos`` (non-finite -> 2); return the mean
    of the majority cluster (the second cluster iff it has more than ``n // 2``
    members, the first being the one holding the first present row). Non-finite
    rows are left out as absent rows are. The norm history is the
    state: a ring buffer of the last ``history`` norms (Blades keeps all of them;
    identical until ``history`` norms were seen). Cost O(n^2 d + n^3 + history log history).
    """

    max_tau: jax.Array = eqx.field(converter=float_array, default=1e5)
    history: int = eqx.field(static=True, default=10_000)

    def __check_init__(self):
        check_param(self, "max_tau", self.max_tau, lambda v: v > 0, "> 0")
        check_count(self, "history", self.history, 1)

    def check(self, n):
        if n > self.history:
            raise component_error(self, f"needs n <= history, got n={n} with history={self.history}")

    def init(self, d, dtype):
        return NormHistory(jnp.full(self.history, jnp.inf, dtype), jnp.array(0, jnp.int32))

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        vectors, _, _, present = rows(vectors, valid)  # only present, finite rows' norms enter the history
        m = jnp.sum(present).astype(jnp.int32)
        norms = jnp.linalg.norm(vectors, axis=1)
        slot = (state.count + jnp.cumsum(present) - 1) % self.history
        buffer = state.norms.at[jnp.where(present, slot, self.history)].set(norms, mode="drop")
        filled = jnp.minimum(state.count + m, self.history)
        s = jnp.sort(buffer)
        median = 0.5 * (_row(s, (filled - 1) // 2) + _row(s, filled // 2))
        x = vectors * clip_scale(norms, jnp.minimum(median, self.max_tau.astype(vectors.dtype)))[:, None]
        unit = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-8)
        dist = jnp.where(jnp.eye(n, dtype=bool), 0.0, 1.0 - unit @ unit.T)
        dist = jnp.where(jnp.isfinite(dist), dist, 2.0)
        dist = jnp.where(present[:, None] & present[None, :], dist, jnp.inf)
        chosen = _majority(_agglomerate_two(dist, m, jnp.argmax(present)), present)
        return _masked_mean(chosen, x), NormHistory(buffer, state.count + m)
