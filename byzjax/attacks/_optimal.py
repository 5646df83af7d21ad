"""The Optimal attacks: ByzFL's line search on the attack factor through the real pipeline."""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import ConfigError, float_array
from byzjax.aggregators import AbstractAggregator, Median, TrMean
from byzjax.aggregators._columns import coordinatewise
from byzjax.attacks._base import AbstractAttack, AttackerView, _honest_std, _require, _require_count
from byzjax.preaggregators import NNM, Pipeline, nnm_mixing_matrix


class LineSearchState(NamedTuple):
    """Carry of the Optimal attacks' search (arXiv 2602.03329, the attacks of its experiments)."""

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
    mean = _kernels.column_mean(honest)
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


def _weighted_order_statistic(vectors: jax.Array, weights: jax.Array, valid=None) -> jax.Array:
    """``sum_r weights[r] * sorted(vectors)[r]`` coordinate-wise, the rows where ``valid`` is False
    (if given) sorted last: a TrMean or Median (``_rank_weights``) of rows known to be finite,
    without the rule's per-call check for non-finite rows. O(n log^2 n d)."""
    if valid is None:
        return coordinatewise(lambda cols, w: w @ _kernels.sort_rows(cols), vectors, weights)
    ordered = lambda cols, valid, w: w @ _kernels.sort_rows(_kernels.absent_last(cols, valid))
    return coordinatewise(ordered, vectors, valid, weights)


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
    ``||Agg(honest + copies of b(tau)) - mean(honest)||`` through the real pipeline
    by ByzFL's line search (arXiv 2602.03329, the attacks of its experiments; Allouah et al., AISTATS 2023).
    Sees: honest vectors and the aggregation pipeline; sends ``n_byz`` copies of ``b(tau)``.

    ``agg``/``pre_agg_list``/``f`` follow ByzFL, except that ``agg`` has no default: left
    ``None``, the search runs against the server's pipeline (``view.aggregator``, filled in by the
    oracle; the eager call then needs ``agg``). ``f``: the number of copies the search assumes;
    ``None`` (the default inside an experiment): the rows the oracle asks for, present or not as
    the server will receive them; given, ``f`` copies all present (the attacker's own model of the
    server, like a rule's declared f), and the eager call ``attack(honest)`` uses it (default 1).
    What does not depend on tau is computed once per round: for a pipeline starting with NNM, the
    honest-honest distances (``_nnm_mixed``), and when a bare TrMean or Median follows, the rule is
    a weighted sum of the sorted mixed rows (``_weighted_order_statistic``, without the rule's
    per-evaluation check for non-finite rows: the mixed rows are finite when the honest rows are,
    and with a non-finite honest row the damage, a distance to their mean, is not finite on any
    path); for a bare TrMean or Median, the sorted honest coordinates
    (``_inserted_order_statistic``). With ``present`` (absent Byzantine workers), the damage is that
    of the rows the server receives, on the same fast paths.
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
        if self.f is not None and (not isinstance(self.f, int) or isinstance(self.f, bool) or self.f < 0):
            raise ConfigError(f"{name}: f must be None or a non-negative integer, got {self.f!r}")
        if self.agg is not None and not isinstance(self.agg, AbstractAggregator):
            raise ConfigError(f"{name}: agg must be an aggregator (e.g. TrMean(f=1)), got {self.agg!r}")
        _require(name, "delta", self.delta, lambda v: v != 0, "must be non-zero")
        _require(name, "ratio", self.ratio, lambda v: (v > 0.5) & (v < 1), "must be in (0.5, 1)")

    @abc.abstractmethod
    def base_and_direction(self, honest) -> tuple[jax.Array, jax.Array]:
        """``(base, direction)`` with ``b(tau) = base + tau * direction``."""

    def own_pipeline(self) -> AbstractAggregator | None:
        """The pipeline given to the attack (``agg`` after ``pre_agg_list``), or None."""
        if self.agg is None:
            return None
        return Pipeline(tuple(self.pre_agg_list), self.agg) if self.pre_agg_list else self.agg

    def target(self, view: AttackerView) -> AbstractAggregator:
        """The pipeline the search optimises against: its own if given, else the server's."""
        own = self.own_pipeline()
        if own is not None:
            return own
        if view.aggregator is None:
            raise ConfigError(f"{type(self).__name__}: no aggregator to optimise against (pass agg=...)")
        return view.aggregator

    def check(self, n_honest, n_byz):
        own = self.own_pipeline()
        if own is not None:
            own.check(n_honest + (n_byz if self.f is None else self.f))

    def objective(self, view: AttackerView, n_byz: int, key, reuse: bool = True, present=None):
        """``tau -> ||Agg(honest, n_byz copies of b(tau)) - mean(honest)||`` with ``Agg`` the
        target pipeline, over the Byzantine rows ``present`` if given. ``reuse=False`` evaluates
        the pipeline on the concatenated rows (the reference for the reusing paths)."""
        honest, pipe = view.honest, self.target(view)
        pre, agg = (pipe.pre_aggs, pipe.agg) if isinstance(pipe, Pipeline) else ((), pipe)
        mean = _kernels.column_mean(honest)
        base, direction = self.base_and_direction(honest)
        n_h, d = honest.shape
        state0 = pipe.init(d, honest.dtype)
        valid = None if present is None else jnp.concatenate([jnp.ones(n_h, bool), present])
        copies = n_byz if present is None else jnp.sum(present).astype(jnp.int32)
        count = None if present is None else n_h + copies
        if reuse and pre and isinstance(pre[0], NNM) and n_byz > 0:
            mixed, rest = _nnm_mixed(honest, base, direction, n_byz, pre[0].f, valid), Pipeline(pre[1:], agg)
            weights = None if pre[1:] else _rank_weights(agg, n_h + n_byz, honest.dtype, count)
            if weights is not None:  # NNM -> TrMean / Median
                aggregate = lambda tau: _weighted_order_statistic(mixed(tau), weights, valid)
            else:
                aggregate = lambda tau: rest.aggregate(mixed(tau), state0, key, valid)[0]  # NNM keeps the rows present
        elif reuse and not pre and (weights := _rank_weights(agg, n_h + n_byz, honest.dtype, count)) is not None:
            inserted = _inserted_order_statistic(honest, copies, weights)
            aggregate = lambda tau: inserted(base + tau * direction)
        else:

            def aggregate(tau):
                b = jnp.broadcast_to(base + tau * direction, (n_byz, d))
                return pipe.aggregate(jnp.concatenate([honest, b], axis=0), state0, key, valid)[0]

        return lambda tau: jnp.linalg.norm(aggregate(tau) - mean)

    def tau(self, view: AttackerView, n_byz: int, key, reuse: bool = True, present=None) -> jax.Array:
        """The attack factor chosen by the line search."""
        objective = self.objective(view, n_byz, key, reuse, present)
        return positive_line_search(objective, self.start, self.delta, self.ratio, self.evals).best

    def byzantine_vectors(self, view, n_byz, key, present=None):
        copies, present = (n_byz, present) if self.f is None else (self.f, None)
        base, direction = self.base_and_direction(view.honest)
        b = base + self.tau(view, copies, key, present=present) * direction
        return jnp.broadcast_to(b, (n_byz,) + b.shape)


class Optimal_InnerProductManipulation(_OptimalAttack):
    """IPM with tau chosen each round by line search against the pipeline (ByzFL; arXiv 2602.03329, the attacks of its experiments).
    Sees: honest vectors and the aggregation pipeline."""

    def base_and_direction(self, honest):
        mean = _kernels.column_mean(honest)
        return jnp.zeros_like(mean), -mean


class Optimal_ALittleIsEnough(_OptimalAttack):
    """ALIE with tau chosen each round by line search against the pipeline (ByzFL; arXiv 2602.03329, the attacks of its experiments).
    Sees: honest vectors and the aggregation pipeline."""

    def base_and_direction(self, honest):
        return _kernels.column_mean(honest), _honest_std(honest)
