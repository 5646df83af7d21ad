"""Spectral filters: the covariance-bound agnostic filter (CAF) and divide-and-conquer (DnC)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_count, check_f, check_param, float_array, int_array
from byzjax.aggregators._base import AbstractAggregator
from byzjax.aggregators._common import _masked_mean, _present_or_all, _unit_normal, present_rows


class CAF(AbstractAggregator):
    """Covariance-bound agnostic filter (Allouah, Guerraoui & Stephan, 2025).

    Weights ``c = 1``; while ``sum c > n - 2f``: ``mu = sum c_i x_i / sum c``; one power
    step on the weighted covariance from a random unit ``v`` gives
    ``w = sum_i c_i (x_i - mu) <x_i - mu, v> / sum c``, ``lambda = ||w||``,
    direction ``u = w / lambda``; ``tau_i = <x_i - mu, u>^2``;
    ``c_i <- c_i (1 - tau_i / max_j tau_j)`` (exactly 0 for the maximiser). Returns
    the ``mu`` with the smallest ``lambda`` seen. The start vector of pass ``t`` is
    ``_unit_normal(jax.random.fold_in(key, t), d)``. Cost O(passes * n d), at most
    ``n`` passes. Needs ``2f < n``.

    Differs from ByzFL: ``max_j tau_j`` runs over rows still carrying weight, so
    every pass zeroes a row and the loop ends within ``n`` passes (in ByzFL a
    zeroed far row keeps setting the scale and the others shrink slowly: up to
    ~100 passes for n = 10 with two far rows); ``f = 0`` and a pass where every
    weighted row sits on ``mu`` end with the best mean so far (ByzFL returns None
    / NaN there).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("CAF", self.f)

    def check(self, n):
        check_f("CAF", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        dtype = vectors.dtype
        weights, m = jnp.ones(n, dtype), n
        if valid is not None:  # absent rows start (and stay) at weight 0
            vectors, m = present_rows(vectors, valid)
            weights = valid.astype(dtype)

        def body(carry):
            c, best, best_mu, it, _ = carry
            mu = c @ vectors / jnp.sum(c)
            diffs = vectors - mu
            w = (c * (diffs @ _unit_normal(jax.random.fold_in(key, it), d, dtype))) @ diffs / jnp.sum(c)
            lam = jnp.linalg.norm(w)
            better = lam < best
            u = w / jnp.where(lam > 0, lam, 1.0)
            tau = (diffs @ u) ** 2
            tau_max = jnp.max(jnp.where(c > 0, tau, 0.0))
            stuck = tau_max <= 0
            shrunk = jnp.where(tau >= tau_max, 0.0, c * (1.0 - tau / jnp.where(stuck, 1.0, tau_max)))
            c = jnp.where(stuck, c, shrunk)  # the farthest row exactly 0 (XLA may divide via a reciprocal)
            return c, jnp.where(better, lam, best), jnp.where(better, mu, best_mu), it + 1, stuck

        def cond(carry):
            c, *_, stuck = carry
            return ~stuck & (jnp.sum(c) > m - 2 * self.f)

        start = (weights, jnp.asarray(jnp.inf, dtype), weights @ vectors / jnp.sum(weights), 0, jnp.array(False))
        return jax.lax.while_loop(cond, body, start)[2], state


class DnC(AbstractAggregator):
    """Divide-and-conquer (Shejwalkar & Houmansadr, NDSS 2021), as in the Blades benchmark.

    ``num_iters`` times: draw ``b = min(sub_dim, d)`` coordinates without replacement
    (the ``b`` largest of ``d`` uniforms, ``lax.top_k``, one key of
    ``jax.random.split(key, num_iters)`` per round; Blades: ``randperm(d)[:b]``), centre the
    sub-vectors, score ``s_i = <x_i - mu, v>^2`` with ``v`` their top right singular
    vector (computed as ``lambda_1 u_1^2`` from the ``[n, n]`` Gram), keep the
    ``n - floor(filter_frac * f)`` lowest scores (ties: lower index). Output: mean of
    the inputs kept in every round (the zero vector if none is). Cost
    O(num_iters (n^2 b + n^3 + d log b)).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)
    sub_dim: int = eqx.field(static=True, default=10_000)
    num_iters: int = eqx.field(static=True, default=5)
    filter_frac: jax.Array = eqx.field(converter=float_array, default=1.0)

    def __check_init__(self):
        check_f("DnC", self.f)
        check_count("DnC", "sub_dim", self.sub_dim, 1)
        check_count("DnC", "num_iters", self.num_iters, 1)
        check_param("DnC", "filter_frac", self.filter_frac, lambda v: v >= 0, ">= 0")

    def _kept(self, n):
        return n - jnp.floor(self.filter_frac * self.f).astype(jnp.int32)

    def check(self, n):
        check_param("DnC", f"n - floor(filter_frac * f) (n={n})", self._kept(n), lambda v: v >= 1, ">= 1")

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        b = min(self.sub_dim, d)
        vectors, m, present = _present_or_all(vectors, valid)
        kept = self._kept(m)

        def good(k):
            sub = vectors if b == d else vectors[:, jax.lax.top_k(jax.random.uniform(k, (d,)), b)[1]]
            sub = jnp.where(present[:, None], sub - _masked_mean(present, sub), 0.0)
            lam, u = jnp.linalg.eigh(sub @ sub.T)
            scores = jnp.where(present, lam[-1] * u[:, -1] ** 2, jnp.inf)
            return _kernels.k_smallest_mask(scores[None], kept)[0]

        benign = jnp.all(jax.vmap(good)(jax.random.split(key, self.num_iters)), axis=0)
        return _masked_mean(benign & present, vectors), state
