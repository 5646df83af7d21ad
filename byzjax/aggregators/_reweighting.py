"""Reweighting and clipping rules: geometric medians (Weiszfeld), centered clipping, Huber's mean, FLTrust."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax._validation import check_count, check_index, check_param, component_error, float_array, int_array
from byzjax.aggregators._base import AbstractAggregator
from byzjax.aggregators._common import _median, centred_frame, clip_scale, rows
from byzjax.aggregators._coordinatewise import Median


def _finite_rows(vectors: jax.Array, valid=None) -> tuple[jax.Array, jax.Array]:
    """``(keep [n] float, vectors)`` with absent and non-finite rows dropped (weight 0, zeroed)."""
    r = rows(vectors, valid)
    return r.near.astype(vectors.dtype), r.x


def _weiszfeld_step(vectors, keep, z, nu):
    """One smoothed Weiszfeld step from ``z``; also returns the distances ``||x_i - z||``."""
    dist = jnp.linalg.norm(vectors - z, axis=1)
    beta = keep / jnp.maximum(dist, nu)
    return beta @ vectors / jnp.sum(beta), dist


class GeometricMedian(AbstractAggregator):
    """Smoothed Weiszfeld approximation of the geometric median (ByzFL's rule).

    ``argmin_y sum_i ||y - x_i||`` approached by ``T`` steps from ``z_0 = 0``:
    ``z_{t+1} = sum_i beta_i x_i / sum_i beta_i``, ``beta_i = 1 / max(nu, ||x_i - z_t||)``
    (Weiszfeld, 1937; smoothing as in Pillutla et al., 2022). As ByzFL, rows that
    contain an inf are left out (and here rows with a NaN too). Cost O(T n d).

    Differs from ByzFL: ``T >= 1`` and ``nu > 0`` are required (ByzFL accepts
    ``T = 0``, returning zeros, and any float ``nu``, dividing by zero at ``nu = 0``).
    Starting from 0, a few steps are not translation equivariant; see
    ``SmoothedWeiszfeld`` for a run to tolerance from the mean.
    """

    nu: jax.Array = eqx.field(converter=float_array, default=0.1)
    T: int = eqx.field(static=True, default=3)

    def __check_init__(self):
        check_param(self, "nu", self.nu, lambda v: v > 0, "> 0")
        check_count(self, "T", self.T, 1)

    def aggregate(self, vectors, state, key, valid=None):
        keep, x = _finite_rows(vectors, valid)
        nu = self.nu.astype(x.dtype)
        step = lambda _, z: _weiszfeld_step(x, keep, z, nu)[0]
        return jax.lax.fori_loop(0, self.T, step, jnp.zeros(x.shape[1], x.dtype)), state


class SmoothedWeiszfeld(AbstractAggregator):
    """Smoothed Weiszfeld run to a tolerance (beyond ByzFL; RFA, Pillutla et al., 2022).

    Same step as ``GeometricMedian``, started at the coordinate-wise median ``z_0`` of
    the finite rows and iterated in a ``while_loop`` until the step is small against
    the typical distance, ``||z_{t+1} - z_t|| <= tol * max(nu, median_i ||x_i - z_t||)``,
    or ``max_iter`` steps; returns the last iterate. Both the start and the stopping
    rule are robust: rows far away (up to the largest float) change neither, so they
    cannot pull the result further the farther they are. The steps run in the frame
    ``(x - z_0) / s`` with ``s`` a power of two bounding the centred entries (no
    overflow in the squared distances). Rows with a NaN or an Inf are left out.
    Translation equivariant. Cost O(n log^2 n d + iterations * n d).
    """

    nu: jax.Array = eqx.field(converter=float_array, default=0.1)
    tol: jax.Array = eqx.field(converter=float_array, default=1e-6)
    max_iter: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        check_param(self, "nu", self.nu, lambda v: v > 0, "> 0")
        check_param(self, "tol", self.tol, lambda v: v >= 0, ">= 0")
        check_count(self, "max_iter", self.max_iter, 1)

    def aggregate(self, vectors, state, key, valid=None):
        r = rows(vectors, valid)
        y, centre, scale = centred_frame(r.x, r.near)
        keep = r.near.astype(y.dtype)
        nu, tol = self.nu.astype(y.dtype) / scale, self.tol.astype(y.dtype)

        def body(carry):
            z, _, it = carry
            z_next, dist = _weiszfeld_step(y, keep, z, nu)
            spread = jnp.maximum(_median(dist, r.near), nu)
            done = jnp.linalg.norm(z_next - z) <= tol * spread
            return z_next, done, it + 1

        start = (jnp.zeros(y.shape[1], y.dtype), jnp.array(False), 0)
        z, *_ = jax.lax.while_loop(lambda c: ~c[1] & (c[2] < self.max_iter), body, start)
        return z * scale + centre, state


def _optional_vector(m):
    return None if m is None else jnp.asarray(m)


class CenteredClipping(AbstractAggregator):
    """Centered clipping (Karimireddy et al., 2021), with its centre carried as state.

    ``v_0 = m``; ``v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) min(1, tau / ||x_i - v_l||)``
    for ``L`` steps; the output ``v_L`` is also the new state, i.e. the next
    round's ``v_0`` (ByzFL: "the value of m used in the next call is the output of
    the previous call"). ``init(d, dtype)`` gives ``m``, or zeros for ``m=None``.
    Cost O(L n d).

    Differs from ByzFL: ByzFL's type check on ``m`` (``not ndarray or not Tensor``)
    rejects every ``m``; here any ``[d]`` array is accepted. Modules are immutable,
    so the eager ``rule(vectors)`` is one round from ``m``; carry the state through
    ``init``/``aggregate`` for the multi-round behaviour.
    """

    m: jax.Array | None = eqx.field(converter=_optional_vector, default=None)
    L: jax.Array = eqx.field(converter=int_array, default=1)
    tau: jax.Array = eqx.field(converter=float_array, default=100.0)

    def __check_init__(self):
        if self.m is not None and self.m.ndim < 1:
            raise component_error(self, f"m must be a vector [d], got shape {self.m.shape}")
        check_param(self, "L", self.L, lambda v: v >= 0, ">= 0")
        check_param(self, "tau", self.tau, lambda v: v >= 0, ">= 0")

    def init(self, d, dtype):
        if self.m is None:
            return jnp.zeros(d, dtype)
        if self.m.shape[-1] != d:
            raise component_error(self, f"m has {self.m.shape[-1]} coordinates, the vectors have d={d}")
        return self.m.astype(dtype)

    def aggregate(self, vectors, state, key, valid=None):
        tau = self.tau.astype(vectors.dtype)
        x, m, _, near = rows(vectors, valid)  # a non-finite row: weight 0 (its direction is undefined)
        weight = near.astype(vectors.dtype) / m

        def step(_, v):
            diff = x - v
            return v + weight @ (diff * clip_scale(jnp.linalg.norm(diff, axis=1), tau)[:, None])

        v = jax.lax.fori_loop(0, self.L, step, state)
        return v, v


class HuberMean(AbstractAggregator):
    """Huber-type robust mean by iteratively reweighted averaging (beyond ByzFL).

    From the coordinate-wise median ``z_0``, ``T`` steps of
    ``z_{t+1} = sum_i w_i x_i / sum_i w_i`` with Huber weights ``w_i = min(1, delta_t / r_i)``,
    ``r_i = ||x_i - z_t||`` and a scale-free threshold ``delta_t = delta * median_i r_i``
    (the M-estimator of location with Huber's loss on residual norms; Huber, 1964).
    Translation and scale equivariant. Cost O(n log^2 n d + T n d).
    """

    delta: jax.Array = eqx.field(converter=float_array, default=2.0)
    T: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_param(self, "delta", self.delta, lambda v: v > 0, "> 0")
        check_count(self, "T", self.T, 1)

    def aggregate(self, vectors, state, key, valid=None):
        z, _ = Median().aggregate(vectors, None, key, valid)
        vectors, _, present, near = rows(vectors, valid)
        delta = self.delta.astype(vectors.dtype)

        def step(_, z):  # a non-finite row is at distance +inf: weight 0, ranked last in the median
            r = jnp.where(near, jnp.linalg.norm(vectors - z, axis=1), jnp.inf)
            w = near * clip_scale(r, delta * _median(r, None if valid is None else present))
            return w @ vectors / jnp.sum(w)

        return jax.lax.fori_loop(0, self.T, step, z), state


class FLTrust(AbstractAggregator):
    """FLTrust-style trust scoring (Cao et al., NDSS 2021), beyond ByzFL.

    The trusted direction ``g_0`` is the input at row ``trusted`` (static): in
    byzjax the oracle puts the honest rows first, so row 0 is honest worker 0 --
    the worker whose data plays FLTrust's root dataset, as the server in PIGS.
    ``TS_i = relu(cos(x_i, g_0))``; output ``sum_i TS_i (||g_0|| / ||x_i||) x_i / sum_i TS_i``
    (the trusted row takes part with ``TS = 1``); zero inputs get ``TS = 0``, and a
    zero ``g_0`` gives the zero vector. Cost O(n d).
    """

    trusted: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        check_count(self, "trusted", self.trusted, 0)

    def check(self, n):
        check_index(self, "trusted", self.trusted, n)

    def aggregate(self, vectors, state, key, valid=None):
        vectors, _, _, near = rows(vectors, valid)  # zeroed rows get trust 0 (the trusted row must be present)
        norms = jnp.linalg.norm(vectors, axis=1)
        safe = jnp.where(norms > 0, norms, 1.0)
        ref = norms[self.trusted]
        trust = near * jax.nn.relu(vectors @ vectors[self.trusted] / (safe * jnp.where(ref > 0, ref, 1.0)))
        total = jnp.sum(trust)
        out = (trust * ref / safe) @ vectors / jnp.where(total > 0, total, 1.0)
        return out, state
