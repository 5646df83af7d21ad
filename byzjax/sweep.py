"""Grids of runs as one compiled program: ``jit(vmap_seeds(vmap_configs(run)))``.

Experiments with the same static structure (component types, shapes, rounds)
are stacked along their array leaves and run together; every configuration gets
the same seed keys and data (common random numbers, paired comparisons). Data is
batched over seeds and shared across configurations, so the honest gradients of
all configurations of a seed are one batched matrix product.

On several devices the ``[seeds, configurations]`` block of runs is sharded over a
``("seeds", "configs")`` mesh (``byzjax.devices``): each device runs the same vmapped
program on its block, data is sharded by seed and never copied per run. The runs per
call are planned to fit a memory budget (a formula before compiling, checked against
the compiled program's own memory analysis).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from byzjax import devices as dev
from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.data import FederatedData
from byzjax.simulate import Experiment, Trace, run


CACHE_DIR_ENV = "BYZJAX_CACHE_DIR"


def use_compilation_cache(path) -> None:
    """Keep every compiled program in JAX's persistent compilation cache under ``path``.

    A program compiled again, by this process or a later one (same HLO, JAX version, device and
    ``XLA_FLAGS``), is then read back from disk instead of compiled; on CPU a byzjax program's
    time is mostly XLA compile time. Every program is stored, however short its compilation
    (``jax_persistent_cache_min_compile_time_secs = 0``, ``jax_persistent_cache_min_entry_size_bytes
    = 0``), except those with host callbacks (JAX does not store them: the progress bar's, so runs
    without a progress bar are the ones cached). Setting the environment variable
    ``BYZJAX_CACHE_DIR`` before importing byzjax does the same.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"use_compilation_cache: path must be a folder name, got {path!r}")
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if os.environ.get(CACHE_DIR_ENV):
    use_compilation_cache(os.environ[CACHE_DIR_ENV])


def stack_experiments(experiments: list[Experiment]) -> Experiment:
    """Stack the array leaves of structurally identical experiments along a new axis 0."""
    static0 = eqx.partition(experiments[0], eqx.is_array)[1]
    for i, e in enumerate(experiments[1:], 1):
        if not eqx.tree_equal(eqx.partition(e, eqx.is_array)[1], static0):
            raise ConfigError(f"experiment {i} differs from experiment 0 in static structure; group them apart")
    arrays = [eqx.partition(e, eqx.is_array)[0] for e in experiments]
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *arrays)
    return eqx.combine(stacked, static0)


def group_by_structure(experiments: list[Experiment]) -> list[list[int]]:
    """Indices of experiments grouped by the static structure of their ``program_form`` (one
    compiled program each: e.g. D-GD and D-NAG runs share one)."""
    groups: list[tuple[object, list[int]]] = []
    for i, e in enumerate(experiments):
        static = eqx.partition(e.program_form(), eqx.is_array)[1]
        for s, members in groups:
            if eqx.tree_equal(s, static):
                members.append(i)
                break
        else:
            groups.append((static, [i]))
    return [members for _, members in groups]


def _batched(static: Experiment, ticks: bool):
    def single(arrays, key, data):
        with progress.ticking(ticks):  # traced here: the switch belongs to this function
            return run(key, eqx.combine(arrays, static), data)

    return jax.vmap(jax.vmap(single, in_axes=(0, None, None)), in_axes=(None, 0, 0))


def sweep_function(static: Experiment, ticks: bool = False):
    """``(arrays [C,...], keys [S], data [S,...]) -> Trace [S, C, ...]`` for one structure, on one device.

    ``ticks``: the program reports its rounds to the active progress bar (``progress.tick``, a
    host callback); without, it has no callback, and JAX's persistent compilation cache can store it.
    """
    return jax.jit(_batched(static, ticks))


def sharded_sweep_function(static: Experiment, mesh, key_impl, ticks: bool = False):
    """``(arrays [C,...], key data [S, k], data [S,...]) -> Trace [S, C, ...]`` over ``mesh``.

    ``jax.shard_map`` gives every device of the ``("seeds", "configs")`` mesh its block
    ``[S/d_s, C/d_c]`` of runs: arrays sharded along ``"configs"``, keys and data along
    ``"seeds"`` (replicated along ``"configs"``); no collective runs inside the program, so each
    run computes what it computes on one device. Keys travel as raw key data (``key_data``).
    ``ticks``: as in ``sweep_function``.
    """

    def block(arrays, key_data, data):
        return _batched(static, ticks)(arrays, jax.random.wrap_key_data(key_data, impl=key_impl), data)

    return jax.jit(jax.shard_map(block, mesh=mesh, in_specs=(P(dev.CONFIGS), P(dev.SEEDS), P(dev.SEEDS)),
                                 out_specs=P(dev.SEEDS, dev.CONFIGS), check_vma=False))


@dataclass
class SweepResult:
    traces: list[Trace]  # one per experiment, leading axis = seed
    compile_s: float  # total compile time (AOT lower + compile), all programs
    run_s: float  # total execution time, all programs
    programs: int
    timing: list[dict]  # per experiment: its program's compile time and its share of run time
    devices: dict = field(default_factory=dict)  # {"count", "kinds", "platform", "processes"} of the mesh
    plans: list[dict] = field(default_factory=list)  # per program: mesh, runs per call, chunks, memory (bytes)


def _per_run_estimate(experiment: Experiment, data_one_seed) -> int:
    """``devices.estimate_run_bytes`` for one run of ``experiment`` on one seed's data."""
    problem = experiment.problem
    itemsize = np.dtype(jnp.result_type(float)).itemsize
    leaves = [np.shape(x) for x in jax.tree.leaves(data_one_seed.shards)]
    biggest = max(leaves, key=math.prod) if leaves else (1,)
    samples = math.prod(biggest[:-1]) * max(1, getattr(problem, "num_classes", 1)) if len(biggest) > 1 else 0
    n = experiment.oracle.n_honest + experiment.oracle.n_byz
    trace = itemsize * (16 * experiment.iterations + 4 * (experiment.iterations // experiment.eval_every + 2))
    return dev.estimate_run_bytes(n, problem.dim, itemsize, trace + itemsize * problem.dim, samples)


PROGRAM_CACHE_SIZE = 16  # jitted sweep programs kept in memory between run_grid calls
_PROGRAMS: list[tuple[tuple, object]] = []  # [(key, jitted function)], the most recently used last


def clear_program_cache() -> None:
    """Forget the sweep programs kept between ``run_grid`` calls (frees their executables)."""
    _PROGRAMS.clear()


def _signature(tree) -> tuple:
    """What a jitted function is compiled for: each array's abstract value (shape, dtype, weak
    type) and its sharding over devices."""
    return tuple((jax.typeof(a), getattr(a, "sharding", None)) for a in jax.tree.leaves(tree))


def _same_key(a: tuple, b: tuple) -> bool:
    (static_a, *rest_a), (static_b, *rest_b) = a, b
    return rest_a == rest_b and bool(eqx.tree_equal(static_a, static_b))


def _program(make, static: Experiment, ticks: bool, where: tuple, args: tuple):
    """The jitted sweep function for ``static`` and these arguments: the one made by an earlier call
    with the same structure, progress switch, device placement (``where``) and argument shapes,
    dtypes and shardings, so that its compiled executable is reused (JAX keeps it with the
    function) and nothing is traced or compiled again; else ``make()``. The last
    ``PROGRAM_CACHE_SIZE`` are kept (least recently used dropped)."""
    key = (static, bool(ticks), where, _signature(args))
    found = [i for i, (k, _) in enumerate(_PROGRAMS) if _same_key(k, key)]
    _PROGRAMS.append(_PROGRAMS.pop(found[0]) if found else (key, make()))
    del _PROGRAMS[:-PROGRAM_CACHE_SIZE]
    return _PROGRAMS[-1][1]


def _compile(fn, arrays, keys, data):
    t0 = time.perf_counter()
    compiled = fn.lower(arrays, keys, data).compile()
    return compiled, time.perf_counter() - t0


def run_grid(experiments: list[Experiment], keys, data: FederatedData, *, max_batch: int | None = None,
             show_progress: bool = True, label: str = "byzjax", on_chunk=None, devices=None,
             max_memory: int | None = None) -> SweepResult:
    """Run every experiment for every seed key; ``data`` has a leading seed axis.

    ``devices``: ``None`` (default) runs every program on all devices JAX sees (every process's,
    after ``devices.initialize_distributed``), an int the first ``k``, or a list of devices; runs are
    sharded over a ``("seeds", "configs")`` mesh (padded where counts do not divide).
    ``max_batch`` caps configurations x seeds per program call; ``max_memory`` (bytes per device;
    default: ``devices.device_memory_budget``) caps the memory of a call: the configurations per
    call are the most that fit, by a formula before compiling, then checked against XLA's memory
    analysis of the compiled program (one recompilation at a smaller chunk if it does not fit).
    The configurations of a group are then run in equal chunks (the last padded) so one
    compilation serves all chunks; the chosen plan is printed (with ``show_progress``) and
    returned in ``SweepResult.plans``. Compile time is measured apart (AOT). Only with
    ``show_progress`` do the programs carry the progress callback (``progress.tick``). The last
    ``PROGRAM_CACHE_SIZE`` jitted programs are kept between calls: a later grid of the same
    structure and argument shapes is neither traced nor compiled again (``clear_program_cache``).
    ``on_chunk(traces, timing)``, if given, is called after every program call
    with the traces finished so far (``None`` for the others), e.g. to write
    partial results that survive a later failure.
    """
    keys = jnp.asarray(keys)
    n_seeds = keys.shape[0]
    for i, e in enumerate(experiments):
        try:
            e.check()
        except ConfigError as err:
            raise ConfigError(f"experiment {i}: {err}") from None
    experiments = [e.program_form() for e in experiments]  # the structures the programs share
    if max_batch is not None and (isinstance(max_batch, bool) or int(max_batch) != max_batch or max_batch < 1):
        raise ConfigError(f"run_grid: max_batch must be an integer >= 1 or None, got {max_batch!r}")
    if max_memory is not None and (isinstance(max_memory, bool) or not max_memory > 0):
        raise ConfigError(f"run_grid: max_memory must be a number of bytes > 0 or None, got {max_memory!r}")
    devs = dev.resolve_devices(devices)
    sharded = len(devs) > 1
    if sharded:
        key_impl = jax.random.key_impl(keys)
        key_np = np.asarray(jax.random.key_data(keys))
        data_np = jax.tree.map(np.asarray, data)
    else:
        data = jax.device_put(jax.tree.map(jnp.asarray, data), devs[0])
        keys = jax.device_put(keys, devs[0])
    data_one = jax.tree.map(lambda a: a[0], data_np if sharded else data)
    seed_bytes = dev.tree_bytes(data_one)
    if max_memory is None:
        budget, source = dev.device_memory_budget(devs[0])
        budget = dev.agree_on_minimum(budget)  # every process must plan the same chunks
    else:
        budget, source = int(max_memory), "max_memory"
    traces: list[Trace | None] = [None] * len(experiments)
    timing: list[dict] = [{} for _ in experiments]
    plans: list[dict] = []
    compile_s = run_s = 0.0
    programs = 0
    for members in group_by_structure(experiments):
        first = experiments[members[0]]
        static = eqx.partition(first, eqx.is_array)[1]
        cap = len(members) if max_batch is None else max(1, min(len(members), max_batch // n_seeds))
        if sharded:
            mesh = dev.run_mesh(devs, n_seeds, cap)
            d_s, d_c = mesh.devices.shape
            s_pad = math.ceil(n_seeds / d_s) * d_s
            make = functools.partial(sharded_sweep_function, static, mesh, key_impl, show_progress)
            where = (mesh, str(key_impl))
            g_keys = dev.global_array(dev.pad_axis(key_np, s_pad), mesh, P(dev.SEEDS))
            g_data = jax.tree.map(lambda a: dev.global_array(dev.pad_axis(a, s_pad), mesh, P(dev.SEEDS)), data_np)
        else:
            d_s = d_c = 1
            s_pad = n_seeds
            make, where = functools.partial(sweep_function, static, show_progress), ()
            g_keys, g_data = keys, data
        seeds_per_device = s_pad // d_s
        shared = seeds_per_device * seed_bytes
        per_run = _per_run_estimate(first, data_one)
        per_call = dev.configs_that_fit(budget, shared, per_run, seeds_per_device, d_c, cap)
        estimate = shared + seeds_per_device * (per_call // d_c) * per_run

        def stacked(indices):
            arrays = eqx.partition(stack_experiments([experiments[i] for i in indices]), eqx.is_array)[0]
            if not sharded:
                return jax.device_put(arrays, devs[0])
            return jax.tree.map(lambda a: dev.global_array(np.asarray(a), mesh, P(dev.CONFIGS)), arrays)

        def padded(chunk):
            return chunk + [chunk[-1]] * (per_call - len(chunk))

        def compile_for(chunk):
            args = (stacked(padded(chunk)), g_keys, g_data)
            return _compile(_program(make, static, show_progress, where, args), *args)

        compiled, group_compile = compile_for(members[:per_call])
        measured = dev.compiled_bytes(compiled)
        if measured is not None and measured > budget and per_call > d_c:
            per_run_measured = max(1, (measured - shared) // max(1, seeds_per_device * per_call // d_c))
            smaller = dev.configs_that_fit(budget, shared, per_run_measured, seeds_per_device, d_c, cap)
            if smaller < per_call:
                per_call = smaller
                estimate = shared + seeds_per_device * (per_call // d_c) * per_run
                compiled, extra = compile_for(members[:per_call])
                group_compile += extra
                measured = dev.compiled_bytes(compiled)
        compile_s += group_compile
        programs += 1
        chunks = [members[i : i + per_call] for i in range(0, len(members), per_call)]
        plan = dev.Plan((d_s, d_c), per_call, s_pad, len(chunks), int(estimate), measured, int(budget), source)
        plans.append(plan.as_dict())
        dev.log(plan.line(f"{label} program {programs}", len(members) * n_seeds), show_progress)
        for chunk in chunks:
            arrays = stacked(padded(chunk))
            bar = progress.ProgressBar(first.iterations, label=f"{label} ({len(chunk)}x{n_seeds} runs)",
                                       enabled=show_progress)
            t0 = time.perf_counter()
            with progress.active(bar):
                out = jax.block_until_ready(compiled(arrays, g_keys, g_data))
            out = dev.gather(out)
            elapsed = time.perf_counter() - t0
            run_s += elapsed
            for j, i in enumerate(chunk):
                traces[i] = jax.tree.map(lambda a: np.asarray(a[:n_seeds, j]), out)
                timing[i] = {"compile_s": group_compile, "run_s": elapsed / len(chunk), "batch": per_call * s_pad,
                             "devices": len(devs)}
            if on_chunk is not None:
                on_chunk(traces, timing)
    return SweepResult(traces, compile_s, run_s, programs, timing, dev.describe_devices(devs), plans)
