"""Result files of a grid: ``config.json``, ``metrics.csv``, ``summary.csv``.

``metrics.csv`` is tidy: one row per (run, seed, iteration) with the run's
config columns, the per-iteration metrics, and the evaluation metrics on the
iterations where they were taken (empty elsewhere: an empty cell means "not
measured"; a measured non-finite value is written ``nan``, ``inf`` or ``-inf``).
Readable with the csv module, NumPy or pandas alone. Every file is replaced
atomically (``byzjax.app.files``), ``config.json`` (the completion record) last.

``summary.csv`` has one row per (run, seed) (``summarise``): the run's config columns, then its
measurements (``SUMMARY_MEASURES``): losses, gaps and rounds to gaps, divergence, accuracies, timings;
the per-run theory (``THEORY_COLUMNS``: the kappa used, the (G, B) fit, ``kappa_b2``, ``floor_dgd``);
for strongly convex problems the instance's exact optimum (``l_star``, ``gap_star``) and constants
(``INSTANCE_THEORY_COLUMNS``: ``L_x0``, ``mu_x0``, ``L_star``, ``mu_star``, ``delta``,
``pred_rounds_*``) and the run's own ``L_final``, ``mu_final`` (``FINAL_THEORY_COLUMNS``: ``L`` and
``mu`` of ``L_H`` at the run's final parameters, by the estimators of ``L_x0`` and ``mu_x0``;
``nan`` for a run whose final parameters are not finite).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from byzjax.app.files import OutputError, atomic_open, write_json
from byzjax.metrics import COUNTER, EVAL_METRICS, ROUND_METRICS
from byzjax.theory import trace_theory

GAPS = (1e-2, 1e-3)
DIVERGENCE_FACTOR = 1e6
"""A run has diverged at the first iteration whose honest loss is non-finite or exceeds
``DIVERGENCE_FACTOR * max(|L_H(x_0)|, 1)``."""
RESULT_FILES = ("config.json", "metrics.csv", "summary.csv")


def _cell(v):
    """CSV text of a value: floats at full precision (``repr``), non-finite as nan/inf/-inf,
    ``None`` as the empty cell (not measured)."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


_INT = re.compile(r"-?\d+")


def parse_cell(s: str):
    """Inverse of ``_cell`` for numbers: an int for integer text, else a float (nan/inf too)."""
    return int(s) if _INT.fullmatch(s) else float(s)


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


class StoredTrace:
    """A run's trace read back from ``metrics.csv`` (same fields as ``simulate.Trace``; no parameters)."""

    def __init__(self, metrics, eval_metrics, eval_iters):
        self.metrics, self.eval_metrics, self.eval_iters = metrics, eval_metrics, eval_iters
        self.final_params = np.zeros(0)


def trace_from_rows(rows: list[dict]) -> StoredTrace:
    """Inverse of ``trace_rows`` for one (run, seed): rows sorted by iteration, text cells
    (metrics in the file's column order, so the files written again are byte-identical)."""
    body, header = rows[:-1], list(rows[0])
    metrics = {k: np.array([parse_cell(r[k]) for r in body]) for k in header
               if k in ROUND_METRICS and body and all(r.get(k, "") != "" for r in body)}
    metrics[COUNTER] = np.array([int(r["comm_round"]) + 1 for r in body])
    names = [k for k in header if k in EVAL_METRICS and any(r.get(k, "") != "" for r in rows)]
    taken = [r for r in rows if any(r.get(k, "") != "" for k in names)]
    evals = {k: np.array([parse_cell(r[k]) for r in taken]) for k in names}
    return StoredTrace(metrics, evals, np.array([int(r["iteration"]) for r in taken], dtype=int))


INSTANCE_COLUMNS = ("split", "alpha", "n_honest", "lam")
"""With the seed, the columns that fix the honest objective ``L_H`` (its data split and
regulariser): runs of one instance share ``L_H`` and so share ``L_ref``."""


def instance_key(cols: dict, seed) -> tuple[str, ...]:
    """The problem instance of a run: ``INSTANCE_COLUMNS`` and the seed, as strings (CSV or config)."""
    return tuple(str(cols.get(k, "")) for k in INSTANCE_COLUMNS) + (str(seed),)


def finite_min(values) -> float:
    """The lowest finite value (``nan`` if there is none): a diverged run's ``inf`` or ``nan``
    never counts as its best loss, and never hides its finite ones."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.min()) if v.size else math.nan


def reference_levels(pairs) -> dict[tuple, float]:
    """``L_ref`` per problem instance: the lowest finite honest loss any run of it reached.

    ``pairs``: ``(instance_key, losses)``. Different splits (and, under Dirichlet,
    different seeds) are different objectives ``L_H`` with different minima, so one
    global minimum would mis-state every gap but the lowest instance's.
    """
    levels: dict[tuple, float] = {}
    for key, losses in pairs:
        low = finite_min(np.atleast_1d(losses))
        if not math.isnan(low):
            levels[key] = min(levels.get(key, np.inf), low)
    return levels


def csv_levels(rows: list[dict]) -> dict[tuple, float]:
    """``reference_levels`` of ``metrics.csv`` rows."""
    return reference_levels((instance_key(r, r["seed"]), float(r["loss"])) for r in rows if r.get("loss", "") != "")


def rounds_to_gap(loss: np.ndarray, comm_round: np.ndarray, l_ref: float, gap: float):
    """First communication round with ``loss - l_ref <= gap`` (None if never)."""
    hit = np.flatnonzero(loss - l_ref <= gap)
    return int(comm_round[hit[0]]) if hit.size else None


def diverged_at(loss: np.ndarray, comm_round: np.ndarray):
    """Communication round of the first query whose honest loss is non-finite or above
    ``DIVERGENCE_FACTOR * max(|L_H(x_0)|, 1)`` (None if none)."""
    loss = np.asarray(loss, dtype=float)
    limit = DIVERGENCE_FACTOR * max(abs(loss[0]), 1.0) if np.isfinite(loss[0]) else -np.inf
    bad = np.flatnonzero(~np.isfinite(loss) | (loss > limit))
    return int(comm_round[bad[0]]) if bad.size else None


def csv_text(rows: list[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\r\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (columns in order of first appearance) atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write(csv_text(rows))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_table(path: Path, required=()) -> list[dict]:
    """Rows of a result CSV, or a one-line ``OutputError`` if it is empty, binary, ragged
    (a row with more or fewer cells than the header, e.g. cut mid-line) or lacks a column."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise OutputError(f"cannot read {path}: {err.strerror or err}") from None
    if not data.strip():
        raise OutputError(f"{path} is empty")
    if b"\0" in data:
        raise OutputError(f"{path} is not a CSV file (binary content)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise OutputError(f"{path} is not a CSV file (not UTF-8 text)") from None
    if not text.endswith("\n"):
        raise OutputError(f"{path} is truncated (its last line is incomplete)")
    lines = list(csv.reader(io.StringIO(text, newline="")))
    header, body = lines[0], lines[1:]
    missing = [c for c in required if c not in header]
    if missing:
        raise OutputError(f"{path} lacks the column(s) {missing}; is it a byzjax result file?")
    for i, cells in enumerate(body, start=2):
        if len(cells) != len(header):
            raise OutputError(f"{path} is damaged: line {i} has {len(cells)} cells, the header {len(header)}")
    return [dict(zip(header, cells)) for cells in body]


class InstanceTheory(NamedTuple):
    """What theory measures of one problem instance (``instance_key``), once per instance: ``L``
    and ``mu`` of ``L_H`` at the runs' initial point ``x0`` and at the exact optimum ``x*``
    (``theory.constants_at``: power iteration on Hessian-vector products), PIGS's similarity
    ``delta = ||hessian(L_H - L_0)||`` (the larger of the two points) and ``L* = min L_H``
    (``theory.reference_optimum``, float64 Newton-CG). Measured for strongly convex problems only."""

    mu_x0: float
    l_star: float
    L_x0: float
    L_star: float
    mu_star: float
    delta: float

    @property
    def mu(self) -> float:
        """The strong convexity of the floors: the smaller of ``mu`` at ``x0`` and at ``x*``."""
        return min(self.mu_x0, self.mu_star)

    @property
    def L(self) -> float:
        """The smoothness of the predicted rounds: the larger of ``L`` at ``x0`` and at ``x*``."""
        return max(self.L_x0, self.L_star)

    def columns(self, kappa_b2: float) -> dict:
        """summary.csv's instance columns (``INSTANCE_THEORY_COLUMNS``): the constants, and the rounds
        theory predicts to reach the floor (``theory.predicted_rounds``, up to log factors: D-GD
        ``L / ((1 - kappa B^2) mu)`` with the run's ``kappa B^2``, D-NAG ``sqrt(L / mu)``, PIGS
        ``delta / mu``, AEG ``2 sqrt(L / mu)``, prox-AEG ``2 sqrt(delta / mu)``)."""
        from byzjax.theory import predicted_rounds

        rounds = predicted_rounds(self.L, self.mu, self.delta, kappa_b2 if math.isfinite(kappa_b2) else 0.0)
        return {"L_x0": self.L_x0, "mu_x0": self.mu_x0, "L_star": self.L_star, "mu_star": self.mu_star,
                "delta": self.delta} | {f"pred_rounds_{PREDICTED[m]}": v for m, v in rounds.items()}


class FinalTheory(NamedTuple):
    """``L`` and ``mu`` of ``L_H`` at one run's final parameters (``theory.final_constants``: the
    estimators of ``InstanceTheory``'s ``L_x0`` and ``mu_x0``, or the closed form of a constant
    Hessian; ``nan`` when the final parameters are not finite). Measured for strongly convex
    problems only, once per (instance, final parameters)."""

    L_final: float
    mu_final: float


FINAL_THEORY_COLUMNS = FinalTheory._fields
"""summary.csv's per-run constants at the final point: ``L_final``, ``mu_final``."""


PREDICTED = {"DGD": "dgd", "DNAG": "dnag", "PIGS": "pigs", "AEG": "aeg", "prox-AEG": "prox_aeg"}
"""``theory.predicted_rounds``'s method names -> their summary.csv column suffix."""
INSTANCE_THEORY_COLUMNS = ("L_x0", "mu_x0", "L_star", "mu_star", "delta",
                           *(f"pred_rounds_{v}" for v in PREDICTED.values()))


THEORY_METRICS = ("error", "spread", "grad_norm", "kappa_hat")
"""The per-round metrics ``theory.trace_theory`` needs; a trace without them gets no theory columns."""
THEORY_COLUMNS = ("kappa_source", "kappa_hat_max", "G2_b0", "G2", "B2", "kappa_b2", "kappa_b2_lt_1", "floor_dgd")


def theory_columns(metrics: dict, kappa: float | None, mu: float) -> dict:
    """summary.csv's theory columns of one trace: ``THEORY_COLUMNS`` of ``theory.trace_theory``
    (the (G, B) fit covering every round, ``kappa B^2`` with the rule's proven kappa, or the largest
    measured ``kappa_hat`` when none is known, and the D-GD floor ``kappa G^2 / (2 mu (1 - kappa B^2))``,
    arXiv 2602.03329, the reduction to an inexact gradient oracle); empty if a metric is missing."""
    if any(k not in metrics for k in THEORY_METRICS):
        return {}
    out = trace_theory({k: metrics[k] for k in THEORY_METRICS}, kappa, mu)
    return {"kappa": out["kappa"]} | {k: out[k] for k in THEORY_COLUMNS}


def eval_rounds(trace) -> np.ndarray:
    """The communication round of each evaluation of ``trace`` (its ``eval_iters``), as ``metrics.csv``
    writes it: rounds used before the query of iteration ``t < T``, all rounds used at ``t = T``."""
    counter = np.asarray(trace.metrics[COUNTER])
    rounds = np.concatenate([counter - 1, counter[-1:]])
    return rounds[np.asarray(trace.eval_iters, dtype=int)]


def validation_selected(val, test, rounds) -> tuple[float, int | None]:
    """Test accuracy at the validation-selected checkpoint: ``test[t*]`` with
    ``t* = argmax_t val[t]`` over the finite validation accuracies (the earliest of tied maxima),
    and ``rounds[t*]``; ``(nan, None)`` when there is no validation accuracy (``val`` None or
    never finite). ByzFL's benchmark reports test accuracy at the step of best validation
    accuracy, so that no choice is made on the test set (``best_test_acc`` is the maximum over
    time of the test accuracy itself, an optimistic number)."""
    if val is None:
        return math.nan, None
    val = np.asarray(val, dtype=np.float64)
    finite = np.isfinite(val)
    if not finite.any():
        return math.nan, None
    t = int(np.argmax(np.where(finite, val, -np.inf)))
    return float(np.asarray(test, dtype=np.float64)[t]), int(np.asarray(rounds)[t])


SUMMARY_MEASURES = frozenset(
    {"l_ref", "final_loss", "min_loss", "final_gap", "diverged", "diverged_round", "l_star", "gap_star",
     "test_acc_at_best_val", "best_val_round", "mean_inner_iters", "inner_capped_rounds", "kappa",
     *THEORY_COLUMNS, *INSTANCE_THEORY_COLUMNS, *FINAL_THEORY_COLUMNS, "compile_s", "run_s", "batch", "devices",
     *(f"{p}_{k}" for k in EVAL_METRICS for p in ("best", "final")), *(f"rounds_{g:g}" for g in GAPS)})
"""The columns of ``summary.csv`` that ``summarise`` measures (or times); every other column but
``run`` and ``seed`` is a configuration column of the run (``config_columns``)."""


def config_columns(header) -> list[str]:
    """The configuration columns of a ``summary.csv`` header (in its order): neither ``run``/``seed``
    nor a measurement (``SUMMARY_MEASURES``). Column order cannot tell them apart: a column that the
    first run lacks (an attack's ``attack_tau`` after an f = 0 run) comes after the measurements."""
    return [c for c in header if c not in SUMMARY_MEASURES and c not in ("run", "seed")]


def summarise(runs: list[tuple[int, int, dict, object]], timing: dict, *, kappas: dict | None = None,
              instances: dict | None = None, finals: dict | None = None) -> list[dict]:
    """One row per (run, seed): final/min loss, accuracies, rounds to loss gaps, divergence, timings,
    theory.

    Accuracy problems also get ``test_acc_at_best_val`` and ``best_val_round``
    (``validation_selected``: test accuracy at the evaluation of best validation accuracy).

    Gaps are to ``L_ref`` of the run's problem instance (``reference_levels``), taken over
    the runs not marked ``stage = tuning`` (the paper's lowest loss seen). ``instances``
    (``instance_key`` -> ``InstanceTheory``) adds ``l_star`` (the exact ``min L_H``),
    ``gap_star = final_loss - l_star``, ``L``, ``mu`` and ``delta`` at ``x0`` and ``x*`` and the
    predicted rounds (``InstanceTheory.columns``), and gives the ``mu`` of the theory columns
    (``theory_columns``; ``nan`` without it); ``kappas`` (run id -> the rule's proven kappa or
    None) gives their kappa (missing: the measured one). ``finals`` (``(run id, seed)`` ->
    ``FinalTheory``) adds ``L_final`` and ``mu_final``, ``L`` and ``mu`` at the run's final
    parameters (``nan`` for non-finite ones). ``min_loss`` is the lowest finite loss;
    ``diverged``/``diverged_round`` follow ``diverged_at``; ``inner_capped_rounds`` counts the
    steps whose inner solve stopped at its iteration cap (the per-round metric ``inner_capped``).
    """
    kappas, instances, finals = kappas or {}, instances or {}, finals or {}
    levels = reference_levels((instance_key(cols, seed), t.metrics["loss"]) for _, seed, cols, t in runs
                              if cols.get("stage") != "tuning")
    out = []
    for run_id, seed, cols, trace in runs:
        loss = np.asarray(trace.metrics["loss"], dtype=np.float64)
        l_ref = levels.get(instance_key(cols, seed), finite_min(loss))
        inst = instances.get(instance_key(cols, seed))
        comm = np.asarray(trace.metrics[COUNTER]) - 1
        div = diverged_at(loss, comm)
        row = {"run": run_id, "seed": seed, **cols, "l_ref": l_ref, "final_loss": loss[-1], "min_loss": finite_min(loss),
               "final_gap": loss[-1] - l_ref, "diverged": div is not None, "diverged_round": div}
        if inst is not None:
            row["l_star"] = inst.l_star
            row["gap_star"] = loss[-1] - inst.l_star
        for k, v in trace.eval_metrics.items():
            v = np.asarray(v, dtype=np.float64)
            row[f"best_{k}"] = float(np.max(v[np.isfinite(v)])) if np.isfinite(v).any() else math.nan
            row[f"final_{k}"] = v[-1]
        if "test_acc" in trace.eval_metrics:
            acc, at = validation_selected(trace.eval_metrics.get("val_acc"), trace.eval_metrics["test_acc"],
                                          eval_rounds(trace))
            row["test_acc_at_best_val"], row["best_val_round"] = acc, at
        for gap in GAPS:
            row[f"rounds_{gap:g}"] = rounds_to_gap(loss, comm, l_ref, gap)
        if "inner_iters" in trace.metrics:
            inner = np.asarray(trace.metrics["inner_iters"])
            row["mean_inner_iters"] = float(np.mean(inner))
        if "inner_capped" in trace.metrics:
            row["inner_capped_rounds"] = int(np.sum(np.asarray(trace.metrics["inner_capped"]) > 0))
        theory = theory_columns(trace.metrics, kappas.get(run_id), math.nan if inst is None else inst.mu)
        row |= theory | ({} if inst is None else inst.columns(theory.get("kappa_b2", 0.0)))
        if (run_id, seed) in finals:
            row |= finals[(run_id, seed)]._asdict()
        row |= timing.get(run_id, {})
        out.append(row)
    return out


def run_warnings(summary: list[dict]) -> list[str]:
    """Warning lines about the summary: runs that diverged, inner solves that hit their cap."""
    lines = []
    div = [r for r in summary if r.get("diverged")]
    if div:
        named = "; ".join(f"run {r['run']} seed {r['seed']} {r.get('method', '')} at round {r['diverged_round']}"
                          for r in div)
        lines.append(f"{len(div)} of {len(summary)} runs diverged (honest loss non-finite or above "
                     f"{DIVERGENCE_FACTOR:g} x its initial value): {named}")
    capped = [r for r in summary if r.get("inner_capped_rounds")]
    if capped:
        named = "; ".join(f"run {r['run']} seed {r['seed']} {r.get('method', '')}: {r['inner_capped_rounds']} steps"
                          for r in capped)
        lines.append(f"inner solves stopped at their iteration cap (inexact proximal steps): {named}")
    return lines


def write_results(out_dir: Path, config: dict, runs: list[tuple[int, int, dict, object]], timing: dict, *,
                  kappas: dict | None = None, instances: dict | None = None, finals: dict | None = None) -> list[str]:
    """Write the three result files of a grid into ``out_dir`` (created if needed); ``kappas``,
    ``instances`` and ``finals``: as ``summarise`` (the theory columns).

    Each file is replaced atomically; ``config.json`` (the completion record, with
    ``meta.metrics_rows`` and the warnings) last. Returns the warning lines (``run_warnings``).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out_dir}: {err.strerror or err}") from None
    rows = [r for run_id, seed, cols, trace in runs for r in trace_rows(run_id, seed, cols, trace)]
    summary = summarise(runs, timing, kappas=kappas, instances=instances, finals=finals)
    warnings = run_warnings(summary)
    write_csv(out_dir / "metrics.csv", rows)
    write_csv(out_dir / "summary.csv", summary)
    record = dict(config)
    if isinstance(record.get("meta"), dict):
        record["meta"] = record["meta"] | {"metrics_rows": len(rows)}
    write_json(out_dir / "config.json", record | {"warnings": warnings})
    return warnings


def read_record(out_dir: Path) -> dict | None:
    """``config.json`` of a result folder (None if absent); an unreadable one is an ``OutputError``."""
    path = Path(out_dir) / "config.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OutputError(f"{path} is unreadable ({err.__class__.__name__}); use --force to overwrite "
                          f"the folder or choose another --out") from None
    if not isinstance(record, dict):
        raise OutputError(f"{path} is not a byzjax completion record; use --force or choose another --out")
    return record


def clear_results(out_dir: Path) -> None:
    """Remove the result files and figures a previous grid left in ``out_dir`` (``--force``)."""
    out_dir = Path(out_dir)
    try:
        for name in RESULT_FILES[::-1]:  # the completion record first
            (out_dir / name).unlink(missing_ok=True)
        figs = out_dir / "figures"
        if figs.is_dir():
            for p in figs.iterdir():
                if p.suffix in (".png", ".pdf") and p.is_file():
                    p.unlink()
    except OSError as err:
        raise OutputError(f"cannot clear {out_dir}: {err.strerror or err}") from None


def finished_runs(out_dir: Path, columns: list[dict], seeds: list[int]):
    """The runs a result folder already holds, to resume a grid: ``(runs, timing)`` like ``execute``.

    A run (an index into the grid) counts as finished when ``metrics.csv`` has its rows for
    every seed of ``seeds``, with its config columns equal to ``columns[index]`` and iterations 0..T.
    """
    out_dir = Path(out_dir)
    if not (out_dir / "metrics.csv").exists() or not (out_dir / "metrics.csv").read_bytes().strip():
        return [], {}  # interrupted before its first program finished
    rows = read_table(out_dir / "metrics.csv", required=("run", "seed", "iteration", "comm_round", "loss"))
    summary = read_table(out_dir / "summary.csv", required=("run", "seed")) if (out_dir / "summary.csv").exists() else []
    by_run = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_run[int(r["run"])][int(r["seed"])].append(r)
    runs, timing = [], {}
    for rid, found in sorted(by_run.items()):
        if not 0 <= rid < len(columns) or set(found) != set(seeds):
            continue
        want = {k: str(_cell(v)) for k, v in columns[rid].items()}
        ok = True
        for seed_rows in found.values():
            seed_rows.sort(key=lambda r: int(r["iteration"]))
            its = [int(r["iteration"]) for r in seed_rows]
            ok &= its == list(range(len(its))) and len(its) > 1
            ok &= all(seed_rows[0].get(k) == v for k, v in want.items())
        if not ok:
            continue
        for seed in seeds:
            runs.append((rid, seed, columns[rid], trace_from_rows(found[seed])))
        srow = next((s for s in summary if s["run"] == str(rid)), {})
        timing[rid] = {k: parse_cell(srow[k]) for k in ("compile_s", "run_s", "batch", "devices") if srow.get(k, "") != ""}
    return runs, timing


def stored_finals(out_dir: Path) -> dict[tuple[int, int], FinalTheory]:
    """``(run id, seed)`` -> ``FinalTheory`` of a result folder's summary.csv (its ``L_final`` and
    ``mu_final``; rows without them are left out): what a resumed grid keeps for the runs it reads
    back from metrics.csv, which hold no final parameters to measure again."""
    path = Path(out_dir) / "summary.csv"
    if not path.exists():
        return {}
    rows = read_table(path, required=("run", "seed"))
    return {(int(r["run"]), int(r["seed"])): FinalTheory(*(float(r[k]) for k in FINAL_THEORY_COLUMNS))
            for r in rows if all(r.get(k, "") != "" for k in FINAL_THEORY_COLUMNS)}
