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


def np_adaptive_clipping(x, f, variant="authors", passes=5, tol=1e-6):
    """The authors' "Huber" aggregator (arXiv 2602.03329, their later code), as their loop: from
    ``v = 0``, up to ``passes`` times: ``d = ||x_i - v||``, ``r = sorted(d)[-min(n, 2f)]`` (Python's
    index, so ``sorted(d)[0]`` at ``f = 0``; ``variant="fixed"``: no clipping at ``f = 0``), ``dv =``
    the mean of ``(x_i - v) min(1, r / d_i)``, ``v += dv``, stop once ``||dv|| < tol``."""
    n, v = len(x), np.zeros(x.shape[1])
    for _ in range(passes):
        diff = x - v
        d = np.linalg.norm(diff, axis=1)
        r = np.inf if (variant == "fixed" and f == 0) else sorted(d)[-min(n, 2 * f)]
        scale = np.array([1.0 if di <= r else r / di for di in d])
        dv = (diff * scale[:, None]).mean(axis=0)
        v = v + dv
        if np.linalg.norm(dv) < tol:
            break
    return v
