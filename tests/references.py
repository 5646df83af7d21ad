"""NumPy float64 references of the rules used in several test files (our own transcriptions of
the formulas): one copy, imported by the tests (and re-exported by ``helpers``)."""

from __future__ import annotations

import numpy as np


def np_nnm(x, f):
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023): each row replaced by the mean of
    its ``n - f`` nearest rows (itself included), ties to the lower index (a stable argsort of
    the squared distances)."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, : len(x) - f]
    return x[nearest].mean(axis=1)


def np_trmean(x, f):
    """Coordinate-wise trimmed mean (Yin et al., 2018): per coordinate, the mean of the sorted
    values ``f + 1 .. n - f``."""
    return np.sort(x, axis=0)[f : len(x) - f].mean(axis=0)
