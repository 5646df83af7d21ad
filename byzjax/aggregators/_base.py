"""The aggregation-rule protocol: ``AbstractAggregator``, the base ``AbstractFRule`` of the rules
told a Byzantine count ``f``, and the one eager entry point shared with the pre-aggregators."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import numpy as np

from byzjax._validation import as_matrix, check_f, int_array


def eager_call(component, program: Callable, vectors, key=None, *, what: str = "vectors", check=None):
    """The ByzFL-style eager call of a component on a NumPy or JAX ``[n, d]`` array.

    ``as_matrix`` (a one-line ``ConfigError`` naming ``what`` for anything but a real 2-D array
    with a row), ``check(n)`` (default ``component.check``), the default key
    ``jax.random.key(0)``, then ``program(component, vectors, key)``: a jitted function of the
    component, so the program is compiled once per component structure and input shape (the
    component's arrays are traced). NumPy in gives NumPy out.
    """
    was_numpy = isinstance(vectors, np.ndarray)
    vectors = as_matrix(vectors, what)
    (component.check if check is None else check)(vectors.shape[0])
    key = jax.random.key(0) if key is None else key
    out = program(component, vectors, key)
    return np.asarray(out) if was_numpy else out


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
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array: one round from ``init``
        through the compiled ``apply`` (``eager_call``); NumPy in gives NumPy out."""
        return eager_call(self, _one_round, vectors, key)


@jax.jit
def apply(rule: AbstractAggregator, vectors: jax.Array, state, key) -> tuple[jax.Array, object]:
    """``rule.aggregate(vectors, state, key)`` compiled; the rule's arrays are traced
    arguments, so rules differing only in ``f``, ``tau``, ... share one program."""
    return rule.aggregate(vectors, state, key)


def _one_round(rule: AbstractAggregator, vectors: jax.Array, key) -> jax.Array:
    """The eager call's program: ``apply`` from the rule's ``init`` state (built eagerly, so
    its checks raise before compiling), the output without the new state."""
    return apply(rule, vectors, rule.init(vectors.shape[1], vectors.dtype), key)[0]


class AbstractFRequirement(eqx.Module):
    """A component told the number ``f`` of Byzantine inputs to tolerate, with the requirement
    on ``(f, n)`` declared as ``needs`` (a key of ``byzjax._validation._NEEDS``, or ``None``
    for none beyond ``f >= 0``).

    ``check(n)`` tests ``needs`` and then the component's own ``extra_check(n)``; a component
    states its requirement by setting ``needs`` and, for anything else on ``n`` (an index below
    ``n``, a subset count), by defining ``extra_check``. Shared by ``AbstractFRule`` and
    ``byzjax.preaggregators.AbstractFPreAggregator`` (and MDA/SMEA, whose ``f`` is static).
    """

    f: eqx.AbstractVar[jax.Array | int]
    needs: ClassVar[str | None] = "2f < n"

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` unless ``f`` meets ``needs`` and ``extra_check(n)`` on ``n`` inputs."""
        check_f(self, self.f, n, need=self.needs)
        self.extra_check(n)

    def extra_check(self, n: int) -> None:
        """The component's requirements on ``n`` beyond ``needs`` (none by default)."""


class AbstractSweptF(AbstractFRequirement):
    """The swept Byzantine count: ``f`` an integer array leaf (converter ``int_array``, default 0,
    ``vmap``-able without recompiling), ``f >= 0`` checked at construction."""

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f(self, self.f)


class AbstractFRule(AbstractSweptF, AbstractAggregator):
    """An aggregation rule told ``f``: owns the field ``f`` (an array leaf, default 0), its
    construction check ``f >= 0`` and ``check(n)`` against the ClassVar ``needs`` (``"2f < n"``
    unless the rule says otherwise), plus the rule's ``extra_check(n)``."""
