"""The paper's theory as an instrument: measured L, mu, delta, G, B, kappa; bounds, floors, rounds.

arXiv 2602.03329, the reduction to an inexact gradient oracle: a robust aggregate is an inexact gradient of the honest loss
``L_H(x) = (1/|H|) sum_{i in H} L_i(x)``,

    ||g_hat(x) - grad L_H(x)||^2 <= kappa G^2 + kappa B^2 ||grad L_H(x)||^2,

with ``kappa`` the rule's (f, kappa)-robustness coefficient and ``(G, B)`` the heterogeneity of the
honest gradients, ``(1/|H|) sum_i ||grad L_i(x) - grad L_H(x)||^2 <= G^2 + B^2 ||grad L_H(x)||^2``.
The error floors and rates of D-GD, D-NAG, PIGS and AEG follow when ``kappa B^2 < 1``.

This module measures every quantity of that statement:

- ``smoothness``, ``strong_convexity``: ``L`` and ``mu`` at a point, by power iteration on
  Hessian-vector products (forward-over-reverse, one ``jvp`` of ``grad`` per step: no ``d x d``
  Hessian is formed); ``similarity_delta``: ``delta = ||hessian(L_H - L_0)||`` (PIGS's similarity);
  ``final_constants``: ``L`` and ``mu`` at many points at once (runs' final parameters);
- ``reference_optimum``: ``x*`` and ``L* = min L_H`` by a converged float64 Newton-CG solve;
- ``fit_heterogeneity``: the smallest ``G^2`` for each ``B^2`` covering measured rounds;
- ``proven_kappa``: the rule's known ``kappa`` (Allouah et al., AISTATS 2023, arXiv 2302.01772, Table 1
  and their NNM lemma);
- ``trace_theory``: all per-run quantities of one trace (bound per round, fit, floor);
- ``oracle_error_bound``, ``predicted_floor_dgd``, ``predicted_rounds``, ``recommended_steps``;
- ``theory_probe``: all of the above for an experiment before running it (``TheoryProbe``).

The per-run functions take a trace's arrays (NumPy in, NumPy out); nothing here costs a
communication round of a run.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import ConfigError, concrete_values
from byzjax.aggregators import AbstractAggregator, Average, GeometricMedian, Krum, Median, SmoothedWeiszfeld, TrMean
from byzjax.preaggregators import NNM, Pipeline
from byzjax.problems import AbstractProblem

# ---------------------------------------------------------------------------------------------
# Measured constants at a point


def honest_loss(problem: AbstractProblem, shards):
    """``x -> L_H(x)``: the mean of the workers' local losses over ``shards`` (leading worker axis)."""
    return lambda x: jnp.mean(jax.vmap(problem.loss, in_axes=(None, 0))(x, shards))


def _power_iteration(matvec, v0, iters: int) -> jax.Array:
    """Rayleigh quotient ``v^T M v`` after ``iters`` normalised steps ``v <- M v / ||M v||``
    (the eigenvalue of largest magnitude of the symmetric ``M``, approached from below)."""

    def step(_, v):
        w = matvec(v)
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, iters, step, v0 / jnp.linalg.norm(v0))
    return v @ matvec(v)


def _power_iteration_to_tol(matvec, v0, iters: int, rtol, check: int = 10) -> jax.Array:
    """``_power_iteration`` stopped early: blocks of ``check`` normalised steps ``v <- M v / ||M v||``
    until the Rayleigh quotient ``r = v^T M v`` of the block's last step moved by at most ``rtol |r|``
    since the previous block's, or ``iters`` steps were taken. The quotient's error decreases
    geometrically, ``~ (lambda_2 / lambda_1)^(2k)``, so a block that changes it by ``epsilon`` leaves an
    error of about ``epsilon / (1 - (lambda_2 / lambda_1)^(2 check))``. Under ``vmap`` the loop runs until
    every row has stopped (a stopped row is frozen)."""

    def step(_, carry):
        v, _ = carry
        w = matvec(v)
        return w / jnp.linalg.norm(w), v @ w

    def block(state):
        v, r, _, k = state
        v, r_new = jax.lax.fori_loop(0, check, step, (v, r))
        return v, r_new, r, k + check

    def cond(state):
        _, r, r_old, k = state
        return (k < iters) & ~(jnp.abs(r - r_old) <= rtol * jnp.abs(r))

    v0 = v0 / jnp.linalg.norm(v0)
    nan = jnp.full((), jnp.nan, v0.dtype)
    _, r, _, _ = jax.lax.while_loop(cond, block, (v0, nan, nan, jnp.asarray(0, jnp.int32)))
    return r


def _hvp(loss, x):
    """``v -> hessian(loss)(x) v``: the gradient linearised once at ``x`` (``jax.linearize``), so each
    product is one tangent pass."""
    return jax.linearize(jax.grad(loss), x)[1]


def _power(matvec, v0, iters: int, rtol=None) -> jax.Array:
    """``_power_iteration`` (``iters`` steps), or with ``rtol`` ``_power_iteration_to_tol`` (stopped
    once the Rayleigh quotient moves by at most ``rtol`` relative over 10 steps)."""
    if rtol is None:
        return _power_iteration(matvec, v0, iters)
    return _power_iteration_to_tol(matvec, v0, iters, jnp.asarray(rtol, v0.dtype))


def smoothness(loss, x: jax.Array, key, iters: int = 100, rtol=None) -> jax.Array:
    """Largest Hessian eigenvalue ``L`` of ``loss`` at ``x`` (for a convex loss, its largest
    magnitude), by ``iters`` power steps (fewer with ``rtol``: ``_power``) from a random start drawn
    from ``key``. The step of D-GD must stay below ``2 / L`` (arXiv 2602.03329, the reduction to an
    inexact gradient oracle)."""
    return _power(_hvp(loss, x), jax.random.normal(key, x.shape, x.dtype), iters, rtol)


def strong_convexity(loss, x: jax.Array, key, iters: int = 300, L=None, rtol=None) -> jax.Array:
    """Smallest Hessian eigenvalue ``mu`` of ``loss`` at ``x``: ``L - lambda_max(L I - H)`` by power
    iteration on the shifted operator (slower to converge than ``smoothness`` when ``mu << L``;
    ``rtol``: as ``smoothness``)."""
    hvp = _hvp(loss, x)
    L = smoothness(loss, x, key, rtol=rtol) if L is None else L
    top = _power(lambda v: L * v - hvp(v), jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype),
                 iters, rtol)
    return L - top


def similarity_delta(problem: AbstractProblem, shards, x: jax.Array, key, iters: int = 200,
                     rtol: float | None = None) -> jax.Array:
    """``delta = ||hessian(L_H - L_0)(x)||_2``, PIGS's similarity constant (arXiv 2602.03329, the reduction to an inexact gradient oracle).

    ``L_0`` is honest worker 0's loss (the server's data). ``h = L_H - L_0`` may be indefinite, so
    ``delta = sqrt(lambda_max(M^2))`` with ``M = hessian(h)``: power iteration on ``v -> M (M v)``
    (two Hessian-vector products of ``h`` per step), which converges to the spectral norm whatever
    the signs of the extreme eigenvalues. ``iters`` steps, or with ``rtol`` fewer: stopped once the
    quotient moves by at most ``rtol`` (relative) over 10 steps (``_power_iteration_to_tol``).
    """
    shard0 = jax.tree.map(lambda a: a[0], shards)
    full = honest_loss(problem, shards)
    h = lambda z: full(z) - problem.loss(z, shard0)
    hvp = _hvp(h, x)
    top = _power(lambda v: hvp(hvp(v)), jax.random.normal(key, x.shape, x.dtype), iters, rtol)
    return jnp.sqrt(jnp.maximum(top, 0.0))


# ---------------------------------------------------------------------------------------------
# Exact reference optimum


class ReferenceOptimum(NamedTuple):
    """``x*``, ``L* = L_H(x*)`` and ``||grad L_H(x*)||`` (float64, on the host), with the solve's
    record: Newton iterations, Hessian-vector products, and whether ``||grad|| <= tol`` was reached."""

    x_star: np.ndarray  # [d]
    loss_star: float
    grad_norm: float
    newton_iters: int = 0
    cg_iters: int = 0  # Hessian-vector products of all the conjugate-gradient solves
    converged: bool = True  # ||grad L_H(x*)|| <= tol


def _to_float64(tree):
    """Every floating array leaf of ``tree`` as a float64 JAX array (integer leaves kept)."""

    def convert(a):
        if eqx.is_array_like(a) and not isinstance(a, (bool, int)):
            arr = np.asarray(a)
            if np.issubdtype(arr.dtype, np.floating):
                return jnp.asarray(arr, dtype=jnp.float64)
            return jnp.asarray(arr)
        return a

    return jax.tree.map(convert, tree)


@eqx.filter_jit
def _value_and_grad(problem, shards, x):
    """``(L_H(x), grad L_H(x))``, compiled once per problem structure."""
    return jax.value_and_grad(honest_loss(problem, shards))(x)


class _CGResult(NamedTuple):
    p: jax.Array  # [d] the approximate solution of H p = -g
    iters: jax.Array  # Hessian-vector products used
    relative_residual: jax.Array  # ||H p + g|| / ||g||
    curvature_ok: jax.Array  # False: a direction of non-positive or non-finite curvature was met


@eqx.filter_jit
def _newton_direction(problem, shards, x, g, max_cg: int) -> _CGResult:
    """``p ~ -H^{-1} g`` by conjugate gradients on Hessian-vector products of ``L_H`` at ``x``
    (``jax.linearize`` of the gradient: the forward pass at ``x`` is computed once per direction).

    Hestenes-Stiefel CG from ``p = 0`` (so ``r_0 = -g`` without a product), stopped when
    ``||r|| <= min(0.5, sqrt||g||) ||g||`` (the forcing term of inexact Newton: superlinear
    convergence, Dembo, Eisenstat & Steihaug, SIAM J. Numer. Anal. 1982), after ``max_cg``
    products, or at a direction ``d`` with ``d^T H d <= 0`` or non-finite (Steihaug's rule: the
    iterate before it is kept; at the first product that is ``p = -g``). The Hessian is only ever
    applied to the loop's own search direction, never to a vector known at compile time: XLA:CPU
    was seen to return NaN for the Hessian-vector product of a constant zero vector on large
    problems (``jax.scipy.sparse.linalg.cg`` computes ``H 0`` for its first residual, then stops
    at once on the NaN and returns ``p = 0``).
    """
    _, hvp = jax.linearize(jax.grad(honest_loss(problem, shards)), x)  # the primal pass once, not per product
    b = -g
    rs0 = b @ b
    target = jnp.square(jnp.minimum(0.5, jnp.sqrt(jnp.sqrt(rs0)))) * rs0

    def cond(state):
        _, _, _, rs, k, ok = state
        return (rs > target) & (k < max_cg) & ok

    def body(state):
        p, r, d, rs, k, _ = state
        hd = hvp(d)
        curvature = d @ hd
        ok = jnp.isfinite(curvature) & (curvature > 0) & jnp.all(jnp.isfinite(hd))
        alpha = jnp.where(ok, rs / jnp.where(ok, curvature, 1.0), 0.0)
        p_new = jnp.where(ok, p + alpha * d, jnp.where(k == 0, b, p))
        r_new = jnp.where(ok, r - alpha * hd, r)
        rs_new = r_new @ r_new
        d_new = r_new + (rs_new / rs) * d
        return p_new, r_new, d_new, rs_new, k + 1, ok

    init = (jnp.zeros_like(b), b, b, rs0, jnp.asarray(0, jnp.int32), jnp.asarray(True))
    p, _, _, rs, k, ok = jax.lax.while_loop(cond, body, init)
    return _CGResult(p, k, jnp.sqrt(rs / rs0), ok)


def reference_optimum(problem: AbstractProblem, shards, x0=None, *, tol: float = 1e-10, max_newton: int = 100,
                      max_cg: int = 1000) -> ReferenceOptimum:
    """``x* = argmin L_H`` and ``L* = L_H(x*)`` by a centralised Newton-CG solve in float64.

    For strongly convex problems (``LogisticRegression`` with ``lam > 0``, ``Quadratic``): the
    problem's arrays, the ``shards`` (the honest workers', leading worker axis) and ``x0`` (default:
    zeros) are converted to float64 and the solve runs inside ``jax.enable_x64(True)`` (a context:
    the global setting is restored after), so the result is float64 whatever precision the runs
    use. Each iteration solves ``H p = -grad L_H`` by conjugate gradients on Hessian-vector products
    (``_newton_direction``: at most ``max_cg`` of them, relative residual ``min(0.5, sqrt||grad||)``)
    and takes a backtracking step ``x + t p``, ``t = 1, 1/2, ...``, accepted on Armijo's decrease
    ``L_H(x + t p) <= L_H(x) + 1e-4 t grad^T p``, or, once loss differences fall below float64
    resolution near ``x*``, on a smaller gradient with a loss that did not rise by more than that
    resolution. It stops when ``||grad L_H(x)|| <= tol``; if that is not reached after ``max_newton``
    iterations (or no step decreases anything) it warns (``RuntimeWarning``, naming the gradient norm
    reached) and returns ``converged = False``. This is the reference of the gaps ``L_H(x_t) - L*``
    (the paper's ``L_ref``, the lowest loss seen, is an artefact at its own last round).
    """
    if tol <= 0 or max_newton < 1 or max_cg < 1:
        raise ConfigError(f"reference_optimum: need tol > 0, max_newton >= 1, max_cg >= 1, got tol={tol}, "
                          f"max_newton={max_newton}, max_cg={max_cg}")
    with jax.enable_x64(True):
        problem64, shards64 = _to_float64(problem), _to_float64(shards)
        x = jnp.zeros(problem.dim, jnp.float64) if x0 is None else jnp.asarray(np.asarray(x0), jnp.float64)
        if x.shape != (problem.dim,):
            raise ConfigError(f"reference_optimum: x0 must have shape ({problem.dim},), got {tuple(x.shape)}")
        value, g = _value_and_grad(problem64, shards64, x)
        newton, products = 0, 0
        for newton in range(1, max_newton + 1):
            gnorm = float(jnp.linalg.norm(g))
            if gnorm <= tol:
                newton -= 1
                break
            cg = _newton_direction(problem64, shards64, x, g, max_cg)
            products += int(cg.iters)
            p = cg.p
            if not (bool(jnp.all(jnp.isfinite(p))) and float(g @ p) < 0):
                p = -g  # cannot happen for a positive definite Hessian; steepest descent keeps the solve going
            slope, t, v0 = float(g @ p), 1.0, float(value)
            resolution = 64 * np.finfo(np.float64).eps * max(1.0, abs(v0))
            while t >= 1e-12:
                v_new, g_new = _value_and_grad(problem64, shards64, x + t * p)
                v_new_f = float(v_new)
                if v_new_f <= v0 + 1e-4 * t * slope or (
                        v_new_f <= v0 + resolution and float(jnp.linalg.norm(g_new)) < (1.0 - 1e-4 * t) * gnorm):
                    break
                t *= 0.5
            if t < 1e-12:
                break  # no step along p decreases the loss or the gradient: the solve is stuck
            x, value, g = x + t * p, v_new, g_new
        gnorm = float(jnp.linalg.norm(g))
        converged = gnorm <= tol
        if not converged:
            warnings.warn(f"reference_optimum: the float64 Newton-CG solve stopped at ||grad L_H|| = {gnorm:.3e} > "
                          f"tol = {tol:.1e} after {newton} Newton iterations and {products} Hessian-vector products "
                          f"(raise max_newton or max_cg); L* = {float(value):.12g} is then only an upper bound",
                          RuntimeWarning, stacklevel=2)
        return ReferenceOptimum(np.asarray(x, np.float64), float(value), gnorm, newton, products, converged)


# ---------------------------------------------------------------------------------------------
# Per-run theory on a trace's arrays (NumPy)


class HeterogeneityFit(NamedTuple):
    """``G^2(B^2) = max_t (spread_t - B^2 ||grad_t||^2)^+`` on a grid of ``B^2`` (arrays ``[K]``)."""

    b2: np.ndarray  # [K] the B^2 grid, increasing, b2[0] = 0
    g2: np.ndarray  # [K] the smallest G^2 covering every round at that B^2

    @property
    def g2_at_b0(self) -> float:
        """``G^2`` with ``B = 0``: the largest spread of the rounds."""
        return float(self.g2[0])

    def best_for_floor(self, kappa: float) -> tuple[float, float]:
        """The grid pair ``(G^2, B^2)`` with ``kappa B^2 < 1`` minimising the D-GD floor
        ``kappa G^2 / (1 - kappa B^2)`` (the tightest floor these rounds certify)."""
        ok = kappa * self.b2 < 1
        score = np.where(ok, kappa * self.g2 / np.where(ok, 1 - kappa * self.b2, 1.0), np.inf)
        i = int(np.argmin(score)) if np.any(ok) else 0
        return float(self.g2[i]), float(self.b2[i])


def fit_heterogeneity(spread, grad_norm_sq, b2=None, num: int = 65) -> HeterogeneityFit:
    """The (G, B)-heterogeneity that covers every measured round (arXiv 2602.03329, its setting).

    A round ``t`` with ``spread_t = (1/|H|) sum_i ||grad L_i(x_t) - grad L_H(x_t)||^2`` and
    ``||grad L_H(x_t)||^2`` is covered by ``(G, B)`` iff ``spread_t <= G^2 + B^2 ||grad_t||^2``; for
    each ``B^2`` the smallest covering ``G^2`` is the 1-D linear program's value
    ``G^2(B^2) = max(0, max_t (spread_t - B^2 ||grad_t||^2))`` (convex, piecewise linear, decreasing).
    ``b2``: the grid (default ``num`` points from 0 to ``max_t spread_t / ||grad_t||^2``, where
    ``G^2`` reaches its smallest value). Non-finite rounds are ignored.
    """
    s, g = np.asarray(spread, np.float64).reshape(-1), np.asarray(grad_norm_sq, np.float64).reshape(-1)
    if s.shape != g.shape:
        raise ConfigError(f"fit_heterogeneity: spread and grad_norm_sq must have the same length, got {s.size} "
                          f"and {g.size}")
    keep = np.isfinite(s) & np.isfinite(g)
    s, g = s[keep], g[keep]
    if not s.size:
        raise ConfigError("fit_heterogeneity: no finite round (spread, grad_norm_sq) to fit")
    if b2 is None:
        ratios = s[g > 0] / g[g > 0]
        top = float(ratios.max()) if ratios.size else 0.0
        b2 = np.linspace(0.0, top, num) if top > 0 else np.zeros(1)
    b2 = np.asarray(b2, np.float64).reshape(-1)
    if np.any(b2 < 0) or np.any(np.diff(b2) < 0):
        raise ConfigError(f"fit_heterogeneity: the B^2 grid must be non-negative and increasing, got {b2.tolist()}")
    g2 = np.maximum(0.0, np.max(s[None, :] - b2[:, None] * g[None, :], axis=1))
    return HeterogeneityFit(b2, g2)


def trace_theory(metrics: dict, kappa: float | None, mu: float) -> dict:
    """The per-run theory of one trace (``metrics``: name -> ``[T]``, with ``error``, ``spread``,
    ``grad_norm`` and ``kappa_hat``), for summary.csv and the diagnostic figure.

    ``kappa``: the rule's ``proven_kappa`` (None: the largest finite ``kappa_hat`` of the run is
    used, ``kappa_source = "measured"``); ``mu``: the strong convexity used in the floor. Returns
    ``G2_b0`` (``G^2`` at ``B = 0``), the pair ``(G2, B2)`` of ``fit_heterogeneity`` giving the
    tightest D-GD floor, ``kappa_b2`` and ``kappa_b2_lt_1``, ``floor_dgd``, ``kappa_hat_max``, and per
    round ``error_bound`` = ``min`` over the fitted pairs of ``kappa (G^2 + B^2 ||grad_t||^2)`` with
    ``bound_ratio = error_t^2 / error_bound_t`` (<= 1 wherever the proven kappa holds).
    """
    error = np.asarray(metrics["error"], np.float64)
    gn2 = np.asarray(metrics["grad_norm"], np.float64) ** 2
    fit = fit_heterogeneity(metrics["spread"], gn2)
    kh = np.asarray(metrics["kappa_hat"], np.float64)
    kappa_hat_max = float(np.nanmax(kh)) if np.any(np.isfinite(kh)) else math.nan
    used, source = (kappa, "proven") if kappa is not None else (kappa_hat_max, "measured")
    used = 0.0 if not np.isfinite(used) else float(used)
    G2, B2 = fit.best_for_floor(used)
    with np.errstate(divide="ignore", invalid="ignore"):  # a diverged run's rounds: inf * 0 is nan, as reported
        bound = np.min(oracle_error_bound(used, fit.g2[:, None], fit.b2[:, None], gn2[None, :]), axis=0)
        ratio = np.where(bound > 0, error**2 / np.where(bound > 0, bound, 1.0), np.where(error > 0, np.inf, 0.0))
    return {"kappa": used, "kappa_source": source, "kappa_hat_max": kappa_hat_max, "G2_b0": fit.g2_at_b0,
            "G2": G2, "B2": B2, "kappa_b2": used * B2, "kappa_b2_lt_1": bool(used * B2 < 1),
            "floor_dgd": float(predicted_floor_dgd(used, G2, B2, mu)), "error_bound": bound, "bound_ratio": ratio}


def oracle_error_bound(kappa, G2, B2, grad_norm_sq):
    """The right side of the oracle-error bound, ``kappa G^2 + kappa B^2 ||grad L_H||^2``
    (arXiv 2602.03329, the reduction to an inexact gradient oracle); NumPy broadcasting over rounds."""
    return kappa * (np.asarray(G2, np.float64) + np.asarray(B2, np.float64) * np.asarray(grad_norm_sq, np.float64))


def predicted_floor_dgd(kappa, G2, B2, mu):
    """D-GD's error floor on ``L_H(x) - L*`` with step ``1/L``: ``kappa G^2 / (2 mu (1 - kappa B^2))``,
    ``inf`` when ``kappa B^2 >= 1`` (no guarantee), arXiv 2602.03329, the reduction to an inexact gradient oracle.

    From ``L_H(x+) <= L_H(x) - (1 - kappa B^2) ||grad||^2 / (2L) + kappa G^2 / (2L)`` and
    ``||grad||^2 >= 2 mu (L_H - L*)``: the gap contracts by ``1 - (1 - kappa B^2) mu / L`` per
    round towards this value. An upper bound on the limit, attained when the bias is constant
    and lies along the Hessian's ``mu`` eigenvector.
    """
    kappa, G2, B2, mu = (np.asarray(a, np.float64) for a in (kappa, G2, B2, mu))
    relative = kappa * B2
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = kappa * G2 / (2.0 * mu * (1.0 - relative))
    return np.where(relative < 1, floor, np.inf)


def predicted_rounds(L: float, mu: float, delta: float | None = None, kappa_b2: float = 0.0,
                     log_factor: float = 1.0) -> dict[str, float]:
    """Communication rounds each method needs to reach its floor, up to constants and the
    ``log(1/eps)`` factor (``log_factor``, e.g. ``log(initial gap / floor)``; default 1):
    D-GD ``L / ((1 - kappa B^2) mu)``, D-NAG ``sqrt(L/mu)``, PIGS ``delta/mu``, AEG ``2 sqrt(L/mu)``
    (two rounds per iteration, gradient slow step), prox-AEG ``2 sqrt(delta/mu)``
    (arXiv 2602.03329, the reduction to an inexact gradient oracle). All ``inf`` when ``kappa B^2 >= 1``; the similarity methods
    are left out when ``delta`` is None. D-NAG's rate also needs ``kappa B^2`` of order
    ``sqrt(mu/L)`` or smaller; the estimate does not check it.
    """
    if not kappa_b2 < 1:
        rounds = dict.fromkeys(("DGD", "DNAG", "AEG") + (("PIGS", "prox-AEG") if delta is not None else ()), math.inf)
        return rounds
    out = {"DGD": L / ((1.0 - kappa_b2) * mu), "DNAG": math.sqrt(L / mu), "AEG": 2.0 * math.sqrt(L / mu)}
    if delta is not None:
        out |= {"PIGS": max(delta, mu) / mu, "prox-AEG": 2.0 * math.sqrt(max(delta, mu) / mu)}
    return {k: log_factor * v for k, v in out.items()}


def recommended_steps(L: float, mu: float, delta: float | None = None) -> dict[str, dict[str, float]]:
    """The step sizes theory recommends (arXiv 2602.03329, the reduction to an inexact gradient oracle and its algorithms; constants of the
    standard analyses): D-GD ``lr = 1/L``; D-NAG ``lr = 1/L``, ``momentum = (sqrt L - sqrt mu) /
    (sqrt L + sqrt mu)``; PIGS ``eta = 1/delta``; AEG ``theta = 1/L``, ``gamma = mu``; prox-AEG
    ``theta = 1/delta``, ``gamma = mu``."""
    rL, rmu = math.sqrt(L), math.sqrt(mu)
    steps = {"DGD": {"lr": 1.0 / L}, "DNAG": {"lr": 1.0 / L, "momentum": (rL - rmu) / (rL + rmu)},
             "AEG": {"theta": 1.0 / L, "gamma": mu}}
    if delta is not None and delta > 0:
        steps |= {"PIGS": {"eta": 1.0 / delta}, "prox-AEG": {"theta": 1.0 / delta, "gamma": mu}}
    return steps


# ---------------------------------------------------------------------------------------------
# Proven kappa of the rules


def _declared(value) -> int | None:
    """The single concrete integer of a rule's ``f`` field, or None (traced or a batch of values)."""
    values = concrete_values(value)
    return int(values[0]) if values is not None and values.size == 1 else None


def _rule_kappa(rule: AbstractAggregator, n: int, f: int) -> float | None:
    """The upper bound on ``kappa`` of one rule without pre-aggregation (``proven_kappa``'s table),
    with ``r = f / (n - 2f)``; None where no bound is known (or the rule's declared ``f`` is not ``f``)."""
    r = f / (n - 2 * f)
    if type(rule) is Average:
        return 0.0 if f == 0 else None
    if type(rule) is TrMean:
        return 6.0 * r * (1.0 + r) if _declared(rule.f) == f else None
    if type(rule) is Krum:
        return 6.0 * (1.0 + r) if _declared(rule.f) == f else None
    if type(rule) in (Median, GeometricMedian, SmoothedWeiszfeld):
        return 4.0 * (1.0 + r) ** 2
    return None


def proven_kappa(aggregator: AbstractAggregator, n: int, f: int) -> float | None:
    """The (f, kappa)-robustness coefficient proven for ``aggregator`` on ``n`` inputs of which ``f``
    are arbitrary, or None when none is known here.

    Definition (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A Recipe
    for Optimal Byzantine ML under Heterogeneity", AISTATS 2023, arXiv 2302.01772, their definition of
    (f, kappa)-robustness): ``F`` is (f, kappa)-robust if for all inputs ``x_1..x_n`` and every set
    ``S`` of ``n - f`` of them, ``||F(x_1..x_n) - mean_S||^2 <= kappa (1/|S|) sum_{i in S}
    ||x_i - mean_S||^2``. Every rule has ``kappa >= f / (n - 2f)`` (their lower bound), so none is
    robust for ``n <= 2f``. Upper bounds used here, all from that paper and all needing ``n > 2f``
    (``r = f / (n - 2f)``):

    - coordinate-wise trimmed mean (``TrMean``, trimming exactly ``f`` values at each end of every
      coordinate): ``6 r (1 + r)`` (their Table 1, CWTM); e.g. ``n = 25, f = 5``: ``8/3``;
    - Krum (``Krum`` with the true ``f``; its score sums the squared distances to the ``n - f``
      nearest inputs, itself included, as in that paper and ByzFL): ``6 (1 + r)`` (Table 1, Krum);
      ``n = 25, f = 5``: ``8``;
    - coordinate-wise median (``Median``): ``4 (1 + r)^2`` (Table 1, CWMed); ``n = 25, f = 5``: ``64/9``;
    - geometric median: ``4 (1 + r)^2`` (Table 1, GM), for the exact minimiser of
      ``sum_i ||y - x_i||``;
    - nearest-neighbour mixing then a rule of coefficient ``kappa`` (``Pipeline([NNM(f)], rule)``,
      each input replaced by the mean of its ``n - f`` nearest inputs, itself included): ``8 f /
      (n - f) (kappa + 1)`` (their NNM lemma: NNM composed with any (f, kappa)-robust rule is (f, 8f/(n-f)
      (kappa + 1))-robust); with TrMean: ``22/3`` at ``n = 25, f = 5`` (Experiment A's f = 5 cells),
      ``962/1805`` at ``n = 21, f = 1`` (its f = 1 cells);
    - ``Average``: 0 at ``f = 0``, not robust otherwise.

    The constants are cited from that paper's Table 1 and NNM lemma; its text could not be retrieved
    in this project's environment to recheck them line by line, so they are as cited, not re-derived.
    They are upper bounds: the property test (tests/test_theory.py) checks that the measured error
    never exceeds them on random heterogeneous inputs with up to ``f`` arbitrary rows.

    ``SmoothedWeiszfeld`` (run to a tolerance from the mean) and ``GeometricMedian`` (``T`` smoothed
    steps from 0) approximate the geometric median, so for them the value is the target of the
    approximation rather than a proof about the computed vector. A rule whose declared ``f`` is
    not the given ``f`` (or is a batch of values), another pre-aggregation, or more than one, gets None.
    """
    n, f = int(n), int(f)
    if f < 0 or n <= 2 * f:
        return None
    if isinstance(aggregator, Pipeline):
        if not aggregator.pre_aggs:
            return proven_kappa(aggregator.agg, n, f)
        if len(aggregator.pre_aggs) != 1 or type(aggregator.pre_aggs[0]) is not NNM:
            return None
        if _declared(aggregator.pre_aggs[0].f) != f:
            return None
        inner = _rule_kappa(aggregator.agg, n, f)
        return None if inner is None else 8.0 * f / (n - f) * (inner + 1.0)
    return _rule_kappa(aggregator, n, f)


# ---------------------------------------------------------------------------------------------
# The probe before a run


@dataclasses.dataclass(frozen=True)
class TheoryProbe:
    """What theory predicts for an experiment before it runs (``theory_probe``)."""

    n: int
    f: int
    L_x0: float
    mu_x0: float
    L_star: float  # L at x*
    mu_star: float  # mu at x*
    delta: float  # max of delta at x0 and at x*
    loss_star: float  # L* = min L_H
    grad_norm_star: float  # ||grad L_H(x*)|| of the reference solve
    probe_spread: tuple[float, ...]  # spread at the probe points x0 + s (x* - x0)
    probe_grad_norm_sq: tuple[float, ...]  # ||grad L_H||^2 there
    probe_kappa_hat: tuple[float, ...]  # error^2 / spread of the oracle (with its attack) there
    G2_b0: float  # G^2 at B^2 = 0
    G2: float  # the pair (G^2, B^2) giving the tightest D-GD floor for kappa
    B2: float
    kappa: float | None  # the rule's proven kappa (None: unknown)
    kappa_used: float  # the proven kappa, or the largest probed kappa_hat when unknown
    kappa_source: str  # "proven" or "probed"
    floor_dgd: float  # kappa G^2 / (2 mu (1 - kappa B^2)), mu = min(mu_x0, mu_star)
    steps: dict  # method -> {parameter: value}
    rounds: dict  # method -> predicted rounds (up to log factors)

    @property
    def kappa_b2(self) -> float:
        return self.kappa_used * self.B2

    @property
    def ranking(self) -> list[str]:
        """Methods by predicted rounds, fastest first."""
        return sorted(self.rounds, key=lambda k: self.rounds[k])

    def to_lines(self) -> list[str]:
        """Human-readable lines, one quantity per line (what ``byzjax theory CONFIG`` prints)."""
        kappa = "unknown" if self.kappa is None else f"{self.kappa:.4g}"
        lines = [
            f"workers n = {self.n}, Byzantine f = {self.f}",
            f"L  at x0 = {self.L_x0:.4g}, at x* = {self.L_star:.4g}",
            f"mu at x0 = {self.mu_x0:.4g}, at x* = {self.mu_star:.4g}",
            f"delta = ||hess(L_H - L_0)|| = {self.delta:.4g}",
            f"L* = {self.loss_star:.12g} (||grad L_H(x*)|| = {self.grad_norm_star:.2e})",
            f"G^2 at B^2 = 0: {self.G2_b0:.4g}; tightest pair for the floor: G^2 = {self.G2:.4g}, B^2 = {self.B2:.4g}",
            f"proven kappa = {kappa}; probed kappa_hat = "
            + ", ".join(f"{k:.3g}" for k in self.probe_kappa_hat),
            f"kappa B^2 = {self.kappa_b2:.4g} ({'< 1' if self.kappa_b2 < 1 else '>= 1: no guarantee'}; "
            f"kappa {self.kappa_source})",
            f"predicted D-GD floor kappa G^2 / (2 mu (1 - kappa B^2)) = {self.floor_dgd:.4g}",
        ]
        for method, params in self.steps.items():
            lines.append(f"step {method}: " + ", ".join(f"{k} = {v:.4g}" for k, v in params.items()))
        lines.append("predicted rounds (up to log factors): "
                     + ", ".join(f"{m} {self.rounds[m]:.4g}" for m in self.ranking))
        lines.append("predicted ranking: " + " < ".join(self.ranking))
        return lines


@eqx.filter_jit
def constants_at(problem, shards, x, key, iters: int = 300, rtol: float = 1e-6):
    """``(L, mu, delta)`` of ``L_H`` at ``x`` (``shards``: the honest workers'): the largest and
    smallest Hessian eigenvalues (``_constants_at_points``; ``mu`` the problem's ``exact_mu`` where
    its form gives it) and ``similarity_delta``, each a power iteration on Hessian-vector products
    stopped once its Rayleigh quotient moves by at most ``rtol`` (relative) over 10 steps, or at
    ``iters`` steps (``_power_iteration_to_tol``); compiled once per problem structure."""
    L, mu = _constants_at_points(problem, shards, x[None], key, iters, jnp.asarray(rtol, x.dtype))
    return L[0], mu[0], similarity_delta(problem, shards, x, key, iters, rtol)


def optimum_and_constants(problem: AbstractProblem, shards, x0: jax.Array, key, iters: int = 300):
    """``(ref, (L, mu, delta) at x0, (L, mu, delta) at x*)``: the float64 ``reference_optimum`` from
    ``x0`` and ``constants_at`` both points (key ``fold_in(key, 7)``), as floats; what ``theory_probe``
    and the runner's per-instance theory measure."""
    ref = reference_optimum(problem, shards, x0)
    k = jax.random.fold_in(key, 7)
    at = [tuple(float(v) for v in constants_at(problem, shards, x, k, iters))
          for x in (x0, jnp.asarray(ref.x_star, x0.dtype))]
    return ref, at[0], at[1]


FINAL_BLOCK = 16
"""The most points ``final_constants`` measures in one compiled call (a block is padded to a power
of two up to this, so few shapes are ever compiled)."""


@eqx.filter_jit
def _constants_at_points(problem, shards, xs, key, iters: int, rtol):
    """``(L [R], mu [R])`` of ``L_H`` at every row of ``xs`` ``[R, d]``: ``smoothness`` and
    ``strong_convexity`` (or the problem's ``exact_mu``) of ``constants_at``, vmapped over the rows,
    with the same start vectors for every row (drawn from ``key`` as ``constants_at`` draws them),
    each power iteration stopped once converged to ``rtol`` (``_power_iteration_to_tol``, at most
    ``iters`` steps). Each estimator linearises the gradient once per point (``_hvp``), so each power
    step costs one tangent pass; vmapped, the ``R`` tangents go through the data as one matrix product."""
    loss = honest_loss(problem, shards)
    exact = problem.exact_mu()

    def one(x):
        L = smoothness(loss, x, key, iters, rtol)
        mu = strong_convexity(loss, x, key, iters, L=L, rtol=rtol) if exact is None else jnp.asarray(exact, L.dtype)
        return L, mu

    return jax.vmap(one)(xs)


def constant_hessian_constants(problem: AbstractProblem, shards) -> tuple[float, float] | None:
    """``(L, mu)`` of ``L_H`` in closed form when its Hessian is the same at every point
    (``AbstractProblem.constant_hessian``, e.g. ``Quadratic``'s ``A = mean_i A_i``), else None:
    ``L = lambda_max(A)`` and ``mu = lambda_min(A)`` (NumPy float64 ``eigvalsh``), exact at every point."""
    hessian = problem.constant_hessian(shards)
    if hessian is None:
        return None
    eig = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
    return float(eig[-1]), float(eig[0])


def final_constants(problem: AbstractProblem, shards, xs, key, iters: int = 300,
                    rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(L [R], mu [R])`` of ``L_H`` at each of ``R`` points ``xs`` ``[R, d]`` (runs' final
    parameters), as float64 NumPy arrays, with the estimators of ``constants_at`` (same ``key``,
    power iteration on Hessian-vector products from the same start vector; ``mu`` the problem's
    ``exact_mu`` where it declares one, e.g. ``lam`` for ``LogisticRegression``), each stopped at
    ``iters`` steps or earlier, once its Rayleigh quotient moves by at most ``rtol`` (relative) over
    10 steps (``_power_iteration_to_tol``: on Experiment A's logistic problems the quotient settles to
    float32 resolution in 75-100 steps, so this spares most of ``constants_at``'s 300).

    A point with a non-finite coordinate gets ``nan`` for both (a diverged run), without a
    measurement. A problem whose Hessian is constant (``constant_hessian_constants``: ``Quadratic``)
    gets its closed form at every finite point, with no power step. Otherwise the finite points are
    measured in blocks of at most ``FINAL_BLOCK`` (``_constants_at_points``: one vmapped, jitted
    power iteration per block, padded by repeating its first point to a power of two, so a grid
    compiles a few block shapes at most); ``shards``: the honest workers' (leading worker axis).
    """
    xs = np.asarray(xs)
    if xs.ndim != 2 or xs.shape[1] != problem.dim:
        raise ConfigError(f"final_constants: xs must have shape [R, {problem.dim}], got {list(xs.shape)}")
    R = xs.shape[0]
    L, mu = np.full(R, np.nan), np.full(R, np.nan)
    finite = np.flatnonzero(np.all(np.isfinite(xs), axis=1))
    closed = constant_hessian_constants(problem, shards)
    if closed is not None:
        L[finite], mu[finite] = closed
        return L, mu
    for start in range(0, finite.size, FINAL_BLOCK):
        rows = finite[start:start + FINAL_BLOCK]
        width = 1 << (rows.size - 1).bit_length()
        block = np.concatenate([xs[rows], np.repeat(xs[rows[:1]], width - rows.size, axis=0)])
        Lb, mub = _constants_at_points(problem, shards, jnp.asarray(block), key, int(iters),
                                       jnp.asarray(rtol, block.dtype))
        L[rows], mu[rows] = np.asarray(Lb, np.float64)[: rows.size], np.asarray(mub, np.float64)[: rows.size]
    return L, mu


@eqx.filter_jit
def _probe_point(oracle, shards, x, key):
    """``(spread, ||grad L_H||^2, error^2)`` of one oracle round at ``x`` (from a fresh state)."""
    out, _ = oracle(x, shards, oracle.init(x.dtype), key)
    spread = jnp.mean(jnp.sum((out.honest_grads - out.honest_grad) ** 2, axis=1))
    return spread, jnp.sum(out.honest_grad ** 2), out.error ** 2


def theory_probe(experiment, data, key, probes: int = 3, iters: int = 300) -> TheoryProbe:
    """The theory's predictions for ``experiment`` on ``data`` before running it.

    ``x0`` is the run's initial point (``experiment.x0``, else ``problem.init(fold_in(key, 0))`` as
    ``run``); ``x*`` the float64 ``reference_optimum``. ``L`` and ``mu`` (``iters`` power steps) at
    both, ``delta`` the larger of ``similarity_delta`` at both; ``(G, B)`` fitted on ``probes``
    points ``x0 + s (x* - x0)``, ``s`` in ``linspace(0, 1, probes)``, where one oracle round each
    (the experiment's aggregator and attack, fresh state) also gives ``kappa_hat = error^2 /
    spread``. The floor uses the rule's proven kappa (``proven_kappa``; else the largest probed
    ``kappa_hat``, marked "probed"), the ``(G^2, B^2)`` pair minimising it, and ``mu = min(mu_x0,
    mu_star)``; steps from ``recommended_steps(max L, mu, delta)``; rounds from ``predicted_rounds``.
    """
    if probes < 2:
        raise ConfigError(f"theory_probe: probes must be >= 2 (x0 and x*), got {probes}")
    oracle, problem = experiment.oracle, experiment.problem
    shards = data.shards
    oracle.check_data(shards)
    x0 = problem.init(jax.random.fold_in(key, 0)) if experiment.x0 is None else experiment.x0
    ref, (L0, mu0, d0), (Ls, mus, ds) = optimum_and_constants(problem, shards, x0, key, iters)
    x_star = jnp.asarray(ref.x_star, x0.dtype)
    spread, gn2, err2 = [], [], []
    for i, s in enumerate(np.linspace(0.0, 1.0, probes)):
        values = _probe_point(oracle, shards, x0 + s * (x_star - x0), jax.random.fold_in(key, 100 + i))
        for acc, v in zip((spread, gn2, err2), values):
            acc.append(float(v))
    kappa_hat = tuple(e / s if s > 0 else math.nan for e, s in zip(err2, spread))
    fit = fit_heterogeneity(spread, gn2)
    kappa = proven_kappa(oracle.aggregator, oracle.n, oracle.n_byz)
    finite = [k for k in kappa_hat if np.isfinite(k)]
    kappa_used, source = (kappa, "proven") if kappa is not None else (max(finite, default=0.0), "probed")
    G2, B2 = fit.best_for_floor(kappa_used)
    mu, L, delta = min(mu0, mus), max(L0, Ls), max(d0, ds)
    return TheoryProbe(
        n=oracle.n, f=oracle.n_byz, L_x0=L0, mu_x0=mu0, L_star=Ls, mu_star=mus, delta=delta,
        loss_star=ref.loss_star, grad_norm_star=ref.grad_norm, probe_spread=tuple(spread),
        probe_grad_norm_sq=tuple(gn2), probe_kappa_hat=kappa_hat, G2_b0=fit.g2_at_b0, G2=G2, B2=B2,
        kappa=kappa, kappa_used=float(kappa_used), kappa_source=source,
        floor_dgd=float(predicted_floor_dgd(kappa_used, G2, B2, mu)),
        steps=recommended_steps(L, mu, delta), rounds=predicted_rounds(L, mu, delta, kappa_used * B2))


# ---------------------------------------------------------------------------------------------
# The attacked fixed point


class AttackedFixedPoint(NamedTuple):
    """A zero of the attacked oracle ``g_hat`` (``attacked_fixed_point``), on the host."""

    x: np.ndarray  # [d] the last iterate
    residual: float  # ||g_hat(x)|| at the last query
    loss: float  # L_H(x) at the last query
    residuals: np.ndarray  # [iters] ||g_hat|| at every query
    losses: np.ndarray  # [iters] L_H at every query
    distances: np.ndarray  # [iters] ||y_t - track|| of every query point (nan without ``track``)


@eqx.filter_jit
def _fixed_point_scan(oracle, shards, x, key, step, momentum, track, iters: int):
    """``iters`` oracle rounds of ``y_t = x_t + momentum (x_t - x_{t-1})``, ``x_{t+1} = y_t - step
    g_hat(y_t)`` (the oracle's state carried, round keys ``fold_in(key, t)``)."""

    def body(carry, t):
        x, prev, state, _ = carry
        y = x + momentum * (x - prev)
        out, state = oracle(y, shards, state, jax.random.fold_in(key, t))
        dist = jnp.linalg.norm(y - track) if track is not None else jnp.full((), jnp.nan, x.dtype)
        return (y - step * out.g_hat, x, state, y), (jnp.linalg.norm(out.g_hat), out.honest_loss, dist)

    (_, _, _, last), (res, loss, dist) = jax.lax.scan(body, (x, x, oracle.init(x.dtype), x), jnp.arange(iters))
    return last, res, loss, dist


def attacked_fixed_point(experiment, data, key, *, step: float, iters: int = 2000, momentum: float = 0.0,
                         x_start=None, track=None) -> AttackedFixedPoint:
    """The point the attacked oracle drives gradient methods to: a zero of ``g_hat(x)``.

    A robust aggregate under attack is ``g_hat(x) = grad L_H(x) + e(x)`` with a bias ``e`` that the
    attack keeps as large as the rule allows (arXiv 2602.03329, the reduction to an inexact gradient
    oracle); D-GD ``x <- x - step g_hat(x)`` stops where ``g_hat = 0``, i.e. ``grad L_H(x) = -e(x)``,
    not at ``x*``. With ``||e||^2 <= kappa G^2 + kappa B^2 ||grad L_H||^2`` and ``kappa B^2 < 1`` such a
    point has ``||grad L_H||^2 <= kappa G^2 / (1 - kappa B^2)``, so its gap is at most
    ``predicted_floor_dgd``; every method whose iterates converge converges to a zero of ``g_hat``.

    Found by iterating the experiment's oracle (its aggregator, attack and data; the oracle's state
    carried) ``iters`` times from ``x_start`` (default: the run's initial point, ``experiment.x0`` or
    ``problem.init(fold_in(key, 0))``): ``y_t = x_t + momentum (x_t - x_{t-1})``, ``x_{t+1} = y_t -
    step g_hat(y_t)`` (``momentum = 0``: D-GD; a heavy momentum reaches a point of small residual in
    far fewer rounds when ``mu << L``). Returns the last query point, ``||g_hat||`` and ``L_H`` at
    every query (check ``residual``: a fixed point only when it is small next to ``||g_hat(x_start)||``),
    and ``||y_t - track||`` per query when ``track`` (a point, e.g. a previous fixed point) is given.
    """
    if not (step > 0 and iters >= 1 and 0 <= momentum < 1):
        raise ConfigError(f"attacked_fixed_point: need step > 0, iters >= 1, 0 <= momentum < 1, got step={step}, "
                          f"iters={iters}, momentum={momentum}")
    oracle, problem = experiment.oracle, experiment.problem
    oracle.check_data(data.shards)
    if x_start is None:
        x_start = problem.init(jax.random.fold_in(key, 0)) if experiment.x0 is None else experiment.x0
    x_start = jnp.asarray(x_start)
    dtype = x_start.dtype
    track = None if track is None else jnp.asarray(track, dtype)
    x, res, loss, dist = _fixed_point_scan(oracle, data.shards, x_start, key, jnp.asarray(step, dtype),
                                           jnp.asarray(momentum, dtype), track, int(iters))
    res, loss, dist = (np.asarray(a, np.float64) for a in (res, loss, dist))
    return AttackedFixedPoint(np.asarray(x, np.float64), float(res[-1]), float(loss[-1]), res, loss, dist)
