"""``byzjax report DIR``: the tables and figures a paper needs, from a result folder's ``summary.csv``.

Written to ``OUT`` (default ``DIR/report``), each table as ``NAME.csv`` and ``NAME.md``:

- ``selection``: per setting (aggregator, algorithm, f, data instance, ...) the hyperparameters
  chosen by ByzFL's worst-case rule (``byzjax.app.selection.best_worst_case``) on the mean over
  seeds of ``best_val_acc`` (of ``final_loss``, lowest worst case, when the folder has no accuracy);
- ``results``: at the selected hyperparameters, per setting and attack, mean and std over seeds of
  the final, best and validation-selected test accuracy and of the final training loss, and per
  setting a ``worst case`` row: the worst over attacks of each mean (lowest accuracy, highest
  loss), with the std of the attack it comes from;
- ``candidates``: the same numbers for every hyperparameter value tried, with its worst case of
  the selection metric and whether it was selected.

Figures (``OUT/figures``, PNG and PDF): heatmaps over (heterogeneity, f) of the worst-case
accuracy and of the worst-case final training loss, one panel per aggregator, and the worst-case
accuracy (or loss) against f, one curve per aggregator. std is the population std over seeds
(``ddof = 0``, 0 for one seed); a nan measurement makes its mean nan (a failed run is never averaged
away).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from byzjax.app.files import OutputError, atomic_open, warn  # noqa: E402
from byzjax.app.plotting import _save  # noqa: E402
from byzjax.app.results import INSTANCE_COLUMNS, read_record, read_table, write_csv  # noqa: E402
from byzjax.app.selection import (attack_columns, best_worst_case, candidates, hyperparameter_columns,  # noqa: E402
                                  number, setting_columns)

REQUIRED = ("run", "seed", "f", "attack", "aggregator", "method", "final_loss")
ACCURACY_METRICS = ("final_test_acc", "best_test_acc", "test_acc_at_best_val")
LOSS_METRICS = ("final_loss",)
WORST_CASE = "worst case"
NAMES = {"test_acc_at_best_val": "test accuracy at best validation", "final_test_acc": "final test accuracy",
         "final_loss": "final training loss"}
HETEROGENEITY = tuple(c for c in INSTANCE_COLUMNS if c not in ("n_honest", "lam"))
"""The data-instance columns that set the heterogeneity (a heatmap's rows); ``n_honest`` is a size."""


def read_summary(run_dir: Path) -> list[dict]:
    """``run_dir/summary.csv`` (one-line ``OutputError`` if the folder or file is missing or bad);
    a warning when ``config.json`` says the grid is incomplete."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OutputError(f"report: {run_dir} is not a folder (give the output folder of 'byzjax run')")
    path = run_dir / "summary.csv"
    if not path.is_file():
        raise OutputError(f"report: {run_dir} has no summary.csv (is it an output folder of 'byzjax run'?)")
    rows = read_table(path, required=REQUIRED)
    if not rows:
        raise OutputError(f"report: {path} has a header but no rows")
    record = read_record(run_dir) or {}
    meta = record.get("meta") or {}
    if meta.get("complete") is False:
        warn(f"{run_dir} is incomplete ({meta.get('finished_runs', '?')} of {meta.get('total_runs', '?')} runs "
             f"finished): the report covers only the finished runs")
    return rows if "algorithm" in rows[0] else with_recorded_algorithm(rows, path, record)


def with_recorded_algorithm(rows: list[dict], path: Path, record: dict) -> list[dict]:
    """The rows of a ``summary.csv`` written before it had the ``algorithm`` column, with that column
    (after ``method``) taken from the grid its ``config.json`` records: the ``record["config"]`` that
    ``byzjax run`` writes (the resolved config) parsed again, each row's ``run`` an index into its runs
    (``byzjax.app.config.expand``), whose ``algorithm`` column it gets. The row must hold that run's
    numbers and split (not its labels: the resolved config writes canonical names and every default,
    so its ``method``, ``attack`` and ``aggregator`` labels may read otherwise). A one-line ``OutputError`` when there is no recorded grid (a
    ``byzjax reproduce`` folder: rerunning it rewrites summary.csv from its stored stages), it does not
    parse, or a row is not the run its ``run`` names."""
    from byzjax._validation import ConfigError
    from byzjax.app.config import parse_config

    lacks = f"report: {path} has no 'algorithm' column (written by an older byzjax)"
    config = record.get("config")
    if not isinstance(config, dict):
        rerun = (f"rerun the 'byzjax reproduce {record['experiment']}' that wrote it (it reads its runs back from "
                 f"stages/, recomputing none, and rewrites summary.csv)") if "experiment" in record else \
            "rerun the command that wrote the folder"
        raise OutputError(f"{lacks} and {path.with_name('config.json')} records no grid to derive it from; {rerun}")
    try:
        runs = parse_config(config).runs
    except ConfigError as err:
        raise OutputError(f"{lacks} and the grid recorded in {path.with_name('config.json')} does not parse: "
                          f"{err}") from None
    out = []
    for r in rows:
        i = int(r["run"]) if r["run"].isdigit() else -1
        differ = ["run"] if not 0 <= i < len(runs) else [
            k for k, v in runs[i].columns.items() if (_is_number(v) or k == "split") and not _same(r.get(k), v)]
        if differ:
            raise OutputError(f"{lacks} and its run {r['run']!r} ({r['method']}) is not run {r['run']} of the grid "
                              f"recorded in {path.with_name('config.json')} (column {differ[0]!r} differs)")
        cells = list(r.items())
        at = [k for k, _ in cells].index("method") + 1
        out.append(dict(cells[:at] + [("algorithm", runs[i].columns["algorithm"])] + cells[at:]))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(cell, value) -> bool:
    """Whether a CSV cell (text, None if absent) holds a run's column ``value`` (numbers compared as numbers)."""
    if cell is None:
        return False
    return number(cell) == float(value) if _is_number(value) else cell == str(value)


def _has(rows, column) -> bool:
    return any(math.isfinite(number(r.get(column))) for r in rows)


def selection_metric(rows) -> tuple[str, bool]:
    """The column the hyperparameters are selected on and whether higher is better:
    ``best_val_acc`` when the folder has a finite one, else ``final_loss`` (lower is better)."""
    return ("best_val_acc", True) if _has(rows, "best_val_acc") else ("final_loss", False)


def reported_metrics(rows) -> list[tuple[str, bool]]:
    """The ``(column, higher_is_better)`` the tables report: the accuracies the folder has, then the loss."""
    acc = [(m, True) for m in ACCURACY_METRICS if any(m in r for r in rows) and _has(rows, m)]
    return acc + [(m, False) for m in LOSS_METRICS]


def headline_accuracy(rows) -> str | None:
    """The accuracy of the heatmaps and curves: the validation-selected test accuracy, else the final one."""
    return next((m for m in ("test_acc_at_best_val", "final_test_acc") if _has(rows, m)), None)


def mean_std(values) -> tuple[float, float]:
    """Mean and population std (``ddof = 0``) of ``values``; nan if any value is nan or there is none."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.isnan(v).any():
        return math.nan, math.nan
    with np.errstate(invalid="ignore"):  # inf values: mean inf, std nan
        return float(v.mean()), float(v.std())


def _attack_labels(rows) -> dict[tuple, str]:
    """Attack key (``attack_columns`` cells) -> label: the name, plus its numbers that vary between
    runs of that attack in the folder (``ALIE(tau=1.5)``)."""
    cols = attack_columns(list(dict.fromkeys(k for r in rows for k in r)))
    varies = defaultdict(set)
    for r in rows:
        for c in cols[1:]:
            varies[(r.get("attack", ""), c)].add(r.get(c, ""))
    out = {}
    for r in rows:
        key = tuple(r.get(c, "") for c in cols)
        inner = ",".join(f"{c[len('attack_'):]}={r.get(c, '')}" for c in cols[1:]
                         if len(varies[(r.get("attack", ""), c)]) > 1 and r.get(c, "") != "")
        out[key] = f"{r.get('attack', '')}({inner})" if inner else r.get("attack", "")
    return out


def _group_key(r, setting_cols, hyper_cols, attack_cols):
    setting = tuple(r.get(c, "") for c in setting_cols)
    return setting, tuple(r.get(c, "") for c in hyper_cols), tuple(r.get(c, "") for c in attack_cols)


def tables(rows: list[dict]) -> dict[str, list[dict]]:
    """The ``selection``, ``results`` and ``candidates`` tables of the module docstring, as rows."""
    header = list(dict.fromkeys(k for r in rows for k in r))
    setting_cols, hyper_cols, attack_cols = setting_columns(header), hyperparameter_columns(header), \
        attack_columns(header)
    names = setting_cols
    metric, higher = selection_metric(rows)
    metrics = reported_metrics(rows)
    labels = _attack_labels(rows)
    chosen = {tuple(s.setting.values()): s for s in best_worst_case(rows, metric, higher)}
    worst_of = {(tuple(c.setting.values()), tuple(c.hyper.values())): c for c in candidates(rows, metric, higher)}
    groups = defaultdict(lambda: defaultdict(list))  # (setting, hyper) -> attack -> rows (in order)
    for r in rows:
        s, h, a = _group_key(r, setting_cols, hyper_cols, attack_cols)
        groups[(s, h)][a].append(r)

    selection = []
    for s, sel in chosen.items():
        hyper = sel.hyper or {c: "" for c in hyper_cols}
        selection.append(dict(zip(names, s)) | hyper | {
            "rule": f"best worst case of {metric}" if higher else f"lowest worst case of {metric}",
            "worst": sel.worst, "worst_attack": labels.get(sel.worst_attack, "") if sel.worst_attack else "",
            "candidates": sel.n_candidates, "tied": sel.tied})

    def stats(attack_rows):
        out = {"seeds": len(attack_rows), "diverged": sum(str(r.get("diverged")) == "True" for r in attack_rows)}
        for m, _ in metrics:
            out[f"{m}_mean"], out[f"{m}_std"] = mean_std([number(r.get(m)) for r in attack_rows])
        return out

    def worst_row(per_attack: dict):
        """Per metric, the worst over attacks of the mean (nan if any attack's mean is nan), with its std."""
        out = {"seeds": min(v["seeds"] for v in per_attack.values()),
               "diverged": sum(v["diverged"] for v in per_attack.values())}
        for m, hi in metrics:
            means = {a: v[f"{m}_mean"] for a, v in per_attack.items()}
            if any(math.isnan(x) for x in means.values()):
                out[f"{m}_mean"] = out[f"{m}_std"] = math.nan
                continue
            a = (min if hi else max)(means, key=means.get)
            out[f"{m}_mean"], out[f"{m}_std"] = means[a], per_attack[a][f"{m}_std"]
        return out

    results, cands = [], []
    for (s, h), by_attack in groups.items():
        per_attack = {a: stats(rs) for a, rs in by_attack.items()}
        sel = chosen.get(s)
        is_selected = sel is not None and sel.hyper is not None and tuple(sel.hyper.values()) == h
        cand = worst_of[(s, h)]
        base = dict(zip(names, s)) | dict(zip(hyper_cols, h))
        for a, st in per_attack.items():
            cands.append(base | {"attack": labels[a]} | st | {"selected": is_selected, "worst": cand.worst})
        if is_selected:
            results += [base | {"attack": labels[a]} | st for a, st in per_attack.items()]
            if len(per_attack) > 1:
                results.append(base | {"attack": WORST_CASE} | worst_row(per_attack))
    return {"selection": selection, "results": results, "candidates": cands}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of ``rows``: ``M_mean``/``M_std`` pairs as one ``mean ± std`` column, and the
    columns constant over all rows listed above the table instead of repeated in it."""
    if not rows:
        return f"## {title}\n\n(no rows)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    constant = [c for c in cols if len({_fmt(r.get(c, "")) for r in rows}) == 1 and not c.endswith(("_mean", "_std"))
                and c != "attack"]
    shown = [c for c in cols if c not in constant and not c.endswith("_std")]
    head = [c.removesuffix("_mean") for c in shown]
    lines = [f"## {title}", ""]
    if constant:
        lines += ["Constant: " + ", ".join(f"{c} = {_fmt(rows[0].get(c, ''))}" for c in constant
                                           if _fmt(rows[0].get(c, "")) != ""), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for c in shown:
            if c.endswith("_mean"):
                std = r.get(c[:-len("_mean")] + "_std", "")
                cells.append(f"{_fmt(r.get(c, ''))} ± {_fmt(std)}" if std != "" else _fmt(r.get(c, "")))
            else:
                cells.append(_fmt(r.get(c, "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- figures ---------------------------------------------------------------------------------


PARAMETER_NAME = {"gamma_similarity": "gamma"}
"""The name of a split's parameter where it is not its column's (gamma-similarity's gamma is stored in
``alpha``, the split's one parameter)."""


def _het_label(key: dict) -> str:
    """``iid``, ``dirichlet(alpha=0.1)``, ``gamma_similarity(gamma=0.5)``, ... of a setting's data columns."""
    split = key.get("split", "")
    params = ",".join(f"{PARAMETER_NAME.get(split, c) if c == 'alpha' else c}={key[c]}" for c in HETEROGENEITY
                      if c != "split" and key.get(c, "") != "")
    return f"{split}({params})" if params else split


def _het_order(key: dict):
    """iid first, then each split by decreasing parameter (Dirichlet alpha, gamma: from homogeneous
    to heterogeneous), extreme last."""
    split = key.get("split", "")
    alpha = number(key.get("alpha"))
    return (split != "iid", split == "extreme", split, -alpha if math.isfinite(alpha) else 0.0)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_") or "all"


def worst_cases(results: list[dict], setting_cols: list[str]) -> dict:
    """``{(figure key, aggregator, heterogeneity label, f): row}``: per setting (``setting_cols``, with
    ``algorithm`` last) the results table's worst-case row (the one attack's row when a setting has one,
    as at f = 0); the figure key holds every setting column but aggregator, f and the heterogeneity."""
    by_setting = defaultdict(list)
    for r in results:
        by_setting[tuple((k, r.get(k, "")) for k in dict.fromkeys([*setting_cols, "algorithm"]))].append(r)
    out = {}
    for setting, rs in by_setting.items():
        d = dict(setting)
        row = next((r for r in rs if r["attack"] == WORST_CASE), rs[0])
        fig = tuple((k, v) for k, v in d.items() if k not in ("aggregator", "f", *HETEROGENEITY))
        out[(fig, d.get("aggregator", ""), _het_label(d), d.get("f", ""))] = row | {"_het": d}
    return out


def _figure_name(fig_key) -> str:
    return _safe("_".join(f"{v}" if k == "algorithm" else f"{k}{v}" for k, v in fig_key if v != ""))


def heatmap_grids(worst: dict, metric: str) -> dict:
    """``{figure key: (aggregators, heterogeneity labels, fs, {aggregator: values [het, f]})}`` of
    ``worst_cases``: the worst-case mean of ``metric`` per cell (nan where nothing ran); rows in the
    order iid, then each split by decreasing alpha (from homogeneous to heterogeneous), f increasing."""
    figs = defaultdict(dict)
    for (fig, agg, het, f), row in worst.items():
        figs[fig][(agg, het, f)] = row
    out = {}
    for fig, cells in figs.items():
        aggs = list(dict.fromkeys(a for a, _, _ in cells))
        het_key = {h: r["_het"] for (_, h, _), r in cells.items()}
        hets = sorted(het_key, key=lambda h: _het_order(het_key[h]))
        fs = sorted(dict.fromkeys(f for _, _, f in cells), key=number)
        grids = {a: np.array([[number(cells[(a, h, f)].get(f"{metric}_mean")) if (a, h, f) in cells else np.nan
                               for f in fs] for h in hets]) for a in aggs}
        out[fig] = (aggs, hets, fs, grids)
    return out


def plot_heatmaps(worst: dict, metric: str, higher: bool, out_dir: Path, what: str) -> list[Path]:
    """One figure per figure key of ``heatmap_grids``: a heatmap per aggregator of ``metric``'s worst
    case over (heterogeneity rows, f columns), the value written in each cell (nan: grey)."""
    made = []
    for fig, (aggs, hets, fs, grids) in heatmap_grids(worst, metric).items():
        values = np.concatenate([g.ravel() for g in grids.values()])
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm = LogNorm(lo, hi) if finite.size and lo > 0 and hi / lo > 100 else plt.Normalize(lo, hi if hi > lo else lo + 1)
        cmap = plt.get_cmap("viridis" if higher else "viridis_r").with_extremes(bad="0.8")
        fig_obj, axes = plt.subplots(1, len(aggs), figsize=(max(3.2 * len(aggs), 4.5), 0.6 * len(hets) + 2.4),
                                     squeeze=False, layout="constrained")
        for ax, a in zip(axes[0], aggs):
            im = ax.imshow(np.ma.masked_invalid(grids[a]), cmap=cmap, norm=norm, aspect="auto")
            for i in range(len(hets)):
                for j in range(len(fs)):
                    v = float(grids[a][i, j])
                    rgb = cmap(norm(v))[:3] if np.isfinite(v) else (0.8, 0.8, 0.8)
                    ax.text(j, i, _fmt(v), ha="center", va="center", fontsize=8,
                            color="black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5 else "white")
            ax.set_xticks(range(len(fs)), [str(f) for f in fs])
            ax.set_yticks(range(len(hets)), hets, fontsize=8)
            ax.set_xlabel("f (Byzantine workers)")
            ax.set_title(a, fontsize=9)
        fig_obj.colorbar(im, ax=list(axes[0]), shrink=0.8)
        context = ", ".join(f"{k}={v}" for k, v in fig if v != "")
        fig_obj.suptitle(f"{what}: worst case over attacks of the seed mean, at the selected hyperparameters\n{context}", fontsize=9)
        path = out_dir / f"heatmap_{metric}_{_figure_name(fig)}"
        _save(fig_obj, path)
        made.append(path.with_name(path.name + ".png"))
    return made


def plot_versus_f(worst: dict, metric: str, out_dir: Path, what: str) -> list[Path]:
    """One figure per (figure key, heterogeneity): ``metric``'s worst case against f, one curve per
    aggregator, error bars = the std over seeds of the attack giving the worst case."""
    made = []
    figs = defaultdict(lambda: defaultdict(dict))
    for (fig, agg, het, f), row in worst.items():
        figs[(fig, het)][agg][f] = row
    for (fig, het), by_agg in figs.items():
        fig_obj, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
        for i, (agg, by_f) in enumerate(by_agg.items()):
            fs = sorted(by_f, key=number)
            x = np.array([number(f) for f in fs])
            y = np.array([number(by_f[f].get(f"{metric}_mean")) for f in fs])
            e = np.array([number(by_f[f].get(f"{metric}_std")) for f in fs])
            ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", ms=4, capsize=3, label=agg, color=plt.cm.tab10(i % 10))
        ax.set_xticks(sorted({number(f) for by_f in by_agg.values() for f in by_f}))
        ax.set_xlabel("f (Byzantine workers)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        context = ", ".join([het] + [f"{k}={v}" for k, v in fig if v != ""])
        ax.set_title(f"worst case over attacks at the selected hyperparameters\n{context}", fontsize=8)
        path = out_dir / f"vs_f_{metric}_{_figure_name(fig)}_{_safe(het)}"
        _save(fig_obj, path)
        made.append(path.with_name(path.name + ".png"))
    return made


def report(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the report of a result folder (module docstring) into ``out_dir`` (default
    ``run_dir/report``); returns the files written (the figures' PNGs; each has its PDF)."""
    run_dir = Path(run_dir)
    rows = read_summary(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"report: cannot create {out_dir}: {err.strerror or err}") from None
    titles = {"selection": "Selected hyperparameters (worst case over attacks)",
              "results": "Results at the selected hyperparameters (mean ± std over seeds)",
              "candidates": "Every hyperparameter value tried (mean ± std over seeds)"}
    made = []
    written = tables(rows)
    for name, table in written.items():
        if table:
            write_csv(out_dir / f"{name}.csv", table)
            made.append(out_dir / f"{name}.csv")
        with atomic_open(out_dir / f"{name}.md", "w", encoding="utf-8") as fh:
            fh.write(markdown(table, titles[name]))
        made.append(out_dir / f"{name}.md")
    worst = worst_cases(written["results"], setting_columns(list(dict.fromkeys(k for r in rows for k in r))))
    figures = out_dir / "figures"
    acc = headline_accuracy(rows)
    if acc is not None:
        made += plot_heatmaps(worst, acc, True, figures, NAMES[acc])
    made += plot_heatmaps(worst, "final_loss", False, figures, NAMES["final_loss"])
    made += plot_versus_f(worst, acc or "final_loss", figures, NAMES[acc or "final_loss"])
    return made
