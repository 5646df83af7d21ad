"""The aggregation-rule protocol: ``AbstractAggregator`` and its compiled eager entry point."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import numpy as np

from byzjax._validation import as_matrix


class AbstractAggregator(eqx.Module):
    """An aggregation rule: ``n`` vectors of dimension ``d`` in, one vector out."""

    supports_absent: ClassVar[bool] = True  # accepts a ``valid`` row mask (see the module docstring)
    robust: ClassVar[bool] = True  # up to f arbitrary (huge, non-finite) rows move it by a bounded amount

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` if the rule cannot run on ``n`` input vectors."""

    def init(self, d: int, dtype) -> object:
        """State carried across rounds (``None`` for stateless rules)."""
        return None

    @abc.abstractmethod
    def aggregate(self, vectors: jax.Array, state, key, valid=None) -> tuple[jax.Array, object]:
        """Aggregate ``vectors [n, d]`` -> ``([d], new_state)``; pure and jittable.

        ``valid [n]`` (bool, optional): the rows present this round; the others are
        ignored, as if the rule ran on the present rows only. ``None``: all present.
        """

    def __call__(self, vectors, key=None):
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array (one round from ``init``).

        Runs ``apply`` (compiled once per rule structure and input shape); NumPy in
        gives NumPy out.
        """
        was_numpy = isinstance(vectors, np.ndarray)
        vectors = as_matrix(vectors)
        self.check(vectors.shape[0])
        key = jax.random.key(0) if key is None else key
        out, _ = apply(self, vectors, self.init(vectors.shape[1], vectors.dtype), key)
        return np.asarray(out) if was_numpy else out


@jax.jit
def apply(rule: AbstractAggregator, vectors: jax.Array, state, key) -> tuple[jax.Array, object]:
    """``rule.aggregate(vectors, state, key)`` compiled; the rule's arrays are traced
    arguments, so rules differing only in ``f``, ``tau``, ... share one program."""
    return rule.aggregate(vectors, state, key)
