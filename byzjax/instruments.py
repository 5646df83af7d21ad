"""Measured constants of a problem instance, the quantities the paper's bounds are stated in.

``smoothness`` and ``strong_convexity`` estimate the extreme eigenvalues ``L`` and ``mu`` of the
Hessian of the honest loss ``L_H(x) = (1/|H|) sum_i L_i(x)`` at a point (PAPER.md section 2:
the step of D-GD must stay below ``2 / L``) by power iteration on Hessian-vector products
(forward-over-reverse, one ``jvp`` of ``grad`` per step: no ``d x d`` Hessian is formed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax.problems import AbstractProblem


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


def _hvp(loss, x):
    grad = jax.grad(loss)
    return lambda v: jax.jvp(grad, (x,), (v,))[1]


def smoothness(loss, x: jax.Array, key, iters: int = 100) -> jax.Array:
    """Largest Hessian eigenvalue ``L`` of ``loss`` at ``x`` (for a convex loss, its largest
    magnitude), by ``iters`` power steps from a random start drawn from ``key``."""
    return _power_iteration(_hvp(loss, x), jax.random.normal(key, x.shape, x.dtype), iters)


def strong_convexity(loss, x: jax.Array, key, iters: int = 300, L=None) -> jax.Array:
    """Smallest Hessian eigenvalue ``mu`` of ``loss`` at ``x``: ``L - lambda_max(L I - H)`` by power
    iteration on the shifted operator (slower to converge than ``smoothness`` when ``mu << L``)."""
    hvp = _hvp(loss, x)
    L = smoothness(loss, x, key) if L is None else L
    top = _power_iteration(lambda v: L * v - hvp(v), jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype),
                           iters)
    return L - top
