"""Run a ``GridSpec`` end to end: data per instance and seed, experiments, one sweep per data
instance and structure, files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import __version__, progress
from byzjax._validation import ConfigError
from byzjax.app.config import GridSpec, build_experiment, program_runs, resolve_source
from byzjax.app.files import Interrupted, OutputError, check_out_dir, warn, write_json
from byzjax.app.results import (FinalTheory, InstanceTheory, clear_results, finished_runs, instance_key, read_record,
                                stored_finals, write_results)
from byzjax.data import FederatedData, federated_classification, partitioned_dataset, stack_seeds
from byzjax.sweep import group_by_structure, run_grid


def environment() -> dict:
    """The software and the devices of this run: every device JAX sees (all processes')."""
    devs = jax.devices()
    kinds = sorted({f"{d.platform}:{d.device_kind}" for d in devs})
    return {"byzjax": __version__, "jax": jax.__version__, "device": kinds[0] if len(kinds) == 1 else kinds,
            "devices": len(devs), "device_kinds": kinds, "processes": jax.process_count(),
            "x64": bool(jax.config.jax_enable_x64), "python": platform.python_version()}


def prepare(cfg: GridSpec, data_source: str | None = None):
    """Load the data once and return ``(dataset, problem, data)``.

    ``data`` is the per-seed stacked ``FederatedData`` of the grid's data instance or, for a grid
    of several instances (lists of ``split`` / ``alpha`` / ``n_honest``), a tuple of them, one per
    ``cfg.data_instances`` in order (``instance_datas`` reads either). The data set is read from
    disk once for all instances; each instance divides its training part among its ``n_honest``
    workers per seed (``byzjax.data.federated_classification``), its shards padded to the
    largest of its seeds. The problem is the registered ``[problem] name`` built from the data's
    shapes; the data is loaded in the layout the problem class declares (``input_layout``: flat
    features, or images for the networks; ``byzjax.images.load_source``). With ``[data]
    partition`` the workers' shards come from the file (the same for every seed; MNIST-format or
    synthetic sources).
    """
    from byzjax import registry
    from byzjax.data import load_partition
    from byzjax.images import CIFAR10_PREFIX, as_images, load_source

    cfg = cfg.override(source=data_source)
    first = cfg.data_instances[0]
    cls = registry.lookup("problem", cfg.problem.name)
    with jax.enable_x64(cfg.x64):
        source = resolve_source(first.source)
        if first.partition is not None:
            if source.startswith(CIFAR10_PREFIX):
                raise ConfigError("config [data]: partition files work with MNIST-format or synthetic sources, "
                                  f"not {source!r}")
            ds, shards = partitioned_dataset(source, first.partition, first.n_honest,
                                             normalization=first.normalization)
            partitions = {first.n_honest: shards}
            shape = cls.sample_shape
            if cls.input_layout == "image" and shape is not None and ds.num_features == math.prod(shape):
                ds = as_images(ds, shape)
        else:
            ds = load_source(source, layout=cls.input_layout, image_shape=cls.sample_shape,
                             normalization=first.normalization, val_fraction=first.val_fraction)
            partitions = None
        problem = cfg.problem.build(ds)
        datas = []
        for spec in cfg.data_instances:
            shards = None
            if partitions is not None:
                if spec.n_honest not in partitions:  # the file fixes the workers: this raises a one-line error
                    partitions[spec.n_honest] = load_partition(spec.partition, spec.n_honest, len(ds.train_y)).workers
                shards = partitions[spec.n_honest]
            datas.append(stack_seeds([federated_classification(ds, spec.n_honest, spec.split, spec.alpha, seed,
                                                               shards=shards) for seed in cfg.seeds]))
    return ds, problem, datas[0] if len(datas) == 1 else tuple(datas)


def instance_datas(cfg: GridSpec, data) -> tuple:
    """The per-instance stacked data of ``prepare``'s ``data``: ``(data,)`` for a grid of one data
    instance, else ``data`` itself (one per ``cfg.data_instances``, checked)."""
    if len(cfg.data_instances) == 1:
        return (data,)
    if not (isinstance(data, tuple) and len(data) == len(cfg.data_instances)
            and all(isinstance(d, FederatedData) for d in data)):
        raise ConfigError(f"runner: a grid of {len(cfg.data_instances)} data instances needs one stacked data per "
                          f"instance (prepare(cfg)'s tuple), got {type(data).__name__}")
    return data


def instance_runs(cfg: GridSpec) -> list[list[int]]:
    """Run ids per data instance (``cfg.data_instances`` order; ``RunSpec.data``)."""
    return [[i for i, r in enumerate(cfg.runs) if r.data == inst] for inst in cfg.data_instances]


def strongly_convex(problem) -> bool:
    """Whether ``L_H`` is strongly convex, so that ``L* = min L_H`` is attained and the Newton
    solve of ``theory.reference_optimum`` converges: the problem's declared
    ``AbstractProblem.strongly_convex`` (``Quadratic``; ``LogisticRegression`` with ``lam > 0``)."""
    return problem.strongly_convex()


def run_kappas(cfg: GridSpec, experiments) -> dict[int, float | None]:
    """Run id -> the proven kappa of its rule (``theory.proven_kappa``) on the ``n_honest + f``
    workers that exist, with ``f`` the run's Byzantine count (None: unknown, or the rule's declared
    ``f`` is another)."""
    from byzjax.theory import proven_kappa

    return {i: proven_kappa(e.oracle.aggregator, e.oracle.n_honest + spec.f, spec.f)
            for i, (spec, e) in enumerate(zip(cfg.runs, experiments))}


_INSTANCE_CACHE: dict[tuple, InstanceTheory] = {}
INSTANCE_CACHE_VERSION = 1  # bump when what instance_theory measures changes: older cache files are remeasured


def instance_theory(cfg: GridSpec, problem, data, keys, x0=None, columns: dict | None = None,
                    cache_dir: Path | None = None) -> dict[tuple, InstanceTheory]:
    """``instance_key`` -> ``InstanceTheory`` for every seed of one data instance of ``cfg``
    (``data``: its data, stacked per seed; ``columns``: the columns of one of its runs, default the
    first run's).

    Per problem instance (split, alpha, lam, seed) of a strongly convex problem (``strongly_convex``;
    nothing otherwise): the exact ``L*`` and ``x*`` of ``theory.reference_optimum`` (float64
    Newton-CG, to ``||grad L_H|| <= 1e-10``), and ``L``, ``mu`` and ``delta`` (``theory.constants_at``)
    at the runs' initial point (``x0``, else ``problem.init(fold_in(key, 0))`` as ``simulate.run``)
    and at ``x*``, in the run precision. Measured once per instance: kept in memory (by data source
    digest and instance), and with ``cache_dir`` also on disk, one JSON file per instance
    (``instance-<digest>.json``, written atomically), so a rerun or a resumed grid in another process
    does not solve again; a damaged or outdated file is measured again and rewritten.
    """
    if not strongly_convex(problem):
        return {}
    cols = columns if columns is not None else (cfg.runs[0].columns if cfg.runs else {})
    out = {}
    for s, seed in enumerate(cfg.seeds):
        shards = jax.tree.map(lambda a: a[s], data.shards)
        key = instance_key(cols, seed)
        digest = _instance_digest(cfg, problem, shards, x0, key)
        path = None if cache_dir is None else Path(cache_dir) / f"instance-{digest[:24]}.json"
        if digest not in _INSTANCE_CACHE:
            _INSTANCE_CACHE[digest] = _read_instance(path) or _measure_instance(problem, shards, x0, keys[s], path)
        elif path is not None and not path.exists():  # measured in this process for another folder
            _write_instance(path, _INSTANCE_CACHE[digest])
        out[key] = _INSTANCE_CACHE[digest]
    return out


def _instance_digest(cfg: GridSpec, problem, shards, x0, key: tuple) -> str:
    """sha256 of one problem instance: its ``instance_key``, the precision, the cache layout
    version, and every array of the problem, its honest shards (one seed) and ``x0``."""
    h = hashlib.sha256(repr((key, bool(cfg.x64), INSTANCE_CACHE_VERSION)).encode())
    for a in jax.tree.leaves((problem, shards, x0)):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()


def _read_instance(path: Path | None) -> InstanceTheory | None:
    """A cached ``InstanceTheory`` (None when absent, unreadable or of another layout)."""
    if path is None or not path.exists():
        return None
    try:
        return InstanceTheory(**{k: float(v) for k, v in json.loads(path.read_text()).items()})
    except (OSError, ValueError, TypeError):
        return None


def _measure_instance(problem, shards, x0, key, path: Path | None) -> InstanceTheory:
    from byzjax.theory import optimum_and_constants

    start = problem.init(jax.random.fold_in(key, 0)) if x0 is None else jnp.asarray(x0)
    ref, (L0, mu0, d0), (Ls, mus, ds) = optimum_and_constants(problem, shards, start, key)
    inst = InstanceTheory(mu_x0=mu0, l_star=ref.loss_star, L_x0=L0, L_star=Ls, mu_star=mus, delta=max(d0, ds))
    if path is not None:
        _write_instance(path, inst)
    return inst


def _write_instance(path: Path, inst: InstanceTheory) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, inst._asdict())


_FINAL_CACHE: dict[tuple[str, str], FinalTheory] = {}
FINAL_CACHE_VERSION = 1  # bump when what final_theory measures changes: older cache files are remeasured
FINAL_ITERS = 300  # power steps at each final point, as constants_at's at x0 and x*


def params_digest(x) -> str:
    """sha256 of one parameter vector: dtype, shape and bytes (the final-point cache key)."""
    a = np.ascontiguousarray(np.asarray(x))
    return hashlib.sha256(repr((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def final_theory(cfg: GridSpec, problem, data, keys, runs, x0=None, columns: dict | None = None,
                 cache_dir: Path | None = None) -> dict[tuple[int, int], FinalTheory]:
    """``(run id, seed)`` -> ``FinalTheory`` (``L`` and ``mu`` of ``L_H`` at the run's final
    parameters) for the ``runs`` (``(run id, seed, columns, trace)``) of one data instance of
    ``cfg`` (``data``, ``x0``, ``columns``: as ``instance_theory``).

    Strongly convex problems only (``strongly_convex``; nothing otherwise, no cost). Per seed, the
    final parameters of its runs are measured together by ``theory.final_constants`` (the
    estimators of ``L_x0`` and ``mu_x0``: ``FINAL_ITERS`` power steps from the start vector of
    ``instance_theory``'s key, ``fold_in(key, 7)``; ``mu`` the problem's ``exact_mu``; the closed
    form for a quadratic; ``nan`` for non-finite parameters), each distinct vector once. Results are
    kept in memory and, with ``cache_dir``, on disk beside the instance file: one JSON file per
    instance (``final-<instance digest>.json``) mapping ``params_digest`` of each final vector to its
    ``[L, mu]``, so a rerun on the same final parameters (``byzjax reproduce`` on stored stages)
    measures nothing; a damaged or outdated file is measured again and rewritten. Traces without
    final parameters (runs read back from metrics.csv) are left out.
    """
    if not strongly_convex(problem):
        return {}
    from byzjax.theory import final_constants

    cols = columns if columns is not None else (cfg.runs[0].columns if cfg.runs else {})
    out = {}
    for s, seed in enumerate(cfg.seeds):
        mine = [(rid, np.asarray(tr.final_params)) for rid, sd, _, tr in runs
                if sd == seed and np.size(tr.final_params) == problem.dim]
        if not mine:
            continue
        shards = jax.tree.map(lambda a: a[s], data.shards)
        digest = _instance_digest(cfg, problem, shards, x0, instance_key(cols, seed))
        path = None if cache_dir is None else Path(cache_dir) / f"final-{digest[:24]}.json"
        stored = _read_finals(path)
        known = dict(stored)
        hashes = [params_digest(x) for _, x in mine]
        for h in hashes:
            if h not in known and (digest, h) in _FINAL_CACHE:
                known[h] = _FINAL_CACHE[(digest, h)]
        todo = list(dict.fromkeys(h for h, (_, x) in zip(hashes, mine) if h not in known))
        if todo:
            first = {h: x for h, (_, x) in zip(hashes, mine)}
            L, mu = final_constants(problem, shards, np.stack([first[h] for h in todo]),
                                    jax.random.fold_in(keys[s], 7), FINAL_ITERS)
            known |= {h: FinalTheory(float(a), float(b)) for h, a, b in zip(todo, L, mu)}
        _FINAL_CACHE.update({(digest, h): v for h, v in known.items()})
        if path is not None and known != stored:
            _write_finals(path, known)
        out |= {(rid, seed): known[h] for (rid, _), h in zip(mine, hashes)}
    return out


def _read_finals(path: Path | None) -> dict[str, FinalTheory]:
    """A final-point cache file's ``params_digest`` -> ``FinalTheory`` (empty when absent,
    unreadable, of another layout or another ``FINAL_CACHE_VERSION``)."""
    if path is None or not path.exists():
        return {}
    try:
        blob = json.loads(path.read_text())
        if blob["version"] != FINAL_CACHE_VERSION or blob["iters"] != FINAL_ITERS:
            return {}
        return {str(h): FinalTheory(float(v[0]), float(v[1])) for h, v in blob["points"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def _write_finals(path: Path, known: dict[str, FinalTheory]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"version": FINAL_CACHE_VERSION, "iters": FINAL_ITERS,
                      "points": {h: list(v) for h, v in sorted(known.items())}})


def program_names(columns: list[dict], experiments, max_batch: int | None, n_seeds: int) -> list[tuple[str, int]]:
    """``(name, work)`` per compiled program call of ``run_grid`` on ``experiments`` (same grouping
    and chunking; ``columns`` the runs' label columns): the methods, attacks and f values of its
    runs, and iterations x runs."""
    names = []
    for members in group_by_structure(experiments):
        per_call = len(members) if max_batch is None else max(1, min(len(members), max_batch // n_seeds))
        for i in range(0, len(members), per_call):
            chunk = [columns[j] for j in members[i : i + per_call]]

            def values(key):
                seen = list(dict.fromkeys(str(c[key]) for c in chunk))
                return seen[0] if len(seen) == 1 else "{" + ",".join(seen) + "}"

            work = experiments[members[0]].iterations * per_call * n_seeds
            names.append((f"{values('method')} | {values('attack')} | f={values('f')}", work))
    return names


def grid_signature(cfg: GridSpec) -> str:
    """sha256 of everything that fixes a grid's results: the resolved config (``cfg.to_dict()``:
    data source and settings, seeds, rounds, evaluation interval, precision, every component's
    parameters) and every run's columns; not ``max_batch``, which only changes how runs are batched,
    nor how the config was written or which command ran it, nor the ``algorithm`` column (a name the
    config's algorithm already fixes, so folders written before that column still resume)."""
    resolved = {k: v for k, v in cfg.to_dict().items() if k != "max_batch"}
    resolved["data"] = resolved["data"] | {"source": resolve_source(cfg.data_instances[0].source)}
    blob = {"config": resolved, "runs": [{k: v for k, v in s.columns.items() if k != "algorithm"} for s in cfg.runs]}
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


def execute(cfg: GridSpec, out_dir: str | Path | None, *, data_source: str | None = None,
            show_progress: bool = True, prepared=None, command_line: list[str] | None = None, force: bool = False,
            devices=None, max_memory: int | None = None):
    """Run every configuration x seed of ``cfg``; write result files to ``out_dir`` if given.

    Every data instance of ``cfg`` (lists of ``split`` / ``alpha`` / ``n_honest``: ``cfg.data_instances``)
    runs into the same files: its runs on its own data (``prepare``: the data set read once), with
    ``L*`` and ``mu`` per instance and seed (``instance_theory``), one ``run_grid`` call per
    instance (its programs are compiled apart: shard shapes differ). ``prepared``: ``prepare(cfg)``'s
    ``(dataset, problem, data)``, to reuse loaded data. Runs in float64 when ``cfg.x64`` (float32 otherwise), whoever calls it. config.json records
    the resolved config (``cfg.to_dict()``: what ran, every default filled in, ``--data`` /
    ``--seeds`` / ``--rounds`` / ``--x64`` applied), the config as written and ``command_line``.
    The files are rewritten (atomically) after every compiled program call, of every instance, with
    the runs finished so far (``meta.finished_runs`` of ``meta.total_runs`` in config.json), so a grid that fails or
    is interrupted midway keeps what it computed. An ``out_dir`` holding this grid's results is
    resumed (its finished runs are read back, the others computed); one holding another grid's is
    refused unless ``force``. ``devices`` / ``max_memory``: as ``byzjax.sweep.run_grid`` (default:
    every device, the memory each reports); with several processes only process 0 writes. Returns ``(runs, timing, meta)`` where ``runs`` is a list of
    ``(run_id, seed, columns, trace)`` with one seed per trace.
    """
    cfg = cfg.override(source=data_source)
    with jax.enable_x64(cfg.x64):
        return _execute(cfg, None if jax.process_index() else out_dir, show_progress, prepared, command_line, force,
                        devices, max_memory)


def _execute(cfg: GridSpec, out_dir, show_progress, prepared, command_line, force, devices, max_memory):
    from byzjax.app.steps import resolve_grid

    done_runs, done_timing = [], {}
    signature = grid_signature(cfg)  # of the config as written: step expressions are fixed by the data
    resumed = out_dir is not None and check_output(out_dir, signature, force)
    if out_dir is not None and force and not resumed:
        clear_results(Path(out_dir))
    ds, problem, data = prepared or prepare(cfg)
    datas = instance_datas(cfg, data)
    cfg, steps = resolve_grid(cfg, problem, datas[0])
    finals = {}  # (run id, seed) -> FinalTheory: L and mu at the run's final parameters
    if resumed:
        done_runs, done_timing = finished_runs(Path(out_dir), [s.columns for s in cfg.runs], cfg.seeds)
        finals = {k: v for k, v in stored_finals(Path(out_dir)).items() if k[0] in done_timing}
    x0 = cfg.problem.x0  # checked against the problem when it was built
    specs = program_runs(cfg)  # several positive f share a program (absent-worker path)
    experiments = [build_experiment(s, problem, s.data.n_honest, cfg.rounds, cfg.eval_every, x0=x0)
                   for s in specs]
    masked_here = {i for i, (s, r) in enumerate(zip(specs, cfg.runs)) if s.max_f != r.max_f}
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    members = instance_runs(cfg)
    kappas, instances = run_kappas(cfg, experiments), {}
    cache_dir = None if out_dir is None else Path(out_dir) / "instances"
    for runs_of, inst_data in zip(members, datas):
        if runs_of:
            instances |= instance_theory(cfg, problem, inst_data, keys, x0, cfg.runs[runs_of[0]].columns, cache_dir)
    base = environment() | {"dataset": ds.name, "normalization": [ds.mean, ds.std], "total_runs": len(cfg.runs),
                            "resumed_runs": len(done_timing), "data_instances": len(cfg.data_instances)}
    record = {"config": cfg.to_dict(), "as_written": cfg.raw, "command_line": command_line,
              "seeds": list(cfg.seeds), "rounds": cfg.rounds, "signature": signature}
    if steps:
        record["steps"] = steps
    traces, timings = {}, {}  # run id -> trace [seeds, ...] / its timing, computed in this call

    def collect():
        runs, timing = list(done_runs), dict(done_timing) | timings
        for i, trace in traces.items():
            for s, seed in enumerate(cfg.seeds):
                runs.append((i, seed, cfg.runs[i].columns, jax.tree.map(lambda a: a[s], trace)))
        order = {seed: k for k, seed in enumerate(cfg.seeds)}
        return sorted(runs, key=lambda r: (r[0], order[r[1]])), timing

    def write(runs, timing, meta):
        if out_dir is None:
            return []
        return write_results(Path(out_dir), record | {"meta": meta}, runs, timing, kappas=kappas,
                             instances=instances, finals=finals)

    def keep(ids, chunk_traces, chunk_timing, inst_data):
        new = []
        for i, trace, tim in zip(ids, chunk_traces, chunk_timing):
            if trace is not None:
                if i not in traces:
                    new += [(i, seed, cfg.runs[i].columns, jax.tree.map(lambda a, s=s: a[s], trace))
                            for s, seed in enumerate(cfg.seeds)]
                traces[i], timings[i] = (_unmasked_trace(trace) if i in masked_here else trace), tim
        if out_dir is not None and new:  # L and mu at the new runs' final points (only written, so only then)
            finals.update(final_theory(cfg, problem, inst_data, keys, new, x0, new[0][2], cache_dir))

    # one run_grid call per data instance (its own data and shard width), in config order
    blocks = [(d, [i for i in runs_of if i not in done_timing]) for d, runs_of in zip(datas, members)]
    blocks = [(d, todo) for d, todo in blocks if todo] or [(datas[0], [])]  # all resumed: one empty call
    names = []
    for _, todo in blocks:
        cols = cfg.runs[todo[0]].columns if todo else {}
        tag = (", ".join(f"{k}={cols[k]}" for k in INSTANCE_LABEL if cols.get(k, "") != "") + " | "
               if len(cfg.data_instances) > 1 else "")
        names += [(tag + name, work) for name, work in program_names(
            [cfg.runs[i].columns for i in todo], [experiments[i] for i in todo], cfg.max_batch, len(cfg.seeds))]
    totals = {"programs": 0, "compile_s": 0.0, "run_s": 0.0, "plans": [], "devices_used": {}}
    t0 = time.perf_counter()
    try:
        with progress.grid(names, label=cfg.name):
            for inst_data, todo in blocks:
                def partial(chunk_traces, chunk_timing, todo=todo, inst_data=inst_data):
                    keep(todo, chunk_traces, chunk_timing, inst_data)
                    runs, timing = collect()
                    write(runs, timing, base | {"finished_runs": len(timing), "complete": False})

                result = run_grid([experiments[i] for i in todo], keys, inst_data, max_batch=cfg.max_batch,
                                  show_progress=show_progress, label=cfg.name,
                                  on_chunk=partial if out_dir is not None else None, devices=devices,
                                  max_memory=max_memory)
                keep(todo, result.traces, result.timing, inst_data)
                totals["programs"] += result.programs
                totals["compile_s"] += result.compile_s
                totals["run_s"] += result.run_s
                totals["devices_used"] = result.devices
                totals["plans"] += result.plans
    except KeyboardInterrupt:
        if out_dir is None:
            raise
        runs, timing = collect()
        write(runs, timing, base | {"finished_runs": len(timing), "complete": False, "interrupted": True})
        raise Interrupted(f"{out_dir} holds {len(timing)} of {len(cfg.runs)} runs, marked incomplete; "
                          f"rerun the same command to resume") from None
    wall = time.perf_counter() - t0
    runs, timing = collect()
    meta = base | {"finished_runs": len(timing), "complete": True} | totals | {"wall_s": wall}
    meta["warnings"] = write(runs, timing, meta)
    for line in meta["warnings"]:
        warn(line)
    return runs, timing, meta


def _unmasked_trace(trace):
    """The trace of a run that ``program_runs`` put on the absent-worker path, as its own program
    would have returned it: without the ``byz_sent`` metric (its f rows are always sent)."""
    return dataclasses.replace(trace, metrics={k: v for k, v in trace.metrics.items() if k != "byz_sent"})


def describe(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("device", "programs", "compile_s", "run_s")}, default=str)


THEORY_KEYS = ("f", "attack", "aggregator", "tolerated_f", "participation", "batch_size", "worker_momentum")
"""Run columns that fix the oracle a theory probe measures (the algorithm does not enter it)."""
INSTANCE_LABEL = ("split", "alpha", "n_honest")
"""Run columns that name a run's data instance (``byzjax theory`` headers)."""


def theory_lines(config_path, *, data_source: str | None = None, every: bool = False) -> list[str]:
    """What ``byzjax theory CONFIG`` prints: per data instance of the config and per distinct oracle
    (``THEORY_KEYS``; only the first of each instance unless ``every``), a header line and
    ``theory_probe(experiment, data, key).to_lines()`` on the instance's first seed's data and key
    (arXiv 2602.03329, the reduction to an inexact gradient oracle)."""
    from byzjax.app.config import load_config
    from byzjax.app.steps import resolve_grid
    from byzjax.theory import theory_probe

    cfg = load_config(config_path).override(source=data_source)
    with jax.enable_x64(cfg.x64):
        _, problem, data = prepare(cfg)
        cfg, _ = resolve_grid(cfg, problem, instance_datas(cfg, data)[0])
        key = jax.random.key(cfg.seeds[0])
        lines = []
        for runs_of, inst_data in zip(instance_runs(cfg), instance_datas(cfg, data)):
            first = jax.tree.map(lambda a: a[0], inst_data)
            seen = set()
            for spec in (cfg.runs[i] for i in runs_of):
                oracle_key = tuple(str(spec.columns.get(k, "")) for k in THEORY_KEYS)
                if oracle_key in seen:
                    continue
                seen.add(oracle_key)
                exp = build_experiment(spec, problem, spec.data.n_honest, cfg.rounds, cfg.eval_every,
                                       x0=cfg.problem.x0)
                label = ", ".join(f"{k} = {spec.columns[k]}" for k in THEORY_KEYS + INSTANCE_LABEL
                                  if spec.columns.get(k, "") != "")
                lines += [f"[{label}]  seed {cfg.seeds[0]}", *theory_probe(exp, first, key).to_lines()]
                if not every:
                    break
    return lines
