"""The attack protocol: what an omniscient attacker sees (``AttackerView``), ``AbstractAttack`` (one
entry point), the copy-attack base (``n_byz`` copies of one vector) and the per-worker base."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._kernels import column_std
from byzjax._validation import ConfigError, concrete_values
from byzjax.aggregators import AbstractAggregator, eager_call
from byzjax.problems import AbstractProblem


def _require(attack: str, name: str, x, ok, rule: str) -> None:
    """Raise ``ConfigError`` if a concrete (possibly batched) hyperparameter breaks ``rule``."""
    values = concrete_values(x)
    if values is not None and not np.all(ok(values)):
        raise ConfigError(f"{attack}: {name} {rule}, got {name}={values.tolist()}")


def _require_count(attack: str, name: str, x) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or x <= 0:
        raise ConfigError(f"{attack}: {name} must be a positive integer, got {x!r}")


class AttackerView(eqx.Module):
    """What an omniscient attacker sees in one round.

    ``honest [n_h, d]``: the messages the honest workers send this round (their gradients, or
    mini-batch gradients, or worker momenta). ``x [d]``: the query point. ``shards``: the honest
    workers' data the messages were computed on (stacked, leading axis ``n_h``; the mini-batches
    when workers send mini-batch gradients). ``problem``: the local loss. ``aggregator``: the
    server's pipeline. Inside an experiment the oracle fills in every field; the ByzFL-style eager
    call ``attack(honest_vectors)`` sees ``honest`` only (the other fields are ``None``).
    """

    honest: jax.Array
    x: jax.Array | None = None
    shards: object = None  # the problem's shard type, stacked over honest workers
    problem: AbstractProblem | None = None
    aggregator: AbstractAggregator | None = None

    @property
    def has_data(self) -> bool:
        """Whether the view holds the point, the shards and the problem (not in the eager call)."""
        return self.problem is not None

    def gradients(self, shards) -> jax.Array:
        """``[n_h, d]``: ``grad L(x; shard_i)`` of the view's problem at ``x`` for each of ``shards``."""
        return jax.vmap(jax.grad(self.problem.loss), in_axes=(None, 0))(self.x, shards)


class AbstractAttack(eqx.Module):
    """Byzantine behaviour: ``byzantine_vectors(view, n_byz, key, present) -> [n_byz, d]``.

    ``needs_labels`` (capability): the attack reads the labels of the honest shards, so the
    problem must have labels (``AbstractProblem.has_labels``). ``check(n_honest, n_byz)`` is the
    one optional hook, for constraints that depend on the setting (no-op by default).
    """

    needs_labels: ClassVar[bool] = False

    def check(self, n_honest: int, n_byz: int) -> None:
        """Raise ``ConfigError`` if the attack cannot run with ``n_honest`` honest and ``n_byz``
        Byzantine rows (hook; no constraint by default)."""

    @abc.abstractmethod
    def byzantine_vectors(self, view: AttackerView, n_byz: int, key, present=None) -> jax.Array:
        """The ``[n_byz, d]`` Byzantine rows from what the attacker sees; ``present [n_byz]``
        (optional bool) marks the rows the server receives this round."""

    def __call__(self, honest_vectors, key=None):
        """ByzFL-style call: one Byzantine vector ``[d]`` for ``honest_vectors [n_h, d]`` (a view
        with the honest vectors only). Compiled once per attack structure and input shape, so
        repeated calls do not retrace the searches; NumPy in gives NumPy out."""
        return eager_call(self, _first_row, honest_vectors, key, what="honest_vectors", check=lambda n: self.check(n, 1))


@eqx.filter_jit
def _first_row(attack: AbstractAttack, honest: jax.Array, key) -> jax.Array:
    return attack.byzantine_vectors(AttackerView(honest), 1, key)[0]


class AbstractCopyAttack(AbstractAttack):
    """Every Byzantine worker sends the same vector ``byzantine_vector(view, key) [d]``."""

    @abc.abstractmethod
    def byzantine_vector(self, view: AttackerView, key) -> jax.Array:
        """The vector ``[d]`` sent by every Byzantine worker."""

    def byzantine_vectors(self, view, n_byz, key, present=None):
        b = self.byzantine_vector(view, key)
        return jnp.broadcast_to(b, (n_byz,) + b.shape)


class AbstractPerWorkerAttack(AbstractAttack):
    """An attack whose Byzantine rows are independent draws: subclasses implement
    ``byzantine_vectors`` as one draw of shape ``[n_byz, d]`` from ``key`` (Gaussian, Fang)."""


def _honest_std(honest: jax.Array) -> jax.Array:
    """Coordinate-wise standard deviation with ddof = 1 (torch's default, as ByzFL), its sums as
    matrix-vector products (``_kernels.column_std``: XLA:CPU reduces a wide ``[n, d]`` block over its
    leading axis slowly)."""
    return column_std(honest, 1)
