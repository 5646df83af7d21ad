"""Result files of a grid: ``config.json``, ``metrics.csv``, ``summary.csv``.

``metrics.csv`` is tidy: one row per (run, seed, iteration) with the run's
config columns, the per-iteration metrics, and the evaluation metrics on the
iterations where they were taken (empty elsewhere). Readable with the csv module,
NumPy or pandas alone.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from byzjax.metrics import COUNTER

GAPS = (1e-2, 1e-3)


def _cell(v):
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def trace_rows(run_id: int, seed: int, columns: dict, trace) -> list[dict]:
    """Tidy rows of one run's trace (numpy arrays, one seed)."""
    metrics = {k: np.asarray(v) for k, v in trace.metrics.items()}
    evals = {k: np.asarray(v) for k, v in trace.eval_metrics.items()}
    eval_at = {int(t): i for i, t in enumerate(np.asarray(trace.eval_iters))}
    n_iter = len(metrics["loss"])
    rows = []
    for t in range(n_iter + 1):
        row = {"run": run_id, "seed": seed, **columns, "iteration": t}
        if t < n_iter:
            row["comm_round"] = int(metrics[COUNTER][t]) - 1  # rounds used before this query
            row |= {k: v[t] for k, v in metrics.items() if k != COUNTER}
        else:
            row["comm_round"] = int(metrics[COUNTER][-1])
        if t in eval_at:
            for k, v in evals.items():
                row[k] = v[eval_at[t]]
        rows.append(row)
    return rows


INSTANCE_COLUMNS = ("split", "alpha", "lam")
"""With the seed, the columns that fix the honest objective ``L_H`` (its data split and
regulariser): runs of one instance share ``L_H`` and so share ``L_ref``."""


def instance_key(cols: dict, seed) -> tuple[str, ...]:
    """The problem instance of a run: ``INSTANCE_COLUMNS`` and the seed, as strings (CSV or config)."""
    return tuple(str(cols.get(k, "")) for k in INSTANCE_COLUMNS) + (str(seed),)


def reference_levels(pairs) -> dict[tuple, float]:
    """``L_ref`` per problem instance: the lowest honest loss any run of it reached.

    ``pairs``: ``(instance_key, losses)``. Different splits (and, under Dirichlet,
    different seeds) are different objectives ``L_H`` with different minima, so one
    global minimum would mis-state every gap but the lowest instance's.
    """
    levels: dict[tuple, float] = {}
    for key, losses in pairs:
        low = float(np.nanmin(np.asarray(losses, dtype=float)))
        levels[key] = min(levels.get(key, np.inf), low)
    return levels


def csv_levels(rows: list[dict]) -> dict[tuple, float]:
    """``reference_levels`` of ``metrics.csv`` rows."""
    return reference_levels((instance_key(r, r["seed"]), float(r["loss"])) for r in rows if r.get("loss", "") != "")


def rounds_to_gap(loss: np.ndarray, comm_round: np.ndarray, l_ref: float, gap: float):
    """First communication round with ``loss - l_ref <= gap`` (None if never)."""
    hit = np.flatnonzero(loss - l_ref <= gap)
    return int(comm_round[hit[0]]) if hit.size else None


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(v) for k, v in r.items()})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def summarise(runs: list[tuple[int, int, dict, object]], timing: dict) -> list[dict]:
    """One row per (run, seed): final/min loss, accuracies, rounds to loss gaps, timings.

    Gaps are to ``L_ref`` of the run's problem instance (``reference_levels``), taken over
    the runs not marked ``stage = tuning``.
    """
    levels = reference_levels((instance_key(cols, seed), t.metrics["loss"]) for _, seed, cols, t in runs
                              if cols.get("stage") != "tuning")
    out = []
    for run_id, seed, cols, trace in runs:
        l_ref = levels.get(instance_key(cols, seed), float(np.nanmin(np.asarray(trace.metrics["loss"]))))
        loss = np.asarray(trace.metrics["loss"])
        comm = np.asarray(trace.metrics["comm_rounds"]) - 1
        row = {"run": run_id, "seed": seed, **cols, "l_ref": l_ref, "final_loss": loss[-1], "min_loss": np.nanmin(loss),
               "final_gap": loss[-1] - l_ref}
        for k, v in trace.eval_metrics.items():
            v = np.asarray(v)
            row[f"best_{k}"] = np.nanmax(v)
            row[f"final_{k}"] = v[-1]
        for gap in GAPS:
            row[f"rounds_{gap:g}"] = rounds_to_gap(loss, comm, l_ref, gap)
        if "inner_iters" in trace.metrics:
            row["mean_inner_iters"] = float(np.mean(trace.metrics["inner_iters"]))
        row |= timing.get(run_id, {})
        out.append(row)
    return out


def write_results(out_dir: Path, config: dict, runs: list[tuple[int, int, dict, object]], timing: dict) -> None:
    """Write the three result files of a grid into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    rows = [r for run_id, seed, cols, trace in runs for r in trace_rows(run_id, seed, cols, trace)]
    write_csv(out_dir / "metrics.csv", rows)
    write_csv(out_dir / "summary.csv", summarise(runs, timing))
