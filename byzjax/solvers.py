"""Inner solvers used by server-side proximal steps (PIGS, prox-AEG)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu


class InnerResult(NamedTuple):
    x: jax.Array
    iterations: jax.Array
    grad_norm: jax.Array  # ||grad fun(x)|| at the returned point


def lbfgs_minimize(fun, x0, *, tol, max_iter: int, memory: int = 20) -> InnerResult:
    """Minimise a smooth ``fun`` from ``x0`` with optax's L-BFGS (zoom line search).

    Stops when ``||grad fun|| < tol`` or after ``max_iter`` iterations; runs inside
    jit and vmap (a ``while_loop``; batched runs stop when all have converged).
    The authors used PyTorch L-BFGS (history 500, strong Wolfe, <= 2000 iterations);
    the prox term makes the inner problem well conditioned, so a short history
    reaches the same tolerance.
    """
    opt = optax.lbfgs(memory_size=memory)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state

    def cond(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    x, state = jax.lax.while_loop(cond, body, (x0, opt.init(x0)))
    return InnerResult(x, otu.tree_get(state, "count"), jnp.linalg.norm(jax.grad(fun)(x)))
