"""One communication round: the robust (inexact) gradient oracle of arXiv 2602.03329, the reduction to an inexact gradient oracle.

``g_hat(x) = F(v_1(x), ..., v_n(x))``: the honest workers' gradients come from one
vmapped call, the attack appends the Byzantine rows after them (it cannot touch an
honest row), the server sanitises those rows and aggregates. Alongside ``g_hat``
the oracle reports what the paper's inequalities are about: ``L_H(x)``,
``grad L_H(x)`` and the honest gradients themselves.

Absent Byzantine workers. The oracle holds ``n_byz`` Byzantine rows (static: they
fix shapes). ``byz_count`` (default ``n_byz``) says how many Byzantine workers
exist, and ``participation`` the probability that each of them sends its vector in
a given round (an independent draw per worker and round). Both are arrays, so runs
differing in them share one compiled program: the rows that are not sent are
masked out (``valid``), and every rule in the pipeline ignores them exactly as if
it had been called on the rows received (``byzjax.aggregators``). The declared
``f`` of the rules is independent of both (under- or over-declaring f).

Mini-batches. With ``batch_size`` (an array, so it sweeps too) every honest worker sends the
gradient of a fresh mini-batch of its shard each round (``problem.minibatch``, drawn without
replacement); the attack sees those stochastic gradients, while the reported ``L_H``,
``grad L_H`` and honest gradients stay full-batch with ``exact_metrics`` (and PIGS's server uses
its full local gradient), at the cost of one extra full gradient pass per round.

Exact or mini-batch metrics. With ``exact_metrics`` (the default of ``LogisticRegression`` and
every problem whose class sets ``exact_metrics = True``) the oracle also computes the full-batch
``L_i(x)`` and ``grad L_i(x)`` of every worker's whole (padded) shard every round: the logged
``loss``, ``grad_norm``, ``error`` and ``spread`` are exact. That pass costs a forward + backward over
``n_honest x m`` samples and dominates a network's round, so ``exact_metrics=False`` (the default of
``byzjax.networks.NetworkClassification``) skips it: the reported ``L_H``, ``grad L_H`` and honest
gradients are then those of the mini-batches the workers used this round (``L_H`` is the mean
mini-batch loss, ``error = ||g_hat - mean_i g_i||`` the aggregation's error on the honest
mini-batch gradients ``g_i`` (before worker momentum), ``spread`` their spread), and PIGS's
correction uses worker 0's mini-batch gradient. Without ``batch_size`` both are the same
(one full pass). Held-out accuracy (``problem.evaluate``) is unaffected.

Worker momentum (the baseline of Karimireddy et al., 2021; ByzFL's honest-client ``momentum``):
with ``momentum = beta`` every honest worker sends ``m_i <- beta m_i + (1 - beta) g_i`` (``m_i``
starts at 0, as in ByzFL) instead of ``g_i``; the momenta are carried in the oracle state and the
attack sees them. ``beta`` is an array (it sweeps).

Local steps (FedAvg). With ``local_steps = K > 1`` every honest worker takes K SGD steps of size
``local_lr`` from the server's ``x`` on its own fresh mini-batches and sends ``(x - x_K) / local_lr``
(``local_update``); the attack and the aggregation act on those, and the server applies the
aggregate with its own optimizer (``byzjax.algorithms.FedAvg``). ``K = 1`` is D-SGD. Without
``exact_metrics`` the reported honest gradients are these differences.

Validation. ``RobustOracle(...)`` checks its components and numbers while they are concrete (one-line
``ConfigError``, before anything is compiled): the types, the pipeline on ``n`` rows (and on the
fewest rows a round can deliver), the attack's setting, the problem's capabilities
(``has_samples`` for mini-batches and ``problem.check_batch_size`` on the sizes, ``has_labels`` for
an attack that ``needs_labels``).
``check_data(shards)`` compares the shards' leading axis with ``n_honest`` when a run meets its data.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
import jax
import jax.numpy as jnp

from byzjax._kernels import column_mean
from byzjax._validation import ConfigError, check_count, check_param, concrete_values, float_array, int_array
from byzjax.aggregators import AbstractAggregator
from byzjax.attacks import AbstractAttack, AttackerView, NoAttack
from byzjax.preaggregators import Pipeline
from byzjax.problems import AbstractProblem


class OracleState(eqx.Module):
    """Carried across rounds: the aggregator's state and the round counter."""

    aggregator: object
    rounds: jax.Array  # communication rounds used so far
    momenta: jax.Array | None = None  # [n_honest, d] worker momenta (None without worker momentum)


class OracleOutput(eqx.Module):
    g_hat: jax.Array  # [d] aggregated gradient
    honest_loss: jax.Array  # L_H(x) = mean_i L_i(x) over honest workers
    honest_grad: jax.Array  # [d] grad L_H(x)
    honest_grads: jax.Array  # [n_honest, d]
    byz_sent: jax.Array | None = None  # Byzantine rows received this round (None: all n_byz, unmasked)

    @property
    def error(self) -> jax.Array:
        """``||g_hat - grad L_H||``, the oracle error bounded in arXiv 2602.03329, the reduction to an inexact gradient oracle."""
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
    n_byz: int = eqx.field(static=True)  # Byzantine rows
    byz_count: jax.Array | None  # Byzantine workers that exist (<= n_byz); None: n_byz
    participation: jax.Array | None  # P(a Byzantine worker sends in a round); None: 1
    batch_size: jax.Array | None  # samples per honest worker and round; None: full batch
    momentum: jax.Array | None  # worker momentum beta; None: workers send their gradients
    exact_metrics: bool = eqx.field(static=True)  # full-batch L_H, grad L_H every round (see the module doc)
    local_steps: int = eqx.field(static=True)  # SGD steps per honest worker and round (1: send a gradient)
    local_lr: jax.Array | None  # the workers' local step (local_steps > 1; None: 1)

    def __init__(self, problem, aggregator, attack=None, *, n_honest: int, n_byz: int, byz_count=None,
                 participation=None, batch_size=None, momentum=None, exact_metrics: bool | None = None,
                 local_steps: int = 1, local_lr=None):
        attack = NoAttack() if attack is None else attack
        for name, value, cls, example in (("problem", problem, AbstractProblem, "LogisticRegression(...)"),
                                          ("aggregator", aggregator, AbstractAggregator, "TrMean(f=1)"),
                                          ("attack", attack, AbstractAttack, "SignFlipping()")):
            if not isinstance(value, cls):
                raise ConfigError(f"RobustOracle: {name} must be an {cls.__name__} (e.g. {example}), "
                                  f"got {type(value).__name__} {value!r}")
        check_count(self, "n_honest", n_honest, 1)
        check_count(self, "n_byz", n_byz, 0)
        self.problem = problem
        self.aggregator = aggregator
        self.attack = attack
        self.n_honest = int(n_honest)
        self.n_byz = int(n_byz)
        self.byz_count = None if byz_count is None else int_array(byz_count)
        self.participation = None if participation is None else float_array(participation)
        self.batch_size = None if batch_size is None else int_array(batch_size)
        self.momentum = None if momentum is None else float_array(momentum)
        if exact_metrics is not None and not isinstance(exact_metrics, (bool, np.bool_)):
            raise ConfigError(f"RobustOracle: exact_metrics must be True, False or None (the problem's default "
                              f"{type(problem).__name__}.exact_metrics), got {exact_metrics!r}")
        self.exact_metrics = bool(problem.exact_metrics if exact_metrics is None else exact_metrics)
        check_count(self, "local_steps", local_steps, 1)
        self.local_steps = int(local_steps)
        self.local_lr = None if local_lr is None else float_array(local_lr)
        self.check()

    @property
    def masked(self) -> bool:
        """Whether some Byzantine rows may be absent (the aggregators get a row mask)."""
        return self.byz_count is not None or self.participation is not None

    @property
    def n(self) -> int:
        return self.n_honest + self.n_byz

    def check(self) -> None:
        """Eager validation of the whole pipeline on ``n`` workers (before compiling); with
        absent workers, also on the fewest rows a round can deliver."""
        self.aggregator.check(self.n)
        self.attack.check(self.n_honest, self.n_byz)
        for name, value, holds, allowed in (
            ("batch_size", self.batch_size, lambda v: v >= 1, "a positive integer"),
            ("worker momentum", self.momentum, lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
            ("byz_count", self.byz_count, lambda v: (v >= 0) & (v <= self.n_byz), f"in [0, n_byz={self.n_byz}]"),
            ("participation", self.participation, lambda v: (v >= 0) & (v <= 1), "a probability in [0, 1]"),
            ("local_lr", self.local_lr, lambda v: np.isfinite(v) & (v > 0), "a positive number"),
        ):
            if value is not None:
                check_param(self, name, value, holds, allowed)
        if self.local_steps > 1 and self.local_lr is None:
            raise ConfigError(f"RobustOracle: local_steps={self.local_steps} needs local_lr (the workers' SGD step)")
        if self.batch_size is not None and not self.problem.has_samples:
            raise ConfigError(f"{type(self.problem).__name__} has no samples to draw mini-batches from (batch_size)")
        if self.batch_size is not None:
            self.problem.check_batch_size(self.batch_size)
        if self.n_byz and self.attack.needs_labels and not self.problem.has_labels:
            raise ConfigError(f"{type(self.attack).__name__}: needs labels, and {type(self.problem).__name__} has none")
        if not self.masked:
            return
        if not self.aggregator.supports_absent:
            raise ConfigError(f"{_name(self.aggregator)}: does not support absent workers (byz_count/participation); "
                              "its subset enumeration fixes n - f")
        counts = np.array([self.n_byz]) if self.byz_count is None else concrete_values(self.byz_count)
        probs = None if self.participation is None else concrete_values(self.participation)
        fewest = 0 if probs is not None and np.any(probs < 1) else (int(counts.min()) if counts is not None else 0)
        self.aggregator.check(self.n_honest + fewest)

    def check_data(self, shards) -> None:
        """Raise ``ConfigError`` unless every leaf of ``shards`` has a leading axis of ``n_honest``
        (shapes are static, so this works on traced data too)."""
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(shards)}
        if sizes != {self.n_honest}:
            raise ConfigError(f"RobustOracle: n_honest={self.n_honest} but the data holds shards for "
                              f"{', '.join(str(s) for s in sorted(sizes, key=str))} workers (leading axis of data.shards)")

    def init(self, dtype) -> OracleState:
        momenta = None if self.momentum is None else jnp.zeros((self.n_honest, self.problem.dim), dtype)
        return OracleState(self.aggregator.init(self.problem.dim, dtype), jnp.zeros((), jnp.int32), momenta)

    def local_update(self, x, shards, first_grads, key) -> jax.Array:
        """``[n_honest, d]`` pseudo-gradients ``(x - x_K) / local_lr`` of ``K = local_steps`` local SGD steps
        (FedAvg, McMahan et al., 2017; ByzFL's and Blades' honest clients):

        ``x_0 = x``, ``x_{k+1} = x_k - local_lr grad L_i(x_k; B_k)``, ``B_k`` a fresh mini-batch of
        worker ``i`` (``batch_size``; the whole shard without it). ``first_grads`` are the step-0
        gradients at ``x`` (drawn with the D-SGD key of the worker), so ``K = 1`` is D-SGD exactly;
        step ``k >= 1`` draws with ``fold_in(worker key, k)``. Honest workers only: the attack sees
        these differences.
        """
        lr = self.local_lr.astype(x.dtype)
        keys = jax.random.split(key, self.n_honest)

        def worker(shard, g0, wkey):
            def step(xk, k):
                batch = shard if self.batch_size is None else self.problem.minibatch(
                    shard, jax.random.fold_in(wkey, k), self.batch_size)
                return xk - lr * jax.grad(self.problem.loss)(xk, batch), None

            x_last, _ = jax.lax.scan(step, x - lr * g0, jnp.arange(1, self.local_steps))
            return (x - x_last) / lr

        return jax.vmap(worker)(shards, first_grads, keys)

    def present(self, key) -> jax.Array:
        """``[n_byz]`` bool: the Byzantine rows the server receives this round."""
        present = jnp.ones(self.n_byz, bool)
        if self.byz_count is not None:
            present = jnp.arange(self.n_byz) < self.byz_count
        if self.participation is not None:
            present = present & jax.random.bernoulli(key, self.participation, (self.n_byz,))
        return present

    def __call__(self, x, shards, state: OracleState, key) -> tuple[OracleOutput, OracleState]:
        per_worker = jax.vmap(jax.value_and_grad(self.problem.loss), in_axes=(None, 0))
        k_attack, k_agg = jax.random.split(key)
        sent_shards = shards  # what the honest workers compute their messages on
        if self.batch_size is not None:
            keys = jax.random.split(jax.random.fold_in(key, 3), self.n_honest)
            sent_shards = jax.vmap(self.problem.minibatch, in_axes=(0, 0, None))(shards, keys, self.batch_size)
        if self.exact_metrics or self.batch_size is None:
            losses, grads = per_worker(x, shards)  # full batch: L_i(x), grad L_i(x)
            sent = grads if self.batch_size is None else jax.vmap(jax.grad(self.problem.loss),
                                                                  in_axes=(None, 0))(x, sent_shards)
        else:  # the metrics are those of the mini-batches sent: no full pass
            losses, grads = per_worker(x, sent_shards)
            sent = grads
        if self.local_steps > 1:
            sent = self.local_update(x, shards, sent, jax.random.fold_in(key, 3))
            if not self.exact_metrics:
                grads = sent
        if self.momentum is not None:
            beta = self.momentum.astype(sent.dtype)
            sent = beta * state.momenta + (1.0 - beta) * sent
        valid = present = byz_sent = None
        if self.masked:
            present = self.present(jax.random.fold_in(key, 2))
            valid = jnp.concatenate([jnp.ones(self.n_honest, bool), present])
            byz_sent = jnp.sum(present)
        if self.n_byz:
            view = AttackerView(sent, x, sent_shards, self.problem, self.aggregator)
            rows = self.attack.byzantine_vectors(view, self.n_byz, k_attack, present)
            vectors = jnp.concatenate([sent, sanitise(rows).astype(sent.dtype)], axis=0)
        else:
            vectors = sent
        g_hat, agg_state = self.aggregator.aggregate(vectors, state.aggregator, k_agg, valid)
        out = OracleOutput(g_hat, jnp.mean(losses), column_mean(grads), grads, byz_sent)
        return out, OracleState(agg_state, state.rounds + 1, None if self.momentum is None else sent)


def _name(rule) -> str:
    """``"NNM+TrMean"`` for a pipeline, the class name otherwise."""
    if isinstance(rule, Pipeline):
        return "+".join([type(p).__name__ for p in rule.pre_aggs] + [_name(rule.agg)])
    return type(rule).__name__
