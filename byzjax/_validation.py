"""Eager argument checks shared by components: one-line errors before any compilation.

One style: a component passes itself, ``check_param(self, "nu", self.nu, lambda v: v > 0, "> 0")``,
and the message starts with its class name (``component_name``), so a subclass's errors name the
subclass and no call spells a class name. ``check_f`` tests ``f >= 0`` and a requirement of
``_NEEDS``; ``component_error(self, message)`` builds any other one-line error.
"""

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


def component_name(owner) -> str:
    """The name that starts a component's error messages: its class name (``type(owner).__name__``).

    A string is taken as the name itself, for callers outside the components (functions
    such as ``empirical_kappa``, or modules validating before their ``self`` exists)."""
    return owner if isinstance(owner, str) else type(owner).__name__


def component_error(owner, message: str) -> ConfigError:
    """``ConfigError("<class name>: <message>")``, the one-line error of a component."""
    return ConfigError(f"{component_name(owner)}: {message}")


def check_f(owner, f, n: int | None = None, *, need: str | None = "2f < n") -> None:
    """Validate a (possibly batched) ``f`` of ``owner``: ``f >= 0``, and with ``n`` the
    requirement ``need`` (a key of ``_NEEDS``; ``None``: none beyond ``f >= 0``)."""
    values = concrete_values(f)
    if values is None:
        return
    if np.any(values < 0):
        raise component_error(owner, f"f must be >= 0, got f={values.tolist()}")
    if n is None or need is None:
        return
    holds, largest = _NEEDS[need]
    if not np.all(holds(values, n)):
        raise component_error(
            owner, f"needs {need}, got f={values.max()} with n={n} (allowed: 0 <= f <= {largest(n)})"
        )


def check_param(owner, name: str, x, holds, allowed: str) -> None:
    """Raise ``ConfigError`` unless every concrete value of ``x`` satisfies ``holds``."""
    values = concrete_values(x)
    if values is not None and not np.all(holds(values)):
        raise component_error(owner, f"{name} must be {allowed}, got {name}={values.tolist()}")


def check_count(owner, name: str, value, minimum: int) -> None:
    """Validate a static integer (iterations, bucket size, index) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise component_error(owner, f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def check_choice(owner, name: str, value, choices) -> None:
    """Validate a static option against its allowed values."""
    if value not in choices:
        raise component_error(owner, f"{name} must be one of {list(choices)}, got {name}={value!r}")


def check_index(owner, name: str, value: int, n: int) -> None:
    """Validate a static row index against the ``n`` input rows: ``0 <= value < n``."""
    if value >= n:
        raise component_error(
            owner, f"needs {name} < n, got {name}={value} with n={n} (allowed: 0 <= {name} <= {n - 1})"
        )
