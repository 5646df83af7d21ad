"""A run is one ``lax.scan`` over rounds: ``run(key, experiment, data) -> Trace``.

Evaluation (validation/test accuracy) happens every ``eval_every`` iterations by
nesting scans: an outer scan over blocks evaluates the current model and runs
an inner scan of ``eval_every`` iterations. Only small per-round scalars leave
the scan, never full states.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.algorithms import AbstractAlgorithm, Environment
from byzjax.data import FederatedData
from byzjax.oracle import RobustOracle


def _as_point(x):
    """``None``, or ``x`` as a float array (a user-given initial point)."""
    if x is None or isinstance(x, jax.core.Tracer):
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"Experiment: x0 must be an array of numbers, got {x!r}")
    return jnp.asarray(arr, dtype=jnp.result_type(float))


class Experiment(eqx.Module):
    """Everything that defines a run except the seed and the data arrays.

    Numbers that may be swept (step sizes, eta, f of the rules, attack factors,
    lambda) are array leaves; ``rounds`` and ``eval_every`` and the component
    types are static structure. ``x0`` (optional ``[d]``): the initial point of every run of the
    experiment (e.g. the weights a ByzFL run started from); ``None``: the problem's random
    initialisation ``problem.init`` from the run's seed.
    """

    oracle: RobustOracle
    algorithm: AbstractAlgorithm
    rounds: int = eqx.field(static=True)
    eval_every: int = eqx.field(static=True, default=10)
    x0: jax.Array | None = eqx.field(default=None, converter=_as_point)

    def __check_init__(self):
        if not isinstance(self.oracle, RobustOracle):
            raise ConfigError(f"Experiment: oracle must be a RobustOracle, got {type(self.oracle).__name__}")
        if not isinstance(self.algorithm, AbstractAlgorithm):
            raise ConfigError(f"Experiment: algorithm must be an AbstractAlgorithm (e.g. DGD(lr=0.1)), "
                              f"got {type(self.algorithm).__name__} {self.algorithm!r}")
        if self.x0 is not None and self.x0.shape != (self.problem.dim,):
            raise ConfigError(f"Experiment: x0 must have shape ({self.problem.dim},) (the dimension of "
                              f"{type(self.problem).__name__}), got shape {tuple(self.x0.shape)}")
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

    def program_form(self) -> Experiment:
        """This experiment as a grid compiles it: its algorithm in ``algorithm.program_form()``
        (e.g. ``DGD`` as ``DNAG`` with momentum 0: the same iterates, a structure shared with more
        runs)."""
        return dataclasses.replace(self, algorithm=self.algorithm.program_form())


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

    The initial point is ``experiment.x0`` if given, else ``problem.init(fold_in(key, 0))``; the key of iteration
    ``t`` is ``fold_in(key, t + 1)`` so runs that share a key see the same
    randomness (common random numbers across configurations).
    """
    problem, alg = experiment.problem, experiment.algorithm
    total, k = experiment.iterations, experiment.eval_every
    experiment.oracle.check_data(data.shards)  # shapes are static: this holds under jit too
    x0 = problem.init(jax.random.fold_in(key, 0)) if experiment.x0 is None else experiment.x0
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
