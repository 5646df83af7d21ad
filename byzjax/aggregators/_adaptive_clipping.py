"""Iterated adaptive centred clipping: the "Huber" aggregator of the authors' later code."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax._validation import check_choice, check_count, check_param, float_array
from byzjax.aggregators._base import AbstractFRule
from byzjax.aggregators._common import _row, clip_scale, rows

ADAPTIVE_CLIPPING_VARIANTS = ("authors", "fixed")


class AdaptiveClipping(AbstractFRule):
    """Iterated centred clipping with an adaptive radius (the aggregator called "Huber" in the
    later code of arXiv 2602.03329; config alias ``Huber``, not to be confused with ``HuberMean``).

    From ``v_0 = 0``, at most ``passes`` (5) passes of
    ``d_i = ||x_i - v||``, ``r = sorted(d)[-min(n, 2f)]`` (the ``2f``-th largest distance),
    ``dv = (1/n) sum_i (x_i - v) min(1, r / d_i)``, ``v <- v + dv``, stopping after the first
    pass with ``||dv|| < tol`` (1e-6). So the ``2f - 1`` farthest rows are pulled onto the sphere
    of radius ``r`` around the current centre, and the centre moves by the mean of the clipped
    differences (centred clipping, Karimireddy et al., 2021, with the radius chosen from the data
    at every pass instead of a fixed ``tau``). Needs ``2f < n``. Cost O(passes (n d + n log n)).

    ``variant`` (static) says what happens at ``f = 0``:

    - ``"authors"`` (default): the authors' code as written. Their index ``-min(n, 2f)`` is
      ``-0 = 0`` at ``f = 0``, i.e. ``sorted(d)[0]``, the SMALLEST distance: every row is clipped
      to the distance of the closest one (from ``v_0 = 0`` that is the smallest norm), so the
      rule shrinks the mean instead of returning it.
    - ``"fixed"``: at ``f = 0`` no row is clipped (``r = +inf``) and the rule returns the mean
      (after one pass; the second has ``dv = 0``). For ``f >= 1`` both variants are the same.

    Starts from 0, so not translation equivariant. Absent rows (``valid``) are left out and
    ``n`` is the number present; a present non-finite row ranks as the farthest (distance +inf,
    taking one of the ``2f`` top ranks) and gets weight 0 while still counting in ``n``.
    """

    passes: int = eqx.field(static=True, default=5)
    tol: jax.Array = eqx.field(converter=float_array, default=1e-6)
    variant: str = eqx.field(static=True, default="authors")

    def __check_init__(self):
        check_count(self, "passes", self.passes, 1)
        check_param(self, "tol", self.tol, lambda v: v >= 0, ">= 0")
        check_choice(self, "variant", self.variant, ADAPTIVE_CLIPPING_VARIANTS)

    def aggregate(self, vectors, state, key, valid=None):
        x, m, _, near = rows(vectors, valid)
        dtype = x.dtype
        two_f = jnp.minimum(2 * self.f, m)
        # ascending rank of the radius among the m present rows (absent rows sort after them);
        # Python's sorted(d)[-0] is sorted(d)[0]: the smallest distance at f = 0
        rank = jnp.where(two_f > 0, m - two_f, 0)
        weight = near.astype(dtype) / m
        tol = self.tol.astype(dtype)

        def body(carry):
            v, _, it = carry
            diff = x - v
            dist = jnp.where(near, jnp.linalg.norm(diff, axis=1), jnp.inf)
            radius = _row(jnp.sort(dist), rank)
            if self.variant == "fixed":
                radius = jnp.where(self.f > 0, radius, jnp.inf)
            dv = weight @ (diff * clip_scale(dist, radius)[:, None])
            return v + dv, jnp.linalg.norm(dv) < tol, it + 1

        start = (jnp.zeros(x.shape[1], dtype), jnp.array(False), 0)
        v, *_ = jax.lax.while_loop(lambda c: ~c[1] & (c[2] < self.passes), body, start)
        return v, state
