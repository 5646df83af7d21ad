"""Server algorithms as pure ``init``/``step`` pairs (arXiv 2602.03329, its algorithms).

An algorithm reaches the workers only through ``env.query`` (one communication
round per call, counted in the oracle state). ``step`` returns the new state and
per-iteration metrics measured at the query point, before the update.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax._validation import ConfigError, check_count, check_param, concrete_values, float_array, int_array
from byzjax.metrics import round_metrics
from byzjax.oracle import OracleOutput, OracleState, RobustOracle
from byzjax.solvers import lbfgs_minimize


class Environment(eqx.Module):
    """What the server can use: the robust oracle over the workers' data, and its own loss."""

    oracle: RobustOracle
    shards: object

    def query(self, x, state: OracleState, key) -> tuple[OracleOutput, OracleState]:
        """One communication round at ``x``."""
        return self.oracle(x, self.shards, state, key)

    def local_loss(self, x, worker: int = 0):
        """Loss of honest worker ``worker`` (the PIGS server holds worker 0's data)."""
        shard = jax.tree.map(lambda a: a[worker], self.shards)
        return self.oracle.problem.loss(x, shard)


def _positive(name, value):
    values = concrete_values(value)
    if values is not None and (np.any(~np.isfinite(values)) or np.any(values <= 0)):
        raise ConfigError(f"{name} must be a positive number, got {values.tolist()}")


class AbstractAlgorithm(eqx.Module):
    rounds_per_step: ClassVar[int] = 1
    # Constructor parameters whose one value is a sequence of integers (in a config file a list of
    # integers is one value and a list of lists a sweep), e.g. FedAvg's milestones.
    sequence_params: ClassVar[tuple[str, ...]] = ()
    # Defaults that depend on the value of another parameter, ``{selector: {value: {key: default}}}``
    # (the resolved config fills them in, e.g. the keys of FedAvg's schedule).
    dependent_defaults: ClassVar[dict[str, dict[str, dict]]] = {}
    # Named variants selected by parameter values, ``{name: {parameter: value}}``: a run whose
    # resolved parameters hold every value is that algorithm in the result files' ``algorithm``
    # column (``byzjax.app.config.algorithm_name``), e.g. AEG with ``prox = true`` is ``ProxAEG``.
    variants: ClassVar[dict[str, dict]] = {}

    def program_form(self) -> AbstractAlgorithm:
        """The algorithm this one runs as inside a compiled grid: itself, or one of a structure
        shared with other algorithms that computes the same iterates (``DGD`` as ``DNAG`` with
        momentum 0), so that their runs share one program (``byzjax.sweep.group_by_structure``;
        results and labels stay this algorithm's)."""
        return self

    @abc.abstractmethod
    def init(self, x0: jax.Array):
        """Initial state from the initial point."""

    @abc.abstractmethod
    def params(self, state) -> jax.Array:
        """The model of the state (the point evaluated and logged)."""

    @abc.abstractmethod
    def step(self, state, oracle_state: OracleState, env: Environment, key):
        """One iteration -> ``(state, oracle_state, metrics)``."""


class ServerState(eqx.Module):
    params: jax.Array
    opt_state: optax.OptState


class AbstractOptaxAlgorithm(AbstractAlgorithm):
    """``x <- x + optax_update(g_hat(x))``: any optax transformation as the server."""

    @abc.abstractmethod
    def optimizer(self) -> optax.GradientTransformation: ...

    def init(self, x0):
        return ServerState(x0, self.optimizer().init(x0))

    def params(self, state):
        return state.params

    def step(self, state, oracle_state, env, key):
        out, oracle_state = env.query(state.params, oracle_state, key)
        updates, opt_state = self.optimizer().update(out.g_hat, state.opt_state, state.params)
        return ServerState(optax.apply_updates(state.params, updates), opt_state), oracle_state, round_metrics(out)


class DGD(AbstractOptaxAlgorithm):
    """Robust distributed GD (code name moDSGD): ``x_{t+1} = x_t - lr g_hat(x_t)``.

    In a grid it runs as ``DNAG(lr, momentum=0)`` (``program_form``), the same iterates bit for
    bit for finite gradients (the trace and the Nesterov look-ahead add ``0 * g``), so D-GD and
    D-NAG runs share one compiled program.
    """

    lr: jax.Array = eqx.field(converter=float_array, default=0.1)

    def __check_init__(self):
        _positive("DGD lr", self.lr)

    def optimizer(self):
        return optax.sgd(self.lr)

    def program_form(self):
        return DNAG(self.lr, jnp.zeros_like(self.lr))


class DNAG(AbstractOptaxAlgorithm):
    """Robust Nesterov (code name DSGD; PyTorch SGD nesterov=True, arXiv 2602.03329, its algorithms).

    ``x_{t+1} = y_t - lr g_hat(y_t)``, ``y_{t+1} = x_{t+1} + momentum (x_{t+1} - x_t)``;
    in optax's (= PyTorch's) form the parameters are ``y_t``, so gradients and
    the logged loss are taken at ``y_t``.
    """

    lr: jax.Array = eqx.field(converter=float_array, default=0.1)
    momentum: jax.Array = eqx.field(converter=float_array, default=0.9)

    def __check_init__(self):
        _positive("DNAG lr", self.lr)
        values = concrete_values(self.momentum)
        if values is not None and np.any((values < 0) | (values >= 1)):
            raise ConfigError(f"DNAG momentum must be in [0, 1), got {values.tolist()}")

    def optimizer(self):
        return optax.sgd(self.lr, momentum=self.momentum, nesterov=True)


OPTIMIZERS = ("sgd", "adam")


class AbstractLRSchedule(eqx.Module):
    """A server step-size schedule: ``lr_t = lr * factor(t)``, ``t`` the number of server updates
    already applied (optax's ``count``: 0 in the first round)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def factor(self, count: jax.Array) -> jax.Array:
        """``lr_t / lr`` at update ``count``."""


class MultiStepLR(AbstractLRSchedule):
    """ByzFL's server schedule (PyTorch's ``MultiStepLR``, stepped once per round after the update):
    ``factor(t) = learning_rate_decay ** |{m in milestones : m <= t}|``, i.e. the step is multiplied
    by ``learning_rate_decay`` from round ``m`` on, for each milestone ``m`` (rounds counted from 0).
    ``optax.piecewise_constant_schedule(lr, {m: learning_rate_decay for m in milestones})`` with a
    traced (sweepable) decay. No milestones: the constant step."""

    name: ClassVar[str] = "multistep"
    learning_rate_decay: jax.Array = eqx.field(converter=float_array, default=1.0)
    milestones: tuple[int, ...] = eqx.field(static=True, default=())

    def __check_init__(self):
        _positive("FedAvg learning_rate_decay", self.learning_rate_decay)
        ms = self.milestones
        if not (isinstance(ms, tuple) and all(isinstance(m, int) and not isinstance(m, bool) for m in ms)) \
                or any(m < 0 for m in ms) or list(ms) != sorted(set(ms)):
            raise ConfigError(f"FedAvg: milestones must be increasing non-negative rounds, got {list(ms)}")

    def factor(self, count):
        decay = self.learning_rate_decay
        if not self.milestones:
            return jnp.ones_like(decay)
        passed = jnp.sum(count >= jnp.asarray(self.milestones, jnp.int32))
        return decay ** passed.astype(decay.dtype)


class CosineLR(AbstractLRSchedule):
    """``optax.cosine_decay_schedule`` (Loshchilov and Hutter, 2017, without restarts):
    ``factor(t) = (1 - alpha) (1 + cos(pi min(t, decay_steps) / decay_steps)) / 2 + alpha``,
    from 1 down to ``alpha`` at ``t = decay_steps``, then constant. Both numbers may be swept."""

    name: ClassVar[str] = "cosine"
    decay_steps: jax.Array = eqx.field(converter=int_array, default=100)
    alpha: jax.Array = eqx.field(converter=float_array, default=0.0)

    def __check_init__(self):
        check_param("FedAvg", "decay_steps", self.decay_steps, lambda v: v >= 1, "a positive integer")
        check_param("FedAvg", "alpha", self.alpha, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")

    def factor(self, count):
        steps = self.decay_steps.astype(self.alpha.dtype)
        t = jnp.minimum(jnp.asarray(count, self.alpha.dtype), steps)
        return (1.0 - self.alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * t / steps)) + self.alpha


class ExponentialLR(AbstractLRSchedule):
    """``optax.exponential_decay`` (without ``end_value``): ``p = (t - transition_begin) /
    transition_steps`` (``floor(p)`` when ``staircase``), ``factor(t) = decay_rate ** p`` for
    ``t > transition_begin``, else 1. The numbers may be swept; ``staircase`` is static."""

    name: ClassVar[str] = "exponential"
    decay_rate: jax.Array = eqx.field(converter=float_array, default=0.99)
    transition_steps: jax.Array = eqx.field(converter=int_array, default=1)
    transition_begin: jax.Array = eqx.field(converter=int_array, default=0)
    staircase: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        _positive("FedAvg decay_rate", self.decay_rate)
        check_param("FedAvg", "transition_steps", self.transition_steps, lambda v: v >= 1, "a positive integer")
        check_param("FedAvg", "transition_begin", self.transition_begin, lambda v: v >= 0, "a non-negative integer")
        if not isinstance(self.staircase, bool):
            raise ConfigError(f"FedAvg: staircase must be true or false, got {self.staircase!r}")

    def factor(self, count):
        rate = self.decay_rate
        since = jnp.asarray(count, rate.dtype) - self.transition_begin.astype(rate.dtype)
        p = since / self.transition_steps.astype(rate.dtype)
        if self.staircase:
            p = jnp.floor(p)
        return jnp.where(since <= 0, jnp.ones_like(rate), rate ** p)


SCHEDULES: dict[str, type[AbstractLRSchedule]] = {s.name: s for s in (MultiStepLR, CosineLR, ExponentialLR)}
# The FedAvg keys of each schedule and their defaults (None: required).
SCHEDULE_KEYS: dict[str, dict[str, object]] = {
    "multistep": {"learning_rate_decay": 1.0, "milestones": ()},
    "cosine": {"decay_steps": None, "alpha": 0.0},
    "exponential": {"decay_rate": None, "transition_steps": 1, "transition_begin": 0, "staircase": False},
}

_REQUIRED = {"decay_steps": "the rounds over which lr decays to alpha * lr",
             "decay_rate": "lr is multiplied by decay_rate every transition_steps rounds"}


class FedAvg(AbstractOptaxAlgorithm):
    """The FedAvg server (McMahan et al., 2017; ByzFL's and Blades' server) with a robust aggregate:
    ``x <- x + optimizer(g_hat, lr_t)``, ``g_hat`` the robust aggregate of what the workers send
    (with ``[workers] local_steps = K``: their model differences ``(x - x_K) / local_lr``).

    ``optimizer = "sgd"``: ``optax.sgd(lr_t, momentum)`` (heavy ball, PyTorch's SGD); ``"adam"``:
    ``optax.adam(lr_t)`` (momentum unused). ``lr_t = lr * factor(t)``, ``t`` the rounds done, from
    ``schedule``:

    - ``"multistep"`` (default; ByzFL's ``learning_rate_decay`` and ``milestones``, PyTorch's
      ``MultiStepLR``): the step is multiplied by ``learning_rate_decay`` from each milestone round
      on (``MultiStepLR``); no milestones: constant;
    - ``"cosine"`` (``optax.cosine_decay_schedule``): ``decay_steps`` (required) and ``alpha``
      (``CosineLR``);
    - ``"exponential"`` (``optax.exponential_decay``): ``decay_rate`` (required),
      ``transition_steps``, ``transition_begin``, ``staircase`` (``ExponentialLR``).

    A key of another schedule is refused. ``milestones`` is static (a tuple of rounds; in a config
    file a list of integers, a list of lists sweeps); every other number may be swept. With
    ``local_steps = 1``, ``momentum = 0`` and no milestones it is ``DGD(lr)`` exactly.
    """

    sequence_params: ClassVar[tuple[str, ...]] = ("milestones",)
    dependent_defaults: ClassVar[dict[str, dict[str, dict]]] = {
        "schedule": {s: {k: d for k, d in keys.items() if d is not None} for s, keys in SCHEDULE_KEYS.items()}}
    lr: jax.Array
    momentum: jax.Array
    lr_schedule: AbstractLRSchedule
    optimizer_name: str = eqx.field(static=True)

    def __init__(self, lr=0.1, momentum=0.0, optimizer: str = "sgd", schedule: str = "multistep",
                 learning_rate_decay: float | None = None, milestones: tuple[int, ...] | None = None,
                 decay_steps: int | None = None, alpha: float | None = None, decay_rate: float | None = None,
                 transition_steps: int | None = None, transition_begin: int | None = None,
                 staircase: bool | None = None):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"FedAvg: optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"FedAvg: schedule must be one of {tuple(SCHEDULES)}, got {schedule!r}")
        given = {k: v for k, v in dict(learning_rate_decay=learning_rate_decay, milestones=milestones,
                                       decay_steps=decay_steps, alpha=alpha, decay_rate=decay_rate,
                                       transition_steps=transition_steps, transition_begin=transition_begin,
                                       staircase=staircase).items() if v is not None}
        keys = SCHEDULE_KEYS[schedule]
        foreign = [k for k in given if k not in keys]
        if foreign:
            owners = {k: s for s, ks in SCHEDULE_KEYS.items() for k in ks}
            raise ConfigError(f"FedAvg: {foreign[0]} belongs to schedule {owners[foreign[0]]!r}, "
                              f"not to schedule {schedule!r} (its keys: {sorted(keys)})")
        missing = [k for k, d in keys.items() if d is None and k not in given]
        if missing:
            raise ConfigError(f"FedAvg: schedule {schedule!r} needs {missing[0]} ({_REQUIRED[missing[0]]})")
        if "milestones" in given:
            try:
                given["milestones"] = tuple(given["milestones"])
            except TypeError:
                raise ConfigError(f"FedAvg: milestones must be increasing non-negative rounds, "
                                  f"got {given['milestones']!r}") from None
        self.lr = float_array(lr)
        self.momentum = float_array(momentum)
        self.lr_schedule = SCHEDULES[schedule](**({k: d for k, d in keys.items() if d is not None} | given))
        self.optimizer_name = optimizer

    def __check_init__(self):
        _positive("FedAvg lr", self.lr)
        values = concrete_values(self.momentum)
        if values is not None and np.any((values < 0) | (values >= 1)):
            raise ConfigError(f"FedAvg momentum must be in [0, 1), got {values.tolist()}")

    def schedule(self) -> optax.Schedule:
        """``t -> lr_t = lr * factor(t)`` (the schedule's ``factor``)."""
        return lambda count: self.lr * self.lr_schedule.factor(count).astype(self.lr.dtype)

    def optimizer(self):
        if self.optimizer_name == "adam":
            return optax.adam(self.schedule())
        return optax.sgd(self.schedule(), momentum=self.momentum)


class ProximalStep(eqx.Module):
    """The server's proximal step under similarity, shared by PIGS and prox-AEG.

    From the oracle's answer ``out`` at ``x`` and a step ``eta``:
    ``x_next = argmin_z L_0(z) + <g_hat - grad L_0(x), z> + ||z - x||^2 / (2 eta)``
    (arXiv 2602.03329, its algorithms), with ``L_0`` the loss of honest worker 0 (the server's own
    data), solved by L-BFGS warm-started at ``x`` to ``||grad|| < inner_tol`` (at most
    ``inner_max_iter`` iterations, history ``memory``). Server-local: no communication round.
    """

    inner_tol: jax.Array = eqx.field(converter=float_array, default=1e-5)
    inner_max_iter: int = eqx.field(static=True, default=200)
    memory: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        _positive("ProximalStep inner_tol", self.inner_tol)
        check_count(self, "inner_max_iter", self.inner_max_iter, 1)
        check_count(self, "memory", self.memory, 1)

    def objective(self, env: Environment, x, correction, eta):
        """``z -> L_0(z) + <correction, z> + ||z - x||^2 / (2 eta)``."""

        def phi(z):
            return env.local_loss(z, 0) + correction @ z + jnp.sum((z - x) ** 2) / (2.0 * eta)

        return phi

    def __call__(self, env: Environment, x, out: OracleOutput, eta) -> tuple[jax.Array, dict]:
        """The new point from ``out`` (the oracle's answer at ``x``), and the inner solve's metrics.

        Under ``vmap`` (runs of a grid) the solves run one after the other
        (``jax.custom_batching.sequential_vmap``): a batched ``while_loop`` would run every run's
        L-BFGS for as many iterations as the slowest run needs, while each run's solve here takes
        its own iterations, exactly as alone. Measured on the paper grid's PIGS program (12 runs,
        ``benchmarks/bench_grid.py --programs 1 --rounds 4``, 2 CPU cores): 5.1 s per run-round
        sequential, 28 s batched (one ``while_loop``, converged runs frozen)."""
        shard0 = jax.tree.map(lambda a: a[0], env.shards)
        arrays, static = eqx.partition((env.oracle.problem, shard0, self), eqx.is_array)

        @jax.custom_batching.sequential_vmap
        def solve(arrays, x, correction, eta):
            problem, shard, step = eqx.combine(arrays, static)

            def phi(z):
                return problem.loss(z, shard) + correction @ z + jnp.sum((z - x) ** 2) / (2.0 * eta)

            inner = lbfgs_minimize(phi, x, tol=step.inner_tol, max_iter=step.inner_max_iter, memory=step.memory)
            return inner.x, inner.iterations, inner.grad_norm

        x_next, iterations, grad_norm = solve(arrays, x, out.g_hat - out.honest_grads[0], eta)
        capped = (iterations >= self.inner_max_iter).astype(grad_norm.dtype)
        return x_next, {"inner_iters": iterations, "inner_grad_norm": grad_norm, "inner_capped": capped}


class PIGSState(eqx.Module):
    params: jax.Array


class PIGS(AbstractAlgorithm):
    """Proximal inexact gradient under similarity (code name FedProxyProx; arXiv 2602.03329, its algorithms).

    The server is honest worker 0 with loss ``L_0``. Each round
    ``x_{k+1} = argmin_x L_0(x) + <g_hat_k - grad L_0(x_k), x> + ||x - x_k||^2 / (2 eta)``,
    the ``ProximalStep`` (L-BFGS warm-started at ``x_k`` to ``||grad|| < inner_tol``, at most
    ``inner_max_iter`` iterations; both reported per round). One communication round per
    iteration; the inner solve is server-local.
    """

    eta: jax.Array
    proximal: ProximalStep

    def __init__(self, eta=4.0, inner_tol=1e-5, inner_max_iter: int = 200, memory: int = 20):
        self.eta = float_array(eta)
        self.proximal = ProximalStep(inner_tol, inner_max_iter, memory)

    def __check_init__(self):
        _positive("PIGS eta", self.eta)

    def init(self, x0):
        return PIGSState(x0)

    def params(self, state):
        return state.params

    def step(self, state, oracle_state, env, key):
        out, oracle_state = env.query(state.params, oracle_state, key)
        x_next, inner = self.proximal(env, state.params, out, self.eta.astype(state.params.dtype))
        return PIGSState(x_next), oracle_state, round_metrics(out) | inner


class AEGState(eqx.Module):
    slow: jax.Array  # x_slow, the model (evaluated and logged)
    fast: jax.Array  # x_fast


class AEG(AbstractAlgorithm):
    """Robust accelerated extragradient (Kovalev et al., 2022 style; the authors' later code,
    arXiv 2602.03329, its algorithms). Two communication rounds per iteration:

    ``x_avg = tau x_fast + (1 - tau) x_slow``; ``g1 = g_hat(x_avg)``;
    ``x_slow = x_avg - theta g1`` (``prox=True``: ``argmin_x L_0(x) + <g1 - grad L_0(x_avg), x>
    + ||x - x_avg||^2 / (2 theta)``, PIGS's ``ProximalStep`` with step theta); ``g2 = g_hat(x_slow)``;
    ``x_fast = x_fast + m (x_slow - x_fast) - eta_f g2``,
    with ``tau = min(1, sqrt(theta gamma / 2))``, ``eta_f = min(1 / (2 gamma), theta / (2 tau))``,
    ``m = gamma eta_f``. ``theta`` is the slow step (about 1/L, or 1/delta with ``prox``),
    ``gamma`` about mu. Starts from ``x_slow = x_fast = x_0``. The metrics of an iteration are
    those of its second query, at the new ``x_slow`` (the model); ``comm_rounds`` counts both.
    """

    rounds_per_step: ClassVar[int] = 2
    variants: ClassVar[dict[str, dict]] = {"ProxAEG": {"prox": True}}
    theta: jax.Array
    gamma: jax.Array
    proximal: ProximalStep | None  # None: the plain gradient step (prox=False)

    def __init__(self, theta=0.1, gamma=1e-3, prox: bool = False, inner_tol=1e-5, inner_max_iter: int = 200,
                 memory: int = 20):
        if not isinstance(prox, bool):
            raise ConfigError(f"AEG: prox must be true or false, got {prox!r}")
        self.theta = float_array(theta)
        self.gamma = float_array(gamma)
        self.proximal = ProximalStep(inner_tol, inner_max_iter, memory) if prox else None

    def __check_init__(self):
        _positive("AEG theta", self.theta)
        _positive("AEG gamma", self.gamma)

    @property
    def prox(self) -> bool:
        """Whether the slow step is the proximal step."""
        return self.proximal is not None

    def coefficients(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(tau, eta_f, m)`` from ``theta`` and ``gamma``."""
        tau = jnp.minimum(1.0, jnp.sqrt(self.theta * self.gamma / 2.0))
        eta_f = jnp.minimum(1.0 / (2.0 * self.gamma), self.theta / (2.0 * tau))
        return tau, eta_f, self.gamma * eta_f

    def init(self, x0):
        return AEGState(x0, x0)

    def params(self, state):
        return state.slow

    def step(self, state, oracle_state, env, key):
        tau, eta_f, m = (c.astype(state.slow.dtype) for c in self.coefficients())
        theta = self.theta.astype(state.slow.dtype)
        k1, k2 = jax.random.split(key)
        x_avg = tau * state.fast + (1.0 - tau) * state.slow
        out1, oracle_state = env.query(x_avg, oracle_state, k1)
        extra = {}
        if self.proximal is not None:
            slow, extra = self.proximal(env, x_avg, out1, theta)
        else:
            slow = x_avg - theta * out1.g_hat
        out2, oracle_state = env.query(slow, oracle_state, k2)
        fast = state.fast + m * (slow - state.fast) - eta_f * out2.g_hat
        return AEGState(slow, fast), oracle_state, round_metrics(out2) | extra
