"""Spectral filters: the covariance-bound agnostic filter (CAF) and divide-and-conquer (DnC)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_count, check_param, component_error, float_array
from byzjax.aggregators._base import AbstractFRule
from byzjax.aggregators._common import _masked_mean, _pow2_scale, _unit_normal, centred_frame, rows


class CAF(AbstractFRule):
    """Covariance-bound agnostic filter (Allouah, Guerraoui & Stephan, 2025).

    Weights ``c = 1``; while ``sum c > n - 2f``: ``mu = sum c_i x_i / sum c``, ``lambda`` and
    ``u`` the largest eigenvalue and a unit top eigenvector of the weighted covariance
    ``Sigma_c = sum_i c_i (x_i - mu)(x_i - mu)^T / sum c``; ``tau_i = <x_i - mu, u>^2``;
    ``c_i <- c_i (1 - tau_i / max_j tau_j)`` (exactly 0 for the maximiser). Returns the
    ``mu`` with the smallest ``lambda`` seen. Needs ``2f < n``.

    Exact by default: with ``K`` the ``[n, n]`` Gram matrix of the ``x_i - mu`` (centred
    from one Gram matrix of the inputs), ``Sigma_c`` has the nonzero eigenvalues of
    ``diag(sqrt c) K diag(sqrt c) / sum c``; with ``a`` its top eigenvector (``eigh``),
    ``<x_i - mu, u> = (K sqrt(c) a)_i / sqrt(lambda sum c)``. So a pass costs O(n^3), after
    one O(n^2 d) Gram matrix, and the output is one ``[n] x [n, d]`` product: O(n^2 d + n^4).

    ``power_step=True``: ByzFL's approximation, one power step from a random unit ``v``:
    ``w = sum_i c_i (x_i - mu) <x_i - mu, v> / sum c``, ``lambda = ||w||``, ``u = w / lambda``;
    the start vector of pass ``t`` is ``_unit_normal(jax.random.fold_in(key, t), d)``
    (random output; 4-8% from the exact answer on random 10 x 5 inputs with f = 3).
    Cost O(passes * n d).

    Scale-safe: the passes run on ``(x - median) / s`` (``centred_frame``: ``s`` a power of
    two, the median keeps the close rows' digits), so a far row cannot overflow the
    squares; a non-finite row starts at weight 0 (as if removed by the first passes).

    Differs from ByzFL: ``max_j tau_j`` runs over rows still carrying weight, so
    every pass zeroes a row and the loop ends within ``n`` passes (in ByzFL a
    zeroed far row keeps setting the scale and the others shrink slowly: up to
    ~100 passes for n = 10 with two far rows); ``f = 0`` and a pass where every
    weighted row sits on ``mu`` end with the best mean so far (ByzFL returns None
    / NaN there).
    """

    power_step: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if not isinstance(self.power_step, bool):
            raise component_error(self, f"power_step must be a bool, got power_step={self.power_step!r}")

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        r = rows(vectors, valid)
        y, centre, scale = centred_frame(r.x, r.near)
        dtype = y.dtype
        weights = r.near.astype(dtype)
        gram = None if self.power_step else y @ y.T

        def exact(c, it):  # (lambda, tau) from the n x n centred Gram matrix
            total = jnp.sum(c)
            gc = gram @ c / total  # <y_i, mu>
            k = gram - gc[:, None] - gc[None, :] + c @ gc / total
            sc = jnp.sqrt(c)
            top = jnp.max(jnp.where(c > 0, jnp.diag(k) * c, 0.0))  # rescaled: eigh never sees tiny entries
            top = jnp.where(top > 0, top, 1.0)
            lam, vecs = jnp.linalg.eigh(sc[:, None] * k * sc[None, :] / top)
            lam_top = jnp.maximum(lam[-1], 0.0)
            proj = k @ (sc * vecs[:, -1]) / jnp.sqrt(jnp.where(lam_top > 0, lam_top * top, 1.0))
            return lam_top * top / total, proj**2

        def power(c, it):  # ByzFL's one power step from a random unit vector
            total = jnp.sum(c)
            diffs = y - c @ y / total
            w = (c * (diffs @ _unit_normal(jax.random.fold_in(key, it), d, dtype))) @ diffs / total
            lam = jnp.linalg.norm(w)
            return lam, (diffs @ (w / jnp.where(lam > 0, lam, 1.0))) ** 2

        def body(carry):
            c, best, best_c, it, _ = carry
            lam, tau = (power if self.power_step else exact)(c, it)
            better = lam < best
            tau_max = jnp.max(jnp.where(c > 0, tau, 0.0))
            stuck = ~(tau_max > 0)  # (NaN included)
            shrunk = jnp.where(tau >= tau_max, 0.0, c * (1.0 - tau / jnp.where(stuck, 1.0, tau_max)))
            c_next = jnp.where(stuck, c, shrunk)  # the farthest row exactly 0 (XLA may divide via a reciprocal)
            return c_next, jnp.where(better, lam, best), jnp.where(better, c, best_c), it + 1, stuck

        def cond(carry):
            c, *_, stuck = carry
            return ~stuck & (jnp.sum(c) > r.m - 2 * self.f)

        start = (weights, jnp.asarray(jnp.inf, dtype), weights, 0, jnp.array(False))
        best_c = jax.lax.while_loop(cond, body, start)[2]
        return (best_c @ y / jnp.maximum(jnp.sum(best_c), 1e-30)) * scale + centre, state


class DnC(AbstractFRule):
    """Divide-and-conquer (Shejwalkar & Houmansadr, NDSS 2021), as in the Blades benchmark.

    ``num_iters`` times: draw ``b = min(sub_dim, d)`` coordinates without replacement
    (the ``b`` largest of ``d`` uniforms, ``lax.top_k``, one key of
    ``jax.random.split(key, num_iters)`` per round; Blades: ``randperm(d)[:b]``), centre the
    sub-vectors, score ``s_i = <x_i - mu, v>^2`` with ``v`` their top right singular
    vector (computed as ``lambda_1 u_1^2`` from the ``[n, n]`` Gram), keep the
    ``n - floor(filter_frac * f)`` lowest scores (ties: lower index). Output: mean of
    the inputs kept in every round (the zero vector if none is). Cost
    O(num_iters (n^2 b + n^3 + d log b)). Needs ``n - floor(filter_frac * f) >= 1`` (and no
    bound tying ``f`` to ``n`` beyond it, as in Blades).
    """

    needs: ClassVar[str | None] = None
    sub_dim: int = eqx.field(static=True, default=10_000)
    num_iters: int = eqx.field(static=True, default=5)
    filter_frac: jax.Array = eqx.field(converter=float_array, default=1.0)

    def __check_init__(self):
        check_count(self, "sub_dim", self.sub_dim, 1)
        check_count(self, "num_iters", self.num_iters, 1)
        check_param(self, "filter_frac", self.filter_frac, lambda v: v >= 0, ">= 0")

    def _kept(self, n):
        return n - jnp.floor(self.filter_frac * self.f).astype(jnp.int32)

    def extra_check(self, n):
        check_param(self, f"n - floor(filter_frac * f) (n={n})", self._kept(n), lambda v: v >= 1, ">= 1")

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        b = min(self.sub_dim, d)
        vectors, m, _, near = rows(vectors, valid)  # a non-finite row scores +inf: never kept
        kept = self._kept(m)

        def good(k):
            sub = vectors if b == d else vectors[:, jax.lax.top_k(jax.random.uniform(k, (d,)), b)[1]]
            sub = jnp.where(near[:, None], sub - _masked_mean(near, sub), 0.0)
            sub = sub / jnp.maximum(_pow2_scale(jnp.max(jnp.abs(sub))), 1.0)  # exact down-scaling: no overflow
            lam, u = jnp.linalg.eigh(sub @ sub.T)
            scores = jnp.where(near, lam[-1] * u[:, -1] ** 2, jnp.inf)
            return _kernels.k_smallest_mask(scores[None], kept)[0]

        benign = jnp.all(jax.vmap(good)(jax.random.split(key, self.num_iters)), axis=0)
        return _masked_mean(benign & near, vectors), state
