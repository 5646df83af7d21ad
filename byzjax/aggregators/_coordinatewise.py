"""Coordinate-wise rules: the mean, the median, the trimmed mean and the mean around the median."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from byzjax import _kernels
from byzjax._validation import check_f, int_array
from byzjax.aggregators._base import AbstractAggregator
from byzjax.aggregators._columns import _mean_around_median, coordinatewise
from byzjax.aggregators._common import _masked_mean, _row, present_rows


class Average(AbstractAggregator):
    """Plain mean ``(1/n) sum_i x_i`` (no robustness; kappa unbounded). Cost O(nd)."""

    def aggregate(self, vectors, state, key, valid=None):
        if valid is None:
            return jnp.mean(vectors, axis=0), state
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

            def middle(cols):
                s = _kernels.sort_rows(cols)
                return 0.5 * (s[(n - 1) // 2] + s[n // 2])

            return coordinatewise(middle, vectors), state

        def middle_of_present(cols, m):
            s = _kernels.sort_rows(cols)
            return 0.5 * (_row(s, (m - 1) // 2) + _row(s, m // 2))

        m = jnp.sum(valid).astype(jnp.int32)
        return coordinatewise(middle_of_present, _kernels.absent_last(vectors, valid), m), state


class TrMean(AbstractAggregator):
    """Coordinate-wise trimmed mean (Yin et al., 2018), PAPER.md section 3.

    ``[TrMean_f(x)]_k = (1/(n-2f)) sum_{j=f+1}^{n-f} [x_{pi(j)}]_k`` where ``pi`` sorts
    coordinate ``k``; ``f = 0`` is the mean. Needs ``2f < n``. kappa = O(f/n) after NNM.
    Cost O(n log^2 n d) (``_kernels.sort_rows``).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("TrMean", self.f)

    def check(self, n):
        check_f("TrMean", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        if valid is None:
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype)
        else:  # absent rows sort last and get weight 0
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype, jnp.sum(valid))
            vectors = _kernels.absent_last(vectors, valid)
        return coordinatewise(lambda cols, w: w @ _kernels.sort_rows(cols), vectors, w), state


class Meamed(AbstractAggregator):
    """Mean around median (Xie et al., 2018): per coordinate, the mean of the ``n - f``
    values nearest to the coordinate-wise median.

    Median with NumPy's convention (mean of the two middle values for even ``n``;
    ByzFL-torch takes the lower one). When two values are equally far on both sides
    of the median, the higher one is dropped (ByzFL: argpartition's choice, which
    keeps the lower one in its documented example). Needs ``2f < n``.
    Cost O(n log^2 n d) (``_kernels.sort_rows``) + O(n d).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("Meamed", self.f)

    def check(self, n):
        check_f("Meamed", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        if valid is None:
            n = vectors.shape[0]
            around = lambda cols, f: _mean_around_median(_kernels.sort_rows(cols), n, f)
            return coordinatewise(around, vectors, self.f), state
        m = jnp.sum(valid).astype(jnp.int32)
        around = lambda cols, m, f: _mean_around_median(_kernels.sort_rows(cols), m, f)
        return coordinatewise(around, _kernels.absent_last(vectors, valid), m, self.f), state
