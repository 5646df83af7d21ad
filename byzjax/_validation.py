"""Eager argument checks shared by components: one-line errors before any compilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class ConfigError(ValueError):
    """A component or experiment was configured with values it cannot run with."""


def is_concrete(x) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap)."""
    return not isinstance(x, jax.core.Tracer)


SWEEP_HINT = "give a list in the config file, or build one component per value and run them with byzjax.run_grid"


def _no_sequence(x) -> None:
    """A Python list or tuple where one number is expected: say how to sweep instead
    (arrays with a batch axis stay accepted: stacked components are vmapped)."""
    if isinstance(x, (list, tuple)):
        raise ConfigError(f"expected a single number, got the {type(x).__name__} {x!r}; to sweep, {SWEEP_HINT}")


def int_array(x) -> jax.Array:
    """Converter for integer hyperparameters that may be swept (``f``, counts)."""
    _no_sequence(x)
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
    _no_sequence(x)
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise ConfigError(f"expected a number, got {x!r}")
    return jnp.asarray(x, dtype=jnp.result_type(float))


def concrete_values(x):
    """All values of a possibly batched concrete array, or None inside a trace."""
    return np.asarray(x).reshape(-1) if is_concrete(x) else None


def as_matrix(vectors, what: str = "vectors") -> jax.Array:
    """Convert NumPy/JAX input to a ``[n, d]`` float array with ``n >= 1``, with a one-line
    ``ConfigError`` otherwise (not numeric, complex, not 2-D, no rows)."""
    kind = np.asarray(vectors).dtype.kind if is_concrete(vectors) else jnp.asarray(vectors).dtype.kind
    if kind == "c":
        raise ConfigError(f"{what} must be real, got a complex array (the imaginary part would be dropped)")
    if kind not in "biuf":
        raise ConfigError(f"{what} must be a numeric array [n, d], got dtype {np.asarray(vectors).dtype}")
    arr = jnp.asarray(vectors)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [n, d], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ConfigError(f"{what} must have at least one row, got shape {tuple(arr.shape)}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


_NEEDS = {  # rule requirement -> (holds(f, n), largest allowed f)
    "2f < n": (lambda f, n: 2 * f < n, lambda n: (n - 1) // 2),
    "f < n": (lambda f, n: f < n, lambda n: n - 1),
    "f <= n": (lambda f, n: f <= n, lambda n: n),
    "n >= 4f + 3": (lambda f, n: n >= 4 * f + 3, lambda n: (n - 3) // 4),
}


def check_f(rule: str, f, n: int | None = None, *, need: str = "2f < n") -> None:
    """Validate a (possibly batched) ``f`` for ``rule`` on ``n`` inputs."""
    values = concrete_values(f)
    if values is None:
        return
    if np.any(values < 0):
        raise ConfigError(f"{rule}: f must be >= 0, got f={values.tolist()}")
    if n is None:
        return
    holds, largest = _NEEDS[need]
    if not np.all(holds(values, n)):
        raise ConfigError(
            f"{rule}: needs {need}, got f={values.max()} with n={n} (allowed: 0 <= f <= {largest(n)})"
        )


def check_param(rule: str, name: str, x, holds, allowed: str) -> None:
    """Raise ``ConfigError`` unless every concrete value of ``x`` satisfies ``holds``."""
    values = concrete_values(x)
    if values is not None and not np.all(holds(values)):
        raise ConfigError(f"{rule}: {name} must be {allowed}, got {name}={values.tolist()}")


def check_count(rule: str, name: str, value, minimum: int) -> None:
    """Validate a static integer (iterations, bucket size, index) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{rule}: {name} must be an integer >= {minimum}, got {name}={value!r}")
