"""The attack protocol: ``AbstractAttack`` (one Byzantine vector, copied) and per-worker attacks."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import ConfigError, as_matrix, concrete_values
from byzjax.aggregators import AbstractAggregator


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


def _honest_std(honest: jax.Array) -> jax.Array:
    """Coordinate-wise standard deviation with ddof = 1 (torch's default, as ByzFL)."""
    n = honest.shape[0]
    centred = honest - jnp.mean(honest, axis=0)
    return jnp.sqrt(jnp.sum(centred * centred, axis=0) / max(n - 1, 1))
