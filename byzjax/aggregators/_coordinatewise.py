"""Coordinate-wise rules: the mean, the median, the trimmed mean and the mean around the median."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_choice
from byzjax.aggregators._base import AbstractAggregator, AbstractFRule
from byzjax.aggregators._columns import _mean_around_median, coordinatewise
from byzjax.aggregators._common import _masked_mean, _row, finite_rows, present_rows, sorted_last


class Average(AbstractAggregator):
    """Plain mean ``(1/n) sum_i x_i`` (no robustness; kappa unbounded). Cost O(nd).

    Not robust (``robust = False``): one far row moves it without bound, and a
    non-finite row makes it non-finite.
    """

    robust: ClassVar[bool] = False

    def aggregate(self, vectors, state, key, valid=None):
        if valid is None:
            return _kernels.column_mean(vectors), state
        x, _ = present_rows(vectors, valid)
        return _masked_mean(valid, x), state


class Median(AbstractAggregator):
    """Coordinate-wise median (Yin et al., 2018). Cost O(n log^2 n d) (``_kernels.sort_rows``).

    For even ``n`` this is the mean of the two middle values (NumPy's convention;
    ByzFL with torch tensors returns the lower middle value instead).
    """

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        if valid is None:

            def middle(cols, near):
                s = _kernels.sort_rows(_kernels.absent_last(cols, near))
                return 0.5 * (s[(n - 1) // 2] + s[n // 2])

            return coordinatewise(middle, vectors, finite_rows(vectors)), state

        def middle_of_present(cols, m):
            s = _kernels.sort_rows(cols)
            return 0.5 * (_row(s, (m - 1) // 2) + _row(s, m // 2))

        m = jnp.sum(valid).astype(jnp.int32)
        return coordinatewise(middle_of_present, sorted_last(vectors, valid), m), state


class TrMean(AbstractFRule):
    """Coordinate-wise trimmed mean (Yin et al., 2018), as used in the experiments of arXiv 2602.03329.

    ``[TrMean_f(x)]_k = (1/(n-2f)) sum_{j=f+1}^{n-f} [x_{pi(j)}]_k`` where ``pi`` sorts
    coordinate ``k``; ``f = 0`` is the mean. Needs ``2f < n``. kappa = O(f/n) after NNM.
    Cost O(n log^2 n d) (``_kernels.sort_rows``).
    """

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        if valid is None:
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype)
        else:  # absent rows sort last and get weight 0
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype, jnp.sum(valid))
        near = finite_rows(vectors) if valid is None else valid & finite_rows(vectors)
        trimmed = lambda cols, near, w: w @ _kernels.sort_rows(_kernels.absent_last(cols, near))
        return coordinatewise(trimmed, vectors, near, w), state


def _around_lower_median(cols, near, count, f):
    """ByzFL-torch's Meamed on columns: the median is the lower middle value
    ``s[(count - 1) // 2]``, and the ``count - f`` values nearest to it are kept with
    equal distances going to the lower row index (a stable sort of the distances,
    the order ``argpartition`` returns on small inputs); rows not ``near`` come last."""
    s = _kernels.sort_rows(cols)
    med = _row(s, (count - 1) // 2)
    dist = jnp.where(near[:, None], jnp.abs(cols - med), jnp.inf)
    order = jnp.argsort(dist, axis=0, stable=True)
    kept = jnp.take_along_axis(cols, order, axis=0)
    keep = jnp.arange(cols.shape[0])[:, None] < count - f
    return jnp.sum(jnp.where(keep, kept, 0.0), axis=0) / (count - f).astype(cols.dtype)


MEAMED_TIES = ("numpy", "byzfl")


class Meamed(AbstractFRule):
    """Mean around median (Xie et al., 2018): per coordinate, the mean of the ``n - f``
    values nearest to the coordinate-wise median. Needs ``2f < n``.

    ``ties="numpy"`` (the default): the median is NumPy's (mean of the two middle
    values for even ``n``) and, when two values are equally far on both sides of
    the median, the higher one is dropped. Cost O(n log^2 n d) + O(n d).
    ``ties="byzfl"``: ByzFL-torch's convention, the lower middle value as the median
    and equal distances kept in row order (lower index first, as ``argpartition``
    on ByzFL's documented example); the two differ only on inputs with ties or even
    ``n``. Cost O(n log^2 n d) + O(n log n d).
    """

    ties: str = eqx.field(static=True, default="numpy")

    def __check_init__(self):
        check_choice(self, "ties", self.ties, MEAMED_TIES)

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        m = n if valid is None else jnp.sum(valid).astype(jnp.int32)
        cols = sorted_last(vectors, valid)
        if self.ties == "byzfl":
            near = finite_rows(vectors) if valid is None else valid & finite_rows(vectors)
            return coordinatewise(_around_lower_median, cols, near, jnp.asarray(m, jnp.int32), self.f), state
        if valid is None:
            around = lambda cols, f: _mean_around_median(_kernels.sort_rows(cols), n, f)
            return coordinatewise(around, cols, self.f), state
        around = lambda cols, m, f: _mean_around_median(_kernels.sort_rows(cols), m, f)
        return coordinatewise(around, cols, m, self.f), state
