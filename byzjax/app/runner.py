"""Run a ``GridSpec`` end to end: data per seed, experiments, one sweep per structure, files."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from byzjax import __version__
from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.app.config import GridSpec, build_experiment, resolve_source
from byzjax.data import federated_classification, partitioned_dataset, stack_seeds
from byzjax.app.results import write_results
from byzjax.sweep import group_by_structure, run_grid


def environment() -> dict:
    dev = jax.devices()[0]
    return {"byzjax": __version__, "jax": jax.__version__, "device": f"{dev.platform}:{dev.device_kind}",
            "x64": bool(jax.config.jax_enable_x64), "python": platform.python_version()}


def prepare(cfg: GridSpec, data_source: str | None = None):
    """Load the data once and return ``(dataset, problem, per-seed stacked FederatedData)``.

    The problem is the registered ``[problem] name`` built from the data's shapes; the data is
    loaded in the layout the problem class declares (``input_layout``: flat features, or images for
    the networks; ``byzjax.images.load_source``). With ``[data] partition`` the workers' shards come
    from the file (the same for every seed; MNIST-format or synthetic sources).
    """
    from byzjax import registry
    from byzjax.images import CIFAR10_PREFIX, as_images, load_source

    cfg = cfg.override(source=data_source)
    spec = cfg.data
    cls = registry.lookup("problem", cfg.problem.name)
    with jax.enable_x64(cfg.x64):
        source = resolve_source(spec.source)
        if spec.partition is not None:
            if source.startswith(CIFAR10_PREFIX):
                raise ConfigError("config [data]: partition files work with MNIST-format or synthetic sources, "
                                  f"not {source!r}")
            ds, shards = partitioned_dataset(source, spec.partition, spec.n_honest, normalization=spec.normalization)
            shape = cls.sample_shape
            if cls.input_layout == "image" and shape is not None and ds.num_features == math.prod(shape):
                ds = as_images(ds, shape)
        else:
            ds = load_source(source, layout=cls.input_layout, image_shape=cls.sample_shape,
                             normalization=spec.normalization, val_fraction=spec.val_fraction)
            shards = None
        problem = cfg.problem.build(ds)
        datas = [federated_classification(ds, spec.n_honest, spec.split, spec.alpha, seed, shards=shards)
                 for seed in cfg.seeds]
    return ds, problem, stack_seeds(datas)


def program_names(cfg: GridSpec, experiments) -> list[tuple[str, int]]:
    """``(name, work)`` per compiled program call of ``run_grid`` (same grouping and chunking):
    the methods, attacks and f values of its runs, and iterations x runs."""
    names = []
    n_seeds = len(cfg.seeds)
    for members in group_by_structure(experiments):
        per_call = len(members) if cfg.max_batch is None else max(1, min(len(members), cfg.max_batch // n_seeds))
        for i in range(0, len(members), per_call):
            chunk = [cfg.runs[j].columns for j in members[i : i + per_call]]

            def values(key):
                seen = list(dict.fromkeys(str(c[key]) for c in chunk))
                return seen[0] if len(seen) == 1 else "{" + ",".join(seen) + "}"

            work = experiments[members[0]].iterations * per_call * n_seeds
            names.append((f"{values('method')} | {values('attack')} | f={values('f')}", work))
    return names


def execute(cfg: GridSpec, out_dir: str | Path | None, *, data_source: str | None = None,
            show_progress: bool = True, prepared=None, command_line: list[str] | None = None):
    """Run every configuration x seed of ``cfg``; write result files to ``out_dir`` if given.

    Runs in float64 when ``cfg.x64`` (float32 otherwise), whoever calls it. config.json records
    the resolved config (``cfg.to_dict()``: what ran, every default filled in, ``--data`` /
    ``--seeds`` / ``--rounds`` / ``--x64`` applied), the config as written and ``command_line``.
    The files are rewritten after every compiled program call with the runs finished so far
    (``meta.finished_runs`` of ``meta.total_runs`` in config.json), so a grid that fails or is
    interrupted midway keeps what it computed. Returns ``(runs, timing, meta)`` where ``runs``
    is a list of ``(run_id, seed, columns, trace)`` with one seed per trace.
    """
    cfg = cfg.override(source=data_source)
    with jax.enable_x64(cfg.x64):
        return _execute(cfg, out_dir, show_progress, prepared or prepare(cfg), command_line)


def _execute(cfg: GridSpec, out_dir, show_progress, prepared, command_line):
    ds, problem, data = prepared
    x0 = None if cfg.problem.x0 is None else cfg.problem.x0  # checked against the problem in prepare
    experiments = [build_experiment(s, problem, cfg.data.n_honest, cfg.rounds, cfg.eval_every, x0=x0)
                   for s in cfg.runs]
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    base = environment() | {"dataset": ds.name, "normalization": [ds.mean, ds.std], "total_runs": len(cfg.runs)}
    record = {"config": cfg.to_dict(), "as_written": cfg.raw, "command_line": command_line,
              "seeds": list(cfg.seeds)}

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
            write_results(Path(out_dir), record | {"meta": meta}, runs, timing)

    def partial(traces, timings):
        runs, timing = collect(traces, timings)
        write(runs, timing, base | {"finished_runs": len(timing), "complete": False})

    names = program_names(cfg, experiments)
    t0 = time.perf_counter()
    with progress.grid(names, label=cfg.name):
        result = run_grid(experiments, keys, data, max_batch=cfg.max_batch, show_progress=show_progress,
                          label=cfg.name, on_chunk=partial if out_dir is not None else None)
    wall = time.perf_counter() - t0
    runs, timing = collect(result.traces, result.timing)
    meta = base | {"finished_runs": len(timing), "complete": True, "programs": result.programs,
                   "compile_s": result.compile_s, "run_s": result.run_s, "wall_s": wall}
    write(runs, timing, meta)
    return runs, timing, meta


def describe(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("device", "programs", "compile_s", "run_s")}, default=str)
