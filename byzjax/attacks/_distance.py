"""Distance-bounded attacks (Shejwalkar & Houmansadr, NDSS 2021): Min-Max and Min-Sum."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import ConfigError
from byzjax.attacks._base import AbstractCopyAttack, _honest_std, _require_count


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


class _DistanceBoundedAttack(AbstractCopyAttack):
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

    def byzantine_vector(self, view, key):
        honest = view.honest
        mean = _kernels.column_mean(honest)
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
