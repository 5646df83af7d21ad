"""Devices, hosts and memory: the mesh a sweep runs on, multi-process start-up, chunk planning.

A grid program maps ``run`` over a ``[S seeds, C configurations]`` block of runs. On several
devices that block is split over a 2-D ``jax.sharding.Mesh`` with axes ``("seeds", "configs")``
(together: the run axis, configurations x seeds): the stacked experiment arrays are sharded
along ``"configs"``, the seed keys and the per-seed data along ``"seeds"`` and replicated along
``"configs"`` (so data is never copied per run, only once per device that needs its seed), and
every device runs the same vmapped program on its own block (``jax.shard_map``, no collective
inside a run). Counts that do not divide are padded (the padded runs are dropped afterwards).

Across hosts, ``initialize_distributed`` starts JAX's own distributed runtime
(``jax.distributed.initialize``); the mesh then spans every process's devices, each process
computes its slice, the results are gathered to every process, and only process 0 writes files.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from byzjax._validation import ConfigError

SEEDS, CONFIGS = "seeds", "configs"
HOST_MEMORY_FRACTION = 0.5  # default budget on hosts that report no device memory: half of physical RAM


# ----------------------------------------------------------------------------------------------- mesh


def resolve_devices(devices=None) -> list:
    """``None`` -> every device of every process (``jax.devices()``); an int ``k`` -> the first ``k``;
    a list of devices -> itself."""
    all_devices = jax.devices()
    if devices is None:
        return list(all_devices)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(all_devices):
            raise ConfigError(f"run_grid: devices must be in [1, {len(all_devices)}] (the devices JAX sees), got {devices}")
        return list(all_devices[:devices])
    devices = list(devices)
    if not devices:
        raise ConfigError("run_grid: devices must be None, a count >= 1 or a non-empty list of jax devices, got []")
    return devices


def mesh_shape(n_seeds: int, n_configs: int, n_devices: int) -> tuple[int, int]:
    """The factorisation ``(d_s, d_c)`` of ``n_devices`` that minimises the padded run count
    ``ceil(S/d_s) d_s * ceil(C/d_c) d_c``; ties go to the larger ``d_s`` (less data per device)."""
    best = None
    for d_s in range(1, n_devices + 1):
        if n_devices % d_s:
            continue
        d_c = n_devices // d_s
        work = math.ceil(n_seeds / d_s) * d_s * math.ceil(n_configs / d_c) * d_c
        key = (work, -d_s)
        if best is None or key < best[0]:
            best = (key, (d_s, d_c))
    return best[1]


def run_mesh(devices: list, n_seeds: int, n_configs: int) -> Mesh:
    """A ``("seeds", "configs")`` mesh over ``devices`` shaped by ``mesh_shape``."""
    d_s, d_c = mesh_shape(n_seeds, n_configs, len(devices))
    return Mesh(np.asarray(devices, dtype=object).reshape(d_s, d_c), (SEEDS, CONFIGS))


def pad_axis(x: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    """``x`` padded to ``size`` along ``axis`` by repeating its last entry (padded runs are valid runs)."""
    extra = size - x.shape[axis]
    if extra <= 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths, mode="edge")


def global_array(x: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
    """``x`` (the same full host copy on every process) as a global array sharded by ``spec``."""
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def gather(tree):
    """Every leaf of ``tree`` as a full NumPy array on this process (across processes if needed)."""
    leaves = jax.tree.leaves(tree)
    if all(leaf.is_fully_addressable for leaf in leaves):
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def describe_devices(devices: list) -> dict:
    """``{"count", "kinds", "platform", "processes"}`` of the devices a program ran on."""
    kinds = sorted({f"{d.platform}:{d.device_kind}" for d in devices})
    return {"count": len(devices), "kinds": kinds, "platform": devices[0].platform,
            "processes": len({d.process_index for d in devices})}


# ---------------------------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class DistributedInfo:
    process_id: int
    num_processes: int
    is_writer: bool  # only process 0 writes result files
    local_devices: int
    global_devices: int


_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "TPU_WORKER_HOSTNAMES")


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, local_device_ids=None,
                           initialization_timeout: int = 300) -> DistributedInfo:
    """Start JAX's distributed runtime when several processes are asked for, and say who writes.

    Arguments left ``None`` are read from ``BYZJAX_COORDINATOR`` (else ``JAX_COORDINATOR_ADDRESS``),
    ``BYZJAX_NUM_PROCESSES`` and ``BYZJAX_PROCESS_ID``; with none of them and no cluster environment
    (Slurm, Open MPI, TPU pods: JAX detects those itself) this is a single-process run and JAX is not
    initialised. ``num_processes = 1`` also means a single process. Must run before any JAX computation.
    Returns the process id and count and ``is_writer = (process_id == 0)``.
    """
    env = os.environ
    coordinator = coordinator or env.get("BYZJAX_COORDINATOR") or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("BYZJAX_NUM_PROCESSES"):
        num_processes = _env_int("BYZJAX_NUM_PROCESSES")
    if process_id is None and env.get("BYZJAX_PROCESS_ID"):
        process_id = _env_int("BYZJAX_PROCESS_ID")
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"initialize_distributed: num_processes must be >= 1, got {num_processes}")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"initialize_distributed: process_id must be in [0, {num_processes}), got {process_id}")
    single = num_processes == 1 or (not explicit and not any(k in env for k in _CLUSTER_ENV))
    if not single:
        if explicit and None in (coordinator, num_processes, process_id) and not any(k in env for k in _CLUSTER_ENV):
            raise ConfigError("initialize_distributed: give the coordinator address (host:port), the number of "
                              f"processes and this process's id, got coordinator={coordinator!r}, "
                              f"num_processes={num_processes}, process_id={process_id}")
        if not jax.distributed.is_initialized():
            jax.distributed.initialize(coordinator, num_processes, process_id, local_device_ids=local_device_ids,
                                       initialization_timeout=initialization_timeout)
    pid, count = jax.process_index(), jax.process_count()
    return DistributedInfo(pid, count, pid == 0, jax.local_device_count(), jax.device_count())


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ConfigError(f"initialize_distributed: {name} must be an integer, got {os.environ[name]!r}") from None


# --------------------------------------------------------------------------------------------- memory


def device_memory_budget(device) -> tuple[int, str]:
    """Bytes one program may use on ``device`` and where the number comes from.

    ``device.memory_stats()["bytes_limit"]`` minus what is in use where the backend reports it
    (GPU, TPU); else ``HOST_MEMORY_FRACTION`` of physical RAM shared by the host's devices of that
    platform (CPU, where forced host devices share one RAM).
    """
    stats = None
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError):
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), "device.memory_stats"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    sharing = max(1, sum(1 for d in jax.local_devices() if d.platform == device.platform))
    return int(HOST_MEMORY_FRACTION * ram / sharing), f"{HOST_MEMORY_FRACTION:g} x host RAM / {sharing} devices"


def agree_on_minimum(value: int) -> int:
    """The smallest ``value`` over all processes (itself in a single-process run), so that every
    process plans the same chunks of the global mesh."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.asarray([value], dtype=np.int64))))


def tree_bytes(tree) -> int:
    return int(sum(np.dtype(x.dtype).itemsize * math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def estimate_run_bytes(n_workers: int, dim: int, itemsize: int, trace_bytes: int, samples_per_round: int = 0,
                       state_vectors: int = 8, round_blocks: int = 6) -> int:
    """A formula for the bytes one run adds to a program (arXiv 2602.03329, its experiments sizes: n = 21, d = 7850).

    ``itemsize * (state_vectors * d + round_blocks * n * d + samples_per_round) + trace_bytes``: the
    algorithm/oracle state (a few ``[d]`` vectors), the live ``[n, d]`` blocks of one round (honest and
    Byzantine gradients, pre-aggregated rows, sorted copies, the attack's candidate rows), the
    per-sample intermediates of the honest gradients (``[n_honest, m, classes]`` logits) and the
    run's outputs. The shared data is counted apart, once per device.
    """
    return int(itemsize * (state_vectors * dim + round_blocks * n_workers * dim + samples_per_round) + trace_bytes)


def compiled_bytes(compiled) -> int | None:
    """Peak bytes of a compiled program from XLA's buffer assignment (arguments + outputs + temporaries
    - aliased), per device; ``None`` where the backend offers no memory analysis."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        return None
    if m is None:
        return None
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - getattr(m, "alias_size_in_bytes", 0))
    return int(total)


@dataclass(frozen=True)
class Plan:
    """How one compiled program runs: its mesh, runs per call and the memory behind that choice."""

    mesh_shape: tuple[int, int]  # (seed shards, configuration shards)
    configs_per_call: int  # configurations per call (a multiple of the configuration shards)
    seeds_padded: int
    chunks: int
    estimate_bytes: int  # formula, per device, before compiling
    compiled_bytes: int | None  # XLA's memory analysis of the compiled program, per device
    budget_bytes: int
    budget_source: str

    def as_dict(self) -> dict:
        return {"mesh": list(self.mesh_shape), "configs_per_call": self.configs_per_call,
                "seeds_padded": self.seeds_padded, "chunks": self.chunks, "estimate_bytes": self.estimate_bytes,
                "compiled_bytes": self.compiled_bytes, "budget_bytes": self.budget_bytes,
                "budget_source": self.budget_source}

    def line(self, label: str, runs: int) -> str:
        gib = 2.0 ** 30
        comp = "n/a" if self.compiled_bytes is None else f"{self.compiled_bytes / gib:.3g} GiB"
        return (f"{label}: {runs} runs, {self.configs_per_call} configurations x {self.seeds_padded} seeds per call "
                f"({self.chunks} call{'s' * (self.chunks > 1)}) on a {self.mesh_shape[0]}x{self.mesh_shape[1]} "
                f"(seeds x configs) mesh; memory per device: estimate {self.estimate_bytes / gib:.3g} GiB, "
                f"compiled {comp}, budget {self.budget_bytes / gib:.3g} GiB ({self.budget_source})")


def configs_that_fit(budget: int, shared: int, per_run: int, seeds_per_device: int, config_shards: int,
                     n_configs: int) -> int:
    """Largest multiple of ``config_shards`` configurations per call (at least one per shard, at most
    ``n_configs`` rounded up) with ``shared + seeds_per_device * configs_per_device * per_run <= budget``."""
    per_device = max(1, (budget - shared) // max(1, seeds_per_device * per_run))
    full = math.ceil(n_configs / config_shards)
    return config_shards * int(min(full, per_device))


def log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)
