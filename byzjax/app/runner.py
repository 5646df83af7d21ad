"""Run a ``GridConfig`` end to end: data per seed, experiments, one sweep per structure, files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from byzjax import __version__
from byzjax.app.config import GridConfig, build_experiment, resolve_source
from byzjax.data import federated_classification, load_dataset, stack_seeds
from byzjax.problems import LogisticRegression
from byzjax.app.results import write_results
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


def execute(cfg: GridConfig, out_dir: str | Path | None, *, data_source: str | None = None,
            show_progress: bool = True, prepared=None):
    """Run every configuration x seed of ``cfg``; write result files to ``out_dir`` if given.

    The files are rewritten after every compiled program call with the runs finished so far
    (``meta.finished_runs`` of ``meta.total_runs`` in config.json), so a grid that fails or is
    interrupted midway keeps what it computed. Returns ``(runs, timing, meta)`` where ``runs``
    is a list of ``(run_id, seed, columns, trace)`` with one seed per trace.
    """
    ds, problem, data = prepared or prepare(cfg, data_source)
    experiments = [build_experiment(s, problem, cfg.data["n_honest"], cfg.rounds, cfg.eval_every) for s in cfg.runs]
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    base = environment() | {"dataset": ds.name, "normalization": [ds.mean, ds.std], "total_runs": len(cfg.runs)}

    def collect(traces, timings):
        runs, timing = [], {}
        for i, (spec, trace) in enumerate(zip(cfg.runs, traces)):
            if trace is None:
                continue
            timing[i] = timings[i]
            for s, seed in enumerate(cfg.seeds):
                runs.append((i, seed, spec.columns, jax.tree.map(lambda a: a[s], trace)))
        return runs, timing

    def write(runs, timing, meta):
        if out_dir is not None:
            write_results(Path(out_dir), {"config": cfg.raw, "resolved_data": cfg.data, "seeds": cfg.seeds,
                                          "meta": meta}, runs, timing)

    def partial(traces, timings):
        runs, timing = collect(traces, timings)
        write(runs, timing, base | {"finished_runs": len(timing), "complete": False})

    t0 = time.perf_counter()
    result = run_grid(experiments, keys, data, max_batch=cfg.max_batch, show_progress=show_progress, label=cfg.name,
                      on_chunk=partial if out_dir is not None else None)
    wall = time.perf_counter() - t0
    runs, timing = collect(result.traces, result.timing)
    meta = base | {"finished_runs": len(timing), "complete": True, "programs": result.programs,
                   "compile_s": result.compile_s, "run_s": result.run_s, "wall_s": wall}
    write(runs, timing, meta)
    return runs, timing, meta


def describe(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("device", "programs", "compile_s", "run_s")}, default=str)
