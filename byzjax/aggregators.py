"""Robust aggregation rules ``[n, d] -> [d]`` (ByzFL names and parameters).

Every rule is an equinox Module. ``rule(vectors)`` works eagerly on NumPy or JAX
arrays like ByzFL's ``rule(vectors)``; inside the compiled loop the oracle calls
``rule.aggregate(vectors, state, key)``, which also threads the state of stateful
rules. The assumed number of Byzantine workers ``f`` is stored as an integer array
so it can be swept by ``vmap`` without recompiling; selections depend on ``f``
only through masks (``byzjax._kernels``).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import _kernels
from byzjax._validation import ConfigError, as_matrix, concrete_values, int_array


class AbstractAggregator(eqx.Module):
    """An aggregation rule: ``n`` vectors of dimension ``d`` in, one vector out."""

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` if the rule cannot run on ``n`` input vectors."""

    def init(self, d: int, dtype) -> object:
        """State carried across rounds (``None`` for stateless rules)."""
        return None

    @abc.abstractmethod
    def aggregate(self, vectors: jax.Array, state, key) -> tuple[jax.Array, object]:
        """Aggregate ``vectors [n, d]`` -> ``([d], new_state)``; pure and jittable."""

    def __call__(self, vectors, key=None):
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array."""
        was_numpy = isinstance(vectors, np.ndarray)
        vectors = as_matrix(vectors)
        self.check(vectors.shape[0])
        key = jax.random.key(0) if key is None else key
        out, _ = self.aggregate(vectors, self.init(vectors.shape[1], vectors.dtype), key)
        return np.asarray(out) if was_numpy else out


def check_f(rule: str, f, n: int | None = None, *, need: str = "2f < n") -> None:
    """Validate a (possibly batched) ``f`` for ``rule`` on ``n`` inputs."""
    values = concrete_values(f)
    if values is None:
        return
    if np.any(values < 0):
        raise ConfigError(f"{rule}: f must be >= 0, got f={values.tolist()}")
    if n is None:
        return
    bad = 2 * values >= n if need == "2f < n" else values >= n
    if np.any(bad):
        raise ConfigError(
            f"{rule}: needs {need}, got f={values.max()} with n={n} "
            f"(allowed: 0 <= f <= {(n - 1) // 2 if need == '2f < n' else n - 1})"
        )


class Average(AbstractAggregator):
    """Plain mean ``(1/n) sum_i x_i`` (no robustness; kappa unbounded). Cost O(nd)."""

    def aggregate(self, vectors, state, key):
        return jnp.mean(vectors, axis=0), state


class Median(AbstractAggregator):
    """Coordinate-wise median (Yin et al., 2018). Cost O(n log^2 n d) via a sorting network.

    For even ``n`` this is the mean of the two middle values (NumPy's convention;
    ByzFL with torch tensors returns the lower middle value instead).
    """

    def aggregate(self, vectors, state, key):
        n = vectors.shape[0]
        s = _kernels.sort_rows(vectors)
        return 0.5 * (s[(n - 1) // 2] + s[n // 2]), state


class TrMean(AbstractAggregator):
    """Coordinate-wise trimmed mean (Yin et al., 2018), PAPER.md section 3.

    ``[TrMean_f(x)]_k = (1/(n-2f)) sum_{j=f+1}^{n-f} [x_{pi(j)}]_k`` where ``pi`` sorts
    coordinate ``k``; ``f = 0`` is the mean. Needs ``2f < n``. kappa = O(f/n) after NNM.
    Cost O(n log^2 n d) (sorting network, ``byzjax._kernels.sort_rows``).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("TrMean", self.f)

    def check(self, n):
        check_f("TrMean", self.f, n)

    def aggregate(self, vectors, state, key):
        n = vectors.shape[0]
        w = _kernels.trimmed_weights(n, self.f, vectors.dtype)
        return w @ _kernels.sort_rows(vectors), state
