"""The paper's experiments (arXiv 2602.03329, its experiments) as grids: ``byzjax reproduce short|long``.

Two step-size modes:

* ``tuned`` (default, and the only sensible one on Fashion-MNIST): the protocol
  of the authors' later experiments. At f = 0 with no attack (the reference
  runs) D-GD and D-NAG take the lr in {0.003, 0.01, 0.03, 0.1} with the lowest
  final training loss (D-NAG momentum 0.9); PIGS takes eta = lr_DGD x
  {5, 10, 20, 50} likewise. Those steps are then fixed for every attacked run.
* ``paper``: the paper's exact hyperparameters (lr 0.1, momentum 0.9, PIGS eta in
  {32, 16, 8, 4, 2, 1} or 4), meaningful with MNIST (``--data DIR``).
* ``tuned+grid``: ``tuned``, plus the paper's per-cell step grid under attack: in every attacked
  cell PIGS also runs with each eta of the paper's grid ({32, 16, 8, 4, 2, 1}, Experiment A), next
  to the eta tuned at f = 0 (its runs are rows of their own, ``steps = paper grid``). Each eta of
  a cell is a stage of its own: with a large eta the inner solves are ill conditioned and a run
  takes long (eta = 32: 18 minutes for 500 rounds on 2 CPU cores), so an interrupted grid keeps every
  finished run.

Every run's summary row carries the theory columns (``byzjax.app.results.theory_columns``: the
rule's proven kappa, the (G, B) fit, ``kappa B^2``, the predicted D-GD floor), the exact
``L* = min L_H`` of its problem instance (``l_star``, ``gap_star``; ``theory.reference_optimum``), and
``L`` and ``mu`` at the run's final parameters (``L_final``, ``mu_final``; ``runner.final_theory``,
measured from the stored stages' ``final_params`` and cached beside the instance files in ``stages/``).

Each stage is one grid: runs that share a structure are one compiled program.
Finished stages are stored under ``OUT/stages/`` (keyed by a hash of their grid,
data source and byzjax version) in a data-only format (``.npz`` arrays and a ``.json``
record with their sha256, ``byzjax.app.files.save_archive``): rerunning the same command
resumes after the last finished stage, so a long CPU reproduction can run in chunks across
sessions; a damaged stage is recomputed with a warning. ``--stored-only`` writes the results,
tables and figures of the stages stored so far and computes none (the others are named).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import __version__
from byzjax._validation import ConfigError
from byzjax.app.config import build_experiment, parse_config, resolve_source
from byzjax.app.files import DamagedArchive, load_archive, save_archive, warn, write_json
from byzjax.instruments import honest_loss, smoothness
from byzjax.app.plotting import _title, plot_accuracy, plot_convergence, plot_diagnostics
from byzjax.app.results import csv_levels, instance_key, read_csv, rounds_to_gap, write_csv, write_results
from byzjax.app.runner import environment, execute, final_theory, instance_theory, prepare, run_kappas
from byzjax.simulate import Trace

LR_GRID = [0.003, 0.01, 0.03, 0.1]
ETA_MULTIPLIERS = [5, 10, 20, 50]
ATTACKS = ["Optimal_InnerProductManipulation", "Optimal_ALittleIsEnough"]
GRID_STEPS = "paper grid"  # the steps column of the paper's eta grid runs (--steps tuned+grid)
SHORT_ATTACK_NAMES = {"Optimal_InnerProductManipulation": "Optimal IPM", "Optimal_ALittleIsEnough": "Optimal ALIE"}


def settings(which: str, quick: bool, splits: list[str] | None = None) -> dict:
    """The grid of Experiment A ("short") or B ("long"), or its reduced ``--quick`` form;
    ``splits`` keeps only the named data splits (``None``: all)."""
    if which == "short":
        s = {"fs": [1, 5], "splits": [("iid", None), ("dirichlet", 1.0)], "lam": 1e-3, "rounds": 500,
             "ref_rounds": 750, "attacks": ATTACKS, "paper_etas": [32.0, 16.0, 8.0, 4.0, 2.0, 1.0]}
        if quick:
            s |= {"fs": [1], "splits": [("iid", None)], "rounds": 20, "ref_rounds": 30}
    elif which == "long":
        s = {"fs": [1], "splits": [("dirichlet", 5.0)], "lam": 1e-2, "rounds": 5000, "ref_rounds": 5000,
             "attacks": ["Optimal_ALittleIsEnough"], "paper_etas": [4.0]}
        if quick:
            s |= {"rounds": 30, "ref_rounds": 30}
    else:
        raise ValueError(f"unknown experiment {which!r} (allowed: short, long)")
    if splits is not None:
        known = [name for name, _ in s["splits"]]
        unknown = [name for name in splits if name not in known]
        if unknown or not splits:
            raise ConfigError(f"reproduce {which}: split {unknown[0] if unknown else splits!r} is not one of this "
                              f"experiment's splits (allowed: {', '.join(known)})")
        s["splits"] = [(name, alpha) for name, alpha in s["splits"] if name in splits]
    return s


def _raw(name, split, alpha, lam, rounds, seeds, fs, attacks, algorithms, aggregator, eval_every, x64, max_batch):
    data = {"split": split, "n_honest": 20}
    if alpha is not None:
        data["alpha"] = alpha
    raw = {"name": name, "seeds": seeds, "rounds": rounds, "eval_every": eval_every, "x64": x64,
           "data": data, "problem": {"name": "LogisticRegression", "lam": lam},
           "byzantine": {"f": fs, "attack": attacks}, "aggregator": aggregator, "algorithm": algorithms}
    if max_batch:
        raw["max_batch"] = max_batch
    return raw


def _best(runs, algorithm):
    """``(label, columns)`` of the hyperparameter row with the lowest median final loss among the
    runs of ``algorithm`` (the ``algorithm`` column: ``"DGD"``, ...; the columns carry its numbers:
    ``lr``, ``eta``, ...)."""
    finals, columns = defaultdict(list), {}
    for _, _, cols, trace in runs:
        if cols["algorithm"] == algorithm:
            finals[cols["method"]].append(float(np.asarray(trace.metrics["loss"])[-1]))
            columns[cols["method"]] = cols
    scored = {m: np.median(v) if np.all(np.isfinite(v)) else np.inf for m, v in finals.items()}
    best = min(scored, key=scored.get)
    return best, columns[best]


@dataclass
class StageCache:
    """The cached stages of one ``reproduce`` call (Experiment A or B, the authors' revised protocol).

    ``run(name, group, raw)`` parses the stage's grid ``raw`` and returns ``(cfg, runs, timing,
    meta)``: read back from ``folder/<name>-<group>-<stage_key>`` when stored there (data only,
    ``find_stage``), else computed with ``runner.execute`` and stored (``save_stage``). The stages
    of one ``group`` (a split, a heterogeneity level) share one loaded data set (``data``; one group
    in memory at a time). Counts the stages loaded and computed, and the compile time, run time and
    run-rounds of those computed; before the first stage it computes after loading some it prints
    "resuming: k of N stages done".
    """

    folder: Path
    data_source: str | None
    total: int  # stages of the whole call
    show_progress: bool = True
    stored_only: bool = False  # skip the stages not stored instead of computing them
    loaded: int = 0
    computed: int = 0
    compile_s: float = 0.0
    run_s: float = 0.0
    run_rounds: int = 0
    skipped: list = field(default_factory=list)  # stems of the stages not stored (stored_only)
    _data: dict = field(default_factory=dict)

    def data(self, group: str, cfg):
        """``runner.prepare(cfg)`` for ``group``, loaded once."""
        if group not in self._data:
            self._data = {group: prepare(cfg, self.data_source)}
        return self._data[group]

    def run(self, name: str, group: str, raw: dict, required: bool = False):
        """``(cfg, runs, timing, meta)`` of the stage; ``None`` when ``stored_only`` and it is not
        stored (a ``ConfigError`` if it is ``required``: later stages depend on its runs)."""
        cfg = parse_config(raw)
        path = self.folder / f"{name}-{group}-{stage_key(raw, self.data_source)}"
        stored = find_stage(path)
        if stored is not None:
            self.loaded += 1
            return (cfg, *stored)
        if self.stored_only:
            if required:
                raise ConfigError(f"reproduce --stored-only: stage {path.name} ({group}), which chooses the steps of "
                                  f"the stages after it, is not stored in {self.folder}; compute it first (without "
                                  f"--stored-only), or leave its split out with --split")
            self.skipped.append(path.name)
            return None
        if self.loaded and not self.computed:
            print(f"resuming: {self.loaded} of {self.total} stages done")
        self.computed += 1
        runs, timing, meta = execute(cfg, None, show_progress=self.show_progress, prepared=self.data(group, cfg))
        save_stage(path, runs, timing, meta)
        self.compile_s += meta["compile_s"]
        self.run_s += meta["run_s"]
        self.run_rounds += len(cfg.runs) * len(cfg.seeds) * cfg.rounds
        return cfg, runs, timing, meta

    def finish(self) -> None:
        """Say so when every stage came from the cache, or which were skipped (``stored_only``)."""
        if self.skipped:
            print(f"stored only: {self.loaded} of {self.total} stages stored; {len(self.skipped)} not computed yet, "
                  f"left out of the results: {', '.join(self.skipped)}")
        elif not self.computed:
            print(f"resuming: {self.loaded} of {self.total} stages done (nothing to compute)")


def reproduce(which: str, out_dir: Path, *, quick=False, data_source=None, seeds=1, mode="tuned",
              x64=False, eval_every=2, max_batch=None, show_progress=True, tune_rounds=None, splits=None,
              stored_only=False) -> dict:
    """Run Experiment A or B; write results, figures and rounds tables into ``out_dir``.

    ``tune_rounds`` (tuned mode) shortens the tuning runs; the chosen steps are then
    rerun for the full reference length. By default tuning runs are the reference runs.
    ``splits`` (names, e.g. ``["dirichlet"]``) runs only those halves of the experiment; the
    stages are the ones the whole experiment stores, so a later run of every split reuses them.
    ``stored_only``: compute no stage; the results, tables and figures are those of the stages stored
    so far (a long reproduction's partial results; the tuning stages must be stored).
    """
    s = settings(which, quick, splits)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    all_runs, timing, log = [], {}, {"experiment": which, "quick": quick, "mode": mode, "stages": []}
    run_offset = 0
    kappas, instances, finals = {}, {}, {}  # run id -> proven kappa; instance_key -> InstanceTheory;
    # (run id, seed) -> FinalTheory (L, mu at the run's final parameters): summary's theory
    if mode not in ("tuned", "paper", "tuned+grid"):
        raise ValueError(f"unknown step mode {mode!r} (allowed: tuned, paper, tuned+grid)")
    tr = min(tune_rounds or s["ref_rounds"], s["ref_rounds"])
    cells = len(s["fs"]) * len(s["attacks"])
    per_cell = 1 + len(s["paper_etas"]) if mode == "tuned+grid" else 1  # the tuned stage, and one per grid eta
    per_split = (2 + (tr < s["ref_rounds"]) if mode != "paper" else 1) + cells * per_cell
    stages = StageCache(out_dir / "stages", data_source, per_split * len(s["splits"]), show_progress, stored_only)
    agg = {"name": "TrMean", "pre_aggs": ["NNM"]}
    for split, alpha in s["splits"]:
        common = dict(split=split, alpha=alpha, lam=s["lam"], seeds=seeds, eval_every=eval_every, x64=x64,
                      max_batch=max_batch)
        split_stages = []  # (parsed grid, run id offset) of every stage of this split
        split_runs = []  # its runs, with the run ids of the summary

        def stage(name, rounds, fs, attacks, algorithms, aggregator, extra, required=False):
            nonlocal run_offset
            got = stages.run(name, split, _raw(f"{which}:{name}:{split}", rounds=rounds, fs=fs, attacks=attacks,
                                               algorithms=algorithms, aggregator=aggregator, **common), required)
            if got is None:  # stored_only, and not stored yet
                return []
            cfg, runs, tim, meta = got
            # the columns of this grid's runs as parsed now (a stored stage may predate a column, e.g. lr)
            shifted = [(rid + run_offset, seed, cfg.runs[rid].columns | extra, with_kappa_hat(tr))
                       for rid, seed, _, tr in runs]
            timing.update({rid + run_offset: t for rid, t in tim.items()})
            run_offset += len(cfg.runs)
            log["stages"].append({"stage": name, "split": split, "alpha": alpha, "runs": len(cfg.runs),
                                  "seeds": len(seeds) if isinstance(seeds, list) else seeds} | meta)
            all_runs.extend(shifted)
            split_runs.extend(shifted)
            split_stages.append((cfg, run_offset - len(cfg.runs)))
            return shifted

        reference = {"name": "Average"}
        if mode != "paper":
            ref1 = stage("reference", tr, [0], ["NoAttack"],
                         [{"name": "DGD", "lr": LR_GRID}, {"name": "DNAG", "lr": LR_GRID, "momentum": 0.9}],
                         reference, {"stage": "tuning"}, required=True)
            best_gd, gd = _best(ref1, "DGD")
            best_nag, nag = _best(ref1, "DNAG")
            lr_gd, lr_nag = float(gd["lr"]), float(nag["lr"])
            etas = [m * lr_gd for m in ETA_MULTIPLIERS]
            ref2 = stage("reference", tr, [0], ["NoAttack"], [{"name": "PIGS", "eta": etas}],
                         reference, {"stage": "tuning"}, required=True)
            best_pigs, pigs = _best(ref2, "PIGS")
            algorithms = [{"name": "DGD", "lr": lr_gd}, {"name": "DNAG", "lr": lr_nag, "momentum": 0.9},
                          {"name": "PIGS", "eta": float(pigs["eta"])}]
            chosen = {"D-GD": best_gd, "D-NAG": best_nag, "PIGS": best_pigs}
            for r in ref1 + ref2:
                short_tuning = tr < s["ref_rounds"]
                r[2]["stage"] = "reference" if r[2]["method"] in chosen.values() and not short_tuning else "tuning"
            if tr < s["ref_rounds"]:
                stage("reference", s["ref_rounds"], [0], ["NoAttack"], algorithms, reference, {"stage": "reference"})
        else:
            algorithms = [{"name": "DGD", "lr": 0.1}, {"name": "DNAG", "lr": 0.1, "momentum": 0.9},
                          {"name": "PIGS", "eta": s["paper_etas"]}]
            stage("reference", s["ref_rounds"], [0], ["NoAttack"], algorithms, reference, {"stage": "reference"})
            chosen = None
        for f in s["fs"]:  # one stage (one resumable chunk) per (f, attack)
            for attack in s["attacks"]:
                stage("attacked", s["rounds"], [f], [attack], algorithms, agg, {"stage": "attacked"})
        if mode == "tuned+grid":  # the paper's eta grid under attack, after every tuned stage of the split;
            for f in s["fs"]:  # one stage per eta: a large eta's inner solves take long, and each run is kept
                for attack in s["attacks"]:
                    for eta in s["paper_etas"]:
                        stage("attacked", s["rounds"], [f], [attack], [{"name": "PIGS", "eta": eta}], agg,
                              {"stage": "attacked", "steps": GRID_STEPS})
        label = f"{split}{'' if alpha is None else f'(alpha={alpha})'}"
        log.setdefault("chosen_steps", {})[label] = chosen
        prepared = stages.data(split, parse_config(_raw(f"{which}:L:{split}", rounds=1, fs=[0], attacks=["NoAttack"],
                                                        algorithms=[{"name": "DGD"}], aggregator=reference, **common)))
        with jax.enable_x64(x64):
            split_theory(prepared, split_stages, kappas, instances, stages.folder, split_runs, finals)
        L0 = smoothness_at_init(prepared, seeds[0] if isinstance(seeds, list) else 0)
        log.setdefault("smoothness", {})[label] = {"L_at_init": round(L0, 3), "2/L": round(2.0 / L0, 5)}
    stages.finish()
    log["environment"] = environment()
    log["warnings"] = write_results(out_dir, log, all_runs, timing, kappas=kappas, instances=instances,
                                    finals=finals)
    for line in log["warnings"]:
        warn(line)
    figures = make_figures(out_dir, which)
    tables = rounds_table(out_dir, which)
    log |= {"stages_loaded": stages.loaded, "stages_computed": stages.computed, "stages_skipped": stages.skipped,
            "compile_s": stages.compile_s, "wall_s": time.perf_counter() - started}  # this invocation's
    write_json(out_dir / "reproduce.json", log | {"figures": [str(p) for p in figures], "tables": [str(t) for t in tables]})
    return log


def split_theory(prepared, stages, kappas: dict, instances: dict, cache_dir: Path | None = None, runs=(),
                 finals: dict | None = None) -> None:
    """Fill ``kappas`` (run id -> ``theory.proven_kappa`` of its rule), ``instances``
    (``instance_key`` -> ``InstanceTheory``: ``L``, ``mu`` and ``delta`` at ``x0`` and ``x*``, and the
    exact ``L*``) and ``finals`` (``(run id, seed)`` -> ``FinalTheory``: ``L`` and ``mu`` at the final
    parameters of each of ``runs``, the split's ``(run id, seed, columns, trace)``) for the stages of
    one split: ``stages`` = ``(parsed grid, run id offset)``; the runner's ``run_kappas``,
    ``instance_theory`` and ``final_theory``, as ``byzjax run`` computes them (each instance and each
    final point measured once, and kept in ``cache_dir``: the stages folder)."""
    _, problem, data = prepared
    for cfg, offset in stages:
        experiments = [build_experiment(spec, problem, cfg.data.n_honest, cfg.rounds, cfg.eval_every,
                                        x0=cfg.problem.x0) for spec in cfg.runs]
        kappas.update({offset + i: k for i, k in run_kappas(cfg, experiments).items()})
    cfg = stages[0][0]
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    instances.update(instance_theory(cfg, problem, data, keys, cfg.problem.x0, cache_dir=cache_dir))
    if finals is not None and runs:
        finals.update(final_theory(cfg, problem, data, keys, list(runs), cfg.problem.x0, cache_dir=cache_dir))


def with_kappa_hat(trace: Trace) -> Trace:
    """``trace`` with the per-round ``kappa_hat = error^2 / spread`` (``byzjax.metrics``; nan where
    ``spread = 0``) added when a stored stage predates that metric."""
    m = trace.metrics
    if "kappa_hat" in m or "error" not in m or "spread" not in m:
        return trace
    error, spread = np.asarray(m["error"], np.float64), np.asarray(m["spread"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kh = np.where(spread > 0, error**2 / np.where(spread > 0, spread, 1.0), np.nan)
    return Trace(metrics=dict(m) | {"kappa_hat": kh.astype(np.asarray(m["error"]).dtype)},
                 eval_metrics=trace.eval_metrics, eval_iters=trace.eval_iters, final_params=trace.final_params)


def smoothness_at_init(prepared, seed: int) -> float:
    """Estimated ``L`` (largest Hessian eigenvalue of ``L_H``) at the first seed's initial point,
    the point every run starts from (``simulate.run``): D-GD needs ``lr < 2 / L`` there."""
    _, problem, data = prepared
    shards = jax.tree.map(lambda a: jnp.asarray(a[0]), data.shards)
    x0 = problem.init(jax.random.fold_in(jax.random.key(seed), 0))
    return float(jax.jit(lambda x: smoothness(honest_loss(problem, shards), x, jax.random.key(0)))(x0))


def stage_key(raw: dict, data_source) -> str:
    """Content hash of a stage: its grid, the data source, the precision and byzjax's version."""
    blob = json.dumps([raw, resolve_source(data_source or "fashion-mnist"), __version__], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


TRACE_FIELDS = ("metrics", "eval_metrics", "eval_iters", "final_params")


def save_stage(stem: Path, runs, timing, meta) -> None:
    """Store a finished stage as ``stem.npz`` (every trace array) and ``stem.json`` (run ids,
    seeds, columns, timings, meta and the arrays' sha256), so an interrupted reproduction
    resumes after it; written atomically, the ``.json`` last."""
    arrays, index = {}, []
    for j, (rid, seed, cols, tr) in enumerate(runs):
        index.append([rid, seed, cols])
        for name, v in tr.metrics.items():
            arrays[f"{j}/metrics/{name}"] = np.asarray(v)
        for name, v in tr.eval_metrics.items():
            arrays[f"{j}/eval_metrics/{name}"] = np.asarray(v)
        arrays[f"{j}/eval_iters"] = np.asarray(tr.eval_iters)
        arrays[f"{j}/final_params"] = np.asarray(tr.final_params)
    save_archive(stem, arrays, {"runs": index, "timing": {str(k): v for k, v in timing.items()}, "meta": meta})


def load_stage(stem: Path):
    """``(runs, timing, meta)`` of ``save_stage``; ``DamagedArchive`` if the files are damaged."""
    arrays, blob = load_archive(stem)
    try:
        runs = []
        for j, (rid, seed, cols) in enumerate(blob["runs"]):
            parts = {"metrics": {}, "eval_metrics": {}}
            for key, v in arrays.items():
                head, _, rest = key.partition("/")
                if head == str(j):
                    kind, _, name = rest.partition("/")
                    if name:
                        parts[kind][name] = v
                    else:
                        parts[kind] = v
            runs.append((int(rid), int(seed), dict(cols), Trace(**{k: parts[k] for k in TRACE_FIELDS})))
        timing = {int(k): v for k, v in blob["timing"].items()}
        meta = dict(blob["meta"])
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedArchive(f"inconsistent record ({err.__class__.__name__}: {err})") from None
    return runs, timing, meta | {"resumed_from": str(stem.with_suffix(".json"))}


def find_stage(stem: Path):
    """The stored stage at ``stem`` (None if absent); a damaged one is reported and None."""
    stem = Path(stem)
    if not stem.with_suffix(".json").exists():
        if stem.with_suffix(".npz").exists() or stem.with_suffix(".pkl").exists():
            warn(f"stage {stem.name} is incomplete or a pickle (not loaded); recomputing it")
        return None
    try:
        return load_stage(stem)
    except DamagedArchive as err:
        warn(f"stage {stem.name} is damaged: {err}; recomputing it")
        return None


def convert_pickle_stages(folder: Path) -> list[Path]:
    """One-off: rewrite the ``*.pkl`` stages of ``folder`` (byzjax <= 0.x, TRUSTED files only:
    unpickling runs code) as ``save_stage`` archives, check that they load back equal, remove
    the pickles. Returns the new ``.json`` records."""
    import pickle

    made = []
    for pkl in sorted(Path(folder).glob("*.pkl")):
        with open(pkl, "rb") as fh:
            blob = pickle.load(fh)  # noqa: S301 (committed stages only, see the docstring)
        runs = [(rid, seed, cols, Trace(**tr)) for rid, seed, cols, tr in blob["runs"]]
        stem = pkl.with_suffix("")
        save_stage(stem, runs, blob["timing"], blob["meta"])
        back, timing, _ = load_stage(stem)
        assert timing == blob["timing"] and len(back) == len(runs)
        for (a, b) in zip(runs, back):
            assert a[:3] == b[:3], (a[:3], b[:3])
            for k in TRACE_FIELDS:
                jax.tree.map(np.testing.assert_array_equal, getattr(a[3], k), getattr(b[3], k))
        pkl.unlink()
        made.append(stem.with_suffix(".json"))
    return made


def _grid_label(row: dict) -> dict:
    """A row of the paper's eta grid (``steps = paper grid``) named apart from a tuned run of the
    same step in figures: ``"PIGS(eta=4), paper grid"``."""
    return row | {"method": f"{row['method']}, {GRID_STEPS}"} if row.get("steps") == GRID_STEPS else row


def make_figures(out_dir: Path, which: str) -> list[Path]:
    """The paper's panels from ``out_dir/metrics.csv``: per (f, split), one panel per attack.

    Gaps are to the exact ``L*`` of summary.csv (``star_levels``) when it has one, else to
    ``L_ref``; each tuned method's predicted D-GD floor (summary's ``floor_dgd``) is a dotted line.
    Per attacked run, ``figures/diagnostics/`` holds ``plotting.plot_diagnostics`` (measured
    oracle error vs the bound, ``kappa_hat``)."""
    rows = [_grid_label(r) for r in read_csv(out_dir / "metrics.csv")]
    summary = [_grid_label(r) for r in read_csv(out_dir / "summary.csv")] if (out_dir / "summary.csv").exists() else []
    attacked = [r for r in rows if r["stage"] == "attacked"]
    reference = [r for r in rows if r["stage"] == "reference"]
    stars = star_levels(out_dir)
    levels, level_name = (stars, "L^*") if stars else (csv_levels(attacked + reference), "L_{ref}")
    floors = {}
    for s in summary:
        if s.get("stage") == "attacked" and s.get("floor_dgd", "") not in ("", "inf", "nan"):
            cell = (s["f"], s["split"], s["alpha"], s["lam"], s["aggregator"])
            floors.setdefault(cell, {})[(s["attack"], s["method"])] = float(s["floor_dgd"])
    made = []
    groups = defaultdict(list)
    for r in attacked:
        groups[(r["f"], r["split"], r["alpha"], r["lam"], r["aggregator"])].append(r)
    for key, sub in sorted(groups.items()):
        refs = [r for r in reference if (r["split"], r["alpha"]) == (key[1], key[2])]
        stem = f"{which}_f{key[0]}_{key[1]}" + (f"_alpha{key[2]}" if key[1] == "dirichlet" else "")
        title = f"Experiment {'A (short)' if which == 'short' else 'B (long)'}: " + _title(key, 20)
        plot_convergence(sub, out_dir / "figures" / f"loss_{stem}", levels, title, reference_rows=refs,
                         level_name=level_name, floors=floors.get(key))
        plot_accuracy(sub, out_dir / "figures" / f"accuracy_{stem}", title, ylim=None)
        made += [out_dir / "figures" / f"loss_{stem}.png", out_dir / "figures" / f"accuracy_{stem}.png"]
    by_run = defaultdict(list)
    for r in attacked:
        by_run[(r["run"], r["seed"])].append(r)
    for s in summary:
        if s.get("stage") != "attacked" or (s["run"], s["seed"]) not in by_run or s.get("kappa_source", "") == "":
            continue
        kappa = float(s["kappa"]) if s.get("kappa_source") == "proven" else None
        mu = float(s["mu"]) if s.get("mu", "") not in ("", None) else float("nan")
        attack = SHORT_ATTACK_NAMES.get(s["attack"], s["attack"]).replace(" ", "")
        stem = (f"diag_{which}_f{s['f']}_{s['split']}" + (f"_alpha{s['alpha']}" if s["split"] == "dirichlet" else "")
                + f"_{attack}_{s['method']}_seed{s['seed']}").replace("=", "").replace(",", "_").replace("(", "_")
        stem = stem.replace(")", "").replace(" ", "")
        path = out_dir / "figures" / "diagnostics" / stem
        plot_diagnostics(by_run[(s["run"], s["seed"])], path, kappa, mu,
                         f"{_title((s['f'], s['split'], s['alpha'], s['lam'], s['aggregator']), 20)}; "
                         f"{s['attack']}; {s['method']}; seed {s['seed']}")
        made.append(path.parent / f"{path.name}.png")
    return made


def rounds_table(out_dir: Path, which: str) -> list[Path]:
    """``{which}_rounds.csv`` (rounds to L_H - L_ref <= 1e-2 / 1e-3, speed-up over D-GD),
    ``{which}_gaps.csv`` (``gap_table``: gaps to the exact L*, rounds to 1.1 x the cell's lowest gap)
    and ``{which}_floor.csv``: final gap, lowest gap and its round (an attacked run can pass
    below the floor it settles at), the final gap's ratio to the f = 0 reference, and the rounds
    each method needs to reach the gap D-GD ends with (speed-up = D-GD's rounds / the method's)."""
    rows = read_csv(out_dir / "metrics.csv")
    usable = [r for r in rows if r["stage"] in ("attacked", "reference") and r["loss"]]
    levels = csv_levels(usable)  # L_ref per (split, seed): the series below hold gaps L_H - L_ref
    algorithm = {r["method"]: r["algorithm"] for r in usable}  # label -> the algorithm column
    series = defaultdict(lambda: defaultdict(list))
    for r in usable:
        key = (r["stage"], r["f"], r["split"], r["alpha"], r["attack"], r["method"], r.get("steps", ""))
        gap = float(r["loss"]) - levels[instance_key(r, r["seed"])]
        series[key][r["seed"]].append((int(r["comm_round"]), gap))
    table, floor = [], []
    medians, median_curves = {}, {}
    for key, seeds in series.items():
        per_seed = {g: [] for g in (1e-2, 1e-3)}
        finals, curves = [], []
        for pts in seeds.values():
            pts.sort()
            comm = np.array([p[0] for p in pts])
            loss = np.array([p[1] for p in pts])
            finals.append(loss[-1])
            curves.append(loss)
            for g in per_seed:
                hit = rounds_to_gap(loss, comm, 0.0, g)
                per_seed[g].append(np.inf if hit is None else hit)
        medians[key] = ({g: float(np.median(v)) for g, v in per_seed.items()}, float(np.median(finals)))
        median_curves[key] = (comm, np.median(np.array(curves), axis=0))
    for key, (rounds, final) in sorted(medians.items()):
        stage, f, split, alpha, attack, method, steps = key
        if stage != "attacked":
            continue
        split_s = split if split == "iid" else f"dirichlet({alpha})"
        gd = next((v[0] for k, v in medians.items() if k[:5] == key[:5] and algorithm[k[5]] == "DGD"), None)
        row = {"f": f, "split": split_s, "attack": SHORT_ATTACK_NAMES.get(attack, attack), "method": method,
               "steps": steps}
        for g, tag in ((1e-2, "1e-2"), (1e-3, "1e-3")):
            row[f"rounds_{tag}"] = "" if np.isinf(rounds[g]) else int(rounds[g])
        for g, tag in ((1e-2, "1e-2"), (1e-3, "1e-3")):
            ok = gd is not None and np.isfinite(gd[g]) and np.isfinite(rounds[g]) and rounds[g] > 0
            row[f"speedup_{tag}"] = f"{gd[g] / rounds[g]:.2f}" if ok else ""
        table.append(row)
        ref = next((v[1] for k, v in medians.items() if k[0] == "reference" and k[2:4] == key[2:4]
                    and algorithm[k[5]] == algorithm[method]), None)
        gd_key = next((k for k in medians if k[:5] == key[:5] and algorithm[k[5]] == "DGD"), None)
        reach = {}
        if gd_key is not None:  # rounds to reach the suboptimality D-GD ends with (median curves)
            target = median_curves[gd_key][1][-1]
            for k in (gd_key, key):
                comm, loss = median_curves[k]
                reach[k] = rounds_to_gap(loss, comm, target, 0.0)
        mine, theirs = reach.get(key), reach.get(gd_key)
        comm, med = median_curves[key]
        floor.append({"f": f, "split": split_s, "attack": row["attack"], "method": method, "steps": steps,
                      "final_gap": f"{final:.4g}",
                      "min_gap": f"{np.min(med):.4g}", "min_gap_round": int(comm[np.argmin(med)]),
                      "reference_final_gap": "" if ref is None else f"{ref:.4g}",
                      "ratio_to_reference": "" if not ref else f"{final / ref:.3g}",
                      "rounds_to_dgd_final_gap": "" if mine is None else mine,
                      "speedup_at_dgd_final_gap": f"{theirs / mine:.2f}" if mine and theirs else ""})
    paths = [out_dir / f"{which}_rounds.csv", out_dir / f"{which}_floor.csv", out_dir / f"{which}_gaps.csv"]
    write_csv(paths[0], table)
    write_csv(paths[1], floor)
    write_csv(paths[2], gap_table(usable, star_levels(out_dir) or levels))
    return paths


def star_levels(out_dir: Path) -> dict[tuple, float]:
    """``instance_key`` -> the exact ``L*`` (summary.csv's ``l_star``; empty when it has none)."""
    path = Path(out_dir) / "summary.csv"
    if not path.exists():
        return {}
    return {instance_key(r, r["seed"]): float(r["l_star"]) for r in read_csv(path) if r.get("l_star", "") != ""}


def gap_table(rows: list[dict], levels: dict[tuple, float], factor: float = 1.1) -> list[dict]:
    """Per attacked cell (f, split, attack) and method, on the seed-median gap curve
    ``L_H(x_t) - level`` (``levels``: the exact ``L*`` per instance, else ``L_ref``): the lowest gap
    and its round, the final gap, and the rounds to reach ``factor`` x the lowest gap ANY method of
    the cell reaches, with the speed-up over D-GD (D-GD's rounds / the method's; blank when either
    never gets there). Under attack every method drifts to the oracle's biased fixed point after its
    lowest gap, so both the acceleration (rounds to the common target) and the drift (final vs
    lowest gap) are in one row (issue 14)."""
    series = defaultdict(lambda: defaultdict(list))
    algorithm = {r["method"]: r["algorithm"] for r in rows}  # label -> the algorithm column
    for r in rows:
        key = instance_key(r, r["seed"])
        if r["stage"] != "attacked" or key not in levels:
            continue
        series[(r["f"], r["split"], r["alpha"], r["attack"])][(r["method"], r.get("steps", ""))].append(
            (r["seed"], int(r["comm_round"]), float(r["loss"]) - levels[key]))
    out = []
    for (f, split, alpha, attack), methods in sorted(series.items()):
        curves = {}
        for label, pts in methods.items():
            by_seed = defaultdict(dict)
            for seed, t, gap in pts:
                by_seed[seed][t] = gap
            rounds = sorted(set.intersection(*(set(v) for v in by_seed.values())))
            curves[label] = (np.array(rounds), np.median([[v[t] for t in rounds] for v in by_seed.values()], axis=0))
        finite = [np.nanmin(np.where(np.isfinite(g), g, np.nan)) for _, g in curves.values() if np.isfinite(g).any()]
        target = factor * min(finite) if finite else np.nan
        reach = {lab: rounds_to_gap(g, t, 0.0, target) for lab, (t, g) in curves.items()}
        gd = next((reach[lab] for lab in curves if algorithm[lab[0]] == "DGD"), None)
        split_s = split if split == "iid" else f"dirichlet({alpha})"
        order = {"DGD": 0, "DNAG": 1, "PIGS": 2}
        for (method, steps), (t, g) in sorted(curves.items(), key=lambda kv: (order.get(algorithm[kv[0][0]], 3), kv[0])):
            ok = np.isfinite(g)
            i = int(np.argmin(np.where(ok, g, np.inf))) if ok.any() else 0
            mine = reach[(method, steps)]
            out.append({"f": f, "split": split_s, "attack": SHORT_ATTACK_NAMES.get(attack, attack), "method": method,
                        "steps": steps, "lowest_gap": f"{g[i]:.4g}", "lowest_gap_round": int(t[i]),
                        "final_gap": f"{g[-1]:.4g}", "target_gap": f"{target:.4g}",
                        "rounds_to_target": "" if mine is None else mine,
                        "speedup_over_dgd": f"{gd / mine:.2f}" if mine and gd else ""})
    return out
