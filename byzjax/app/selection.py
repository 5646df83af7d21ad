"""Hyperparameter selection on finished runs.

Two rules: ByzFL's best worst case over attacks on ``summary.csv`` rows (``best_worst_case``),
and the rule of the authors' later experiments (arXiv 2602.03329, their revised protocol): per
method, the step whose training-loss curves at ``f = 0`` have the lowest area under the curve
(``lowest_auc``).

Rows are ``summary.csv`` rows as read back (text cells) or as ``byzjax.app.results.summarise``
returns them (numbers). A row's columns fall into

- the *setting* it is tuned for: the aggregator, the ``algorithm`` column (the algorithm's name,
  ``byzjax.app.config.algorithm_name``: ``DGD``, ``DNAG``, ``PIGS``, ``AEG``, ``ProxAEG``, ...), f,
  the data instance (split, alpha, n_honest) and every other configuration column (tolerated_f,
  the rule's and pre-aggregators' numbers, ``stage``, ...); not the ``method`` label, which also
  holds the hyperparameters;
- the *attack*: ``attack`` and the attack's own numbers (``attack_*``);
- the *hyperparameters* tuned in that setting (``hyperparameter_columns``): the algorithm's numbers
  (lr, momentum, eta, ...), ``lam`` (ByzFL's weight decay), ``worker_momentum`` (ByzFL's client
  momentum) and ``local_lr``;
- ``run``, ``seed`` and the measurements (``byzjax.app.results.SUMMARY_MEASURES``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.app.results import config_columns

EXTRA_HYPERPARAMETERS = ("lam", "worker_momentum", "local_lr")
"""Tuned numbers that are not the algorithm's own: ByzFL's weight decay (byzjax's L2 term ``lam``),
ByzFL's client momentum and the local step of local-update methods."""


def _algorithm_numbers() -> frozenset[str]:
    """The summary columns of the algorithms' numbers: a parameter's name, or ``method_<name>`` where
    the name is a reserved run column (``config.RESERVED_COLUMNS``: FedAvg's cosine ``alpha`` is
    ``method_alpha``, ``alpha`` being the data split's)."""
    from byzjax.app.config import RESERVED_COLUMNS

    names = {k for cls in registry.registry("algorithm").values() for k in registry.config_params(cls)}
    return frozenset(f"method_{k}" if k in RESERVED_COLUMNS else k for k in names)


ALGORITHM_NUMBERS = _algorithm_numbers()


def hyperparameter_columns(header) -> list[str]:
    """The columns of ``header`` (in its order) that hyperparameter selection chooses among:
    every registered algorithm's parameter names and ``EXTRA_HYPERPARAMETERS``."""
    return [c for c in header if c in ALGORITHM_NUMBERS or c in EXTRA_HYPERPARAMETERS]


def attack_columns(header) -> list[str]:
    """The columns naming the attack of a row: ``attack`` and the attack's numbers ``attack_*``."""
    return [c for c in header if c == "attack" or c.startswith("attack_")]


def setting_columns(header) -> list[str]:
    """The configuration columns that fix the setting a choice is made for: everything but the
    attack, the hyperparameters and the ``method`` label, then ``algorithm`` (last)."""
    skip = set(attack_columns(header)) | set(hyperparameter_columns(header)) | {"method", "algorithm"}
    return [c for c in config_columns(header) if c not in skip] + ["algorithm"]


def check_algorithm_column(rows, where: str = "selection") -> None:
    """A one-line ``ConfigError`` unless every row names its ``algorithm`` (summary.csv's column,
    written by byzjax since it has one; ``byzjax.app.report.read_summary`` derives it for older
    folders from their recorded config)."""
    missing = sum(1 for r in rows if not _text(r.get("algorithm")))
    if missing:
        raise ConfigError(f"{where}: {missing} of {len(rows)} rows have no 'algorithm' column (the algorithm's "
                          f"name, e.g. \"DGD\"); settings are grouped by it")


def _header(rows) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        keys |= dict.fromkeys(r)
    return list(keys)


def _text(v) -> str:
    return "" if v is None else str(v)


def number(v) -> float:
    """A cell as a float: ``""``/None (not measured) and text that is not a number are ``nan``."""
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class Candidate(NamedTuple):
    """One hyperparameter choice in one setting: its value under each attack (mean over seeds)
    and its worst case over the setting's attacks."""

    setting: dict  # setting column (``setting_columns``, "algorithm" last) -> cell
    hyper: dict  # hyperparameter column -> cell (as in the rows)
    per_attack: dict  # attack key (tuple of attack cells) -> mean over seeds of the metric (nan: none)
    seeds: dict  # attack key -> number of seeds
    worst: float  # worst over attacks (nan if any attack's value is nan or the attack is missing)
    worst_attack: tuple | None  # the attack key of the worst case (None if worst is nan)
    order: int  # position of the candidate's first row in the rows


def _ranked(value: float, higher_is_better: bool) -> float:
    """A (non-nan) value as a score to maximise."""
    return value if higher_is_better else -value


def candidates(rows: list[dict], metric: str, higher_is_better: bool = True) -> list[Candidate]:
    """Every (setting, hyperparameters) of ``rows`` with its worst case over attacks of ``metric``.

    Per attack, the value is the mean over seeds of ``metric`` (a nan or empty seed makes the
    mean nan: a run that failed is not averaged away). The worst case is the minimum over the
    setting's attacks (the maximum if ``higher_is_better`` is false, e.g. for a loss); an attack
    that another candidate of the setting was run against but this one was not (an incomplete
    grid) counts as nan, and any nan makes the worst case nan, so that a candidate is never
    judged on a subset of the attacks. f = 0 runs have the one attack ``"none"``.
    """
    check_algorithm_column(rows)
    header = _header(rows)
    setting_cols, hyper_cols, attack_cols = setting_columns(header), hyperparameter_columns(header), \
        attack_columns(header)
    values = defaultdict(lambda: defaultdict(list))  # (setting, hyper) -> attack -> [values]
    first: dict[tuple, int] = {}
    attacks_of = defaultdict(dict)  # setting -> attacks seen (ordered)
    for i, r in enumerate(rows):
        setting = tuple(_text(r.get(c)) for c in setting_cols)
        hyper = tuple(_text(r.get(c)) for c in hyper_cols)
        attack = tuple(_text(r.get(c)) for c in attack_cols)
        values[(setting, hyper)][attack].append(number(r.get(metric)))
        first.setdefault((setting, hyper), i)
        attacks_of[setting][attack] = None
    out = []
    for (setting, hyper), by_attack in values.items():
        per_attack = {a: float(np.mean(by_attack[a])) if a in by_attack else math.nan for a in attacks_of[setting]}
        seeds = {a: len(by_attack.get(a, ())) for a in attacks_of[setting]}
        worst, worst_attack = math.nan, None
        if not any(math.isnan(v) for v in per_attack.values()):
            worst_attack = min(per_attack, key=lambda a: _ranked(per_attack[a], higher_is_better))
            worst = per_attack[worst_attack]
        out.append(Candidate(dict(zip(setting_cols, setting)), dict(zip(hyper_cols, hyper)),
                             per_attack, seeds, worst, worst_attack, first[(setting, hyper)]))
    return sorted(out, key=lambda c: c.order)


class Selection(NamedTuple):
    """The choice of ``best_worst_case`` for one setting."""

    setting: dict
    hyper: dict | None  # None when every candidate's worst case is nan
    worst: float
    worst_attack: tuple | None
    n_candidates: int
    tied: int  # candidates whose worst case equals the selected one's (the first in grid order wins)


def best_worst_case(rows: list[dict], metric: str = "best_val_acc", higher_is_better: bool = True) -> list[Selection]:
    """ByzFL's hyperparameter selection: per setting (aggregator, algorithm, f, data instance, ...),
    the hyperparameters whose worst case over attacks (``candidates``) is best,
    ``argmax_h min_a mean_seeds metric(h, a)`` (``argmin_h max_a`` when ``higher_is_better`` is false).

    ByzFL (``find_best_hyperparameters`` of its benchmark) maximises over (lr, momentum, weight
    decay) the minimum over attacks of the seed-mean validation accuracy, itself taken at its best
    evaluation step. Here ``metric`` is a ``summary.csv`` column; the default ``best_val_acc`` is each
    seed's best validation accuracy over time, averaged over seeds (ByzFL takes the best step of the
    seed-averaged curve, which is lower or equal).

    Ties: of the candidates with the same best worst case (exactly equal), the first in the rows'
    order (the grid's run order) is chosen, as ByzFL keeps its first strict maximum; ``tied`` says
    how many shared it. nan: a candidate with a nan worst case (a nan or missing measurement under
    some attack) is never chosen while another has a number; when all are nan the setting gets
    ``hyper = None`` and ``worst = nan``.
    """
    by_setting = defaultdict(list)
    for c in candidates(rows, metric, higher_is_better):
        by_setting[tuple(c.setting.items())].append(c)
    out = []
    for setting, cands in by_setting.items():
        finite = [c for c in cands if not math.isnan(c.worst)]
        if not finite:
            out.append(Selection(dict(setting), None, math.nan, None, len(cands), 0))
            continue
        best = max(finite, key=lambda c: (_ranked(c.worst, higher_is_better), -c.order))
        tied = sum(c.worst == best.worst for c in finite)
        out.append(Selection(dict(setting), best.hyper, best.worst, best.worst_attack, len(cands), tied))
    return out


def selected_rows(rows: list[dict], selections: list[Selection]) -> list[dict]:
    """The rows of ``rows`` run with the hyperparameters their setting selected (``best_worst_case``)."""
    check_algorithm_column(rows)
    setting_cols = setting_columns(_header(rows))
    chosen = {tuple(s.setting.items()): s.hyper for s in selections if s.hyper is not None}
    out = []
    for r in rows:
        setting = tuple((c, _text(r.get(c))) for c in setting_cols)
        hyper = chosen.get(setting)
        if hyper is not None and all(_text(r.get(c)) == v for c, v in hyper.items()):
            out.append(r)
    return out


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
