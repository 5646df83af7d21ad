"""Eager argument checks shared by components: one-line errors before any compilation."""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


class ConfigError(ValueError):
    """A component or experiment was configured with values it cannot run with."""


def is_concrete(x) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def int_array(x) -> jax.Array:
    """Converter for integer hyperparameters that may be swept (``f``, counts)."""
    if isinstance(x, (bool, np.bool_)):
        raise ConfigError(f"expected an integer, got the boolean {x!r}")
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
            raise ConfigError(f"expected an integer, got {x!r}")
        if arr.dtype.kind not in "iuf":
            raise ConfigError(f"expected an integer, got {x!r}")
    return jnp.asarray(x, dtype=jnp.int32)


def float_array(x) -> jax.Array:
    """Converter for real hyperparameters that may be swept (step sizes, tau, ...)."""
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise ConfigError(f"expected a number, got {x!r}")
    return jnp.asarray(x, dtype=jnp.result_type(float))


def concrete_values(x):
    """All values of a possibly batched concrete array, or None inside a trace."""
    return np.asarray(x).reshape(-1) if is_concrete(x) else None


def as_matrix(vectors, what: str = "vectors") -> jax.Array:
    """Convert NumPy/JAX input to a ``[n, d]`` float array, with a clear error otherwise."""
    arr = jnp.asarray(vectors)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [n, d], got shape {tuple(arr.shape)}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr
