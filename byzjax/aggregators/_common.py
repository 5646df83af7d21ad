"""Masking and small numerical helpers shared by the rules (absent rows, clipping scales, medians)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import ConfigError


def clip_scale(norms: jax.Array, threshold) -> jax.Array:
    """``min(1, threshold / norm)``, and 1 where ``norm <= threshold`` (no 0/0)."""
    over = norms > threshold
    return jnp.where(over, threshold / jnp.where(over, norms, 1.0), 1.0)


def _median(values: jax.Array, valid=None) -> jax.Array:
    """Median of a 1-D array (mean of the two middle values for even length, as NumPy),
    over the entries where ``valid`` holds if given."""
    if valid is None:
        s = jnp.sort(values)
        m = s.shape[0]
        return 0.5 * (s[(m - 1) // 2] + s[m // 2])
    s = jnp.sort(jnp.where(valid, values, jnp.inf))
    m = jnp.sum(valid)
    return 0.5 * (s[(m - 1) // 2] + s[m // 2])


def _row(s: jax.Array, i) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(s, i, keepdims=False)


def _sum_smallest(sq_dists: jax.Array, k) -> jax.Array:
    """Row-wise sum of the ``k`` smallest entries (``k`` may be traced; +inf entries past k ignored)."""
    s = jnp.sort(sq_dists, axis=-1)
    return jnp.sum(jnp.where(jnp.arange(s.shape[-1]) < k, s, 0.0), axis=-1)


def present_rows(vectors: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(vectors with the absent rows zeroed, m = number of present rows)``.

    Zeroing first means an absent row can hold anything (NaN, Inf) without
    reaching a matmul or a norm of the present rows.
    """
    return jnp.where(valid[:, None], vectors, 0.0), jnp.sum(valid).astype(jnp.int32)


def _present_or_all(vectors: jax.Array, valid) -> tuple[jax.Array, int | jax.Array, jax.Array]:
    """``(vectors, m, present)``: ``present_rows`` and the mask, or, without a mask, the vectors,
    ``n`` and an all-true mask (for rules whose masked and unmasked code is one)."""
    if valid is None:
        return vectors, vectors.shape[0], jnp.ones(vectors.shape[0], bool)
    return *present_rows(vectors, valid), valid


def require_all_present(rule: str, valid) -> None:
    """Trace-time guard for rules that cannot ignore absent rows."""
    if valid is not None:
        raise ConfigError(f"{rule}: does not support absent workers (a row mask); its subset enumeration fixes n - f")


def _masked_sq_dists(vectors: jax.Array, valid) -> jax.Array:
    """Pairwise squared distances with +inf to and from absent rows (0 on the diagonal)."""
    d2 = _kernels.pairwise_sq_dists(vectors)
    if valid is None:
        return d2
    pair = valid[:, None] & valid[None, :]
    return jnp.where(pair | jnp.eye(vectors.shape[0], dtype=bool), d2, jnp.inf)


def _masked_mean(mask: jax.Array, vectors: jax.Array) -> jax.Array:
    """Mean of the rows where ``mask`` holds; the zero vector if none does."""
    w = mask.astype(vectors.dtype)
    return w @ vectors / jnp.maximum(jnp.sum(w), 1.0)


def _unit_normal(key, d: int, dtype) -> jax.Array:
    """A uniformly random unit vector in ``R^d`` (a normalised Gaussian)."""
    v = jax.random.normal(key, (d,), dtype)
    return v / jnp.linalg.norm(v)
