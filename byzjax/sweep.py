"""Grids of runs as one compiled program: ``jit(vmap_seeds(vmap_configs(run)))``.

Experiments with the same static structure (component types, shapes, rounds)
are stacked along their array leaves and run together; every configuration gets
the same seed keys and data (common random numbers, paired comparisons). Data is
batched over seeds and shared across configurations, so the honest gradients of
all configurations of a seed are one batched matrix product.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.data import FederatedData
from byzjax.simulate import Experiment, Trace, run


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
    """Indices of experiments grouped by static structure (one compiled program each)."""
    groups: list[tuple[object, list[int]]] = []
    for i, e in enumerate(experiments):
        static = eqx.partition(e, eqx.is_array)[1]
        for s, members in groups:
            if eqx.tree_equal(s, static):
                members.append(i)
                break
        else:
            groups.append((static, [i]))
    return [members for _, members in groups]


def sweep_function(static: Experiment):
    """``(arrays [C,...], keys [S], data [S,...]) -> Trace [S, C, ...]`` for one structure."""

    def single(arrays, key, data):
        return run(key, eqx.combine(arrays, static), data)

    over_configs = jax.vmap(single, in_axes=(0, None, None))
    return jax.jit(jax.vmap(over_configs, in_axes=(None, 0, 0)))


@dataclass
class SweepResult:
    traces: list[Trace]  # one per experiment, leading axis = seed
    compile_s: float  # total compile time (AOT lower + compile), all programs
    run_s: float  # total execution time, all programs
    programs: int
    timing: list[dict]  # per experiment: its program's compile time and its share of run time


def run_grid(experiments: list[Experiment], keys, data: FederatedData, *, max_batch: int | None = None,
             show_progress: bool = True, label: str = "byzjax", on_chunk=None) -> SweepResult:
    """Run every experiment for every seed key; ``data`` has a leading seed axis.

    ``max_batch`` caps configurations x seeds per program call (memory); the
    configurations of a group are then run in equal chunks (the last padded) so
    one compilation serves all chunks. Compile time is measured apart (AOT).
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
    data = jax.tree.map(jnp.asarray, data)
    traces: list[Trace | None] = [None] * len(experiments)
    timing: list[dict] = [{} for _ in experiments]
    compile_s = run_s = 0.0
    programs = 0
    for members in group_by_structure(experiments):
        per_call = len(members) if max_batch is None else max(1, min(len(members), max_batch // n_seeds))
        chunks = [members[i : i + per_call] for i in range(0, len(members), per_call)]
        static = eqx.partition(experiments[members[0]], eqx.is_array)[1]
        fn = sweep_function(static)
        compiled = None
        for chunk in chunks:
            padded = chunk + [chunk[-1]] * (per_call - len(chunk))
            arrays = eqx.partition(stack_experiments([experiments[i] for i in padded]), eqx.is_array)[0]
            if compiled is None:
                t0 = time.perf_counter()
                compiled = fn.lower(arrays, keys, data).compile()
                group_compile = time.perf_counter() - t0
                compile_s += group_compile
                programs += 1
            bar = progress.ProgressBar(experiments[members[0]].iterations, label=f"{label} ({len(chunk)}x{n_seeds} runs)",
                                       enabled=show_progress)
            t0 = time.perf_counter()
            with progress.active(bar):
                out = jax.block_until_ready(compiled(arrays, keys, data))
            elapsed = time.perf_counter() - t0
            run_s += elapsed
            for j, i in enumerate(chunk):
                traces[i] = jax.tree.map(lambda a: np.asarray(a[:, j]), out)
                timing[i] = {"compile_s": group_compile, "run_s": elapsed / len(chunk), "batch": per_call * n_seeds}
            if on_chunk is not None:
                on_chunk(traces, timing)
    return SweepResult(traces, compile_s, run_s, programs, timing)
