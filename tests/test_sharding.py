"""Sharding the run axis over devices and processes: results equal the single-device run.

Forced host devices (``--xla_force_host_platform_device_count``) must be set before JAX starts,
so the sharded runs happen in subprocesses that write their traces to ``.npz`` files; this
process computes the single-device reference. Sharded == unsharded is checked to a tight
tolerance (float64, rtol 1e-12), not bitwise: a device runs ``C / d_c`` configurations through
the same vmapped program instead of ``C``, and XLA's CPU dot kernels block a different batch
differently, so sums can differ in the last ulp (measured: <= 2.3e-16 absolute).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

GRID = textwrap.dedent("""
    import os, sys, json
    sys.path[:0] = [{root!r}, {tests!r}]
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from byzjax.devices import initialize_distributed
    INFO = initialize_distributed()
    from helpers import tiny_classification
    from byzjax.aggregators import TrMean
    from byzjax.algorithms import DGD
    from byzjax.attacks import ALittleIsEnough
    from byzjax.data import federated_classification, stack_seeds
    from byzjax.oracle import RobustOracle
    from byzjax.preaggregators import NNM, Pipeline
    from byzjax.simulate import Experiment
    from byzjax.sweep import run_grid

    def grid(n_seeds, lrs):
        ds, _, problem = tiny_classification(n_honest=4)
        oracle = RobustOracle(problem, Pipeline([NNM(1)], TrMean(1)), ALittleIsEnough(), n_honest=4, n_byz=1)
        exps = [Experiment(oracle, DGD(lr=lr), rounds=4, eval_every=2) for lr in lrs]
        datas = stack_seeds([federated_classification(ds, 4, "dirichlet", 1.0, s) for s in range(n_seeds)])
        return exps, jax.vmap(jax.random.key)(jnp.arange(n_seeds)), datas

    def save(path, result):
        arrays = {{f"{{i}}/{{j}}": leaf for i, t in enumerate(result.traces) for j, leaf in enumerate(jax.tree.leaves(t))}}
        np.savez(path, **arrays)
        Path(str(path) + ".json").write_text(json.dumps({{"devices": result.devices, "plans": result.plans}}))
    from pathlib import Path
""")

CASES = {"configs_padded": (2, (0.05, 0.1, 0.2)), "seeds_padded": (3, (0.1,))}

FORCED4 = GRID + textwrap.dedent("""
    out = Path(sys.argv[1])
    for name, (s, lrs) in {cases!r}.items():
        save(out / f"{{name}}.npz", run_grid(*grid(s, lrs), show_progress=False))
    # a budget below one call's memory: the planner falls back to one configuration per device
    save(out / "chunked.npz", run_grid(*grid(2, (0.05, 0.1, 0.2)), show_progress=False, max_memory=1))

    # the data argument of a sharded program: sharded by seed only, no run axis
    import equinox as eqx
    from jax.sharding import PartitionSpec as P
    from byzjax import devices as dev
    from byzjax.sweep import sharded_sweep_function, stack_experiments
    exps, keys, datas = grid(2, (0.05, 0.1, 0.2, 0.3))
    mesh = dev.run_mesh(jax.devices(), 2, 4)
    arrays, static = eqx.partition(stack_experiments(exps), eqx.is_array)
    fn = sharded_sweep_function(static, mesh, jax.random.key_impl(keys))
    g = lambda a, spec: dev.global_array(np.asarray(a), mesh, spec)
    data_in = jax.tree.map(lambda a: g(a, P(dev.SEEDS)), datas)
    compiled = fn.lower(jax.tree.map(lambda a: g(a, P(dev.CONFIGS)), arrays),
                        g(jax.random.key_data(keys), P(dev.SEEDS)), data_in).compile()
    shardings = jax.tree.leaves(compiled.input_shardings[0][2])
    report = {{"mesh": list(mesh.devices.shape),
               "data_specs": sorted({{repr(tuple(s.spec)) for s in shardings}}),
               "data_shapes": [list(x.shape) for x in jax.tree.leaves(data_in)],
               "source_shapes": [list(np.shape(x)) for x in jax.tree.leaves(datas)]}}
    (out / "layout.json").write_text(json.dumps(report))
""")

PROCESS = GRID + textwrap.dedent("""
    out = Path(sys.argv[1])
    result = run_grid(*grid(*{case!r}), show_progress=False)
    if INFO.is_writer:
        save(out / "two_process.npz", result)
    print("done", INFO.process_id, INFO.num_processes, jax.device_count(), flush=True)
""")


def script(template, **kw):
    return template.format(root=str(ROOT), tests=str(ROOT / "tests"), **kw)


def child_env(devices, **extra):
    """This environment without JAX/XLA settings, ``devices`` forced host devices, and the tests'
    compile settings (conftest's optimisation level), so the children compile as this process does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BYZJAX_", "XLA_"))}
    kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag.startswith("--xla_backend_optimization_level")]
    flags = " ".join([f"--xla_force_host_platform_device_count={devices}", *kept])
    return env | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"} | extra


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference():
    """Single-device traces of every case, computed in this process."""
    namespace = {}
    exec(script(GRID), namespace)
    out = {}
    for name, (s, lrs) in CASES.items():
        res = namespace["run_grid"](*namespace["grid"](s, lrs), show_progress=False, devices=1)
        out[name] = {f"{i}/{j}": np.asarray(leaf) for i, t in enumerate(res.traces) for j, leaf in enumerate(jax.tree.leaves(t))}
        assert res.devices["count"] == 1 and res.plans[0]["mesh"] == [1, 1]
    return out


def assert_same(got, want):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].shape == want[k].shape, k
        if want[k].dtype.kind == "f":
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_four_forced_devices_equal_one_device_with_padding_and_chunks(reference, tmp_path):
    proc = subprocess.run([sys.executable, "-c", script(FORCED4, cases=CASES), str(tmp_path)], env=child_env(4),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in CASES:
        assert_same(load(tmp_path / f"{name}.npz"), reference[name])
        meta = json.loads((tmp_path / f"{name}.npz.json").read_text())
        assert meta["devices"] == {"count": 4, "kinds": ["cpu:cpu"], "platform": "cpu", "processes": 1}
    # 2 seeds x 3 configurations: a 2x2 mesh, configurations padded to 4; 3 seeds x 1: 4x1, seeds padded to 4
    plans = {n: json.loads((tmp_path / f"{n}.npz.json").read_text())["plans"][0] for n in CASES}
    assert plans["configs_padded"]["mesh"] == [2, 2] and plans["configs_padded"]["configs_per_call"] == 4
    assert plans["seeds_padded"]["mesh"] == [4, 1] and plans["seeds_padded"]["seeds_padded"] == 4
    chunked = json.loads((tmp_path / "chunked.npz.json").read_text())["plans"][0]
    assert chunked["configs_per_call"] == 2 and chunked["chunks"] == 2  # one configuration per device per call
    assert_same(load(tmp_path / "chunked.npz"), reference["configs_padded"])
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert layout["mesh"] == [2, 2]
    assert layout["data_specs"] == ["('seeds',)"]  # never split or copied along configurations
    assert layout["data_shapes"] == layout["source_shapes"]  # [S, ...]: no run axis was added


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_local_processes_equal_one_process(reference, tmp_path):
    port = free_port()
    code = script(PROCESS, case=CASES["configs_padded"])
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=child_env(2, BYZJAX_COORDINATOR=f"127.0.0.1:{port}",
                                                       BYZJAX_NUM_PROCESSES="2", BYZJAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=400))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    assert "done 0 2 4" in outs[0][0] and "done 1 2 4" in outs[1][0]  # 2 processes x 2 devices = one 4-device mesh
    assert sorted(os.listdir(tmp_path)) == ["two_process.npz", "two_process.npz.json"]  # process 0 alone wrote
    meta = json.loads((tmp_path / "two_process.npz.json").read_text())
    assert meta["devices"]["count"] == 4 and meta["devices"]["processes"] == 2
    assert_same(load(tmp_path / "two_process.npz"), reference["configs_padded"])
