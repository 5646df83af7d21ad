"""A run is one ``lax.scan`` over rounds: ``run(key, experiment, data) -> Trace``.

Evaluation (validation/test accuracy) happens every ``eval_every`` iterations by
nesting scans: an outer scan over blocks evaluates the current model and runs
an inner scan of ``eval_every`` iterations. Only small per-round scalars leave
the scan, never full states.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import progress
from byzjax.algorithms import AbstractAlgorithm, Environment
from byzjax.data import FederatedData
from byzjax.oracle import RobustOracle


class Experiment(eqx.Module):
    """Everything that defines a run except the seed and the data arrays.

    Numbers that may be swept (step sizes, eta, f of the rules, attack factors,
    lambda) are array leaves; ``rounds`` and ``eval_every`` and the component
    types are static structure.
    """

    oracle: RobustOracle
    algorithm: AbstractAlgorithm
    rounds: int = eqx.field(static=True)
    eval_every: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        from byzjax._validation import ConfigError

        if self.rounds < self.algorithm.rounds_per_step:
            raise ConfigError(f"rounds must be >= {self.algorithm.rounds_per_step} (one iteration of "
                              f"{type(self.algorithm).__name__}), got {self.rounds}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")

    @property
    def problem(self):
        return self.oracle.problem

    @property
    def iterations(self) -> int:
        """Algorithm iterations: ``rounds`` is the communication budget and each iteration uses
        ``algorithm.rounds_per_step`` rounds (2 for AEG), so every method gets the same budget."""
        return self.rounds // self.algorithm.rounds_per_step

    def check(self) -> None:
        self.oracle.check()


class Trace(eqx.Module):
    """Per-iteration metrics ``[T]`` and evaluation metrics ``[E]`` of one run."""

    metrics: dict  # name -> [T]; includes "comm_rounds" (rounds used after the iteration)
    eval_metrics: dict  # name -> [E]
    eval_iters: jax.Array  # [E] iteration index at which each evaluation was taken
    final_params: jax.Array  # [d]


class _Carry(eqx.Module):
    state: object
    oracle_state: object


def run(key, experiment: Experiment, data: FederatedData, *, progress_every: int | None = None) -> Trace:
    """Simulate ``experiment`` from seed ``key`` on ``data`` (pure; jit/vmap it).

    The initial point is ``problem.init(fold_in(key, 0))``; the key of iteration
    ``t`` is ``fold_in(key, t + 1)`` so runs that share a key see the same
    randomness (common random numbers across configurations).
    """
    problem, alg = experiment.problem, experiment.algorithm
    total, k = experiment.iterations, experiment.eval_every
    x0 = problem.init(jax.random.fold_in(key, 0))
    env = Environment(experiment.oracle, data.shards)
    carry = _Carry(alg.init(x0), experiment.oracle.init(x0.dtype))

    def iteration(carry: _Carry, t):
        progress.tick(t, total, progress_every)
        state, ostate, metrics = alg.step(carry.state, carry.oracle_state, env, jax.random.fold_in(key, t + 1))
        metrics = metrics | {"comm_rounds": ostate.rounds}
        return _Carry(state, ostate), metrics

    def evaluate(carry: _Carry):
        return problem.evaluate(alg.params(carry.state), data.evaluation)

    def block(carry, start):
        evals = evaluate(carry)
        carry, metrics = jax.lax.scan(iteration, carry, start + jnp.arange(k))
        return carry, (evals, metrics)

    n_blocks, rest = divmod(total, k)
    carry, (evals, metrics) = jax.lax.scan(block, carry, k * jnp.arange(n_blocks))
    metrics = jax.tree.map(lambda m: m.reshape((-1,) + m.shape[2:]), metrics)
    eval_iters = k * jnp.arange(n_blocks)
    if rest:
        evals = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), evals, evaluate(carry))
        eval_iters = jnp.append(eval_iters, n_blocks * k)
        carry, tail = jax.lax.scan(iteration, carry, n_blocks * k + jnp.arange(rest))
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, tail)
    evals = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), evals, evaluate(carry))
    eval_iters = jnp.append(eval_iters, total)
    return Trace(metrics, evals, eval_iters, alg.params(carry.state))
