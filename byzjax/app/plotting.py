"""Figures from ``metrics.csv``: the paper's convergence and accuracy panels.

Per figure (one per f, split, lambda, aggregator), one panel per attack: log-scale
``L_H(x_t) - L_ref`` against communication rounds with a zoom on rounds 0-100 beside the
panel (when the runs are longer), the seed median as a line and the seed range as a band
(one seed: its curve, no band) (arXiv 2602.03329, its experiments).
Non-finite values (a diverged run) are left out of the curves; figures are written atomically.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from byzjax.app.files import OutputError, atomic_open, warn  # noqa: E402
from byzjax.app.results import csv_levels, instance_key, read_record, read_table  # noqa: E402
from byzjax.metrics import EVAL_METRICS, ROUND_METRICS  # noqa: E402

GAP_FLOOR = 1e-6  # gaps below this are float32 rounding noise; drawn at the floor
FIGURE_KEYS = ("f", "split", "alpha", "lam", "aggregator")
SPLIT_PARAMETER_STEM = {"dirichlet": "_alpha", "gamma_similarity": "_gamma"}
"""How a figure name carries the split's parameter (stored in the ``alpha`` column)."""


def figure_stem(key: tuple) -> str:
    """The file-name stem of a figure of ``FIGURE_KEYS`` ``key``: ``f1_iid``, ``f5_dirichlet_alpha1.0``,
    ``f1_gamma_similarity_gamma0.5``, ``f1_extreme`` (one per f, split and split parameter)."""
    f, split, param = key[0], key[1], key[2]
    return f"f{f}_{split}" + (f"{SPLIT_PARAMETER_STEM[split]}{param}" if split in SPLIT_PARAMETER_STEM else "")
NOT_LABELS = {"run", "seed", "iteration", "comm_round", "stage", "attack", "method", "gap", *FIGURE_KEYS,
              *ROUND_METRICS, *EVAL_METRICS}


def _float(v):
    return float(v) if v not in ("", None) else np.nan


def variant_columns(rows: list[dict]) -> list[str]:
    """Config columns (constant within a run) that tell apart runs sharing their attack and method
    label, e.g. a swept ``attack_tau``, ``tolerated_f`` or ``participation``; columns the method label
    already implies (the algorithm's own numbers, ``lr``, ``eta``, ...) never qualify."""
    per_run = defaultdict(lambda: defaultdict(set))  # column -> run -> values
    label_of = {}
    for r in rows:
        label_of[r.get("run", "")] = (r.get("attack"), r.get("method"))
        for k, v in r.items():
            if k not in NOT_LABELS:
                per_run[k][r.get("run", "")].add(v)
    out = []
    for k, runs in per_run.items():
        if not all(len(v) == 1 for v in runs.values()):
            continue  # varies within a run: a measurement
        by_label = defaultdict(set)
        for run, values in runs.items():
            by_label[label_of[run]] |= values
        if any(len(v) > 1 for v in by_label.values()):
            out.append(k)
    return sorted(out)


def curve_label(r: dict, variants=()) -> str:
    """The legend label of a run: its method, then the swept columns that tell it apart."""
    return r["method"] + "".join(f", {k}={r[k]}" for k in variants if r.get(k, "") != "")


def curves(rows: list[dict], y: str, variants=None) -> dict:
    """``{(attack, label): (x [T], values [S, T])}`` with one row per seed; ``label`` is the
    method plus the ``variants`` columns (default: ``variant_columns(rows)``), so runs that
    differ in any swept number are never merged into one curve."""
    if variants is None:  # per attack: an attack's own parameters only label its own panel
        per_attack = defaultdict(list)
        for r in rows:
            per_attack[r["attack"]].append(r)
        variants = {a: variant_columns(sub) for a, sub in per_attack.items()}
    else:
        fixed = tuple(variants)
        variants = defaultdict(lambda: fixed)
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        v = _float(r.get(y, ""))
        if not np.isfinite(v):
            continue
        by[(r["attack"], curve_label(r, variants[r["attack"]]))][r["seed"]][int(r["comm_round"])] = v
    out = {}
    for key, seeds in by.items():
        xs = sorted(set.intersection(*(set(s) for s in seeds.values())))
        out[key] = (np.array(xs), np.array([[s[x] for x in xs] for s in seeds.values()]))
    return out


_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:e-?\d+)?)")


def _method_order(methods):
    """Legend order: D-GD, D-NAG, then the rest; within each, numbers in the labels in numeric order
    ("PIGS(eta=2)" before "PIGS(eta=16)")."""
    def key(m):
        parts = [(0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(_NUMBER.split(m))]
        return (0 if m.startswith("D-GD") else 1 if m.startswith("D-NAG") else 2, parts)

    return sorted(methods, key=key)


def _draw(ax, x, vals, label, color, log):
    med = np.median(vals, axis=0)
    ax.plot(x, med, label=label, color=color, lw=1.4)
    if vals.shape[0] > 1:
        ax.fill_between(x, vals.min(axis=0), vals.max(axis=0), color=color, alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")


def figure_groups(rows):
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in FIGURE_KEYS)].append(r)
    return groups


def _title(key, n_honest=None):
    f, split, alpha, lam, agg = key
    split_s = {"dirichlet": f"Dirichlet(alpha={alpha})", "gamma_similarity": f"gamma-similarity(gamma={alpha})"}.get(
        split, split)
    n = f"n={int(n_honest) + int(f)} ({n_honest} honest), " if n_honest else ""
    return f"{n}f={f}, {split_s}, lambda={lam}, {agg}"


def _with_gap(rows, levels):
    return [r | {"gap": _float(r["loss"]) - levels[instance_key(r, r["seed"])]} for r in rows
            if r.get("loss", "") != "" and instance_key(r, r["seed"]) in levels]


def plot_convergence(rows, path: Path, levels: dict | None = None, title: str = "", inset: int = 100,
                     reference_rows=(), level_name: str = "L_{ref}", floors: dict | None = None) -> None:
    """Loss-gap panels (one per attack) for rows sharing f/split/lambda/aggregator.

    ``levels``: ``L_ref`` per problem instance (``byzjax.app.results.csv_levels``; by default
    from ``rows`` and ``reference_rows``): each seed's gap is to its own instance's L_ref;
    ``level_name`` names it on the axes (``"L^*"`` for the exact optimum). ``floors``
    (``(attack, method)`` -> a gap): the predicted D-GD floor ``kappa G^2 / (2 mu (1 - kappa B^2))``
    of summary.csv's ``floor_dgd``, drawn as a dotted line in the method's colour where finite.
    """
    rows, reference_rows = list(rows), list(reference_rows)
    levels = csv_levels(rows + reference_rows) if levels is None else levels
    data = curves(_with_gap(rows, levels), "gap")
    ref = curves(_with_gap(reference_rows, levels), "gap") if reference_rows else {}
    used = sorted({levels[instance_key(r, r["seed"])] for r in rows if instance_key(r, r["seed"]) in levels}) or [np.nan]
    l_ref = f"{used[0]:.6g}" if len(used) == 1 else f"{used[0]:.6g}..{used[-1]:.6g} (per seed)"
    attacks = sorted({a for a, _ in data})
    methods = _method_order({m for _, m in data} | {m for _, m in ref})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    last = max((int(x[-1]) for x, _ in list(data.values()) + list(ref.values()) if x.size), default=0)
    zoom = bool(inset) and last > inset  # a zoom on rounds 0..inset, beside its panel (hides no curve)
    cols = 2 * len(attacks) if zoom else len(attacks)
    fig, axes = plt.subplots(1, cols, figsize=(max((7.0 if zoom else 5.2) * len(attacks), 7.5), 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3] * len(attacks)} if zoom else None)
    for j, attack in enumerate(attacks):
        ax = axes[0][2 * j if zoom else j]
        sub = axes[0][2 * j + 1] if zoom else None
        for m in methods:
            for src, style in ((data, "-"), (ref, "--")):
                key = (attack, m) if src is data else next((k for k in src if k[1] == m), None)
                if key not in src:
                    continue
                x, vals = src[key]
                gap = np.maximum(vals, GAP_FLOOR)
                label = m if src is data else f"{m}, f=0 reference"
                _draw(ax, x, gap, label, colors[m], True)
                ax.lines[-1].set_linestyle(style)
                if sub is not None:
                    keep = x <= inset
                    _draw(sub, x[keep], gap[:, keep], None, colors[m], True)
                    sub.lines[-1].set_linestyle(style)
        lo, hi = ax.get_ylim()  # the curves' range: a floor far above them must not squash them
        off_scale = []
        for m in methods:
            floor = (floors or {}).get((attack, m))
            if floor is not None and np.isfinite(floor) and floor > 0:
                if floor <= hi:
                    ax.axhline(max(floor, GAP_FLOOR), color=colors[m], ls=":", lw=1.0,
                               label=f"{m}: predicted D-GD floor")
                else:
                    off_scale.append((m, f"{floor:.3g}"))
        ax.set_ylim(lo, hi)
        note = ""
        if off_scale:  # in the title, where it hides no curve
            values = {v for _, v in off_scale}
            note = ("\npredicted D-GD floor above the axis: " + (f"{values.pop()} (every method)" if len(values) == 1
                    and len(off_scale) > 1 else ", ".join(f"{m}: {v}" for m, v in off_scale)))
        ax.set_title(f"attack: {attack}{note}", fontsize=10 if note else None)
        ax.set_xlabel("communication rounds")
        ax.set_ylabel(rf"$L_H(x_t) - {level_name}$")
        ax.grid(alpha=0.3, which="both")
        if sub is not None:
            sub.set_xlim(0, inset)
            sub.tick_params(labelsize=7)
            sub.set_title(f"zoom: rounds 0-{inset} of 0-{last}", fontsize=8)
            sub.set_xlabel("communication rounds", fontsize=8)
            sub.set_ylabel(rf"$L_H(x_t) - {level_name}$", fontsize=8)
            sub.grid(alpha=0.3, which="both")
    handles = {label: h for a in axes[0] for h, label in zip(*a.get_legend_handles_labels())}
    rows_of_legend = -(-len(handles) // 3)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"{title}\n${level_name}$ = {l_ref}; {band_text(rows)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.045 * rows_of_legend + 0.02, 1, 1))  # the legend below the panels hides no curve
    _save(fig, path)


def plot_diagnostics(rows, path: Path, kappa: float | None, mu: float, title: str = "") -> None:
    """The oracle-error diagnostic of one run (``rows``: its metrics.csv rows, one seed): per round
    the measured ``error^2 = ||g_hat - grad L_H||^2`` against the bound ``kappa (G^2 + B^2
    ||grad L_H||^2)`` of ``theory.trace_theory`` (the rule's proven ``kappa``, else the largest
    measured ``kappa_hat``; the (G, B) pairs fitted on the run's own rounds), and the round's
    empirical ``kappa_hat = error^2 / spread`` next to that kappa (arXiv 2602.03329, the reduction
    to an inexact gradient oracle)."""
    from byzjax.theory import trace_theory

    rows = sorted(rows, key=lambda r: int(r["iteration"]))
    x = np.array([int(r["comm_round"]) for r in rows])
    metrics = {k: np.array([_float(r.get(k, "")) for r in rows]) for k in ("error", "spread", "grad_norm", "kappa_hat")}
    out = trace_theory(metrics, kappa, mu)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    a1.plot(x, np.maximum(metrics["error"] ** 2, 1e-30), label=r"measured $\|\hat g - \nabla L_H\|^2$", lw=1.2)
    a1.plot(x, np.maximum(out["error_bound"], 1e-30), label=rf"bound $\kappa(G^2 + B^2\|\nabla L_H\|^2)$, "
            rf"$\kappa$ = {out['kappa']:.3g} ({out['kappa_source']})", lw=1.2, ls="--")
    a1.set_yscale("log")
    a1.set_xlabel("communication rounds")
    a1.set_ylabel("squared oracle error")
    a1.set_title(f"error vs bound (max ratio {np.nanmax(out['bound_ratio']):.3g})", fontsize=9)
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7)
    a2.plot(x, metrics["kappa_hat"], label=r"$\hat\kappa_t$ = error$^2$ / spread", lw=1.2)
    a2.axhline(out["kappa"], color="k", ls="--", lw=1.0, label=rf"$\kappa$ used = {out['kappa']:.3g}")
    a2.set_yscale("log")
    a2.set_xlabel("communication rounds")
    a2.set_ylabel(r"empirical $\hat\kappa$")
    a2.set_title(rf"$\kappa B^2$ = {out['kappa_b2']:.3g}, $G^2$ = {out['G2']:.3g}, $B^2$ = {out['B2']:.3g}", fontsize=9)
    a2.grid(alpha=0.3, which="both")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def band_text(rows) -> str:
    """What the curves of ``rows`` show: the seed median and min-max band, or one seed's curve
    (no band) when the rows hold a single seed."""
    seeds = {r.get("seed") for r in rows}
    return f"median over {len(seeds)} seeds, band = min-max over seeds" if len(seeds) > 1 else "one seed (no band)"


def plot_accuracy(rows, path: Path, title: str = "", ylim=(0.80, 0.94)) -> None:
    """Validation and test accuracy against communication rounds, one column per attack.

    ``ylim=None`` zooms automatically (5th percentile of the values to the maximum).
    """
    attacks = sorted({r["attack"] for r in rows})
    if ylim is None:  # zoom on where the curves spend their time, not on the first rounds
        values = np.array([_float(r[m]) for r in rows for m in ("val_acc", "test_acc") if r.get(m, "") != ""])
        values = values[np.isfinite(values)]
        lo, hi = (np.percentile(values, 5), values.max()) if values.size else (0.0, 1.0)
        ylim = (max(0.0, lo - 0.02), min(1.0, hi + 0.01))
    fig, axes = plt.subplots(2, len(attacks), figsize=(max(5.2 * len(attacks), 7.5), 7), squeeze=False)
    for row_i, metric in enumerate(("val_acc", "test_acc")):
        data = curves(rows, metric)
        methods = _method_order({m for _, m in data})
        for col, attack in enumerate(attacks):
            ax = axes[row_i][col]
            for i, m in enumerate(methods):
                if (attack, m) in data:
                    x, vals = data[(attack, m)]
                    _draw(ax, x, vals, m, plt.cm.tab10(i % 10), False)
            ax.set_title(f"{metric.replace('_acc', '')} accuracy, attack: {attack}", fontsize=9)
            ax.set_xlabel("communication rounds")
            ax.set_ylabel(f"{metric.replace('_acc', '')} accuracy")
            ax.set_ylim(*ylim)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}\n{band_text(rows)}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    """``path.png`` and ``path.pdf``, each written to a temporary name and renamed into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for ext, kw in (("png", {"dpi": 130}), ("pdf", {})):
            with atomic_open(path.parent / f"{path.name}.{ext}", "wb") as fh:
                fig.savefig(fh, format=ext, **kw)
    except OSError as err:
        raise OutputError(f"cannot write the figures in {path.parent}: {err.strerror or err}") from None
    finally:
        plt.close(fig)


REQUIRED_COLUMNS = ("run", "seed", "attack", "method", "iteration", "comm_round", "loss", *FIGURE_KEYS)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.csv`` checked against the folder's completion record.

    One-line ``OutputError`` when the file is missing, empty, binary, ragged, lacks a column,
    holds a non-number loss, or has another number of rows than ``config.json`` records
    (a fragment); a warning when the record says the grid is incomplete.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise OutputError(f"{run_dir} has no metrics.csv (is it an output folder of 'byzjax run'?)")
    rows = read_table(metrics, required=REQUIRED_COLUMNS)
    if not rows:
        raise OutputError(f"{metrics} has a header but no rows")
    for i, r in enumerate(rows, start=2):
        try:
            int(r["run"]), int(r["seed"]), int(r["comm_round"]), r["loss"] == "" or float(r["loss"])
        except ValueError:
            raise OutputError(f"{metrics} is damaged: line {i} has a non-number in run/seed/comm_round/loss") from None
    meta = ((read_record(run_dir) or {}).get("meta") or {})
    expected = meta.get("metrics_rows")
    if expected is not None and expected != len(rows):
        raise OutputError(f"{metrics} has {len(rows)} rows but config.json records {expected} "
                          f"(truncated or from another write); rerun the grid to rewrite it")
    if meta.get("complete") is False:
        warn(f"{run_dir} is incomplete ({meta.get('finished_runs', '?')} of {meta.get('total_runs', '?')} runs "
             f"finished): the figures show only the finished runs")
    return rows


def plot_dir(run_dir: str | Path, out_dir: str | Path | None = None, acc_ylim=None) -> list[Path]:
    """Draw every figure of a result folder (``metrics.csv``) into ``out_dir``."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "figures"
    levels = csv_levels(rows)  # L_ref per problem instance (split, lambda, seed)
    made = []
    for key, sub in figure_groups(rows).items():
        stem = figure_stem(key)
        plot_convergence(sub, out_dir / f"loss_{stem}", levels, _title(key))
        made.append(out_dir / f"loss_{stem}.png")
        if any(r.get("val_acc", "") != "" for r in sub):
            plot_accuracy(sub, out_dir / f"accuracy_{stem}", _title(key), ylim=acc_ylim)
            made.append(out_dir / f"accuracy_{stem}.png")
    return made
