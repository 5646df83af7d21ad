"""Masking and small numerical helpers shared by the rules (absent and non-finite rows,
clipping scales, medians, scale-safe frames)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import component_error


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


def require_all_present(owner, valid) -> None:
    """Trace-time guard for rules that cannot ignore absent rows (the error names ``owner``'s class)."""
    if valid is not None:
        raise component_error(owner, "does not support absent workers (a row mask); its subset enumeration fixes n - f")


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


class Rows(NamedTuple):
    """The rows a rule works on, with absent and non-finite rows made harmless (``rows``)."""

    x: jax.Array  # [n, d]: the vectors, absent and non-finite rows zeroed
    m: int | jax.Array  # rows present (received), the non-finite ones included
    present: jax.Array  # [n] bool: received this round
    near: jax.Array  # [n] bool: present and finite (every coordinate)


def finite_rows(vectors: jax.Array) -> jax.Array:
    """``[n]`` bool: the rows whose coordinates are all finite (no NaN, no +-Inf). One O(n d)
    reduction: a row sum is finite iff every coordinate is, up to an overflow of the sum,
    which marks a row near the largest float as infinitely far too."""
    return jnp.isfinite(jnp.sum(vectors, axis=1))


def rows(vectors: jax.Array, valid=None) -> Rows:
    """The shared treatment of absent and non-finite rows (see ``byzjax.aggregators``).

    A present row with a NaN or +-Inf coordinate is infinitely far from everything: it
    counts in ``m`` (the rule's ``n``) but is zeroed in ``x`` and marked not ``near``, so
    that rules give it weight 0, distance +inf and never select it. Absent rows are
    neither counted nor near. Without a mask ``m`` is the static ``n``.
    """
    n = vectors.shape[0]
    present = jnp.ones(n, bool) if valid is None else valid
    m = n if valid is None else jnp.sum(valid).astype(jnp.int32)
    near = present & finite_rows(vectors)
    return Rows(jnp.where(near[:, None], vectors, 0.0), m, present, near)


def sorted_last(vectors: jax.Array, valid=None) -> jax.Array:
    """Values for the coordinate-wise rules: absent and non-finite rows replaced by the
    largest finite float, so that a column sort puts them after every finite value
    (a non-finite row counts, ranked last in every coordinate: trimmed first) while
    weighted sums that give them weight 0 stay exact. O(n d)."""
    near = finite_rows(vectors) if valid is None else valid & finite_rows(vectors)
    return _kernels.absent_last(vectors, near)


def far_sq_dists(x: jax.Array, near: jax.Array) -> jax.Array:
    """Pairwise squared distances of the zeroed rows ``x`` with +inf to and from the rows
    that are not ``near`` (0 on the diagonal); an overflow (NaN) reads as +inf."""
    d2 = _kernels.pairwise_sq_dists(x)
    pair = near[:, None] & near[None, :] & ~jnp.isnan(d2)
    return jnp.where(pair | jnp.eye(x.shape[0], dtype=bool), d2, jnp.inf)


def _pow2_scale(amax: jax.Array) -> jax.Array:
    """The smallest power of two ``>= amax`` (1 for 0): dividing by it is exact."""
    return jnp.where(amax > 0, jnp.exp2(jnp.ceil(jnp.log2(jnp.where(amax > 0, amax, 1.0)))), 1.0).astype(amax.dtype)


def masked_median(x: jax.Array, near: jax.Array) -> jax.Array:
    """Coordinate-wise median ``[d]`` of the rows where ``near`` holds (NumPy's convention;
    zeros if none). O(n log^2 n d)."""
    s = _kernels.sort_rows(_kernels.absent_last(x, near))
    k = jnp.sum(near)
    med = 0.5 * (_row(s, jnp.maximum(k - 1, 0) // 2) + _row(s, k // 2))
    return jnp.where(k > 0, med, 0.0)


def centred_frame(x: jax.Array, near: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(y, centre, scale)`` with ``y = (x - centre) / scale`` on the ``near`` rows (0 elsewhere),
    ``centre`` their coordinate-wise median and ``scale`` the power of two above the largest
    ``|y|`` entry, so ``|y| <= 1``: squares and Gram matrices of ``y`` cannot overflow
    whatever the size of the far rows, and the median keeps the close rows' digits."""
    centre = masked_median(x, near)
    y = jnp.where(near[:, None], x - centre, 0.0)
    scale = _pow2_scale(jnp.max(jnp.abs(y)))
    return y / scale, centre, scale


def nan_to_inf(scores: jax.Array) -> jax.Array:
    """NaN scores read as +inf, so that an argmin never picks them."""
    return jnp.where(jnp.isnan(scores), jnp.inf, scores)
