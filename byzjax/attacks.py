"""Byzantine attacks (ByzFL names and parameters).

An attack sees the honest gradients of the round (and, for adaptive attacks, the
aggregation pipeline it optimises against) and returns the Byzantine rows. The
oracle appends them after the honest rows, so an attack can never change an
honest row. ``attack(honest_vectors)`` works eagerly like ByzFL and returns the
single Byzantine vector that the ``f`` Byzantine workers all send.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import _kernels
from byzjax._validation import ConfigError, as_matrix, float_array
from byzjax.aggregators import AbstractAggregator
from byzjax.preaggregators import NNM, Pipeline, nnm_mixing_matrix


class AbstractAttack(eqx.Module):
    """Byzantine behaviour. Sees: the honest vectors of the round (omniscient)."""

    def bind(self, aggregator: AbstractAggregator, n_byz: int) -> "AbstractAttack":
        """Fill in what an adaptive attack needs from the experiment (no-op here)."""
        return self

    def check(self, n_honest: int, n_byz: int) -> None:
        """Raise ``ConfigError`` if the attack cannot run in this setting."""

    @abc.abstractmethod
    def byzantine_vector(self, honest: jax.Array, key) -> jax.Array:
        """The vector ``[d]`` sent by every Byzantine worker, from ``honest [n_h, d]``."""

    def byzantine_vectors(self, honest: jax.Array, n_byz: int, key) -> jax.Array:
        """The ``[n_byz, d]`` Byzantine rows (default: ``n_byz`` identical copies)."""
        b = self.byzantine_vector(honest, key)
        return jnp.broadcast_to(b, (n_byz,) + b.shape)

    def __call__(self, honest_vectors, key=None):
        """ByzFL-style eager call: the Byzantine vector for ``honest_vectors [n_h, d]``."""
        was_numpy = isinstance(honest_vectors, np.ndarray)
        honest = as_matrix(honest_vectors, "honest_vectors")
        key = jax.random.key(0) if key is None else key
        out = self.byzantine_vector(honest, key)
        return np.asarray(out) if was_numpy else out


class NoAttack(AbstractAttack):
    """Byzantine workers send the honest mean (harmless; used when ``f = 0``)."""

    def byzantine_vector(self, honest, key):
        return jnp.mean(honest, axis=0)


class SignFlipping(AbstractAttack):
    """``b = -mean(honest)`` (Allen-Zhu et al., 2020)."""

    def byzantine_vector(self, honest, key):
        return -jnp.mean(honest, axis=0)


class InnerProductManipulation(AbstractAttack):
    """IPM (Xie et al., 2020): ``b = -tau * mean(honest)``, PAPER.md section 5."""

    tau: jax.Array = eqx.field(converter=float_array, default=2.0)

    def byzantine_vector(self, honest, key):
        return -self.tau * jnp.mean(honest, axis=0)


def _honest_std(honest: jax.Array) -> jax.Array:
    """Coordinate-wise standard deviation with ddof = 1 (torch's default, as ByzFL)."""
    n = honest.shape[0]
    centred = honest - jnp.mean(honest, axis=0)
    return jnp.sqrt(jnp.sum(centred * centred, axis=0) / max(n - 1, 1))


class ALittleIsEnough(AbstractAttack):
    """ALIE (Baruch et al., 2019): ``b = mean + tau * std`` coordinate-wise (ddof 1)."""

    tau: jax.Array = eqx.field(converter=float_array, default=1.5)

    def byzantine_vector(self, honest, key):
        return jnp.mean(honest, axis=0) + self.tau * _honest_std(honest)


class LineSearchState(NamedTuple):
    """Carry of the Optimal attacks' search (PAPER.md section 5)."""

    best: jax.Array  # best tau so far
    value: jax.Array  # objective at best
    step: jax.Array  # current increment delta
    expanding: jax.Array  # still in the expansion phase


def positive_line_search(objective, start, delta, ratio, evals: int) -> LineSearchState:
    """ByzFL's expansion/contraction search maximising ``objective(tau)``.

    Transcribes ``Optimal_*._expansion_phase`` then ``_contraction_phase``: start at
    ``tau = start``; while expanding, try ``best + delta``: on improvement keep it
    and double delta, otherwise shrink delta by ``ratio`` and switch to
    contraction; while contracting, try ``best + delta``, keep it if better, and
    always shrink delta. ``evals`` objective evaluations in all, as a ``fori_loop``.
    """
    start = jnp.asarray(start, dtype=jnp.result_type(float))
    init = LineSearchState(start, objective(start), jnp.asarray(delta, start.dtype), jnp.array(True))

    def body(_, s: LineSearchState) -> LineSearchState:
        proposal = s.best + s.step
        value = objective(proposal)
        better = value > s.value
        grow = s.expanding & better
        return LineSearchState(
            best=jnp.where(better, proposal, s.best),
            value=jnp.where(better, value, s.value),
            step=jnp.where(grow, 2.0 * s.step, ratio * s.step),
            expanding=grow,
        )

    return jax.lax.fori_loop(0, evals - 1, body, init)


class _OptimalAttack(AbstractAttack):
    """Attack ``b(tau) = base + tau * direction`` with tau maximising the damage
    ``||Agg(honest + f copies of b(tau)) - mean(honest)||`` through the real pipeline
    (PAPER.md section 5). Sees: honest vectors and the aggregation pipeline.

    ``agg``/``pre_agg_list``/``f`` follow ByzFL; inside an experiment, those left
    as ``None`` are taken from the experiment's pipeline and Byzantine count.
    When the pipeline starts with NNM, the search reuses everything that does not
    depend on tau: honest-honest distances are computed once, distances to
    ``b(tau)`` are a quadratic in tau, and the mixed vectors are
    ``A(tau) H + c(tau) b(tau)`` -- one small matmul per evaluation.
    """

    agg: AbstractAggregator | None = None
    pre_agg_list: tuple | None = None
    f: int | None = eqx.field(static=True, default=None)
    evals: int = eqx.field(static=True, default=20)
    start: jax.Array = eqx.field(converter=float_array, default=0.0)
    delta: jax.Array = eqx.field(converter=float_array, default=10.0)
    ratio: jax.Array = eqx.field(converter=float_array, default=0.8)

    def __check_init__(self):
        if not isinstance(self.evals, int) or self.evals <= 0:
            raise ConfigError(f"{type(self).__name__}: evals must be a positive integer, got {self.evals!r}")
        r = np.asarray(self.ratio) if not isinstance(self.ratio, jax.core.Tracer) else None
        if r is not None and np.any((r <= 0.5) | (r >= 1)):
            raise ConfigError(f"{type(self).__name__}: ratio must be in (0.5, 1), got {r.tolist()}")

    @abc.abstractmethod
    def base_and_direction(self, honest) -> tuple[jax.Array, jax.Array]:
        """``(base, direction)`` with ``b(tau) = base + tau * direction``."""

    def bind(self, aggregator, n_byz):
        pipe = self.pipeline() if self.agg is not None else aggregator
        return type(self)(
            agg=pipe, pre_agg_list=None, f=n_byz, evals=self.evals,
            start=self.start, delta=self.delta, ratio=self.ratio,
        )

    def pipeline(self) -> AbstractAggregator:
        agg = self.agg
        if agg is None:
            raise ConfigError(f"{type(self).__name__}: no aggregator to optimise against (pass agg=...)")
        return Pipeline(tuple(self.pre_agg_list), agg) if self.pre_agg_list else agg

    def check(self, n_honest, n_byz):
        if self.f is not None and self.f != n_byz:
            raise ConfigError(f"{type(self).__name__}: f={self.f} but the experiment has {n_byz} Byzantine workers")
        self.pipeline().check(n_honest + n_byz)

    def tau(self, honest: jax.Array, n_byz: int, key) -> jax.Array:
        """The attack factor chosen by the line search."""
        return self._search(honest, n_byz, key).best

    def _search(self, honest, n_byz, key) -> LineSearchState:
        objective = self._objective(honest, n_byz, key)
        return positive_line_search(objective, self.start, self.delta, self.ratio, self.evals)

    def _objective(self, honest, n_byz, key):
        pipe = self.pipeline()
        mean = jnp.mean(honest, axis=0)
        base, direction = self.base_and_direction(honest)
        d = honest.shape[1]
        state0 = pipe.init(d, honest.dtype)
        if (
            isinstance(pipe, Pipeline)
            and pipe.pre_aggs
            and isinstance(pipe.pre_aggs[0], NNM)
            and n_byz > 0
        ):
            nnm, rest = pipe.pre_aggs[0], Pipeline(pipe.pre_aggs[1:], pipe.agg)
            h = honest - mean  # distances are translation invariant: centre for precision
            b0, dir_ = base - mean, direction
            gram = _kernels.pairwise_sq_dists(h)
            hb0, hd = h @ b0, h @ dir_
            hh = jnp.sum(h * h, axis=1)
            bb, bd, dd = b0 @ b0, b0 @ dir_, dir_ @ dir_
            n_h = honest.shape[0]

            def mixed(tau):
                to_b = jnp.maximum(hh - 2 * (hb0 + tau * hd) + bb + 2 * tau * bd + tau * tau * dd, 0.0)
                top = jnp.concatenate([gram, jnp.broadcast_to(to_b[:, None], (n_h, n_byz))], axis=1)
                bottom = jnp.concatenate(
                    [jnp.broadcast_to(to_b[None, :], (n_byz, n_h)), jnp.zeros((n_byz, n_byz), h.dtype)], axis=1
                )
                mix = nnm_mixing_matrix(jnp.concatenate([top, bottom], axis=0), nnm.f)
                b = base + tau * direction
                return mix[:, :n_h] @ honest + jnp.sum(mix[:, n_h:], axis=1)[:, None] * b[None, :]

            def objective(tau):
                out, _ = rest.aggregate(mixed(tau), state0, key)
                return jnp.linalg.norm(out - mean)

        else:

            def objective(tau):
                b = base + tau * direction
                vectors = jnp.concatenate([honest, jnp.broadcast_to(b, (n_byz, d))], axis=0)
                out, _ = pipe.aggregate(vectors, state0, key)
                return jnp.linalg.norm(out - mean)

        return objective

    def byzantine_vectors(self, honest, n_byz, key):
        base, direction = self.base_and_direction(honest)
        b = base + self.tau(honest, n_byz, key) * direction
        return jnp.broadcast_to(b, (n_byz,) + b.shape)

    def byzantine_vector(self, honest, key):
        n_byz = 1 if self.f is None else self.f
        self.check(honest.shape[0], n_byz)
        return self.byzantine_vectors(honest, n_byz, key)[0]


class Optimal_InnerProductManipulation(_OptimalAttack):
    """IPM with tau chosen each round by line search against the pipeline (PAPER.md section 5)."""

    def base_and_direction(self, honest):
        mean = jnp.mean(honest, axis=0)
        return jnp.zeros_like(mean), -mean


class Optimal_ALittleIsEnough(_OptimalAttack):
    """ALIE with tau chosen each round by line search against the pipeline (PAPER.md section 5)."""

    def base_and_direction(self, honest):
        return jnp.mean(honest, axis=0), _honest_std(honest)
