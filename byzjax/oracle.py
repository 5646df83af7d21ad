"""One communication round: the robust (inexact) gradient oracle of PAPER.md section 2.

``g_hat(x) = F(v_1(x), ..., v_n(x))``: the honest workers' gradients come from one
vmapped call, the attack appends the Byzantine rows after them (it cannot touch an
honest row), the server sanitises those rows and aggregates. Alongside ``g_hat``
the oracle reports what the paper's inequalities are about: ``L_H(x)``,
``grad L_H(x)`` and the honest gradients themselves.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax.aggregators import AbstractAggregator
from byzjax.attacks import AbstractAttack, NoAttack
from byzjax.problems import AbstractProblem


class OracleState(eqx.Module):
    """Carried across rounds: the aggregator's state and the round counter."""

    aggregator: object
    rounds: jax.Array  # communication rounds used so far


class OracleOutput(eqx.Module):
    g_hat: jax.Array  # [d] aggregated gradient
    honest_loss: jax.Array  # L_H(x) = mean_i L_i(x) over honest workers
    honest_grad: jax.Array  # [d] grad L_H(x)
    honest_grads: jax.Array  # [n_honest, d]

    @property
    def error(self) -> jax.Array:
        """``||g_hat - grad L_H||``, the oracle error bounded in PAPER.md section 2."""
        return jnp.linalg.norm(self.g_hat - self.honest_grad)


def sanitise(rows: jax.Array) -> jax.Array:
    """Make Byzantine rows finite: NaN -> 0, then clip to +-cap.

    ``cap = sqrt(max_float / (4 n d))`` so that squared distances and sums over
    all rows stay finite in the working precision; an Inf attack becomes a huge
    but finite vector that robust rules can still discard, and a run is never
    poisoned by NaN.
    """
    n, d = rows.shape
    cap = jnp.sqrt(jnp.finfo(rows.dtype).max / (4.0 * (n + 64) * d)).astype(rows.dtype)
    return jnp.clip(jnp.nan_to_num(rows, nan=0.0, posinf=cap, neginf=-cap), -cap, cap)


class RobustOracle(eqx.Module):
    """Honest gradients -> attack -> merge -> (pre-)aggregation, one round."""

    problem: AbstractProblem
    aggregator: AbstractAggregator
    attack: AbstractAttack
    n_honest: int = eqx.field(static=True)
    n_byz: int = eqx.field(static=True)

    def __init__(self, problem, aggregator, attack=None, *, n_honest: int, n_byz: int):
        attack = NoAttack() if attack is None else attack
        self.problem = problem
        self.aggregator = aggregator
        self.attack = attack.bind(aggregator, n_byz)
        self.n_honest = n_honest
        self.n_byz = n_byz

    @property
    def n(self) -> int:
        return self.n_honest + self.n_byz

    def check(self) -> None:
        """Eager validation of the whole pipeline on ``n`` workers (before compiling)."""
        self.aggregator.check(self.n)
        self.attack.check(self.n_honest, self.n_byz)

    def init(self, dtype) -> OracleState:
        return OracleState(self.aggregator.init(self.problem.dim, dtype), jnp.zeros((), jnp.int32))

    def __call__(self, x, shards, state: OracleState, key) -> tuple[OracleOutput, OracleState]:
        losses, grads = jax.vmap(jax.value_and_grad(self.problem.loss), in_axes=(None, 0))(x, shards)
        k_attack, k_agg = jax.random.split(key)
        if self.n_byz:
            seen = grads
            if getattr(self.attack, "uses_flipped_labels", False):
                seen = jax.vmap(jax.grad(self.problem.loss), in_axes=(None, 0))(x, self.problem.flip_labels(shards))
            byz = sanitise(self.attack.byzantine_vectors(seen, self.n_byz, k_attack))
            vectors = jnp.concatenate([grads, byz.astype(grads.dtype)], axis=0)
        else:
            vectors = grads
        g_hat, agg_state = self.aggregator.aggregate(vectors, state.aggregator, k_agg)
        out = OracleOutput(g_hat, jnp.mean(losses), jnp.mean(grads, axis=0), grads)
        return out, OracleState(agg_state, state.rounds + 1)
