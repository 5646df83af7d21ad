"""Hyperparameter selection rules on finished runs.

``lowest_auc``: the rule of the authors' later experiments (arXiv 2602.03329, their revised
protocol): per method, the step whose training-loss curves at ``f = 0`` have the lowest area
under the curve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np


class AucChoice(NamedTuple):
    """The step ``lowest_auc`` selects for one method, and what it was chosen from."""

    step: float  # the selected step
    auc: float  # its area under the curve (mean over rounds, then over its finite curves)
    scores: dict  # every candidate step -> its AUC (+inf: every curve of it had a non-finite value)
    discarded: dict  # every candidate step -> how many of its curves were discarded (non-finite)


def curve_auc(loss) -> float:
    """Area under one training-loss curve, normalised by its length: ``(1/T) sum_t L_H(x_t)``;
    ``+inf`` when any value is non-finite (a curve that is discarded)."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.size == 0:
        raise ValueError("curve_auc: empty loss curve")
    return float(loss.mean()) if np.all(np.isfinite(loss)) else np.inf


def lowest_auc(curves: Iterable[Mapping]) -> dict[str, AucChoice]:
    """Per method, the step with the lowest area under its training-loss curves at ``f = 0``.

    ``curves``: one entry per run and seed, a mapping with ``method`` (the method family, e.g.
    ``"D-GD"``), ``step`` (the tuned number: lr, eta, theta), ``loss`` (the curve, one value per
    round or iteration) and optionally ``f`` (entries with ``f != 0`` are ignored; default 0).
    The score of a step is ``mean_seeds (1/T) sum_t L_H(x_t)`` over its curves without a
    non-finite value (the others are discarded, and counted in ``AucChoice.discarded``); a step
    whose every curve is discarded scores +inf and is never chosen unless no step of the method
    has a finite curve (then ``AucChoice.auc`` is +inf). Ties go to the smaller step.
    """
    per = defaultdict(lambda: defaultdict(list))
    for c in curves:
        if float(c.get("f", 0)) != 0:
            continue
        per[str(c["method"])][float(c["step"])].append(curve_auc(c["loss"]))
    out = {}
    for method, steps in per.items():
        scores, discarded = {}, {}
        for step in sorted(steps):
            values = np.asarray(steps[step])
            finite = values[np.isfinite(values)]
            scores[step] = float(finite.mean()) if finite.size else np.inf
            discarded[step] = int(values.size - finite.size)
        best = min(scores, key=lambda s: (scores[s], s))
        out[method] = AucChoice(best, scores[best], scores, discarded)
    return out
