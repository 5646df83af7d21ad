"""Byzantine attacks: ByzFL's (same names, parameters, defaults) and a few from the literature.

What an attack sees. Every attack here is omniscient about the current round: it receives the
gradients ``honest [n_h, d]`` of all honest workers. The Optimal_* attacks also see the
aggregation pipeline, given once by ``bind(aggregator, n_byz)`` before compilation; MinMax, MinSum
and Fang adapt to the honest vectors only (the versions of their papers used here need no
parameter of the aggregator). No attack sees the current point or earlier rounds (attacks keep no
state). Each class's docstring says what it uses.

Protocol, as the round oracle calls it: ``attack.bind(aggregator, n_byz)`` and
``attack.check(n_honest, n_byz)`` once, before compilation (``ConfigError`` on a bad setting); then
each round, inside jit/vmap, ``attack.byzantine_vectors(honest, n_byz, key, present) -> [n_byz, d]``. The
oracle appends these rows after the honest ones, so an attack can never change an honest row.
Most attacks send ``n_byz`` copies of one vector ``byzantine_vector(honest, key)``; Gaussian and
Fang draw each row independently. ``attack(honest_vectors)`` works eagerly like ByzFL and returns
one Byzantine vector. An attack with ``uses_flipped_labels = True`` (LabelFlipping) is given the
honest workers' gradients on the flipped labels ``9 - y`` of their own shards instead of their
true gradients.

Declared f versus actual Byzantine count: the ``f`` an aggregator assumes (``TrMean(f)``) and the
number ``n_byz`` of Byzantine rows the oracle appends are independent, so an experiment can
under- or over-declare f. Adaptive attacks insert ``n_byz`` rows and optimise against the
pipeline with the f it declares.

Absent Byzantine workers: when the oracle runs with a Byzantine count below its ``n_byz`` rows or
with a participation probability, it passes ``present [n_byz]`` (bool), the rows the server will
receive this round. Attacks that optimise against the pipeline evaluate it on those rows only
(the server's view); the others ignore it (absent rows are dropped by the aggregator anyway).

Not done: attacks that see the current point or keep a state across rounds (e.g. Karimireddy et al.'s
warm-up phase of Mimic); Fang et al.'s attack on Krum; the aggregator-tailored variants of
MinMax/MinSum.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from byzjax import _kernels
from byzjax._validation import ConfigError, as_matrix, concrete_values, float_array, int_array, is_concrete
from byzjax.aggregators import AbstractAggregator, Median, TrMean
from byzjax.preaggregators import NNM, Pipeline, nnm_mixing_matrix


def _require(attack: str, name: str, x, ok, rule: str) -> None:
    """Raise ``ConfigError`` if a concrete (possibly batched) hyperparameter breaks ``rule``."""
    values = concrete_values(x)
    if values is not None and not np.all(ok(values)):
        raise ConfigError(f"{attack}: {name} {rule}, got {name}={values.tolist()}")


def _require_count(attack: str, name: str, x) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or x <= 0:
        raise ConfigError(f"{attack}: {name} must be a positive integer, got {x!r}")


class AbstractAttack(eqx.Module):
    """Byzantine behaviour. Sees: the honest vectors of the round (omniscient)."""

    uses_flipped_labels: ClassVar[bool] = False

    def bind(self, aggregator: AbstractAggregator, n_byz: int) -> "AbstractAttack":
        """Fill in what an adaptive attack needs from the experiment (no-op here)."""
        return self

    def check(self, n_honest: int, n_byz: int) -> None:
        """Raise ``ConfigError`` if the attack cannot run in this setting."""

    @abc.abstractmethod
    def byzantine_vector(self, honest: jax.Array, key) -> jax.Array:
        """The vector ``[d]`` sent by every Byzantine worker, from ``honest [n_h, d]``."""

    def byzantine_vectors(self, honest: jax.Array, n_byz: int, key, present=None) -> jax.Array:
        """The ``[n_byz, d]`` Byzantine rows (default: ``n_byz`` identical copies); ``present
        [n_byz]`` (optional bool) marks the rows the server receives this round."""
        b = self.byzantine_vector(honest, key)
        return jnp.broadcast_to(b, (n_byz,) + b.shape)

    def _eager_n_byz(self) -> int:
        """Number of Byzantine workers assumed by the eager ``__call__``."""
        return 1

    def __call__(self, honest_vectors, key=None):
        """ByzFL-style call: the Byzantine vector for ``honest_vectors [n_h, d]``. Compiled once
        per attack structure and input shape, so repeated calls do not retrace the searches."""
        was_numpy = isinstance(honest_vectors, np.ndarray)
        honest = as_matrix(honest_vectors, "honest_vectors")
        self.check(honest.shape[0], self._eager_n_byz())
        key = jax.random.key(0) if key is None else key
        out = _byzantine_vector(self, honest, key)
        return np.asarray(out) if was_numpy else out


@eqx.filter_jit
def _byzantine_vector(attack: AbstractAttack, honest: jax.Array, key) -> jax.Array:
    return attack.byzantine_vector(honest, key)


class AbstractPerWorkerAttack(AbstractAttack):
    """An attack whose Byzantine rows are independent draws; ``byzantine_vector`` is one of them."""

    @abc.abstractmethod
    def byzantine_vectors(self, honest, n_byz, key, present=None):
        """``[n_byz, d]`` independently drawn Byzantine rows."""

    def byzantine_vector(self, honest, key):
        return self.byzantine_vectors(honest, 1, key)[0]


class NoAttack(AbstractAttack):
    """Byzantine workers send the honest mean (harmless; used when ``f = 0``). Sees: honest vectors."""

    def byzantine_vector(self, honest, key):
        return jnp.mean(honest, axis=0)


class SignFlipping(AbstractAttack):
    """``b = -mean(honest)`` (Allen-Zhu et al., ICLR 2020; ByzFL). Sees: honest vectors."""

    def byzantine_vector(self, honest, key):
        return -jnp.mean(honest, axis=0)


class InnerProductManipulation(AbstractAttack):
    """IPM (Xie et al., UAI 2020; ByzFL): ``b = -tau * mean(honest)``. Sees: honest vectors."""

    tau: jax.Array = eqx.field(converter=float_array, default=2.0)

    def byzantine_vector(self, honest, key):
        return -self.tau * jnp.mean(honest, axis=0)


def _honest_std(honest: jax.Array) -> jax.Array:
    """Coordinate-wise standard deviation with ddof = 1 (torch's default, as ByzFL)."""
    n = honest.shape[0]
    centred = honest - jnp.mean(honest, axis=0)
    return jnp.sqrt(jnp.sum(centred * centred, axis=0) / max(n - 1, 1))


class ALittleIsEnough(AbstractAttack):
    """ALIE (Baruch et al., NeurIPS 2019; ByzFL): ``b = mean + tau * std`` coordinate-wise (ddof 1).

    Sees: honest vectors. ``ALittleIsEnough.from_baruch(n, f)`` sets tau to the paper's z_max.
    """

    tau: jax.Array = eqx.field(converter=float_array, default=1.5)

    @classmethod
    def from_baruch(cls, n, f) -> "ALittleIsEnough":
        """ALIE with Baruch et al.'s ``z_max`` for ``n`` workers in all, ``f`` of them Byzantine.

        ``s = floor(n/2 + 1) - f`` honest workers must be won over to form a majority, and
        ``z_max = Phi^{-1}((n - s) / n)``. ``n`` and ``f`` may be arrays (a sweep).
        """
        n, f = int_array(n), int_array(f)
        s = n // 2 + 1 - f
        if is_concrete(s):
            nv, fv, sv = np.broadcast_arrays(np.asarray(n), np.asarray(f), np.asarray(s))
            if np.any((fv < 0) | (sv < 1) | (sv >= nv)):
                raise ConfigError(
                    "ALittleIsEnough.from_baruch: needs f >= 0 and 1 <= floor(n/2 + 1) - f < n, "
                    f"got n={nv.tolist()}, f={fv.tolist()}"
                )
        return cls(tau=norm.ppf(float_array(n - s) / float_array(n)))

    def byzantine_vector(self, honest, key):
        return jnp.mean(honest, axis=0) + self.tau * _honest_std(honest)


class Mimic(AbstractAttack):
    """Copy honest worker ``epsilon`` (Karimireddy et al., ICLR 2022; ByzFL). Sees: honest vectors."""

    epsilon: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        _require("Mimic", "epsilon", self.epsilon, lambda v: v >= 0, "must be >= 0")

    def check(self, n_honest, n_byz):
        _require("Mimic", "epsilon", self.epsilon, lambda v: v < n_honest, f"must be < n_honest = {n_honest}")

    def byzantine_vector(self, honest, key):
        return honest[self.epsilon]


class MimicHeuristic(AbstractAttack):
    """Mimic the honest worker that sticks out most along the top principal direction.

    Karimireddy et al. (ICLR 2022), section on the mimic attack: copy ``h_i*`` with ``i*`` the
    honest worker of largest projection on ``z``, the top principal direction of the centred honest
    vectors. Here ``z`` is exact and recomputed every round (``eigh`` of the ``[n_h, n_h]`` Gram
    matrix), and ``i*`` maximises ``|<h_i - mean, z>|``, which does not depend on the sign of
    ``z``; the paper estimates ``z`` by power iteration over warm-up rounds, then fixes ``i*``.
    Sees: honest vectors.
    """

    def target(self, honest: jax.Array) -> jax.Array:
        """Index of the honest worker to copy."""
        centred = honest - jnp.mean(honest, axis=0)
        _, vecs = jnp.linalg.eigh(centred @ centred.T)
        return jnp.argmax(jnp.abs(vecs[:, -1]))  # projections on z are proportional to this eigenvector

    def byzantine_vector(self, honest, key):
        return honest[self.target(honest)]


class Inf(AbstractAttack):
    """Every coordinate ``+inf`` (ByzFL). Sees: only the dimension."""

    def byzantine_vector(self, honest, key):
        return jnp.full(honest.shape[1:], jnp.inf, honest.dtype)


class Gaussian(AbstractPerWorkerAttack):
    """Each Byzantine row drawn independently from ``N(mu, sigma^2 I)`` with ``key`` (ByzFL's
    ``Gaussian``; ByzFL sends one draw to all its Byzantine workers). Sees: only the dimension."""

    mu: jax.Array = eqx.field(converter=float_array, default=0.0)
    sigma: jax.Array = eqx.field(converter=float_array, default=1.0)

    def __check_init__(self):
        _require("Gaussian", "sigma", self.sigma, lambda v: v >= 0, "must be >= 0")

    def byzantine_vectors(self, honest, n_byz, key, present=None):
        noise = jax.random.normal(key, (n_byz, honest.shape[1]), honest.dtype)
        return self.mu + self.sigma * noise


class LabelFlipping(AbstractAttack):
    """Honest-looking gradients computed on flipped labels (ByzFL's ``LabelFlipping``).

    Sees: the honest workers' gradients on the labels ``9 - y`` of their own shards, which the
    oracle passes instead of the true honest gradients (``uses_flipped_labels``); sends their mean.
    """

    uses_flipped_labels: ClassVar[bool] = True

    def byzantine_vector(self, honest, key):
        return jnp.mean(honest, axis=0)


class Fang(AbstractPerWorkerAttack):
    """Fang et al. (USENIX Security 2020), full-knowledge attack on trimmed mean and median.

    With ``s = sign(mean(honest))`` (the aggregate should move along ``-s``), every Byzantine row
    puts coordinate k beyond the honest extreme on the side opposite to ``s_k``: beyond the minimum
    ``m_k`` where ``s_k > 0``, beyond the maximum ``M_k`` elsewhere. The value is the extreme times
    or divided by ``u ~ U[1, b]``, whichever moves away from the honest values (``m u`` if
    ``m < 0``, ``m / u`` otherwise), ``u`` drawn per row and coordinate from ``key``. This is the
    paper's rule for model parameters, transcribed to gradients. Sees: honest vectors; it is
    tailored to coordinate-wise rules and needs no parameter of the aggregator.
    """

    b: jax.Array = eqx.field(converter=float_array, default=2.0)

    def __check_init__(self):
        _require("Fang", "b", self.b, lambda v: v >= 1, "must be >= 1")

    def byzantine_vectors(self, honest, n_byz, key, present=None):
        below = jnp.mean(honest, axis=0) > 0
        edge = jnp.where(below, jnp.min(honest, axis=0), jnp.max(honest, axis=0))
        outward = jnp.where(below, edge < 0, edge > 0)  # multiplying by u >= 1 moves edge away
        u = jax.random.uniform(key, (n_byz, honest.shape[1]), honest.dtype, 1.0, self.b)
        return jnp.where(outward, edge * u, edge / u)


def _halving_search(feasible, steps: int) -> jax.Array:
    """Largest ``t`` in ``[0, 2)`` with ``feasible(t)``, for ``feasible`` true on an interval from 0.

    The search of Shejwalkar & Houmansadr (2021) with ``gamma_init = 1``: try ``t = 1``, then move
    up on success and down on failure by a step halved each time, keeping the last success
    (0 if none); ``steps`` tries, so the answer is within ``2^(1 - steps)`` of the supremum.
    """

    def body(_, carry):
        t, step, best = carry
        ok = feasible(t)
        return jnp.where(ok, t + step, t - step), step / 2, jnp.where(ok, t, best)

    one = jnp.ones((), jnp.result_type(float))
    return jax.lax.fori_loop(0, steps, body, (one, one / 2, 0 * one))[2]


class _DistanceBoundedAttack(AbstractAttack):
    """``b = mean + gamma * p`` with the largest ``gamma`` keeping a spread of the squared distances
    from ``b`` to the honest vectors within a budget ``r^2`` set by the honest vectors (Shejwalkar &
    Houmansadr, NDSS 2021, aggregator-agnostic attacks).

    ``direction`` picks ``p``: ``"std"`` (``-std``, ddof 1), ``"unit_vec"`` (``-mean / ||mean||``) or
    ``"sign"`` (``-sign(mean)``). ``gamma`` is found by the paper's halving search in units of
    ``r / ||p||``, in which every feasible value lies in ``[0, 2]`` (the paper searches in absolute
    units from ``gamma_init = 10``, which caps gamma at 20 whatever the gradients' scale). Distances
    to ``b`` are a quadratic in gamma, so each of the ``steps`` tries costs O(n_h).
    Sees: honest vectors; not the aggregator.
    """

    direction: str = eqx.field(static=True, default="std")
    steps: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        name = type(self).__name__
        if self.direction not in ("std", "unit_vec", "sign"):
            raise ConfigError(f"{name}: direction must be 'std', 'unit_vec' or 'sign', got {self.direction!r}")
        _require_count(name, "steps", self.steps)

    @abc.abstractmethod
    def budget(self, honest: jax.Array, sq_to_mean: jax.Array) -> jax.Array:
        """The squared radius ``r^2``, from ``honest [n_h, d]`` and ``||h_i - mean||^2 [n_h]``."""

    @abc.abstractmethod
    def spread(self, sq_to_b: jax.Array) -> jax.Array:
        """The statistic of the squared distances ``||b - h_i||^2 [n_h]`` kept ``<= r^2``."""

    def byzantine_vector(self, honest, key):
        mean = jnp.mean(honest, axis=0)
        if self.direction == "std":
            p = -_honest_std(honest)
        elif self.direction == "unit_vec":
            p = -mean / jnp.maximum(jnp.linalg.norm(mean), jnp.finfo(mean.dtype).tiny)
        else:
            p = -jnp.sign(mean)
        offsets = mean - honest
        sq_to_mean, cross, pp = jnp.sum(offsets * offsets, axis=1), offsets @ p, p @ p
        r2 = self.budget(honest, sq_to_mean)
        unit = jnp.where(pp > 0, jnp.sqrt(r2 / jnp.where(pp > 0, pp, 1.0)), 0.0)

        def feasible(t):
            gamma = t * unit
            return self.spread(sq_to_mean + 2 * gamma * cross + gamma * gamma * pp) <= r2

        return mean + unit * _halving_search(feasible, self.steps) * p


class MinMax(_DistanceBoundedAttack):
    """Min-Max: ``max_i ||b - h_i|| <= max_ij ||h_i - h_j||`` (Shejwalkar & Houmansadr, NDSS 2021).
    Sees: honest vectors."""

    def budget(self, honest, sq_to_mean):
        return jnp.max(_kernels.pairwise_sq_dists(honest))

    def spread(self, sq_to_b):
        return jnp.max(sq_to_b)


class MinSum(_DistanceBoundedAttack):
    """Min-Sum: ``sum_i ||b - h_i||^2 <= max_i sum_j ||h_i - h_j||^2`` (Shejwalkar & Houmansadr,
    NDSS 2021), divided by n_h; ``sum_j ||h_i - h_j||^2 = n_h ||h_i - mean||^2 + sum_j ||h_j - mean||^2``
    needs no pairwise distance. Sees: honest vectors."""

    def budget(self, honest, sq_to_mean):
        return jnp.max(sq_to_mean) + jnp.mean(sq_to_mean)

    def spread(self, sq_to_b):
        return jnp.mean(sq_to_b)


class LineSearchState(NamedTuple):
    """Carry of the Optimal attacks' search (PAPER.md section 5)."""

    best: jax.Array  # best tau so far
    value: jax.Array  # objective at best
    step: jax.Array  # current increment delta
    expanding: jax.Array  # still in the expansion phase


def positive_line_search(objective, start, delta, ratio, evals: int) -> LineSearchState:
    """ByzFL's expansion/contraction search maximising ``objective(tau)``.

    Transcribes ``Optimal_*._expansion_phase`` then ``_contraction_phase``: evaluate
    ``tau = start``; while expanding, try ``best + delta``: on improvement keep it
    and double delta, otherwise shrink delta by ``ratio`` and switch to
    contraction; while contracting, try ``best + delta``, keep it if better, and
    always shrink delta. ``evals`` objective evaluations in all, as one ``fori_loop``
    whose first iteration evaluates ``start`` (so the objective is compiled once).
    """
    start = jnp.asarray(start, dtype=jnp.result_type(float))
    init = LineSearchState(start, jnp.zeros_like(start), jnp.asarray(delta, start.dtype), jnp.array(True))

    def body(i, s: LineSearchState) -> LineSearchState:
        first = i == 0
        proposal = jnp.where(first, s.best, s.best + s.step)
        value = objective(proposal).astype(start.dtype)
        better = first | (value > s.value)
        grow = s.expanding & better
        return LineSearchState(
            best=jnp.where(better, proposal, s.best),
            value=jnp.where(better, value, s.value),
            step=jnp.where(first, s.step, jnp.where(grow, 2.0 * s.step, ratio * s.step)),
            expanding=first | grow,
        )

    return jax.lax.fori_loop(0, evals, body, init)


def _nnm_mixed(honest, base, direction, n_byz: int, f, valid=None):
    """``tau -> NNM_f(honest, n_byz copies of base + tau * direction)``, reusing what does not
    depend on tau: honest-honest distances are computed once, distances to ``b(tau)`` are a
    quadratic in tau, and the mixed vectors are ``A(tau) H + c(tau) b(tau)``. ``valid [n_h +
    n_byz]``: the rows present (NNM mixes present rows only)."""
    n_h = honest.shape[0]
    mean = jnp.mean(honest, axis=0)
    h, b0 = honest - mean, base - mean  # distances are translation invariant: centre for precision
    gram = _kernels.pairwise_sq_dists(h)
    hh, hb0, hd = jnp.sum(h * h, axis=1), h @ b0, h @ direction
    bb, bd, dd = b0 @ b0, b0 @ direction, direction @ direction
    zeros = jnp.zeros((n_byz, n_byz), h.dtype)

    def mixed(tau):
        to_b = jnp.maximum(hh - 2 * (hb0 + tau * hd) + bb + 2 * tau * bd + tau * tau * dd, 0.0)
        top = jnp.concatenate([gram, jnp.broadcast_to(to_b[:, None], (n_h, n_byz))], axis=1)
        bottom = jnp.concatenate([jnp.broadcast_to(to_b[None, :], (n_byz, n_h)), zeros], axis=1)
        mix = nnm_mixing_matrix(jnp.concatenate([top, bottom], axis=0), f, valid)
        b = base + tau * direction
        return mix[:, :n_h] @ honest + jnp.sum(mix[:, n_h:], axis=1)[:, None] * b[None, :]

    return mixed


def _rank_weights(agg: AbstractAggregator, n: int, dtype, count=None) -> jax.Array | None:
    """Weights over sorted ranks when ``agg`` is a weighted sum of order statistics, else None
    (``count`` rows present, default ``n``; the ranks past it get weight 0)."""
    m = n if count is None else count
    if isinstance(agg, TrMean):
        return _kernels.trimmed_weights(n, agg.f, dtype, count)
    if isinstance(agg, Median):
        ranks = jnp.arange(n)
        return 0.5 * ((ranks == (m - 1) // 2).astype(dtype) + (ranks == m // 2).astype(dtype))
    return None


def _inserted_order_statistic(honest, copies, weights):
    """``b -> sum_r weights[r] * sorted(honest, copies of b)[r]`` coordinate-wise.

    The honest columns are sorted once; the ``copies`` copies of ``b_k`` (a count that may be
    traced) land at rank ``r_k = #{honest values < b_k}``, which shifts the honest values at or
    above ``b_k`` up by ``copies`` ranks. Equal values are interchangeable, so this equals
    sorting all rows.
    """
    sorted_h = _kernels.sort_rows(honest)
    n_h = honest.shape[0]
    cum = jnp.concatenate([jnp.zeros(1, weights.dtype), jnp.cumsum(weights)])
    shifted = jax.lax.dynamic_slice_in_dim(weights, copies, n_h)  # weight of honest rank i + copies

    def aggregate(b):
        below = sorted_h < b
        rank = jnp.sum(below, axis=0)
        w = jnp.where(below, weights[:n_h, None], shifted[:, None])
        return jnp.sum(w * sorted_h, axis=0) + (cum[rank + copies] - cum[rank]) * b

    return aggregate


class _OptimalAttack(AbstractAttack):
    """Attack ``b(tau) = base + tau * direction`` with tau maximising the damage
    ``||Agg(honest + n_byz copies of b(tau)) - mean(honest)||`` through the real pipeline
    by ByzFL's line search (PAPER.md section 5; Allouah et al., AISTATS 2023).
    Sees: honest vectors and the aggregation pipeline.

    ``agg``/``pre_agg_list``/``f`` follow ByzFL, except that ``agg`` has no default: inside an
    experiment, ``bind`` takes the pipeline and ``f`` from the experiment when they are left
    ``None`` (eagerly, ``agg`` is required and ``f`` defaults to 1). What does not depend on tau
    is computed once per round: for a pipeline starting with NNM, the honest-honest distances
    (``_nnm_mixed``); for a bare TrMean or Median, the sorted honest coordinates
    (``_inserted_order_statistic``). With ``present`` (absent Byzantine workers), the damage is
    that of the rows the server receives, on the same fast paths.
    """

    agg: AbstractAggregator | None = None
    pre_agg_list: tuple | None = None
    f: int | None = eqx.field(static=True, default=None)
    evals: int = eqx.field(static=True, default=20)
    start: jax.Array = eqx.field(converter=float_array, default=0.0)
    delta: jax.Array = eqx.field(converter=float_array, default=10.0)
    ratio: jax.Array = eqx.field(converter=float_array, default=0.8)

    def __check_init__(self):
        name = type(self).__name__
        _require_count(name, "evals", self.evals)
        if self.f is not None and (not isinstance(self.f, int) or self.f < 0):
            raise ConfigError(f"{name}: f must be None or a non-negative integer, got {self.f!r}")
        _require(name, "delta", self.delta, lambda v: v != 0, "must be non-zero")
        _require(name, "ratio", self.ratio, lambda v: (v > 0.5) & (v < 1), "must be in (0.5, 1)")

    @abc.abstractmethod
    def base_and_direction(self, honest) -> tuple[jax.Array, jax.Array]:
        """``(base, direction)`` with ``b(tau) = base + tau * direction``."""

    def bind(self, aggregator, n_byz):
        agg = aggregator if self.agg is None else self.pipeline()
        return dataclasses.replace(self, agg=agg, pre_agg_list=None, f=n_byz if self.f is None else self.f)

    def pipeline(self) -> AbstractAggregator:
        if self.agg is None:
            raise ConfigError(f"{type(self).__name__}: no aggregator to optimise against (pass agg=...)")
        return Pipeline(tuple(self.pre_agg_list), self.agg) if self.pre_agg_list else self.agg

    def check(self, n_honest, n_byz):
        if self.f is not None and self.f != n_byz:
            name = type(self).__name__
            raise ConfigError(f"{name}: f={self.f} but the experiment has {n_byz} Byzantine workers")
        self.pipeline().check(n_honest + n_byz)

    def _eager_n_byz(self):
        return 1 if self.f is None else self.f

    def objective(self, honest: jax.Array, n_byz: int, key, reuse: bool = True, present=None):
        """``tau -> ||Agg(honest, n_byz copies of b(tau)) - mean(honest)||``, over the Byzantine
        rows ``present`` if given. ``reuse=False`` evaluates the pipeline on the concatenated
        rows (the reference for the reusing paths)."""
        pipe = self.pipeline()
        pre, agg = (pipe.pre_aggs, pipe.agg) if isinstance(pipe, Pipeline) else ((), pipe)
        mean = jnp.mean(honest, axis=0)
        base, direction = self.base_and_direction(honest)
        n_h, d = honest.shape
        state0 = pipe.init(d, honest.dtype)
        valid = None if present is None else jnp.concatenate([jnp.ones(n_h, bool), present])
        copies = n_byz if present is None else jnp.sum(present).astype(jnp.int32)
        count = None if present is None else n_h + copies
        if reuse and pre and isinstance(pre[0], NNM) and n_byz > 0:
            mixed, rest = _nnm_mixed(honest, base, direction, n_byz, pre[0].f, valid), Pipeline(pre[1:], agg)
            out_valid = None if valid is None else pre[0].output_valid(valid, key)
            aggregate = lambda tau: rest.aggregate(mixed(tau), state0, key, out_valid)[0]
        elif reuse and not pre and (weights := _rank_weights(agg, n_h + n_byz, honest.dtype, count)) is not None:
            inserted = _inserted_order_statistic(honest, copies, weights)
            aggregate = lambda tau: inserted(base + tau * direction)
        else:

            def aggregate(tau):
                b = jnp.broadcast_to(base + tau * direction, (n_byz, d))
                return pipe.aggregate(jnp.concatenate([honest, b], axis=0), state0, key, valid)[0]

        return lambda tau: jnp.linalg.norm(aggregate(tau) - mean)

    def tau(self, honest: jax.Array, n_byz: int, key, reuse: bool = True, present=None) -> jax.Array:
        """The attack factor chosen by the line search."""
        objective = self.objective(honest, n_byz, key, reuse, present)
        return positive_line_search(objective, self.start, self.delta, self.ratio, self.evals).best

    def byzantine_vectors(self, honest, n_byz, key, present=None):
        base, direction = self.base_and_direction(honest)
        b = base + self.tau(honest, n_byz, key, present=present) * direction
        return jnp.broadcast_to(b, (n_byz,) + b.shape)

    def byzantine_vector(self, honest, key):
        return self.byzantine_vectors(honest, self._eager_n_byz(), key)[0]


class Optimal_InnerProductManipulation(_OptimalAttack):
    """IPM with tau chosen each round by line search against the pipeline (ByzFL; PAPER.md section 5).
    Sees: honest vectors and the aggregation pipeline."""

    def base_and_direction(self, honest):
        mean = jnp.mean(honest, axis=0)
        return jnp.zeros_like(mean), -mean


class Optimal_ALittleIsEnough(_OptimalAttack):
    """ALIE with tau chosen each round by line search against the pipeline (ByzFL; PAPER.md section 5).
    Sees: honest vectors and the aggregation pipeline."""

    def base_and_direction(self, honest):
        return jnp.mean(honest, axis=0), _honest_std(honest)
