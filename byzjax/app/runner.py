"""Run a ``GridConfig`` end to end: data per seed, experiments, one sweep per structure, files."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from byzjax import __version__
from byzjax.algorithms import AEG, PIGS
from byzjax.app.config import GridConfig, build_experiment, resolve_source
from byzjax.app.files import Interrupted, OutputError, check_out_dir, warn
from byzjax.app.results import clear_results, finished_runs, read_record, write_results
from byzjax.data import federated_classification, load_dataset, stack_seeds
from byzjax.problems import LogisticRegression
from byzjax.sweep import run_grid


def environment() -> dict:
    dev = jax.devices()[0]
    return {"byzjax": __version__, "jax": jax.__version__, "device": f"{dev.platform}:{dev.device_kind}",
            "x64": bool(jax.config.jax_enable_x64), "python": platform.python_version()}


def prepare(cfg: GridConfig, data_source: str | None = None):
    """Load the data once and return ``(dataset, problem, per-seed stacked FederatedData)``."""
    source = resolve_source(data_source or cfg.data["source"])
    ds = load_dataset(source, normalization=cfg.data["normalization"], val_fraction=cfg.data.get("val_fraction", 0.2))
    problem = LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes,
                                 lam=cfg.problem.get("lam", 1e-3))
    datas = [federated_classification(ds, cfg.data["n_honest"], cfg.data["split"], cfg.data.get("alpha"), seed)
             for seed in cfg.seeds]
    return ds, problem, stack_seeds(datas)


def grid_signature(cfg: GridConfig, data_source: str | None = None) -> str:
    """sha256 of everything that fixes a grid's results: the config as given, the resolved
    data settings and source, seeds, rounds, evaluation interval, precision and every run's
    columns (not ``max_batch``, which only changes how runs are batched)."""
    blob = {"raw": cfg.raw, "data": cfg.data, "source": resolve_source(data_source or cfg.data["source"]),
            "seeds": cfg.seeds, "rounds": cfg.rounds, "eval_every": cfg.eval_every,
            "x64": bool(cfg.x64 or jax.config.jax_enable_x64), "runs": [s.columns for s in cfg.runs]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def check_output(out_dir, signature: str, force: bool = False) -> bool:
    """Check ``--out`` before anything is computed; True when it holds this grid's results (resume).

    Refuses a path that cannot be a writable folder (``check_out_dir``) and, unless ``force``,
    a folder holding results of another grid (a different ``signature`` in its config.json) or
    result files without a config.json.
    """
    out = check_out_dir(out_dir)
    if force:
        return False
    record = read_record(out)
    if record is None:
        if any((out / n).exists() for n in ("metrics.csv", "summary.csv")):
            raise OutputError(f"{out} holds result files without a config.json; use --force to overwrite them "
                              f"or choose another --out")
        return False
    if record.get("signature") != signature:
        raise OutputError(f"{out} holds the results of a different config; use --force to overwrite them "
                          f"or choose another --out")
    return True


def inner_caps(experiments) -> dict[int, int]:
    """Iteration cap of each experiment's inner solve (PIGS, prox-AEG), by index."""
    return {i: e.algorithm.inner_max_iter for i, e in enumerate(experiments) if isinstance(e.algorithm, (PIGS, AEG))}


def execute(cfg: GridConfig, out_dir: str | Path | None, *, data_source: str | None = None,
            show_progress: bool = True, prepared=None, force: bool = False):
    """Run every configuration x seed of ``cfg``; write result files to ``out_dir`` if given.

    The files are rewritten (atomically) after every compiled program call with the runs
    finished so far (``meta.finished_runs`` of ``meta.total_runs`` in config.json), so a grid
    that fails or is interrupted midway keeps what it computed. An ``out_dir`` holding this
    grid's results is resumed (its finished runs are read back, the others computed); one
    holding another grid's is refused unless ``force``. Returns ``(runs, timing, meta)`` where
    ``runs`` is a list of ``(run_id, seed, columns, trace)`` with one seed per trace.
    """
    done_runs, done_timing = [], {}
    signature = grid_signature(cfg, data_source)
    if out_dir is not None:
        if check_output(out_dir, signature, force):
            done_runs, done_timing = finished_runs(Path(out_dir), [s.columns for s in cfg.runs], cfg.seeds)
        elif force:
            clear_results(Path(out_dir))
    ds, problem, data = prepared or prepare(cfg, data_source)
    experiments = [build_experiment(s, problem, cfg.data["n_honest"], cfg.rounds, cfg.eval_every) for s in cfg.runs]
    todo = [i for i in range(len(cfg.runs)) if i not in done_timing]
    caps = inner_caps(experiments)
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    base = environment() | {"dataset": ds.name, "normalization": [ds.mean, ds.std], "total_runs": len(cfg.runs),
                            "resumed_runs": len(done_timing)}

    def collect(traces, timings):
        runs, timing = list(done_runs), dict(done_timing)
        for j, i in enumerate(todo):
            if traces[j] is None:
                continue
            timing[i] = timings[j]
            for s, seed in enumerate(cfg.seeds):
                runs.append((i, seed, cfg.runs[i].columns, jax.tree.map(lambda a: a[s], traces[j])))
        order = {seed: k for k, seed in enumerate(cfg.seeds)}
        return sorted(runs, key=lambda r: (r[0], order[r[1]])), timing

    def write(runs, timing, meta):
        if out_dir is None:
            return []
        return write_results(Path(out_dir), {"config": cfg.raw, "resolved_data": cfg.data, "seeds": cfg.seeds,
                                             "rounds": cfg.rounds, "signature": signature, "meta": meta},
                             runs, timing, caps)

    latest = [[None] * len(todo), [{}] * len(todo)]

    def partial(traces, timings):
        latest[:] = [list(traces), list(timings)]
        runs, timing = collect(traces, timings)
        write(runs, timing, base | {"finished_runs": len(timing), "complete": False})

    t0 = time.perf_counter()
    try:
        result = run_grid([experiments[i] for i in todo], keys, data, max_batch=cfg.max_batch,
                          show_progress=show_progress, label=cfg.name, on_chunk=partial if out_dir is not None else None)
    except KeyboardInterrupt:
        if out_dir is None:
            raise
        runs, timing = collect(*latest)
        write(runs, timing, base | {"finished_runs": len(timing), "complete": False, "interrupted": True})
        raise Interrupted(f"{out_dir} holds {len(timing)} of {len(cfg.runs)} runs, marked incomplete; "
                          f"rerun the same command to resume") from None
    wall = time.perf_counter() - t0
    runs, timing = collect(result.traces, result.timing)
    meta = base | {"finished_runs": len(timing), "complete": True, "programs": result.programs,
                   "compile_s": result.compile_s, "run_s": result.run_s, "wall_s": wall}
    meta["warnings"] = write(runs, timing, meta)
    for line in meta["warnings"]:
        warn(line)
    return runs, timing, meta


def describe(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("device", "programs", "compile_s", "run_s")}, default=str)
