"""The nearest-neighbour (Krum) family: Krum, Multi-Krum, MoNNA and Bulyan."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_count, check_index
from byzjax.aggregators._base import AbstractFRule
from byzjax.aggregators._columns import _mean_around_median, coordinatewise
from byzjax.aggregators._common import _masked_mean, _sum_smallest, far_sq_dists, rows


def _krum_scores(r, f):
    """Krum scores of ``rows`` ``r`` (sum of squared distances to the ``m - f`` nearest
    present rows, itself included); absent and non-finite rows score +inf."""
    scores = _sum_smallest(far_sq_dists(r.x, r.near), r.m - f)
    return jnp.where(r.near, scores, jnp.inf)


class Krum(AbstractFRule):
    """Krum (Blanchard et al., 2017): the input with the smallest neighbourhood score.

    ``Krum_f(x) = x_l``, ``l = argmin_i sum_{j in N_i} ||x_i - x_j||^2`` with ``N_i`` the
    ``n - f`` nearest inputs to ``x_i`` (itself included at distance 0, so ByzFL's
    ``n - f - 1`` others). Ties go to the lowest index, as ByzFL's argmin. Needs
    ``2f < n``. Cost O(n^2 d) for the Gram distances plus O(n^2 log n).
    """

    def aggregate(self, vectors, state, key, valid=None):
        r = rows(vectors, valid)
        return r.x[jnp.argmin(_krum_scores(r, self.f))], state


class MultiKrum(AbstractFRule):
    """Multi-Krum (Blanchard et al., 2017): mean of the ``n - f`` inputs with the best Krum scores.

    Scores as ``Krum``; equal scores go to the lower index (ByzFL's argpartition
    breaks ties arbitrarily). Needs ``2f < n``. Cost O(n^2 d + n^2 log n).
    """

    def aggregate(self, vectors, state, key, valid=None):
        r = rows(vectors, valid)
        chosen = _kernels.k_smallest_mask(_krum_scores(r, self.f)[None], r.m - self.f)[0]
        return _masked_mean(chosen & r.near, r.x), state


class MoNNA(AbstractFRule):
    """MoNNA (Farhadkhani et al., 2023): mean of the ``n - f`` nearest inputs to ``x_idx``.

    ``x_idx`` (a trusted worker in peer-to-peer use) is among them. Equal distances
    go to the lower index (ByzFL's argpartition: arbitrary). ``idx`` is static;
    needs ``2f < n`` and ``idx < n``. Cost O(n d + n^2).
    """

    idx: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        check_count(self, "idx", self.idx, 0)

    def extra_check(self, n):
        check_index(self, "idx", self.idx, n)

    def aggregate(self, vectors, state, key, valid=None):
        r = rows(vectors, valid)  # (row idx must be present and finite: in the oracle it is an honest row)
        dist = jnp.where(r.near, jnp.sum((r.x - r.x[self.idx]) ** 2, axis=1), jnp.inf)
        chosen = _kernels.k_smallest_mask(dist[None], r.m - self.f)[0]
        return _masked_mean(chosen & r.near, r.x), state


class Bulyan(AbstractFRule):
    """Bulyan (El Mhamdi, Guerraoui & Rouault, 2018), beyond ByzFL.

    Select ``theta = n - 2f`` inputs by repeated Krum: each time, the remaining input
    with the smallest sum of squared distances to its ``r - f`` nearest remaining
    inputs (``r`` remaining, itself included, as ``Krum``) moves to the selection.
    Then per coordinate, average the ``beta = theta - 2f`` selected values nearest
    to their median. Needs ``n >= 4f + 3``. Cost O(n^2 d) + O(n^2 log n + n^3) +
    O(n log^2 n d) for the sort.
    """

    needs: ClassVar[str] = "n >= 4f + 3"

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        vectors, m, _, near = rows(vectors, valid)  # absent and non-finite rows are never selected
        theta = m - 2 * self.f
        d2 = far_sq_dists(vectors, near)
        order = jnp.argsort(d2, axis=1, stable=True)  # rows sorted once: O(n^2 log n)
        s = jnp.take_along_axis(d2, order, axis=1)

        def select(it, selected):  # O(n^2): the k = m - it - f smallest remaining, in the sorted rows
            k = m - it - self.f
            left = ~selected & near
            left_sorted = left[order]
            count = jnp.cumsum(left_sorted, axis=1)
            scores = jnp.sum(jnp.where(left_sorted & (count <= k), s, 0.0), axis=1)
            scores = jnp.where(count[:, -1] < k, jnp.inf, scores)  # fewer than k remaining: +inf, as +inf fills
            return selected.at[jnp.argmin(jnp.where(left, scores, jnp.inf))].set(True)

        selected = jax.lax.fori_loop(0, theta, select, jnp.zeros(n, bool))
        around = lambda cols, theta, drop: _mean_around_median(_kernels.sort_rows(cols), theta, drop)
        return coordinatewise(around, jnp.where(selected[:, None], vectors, jnp.inf), theta, 2 * self.f), state
