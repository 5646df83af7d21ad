"""Planning a sweep: mesh shapes, padding, memory budget and chunks, many workers.

Runs on the one default CPU device (the sharded paths are in test_sharding.py).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import devices as dev
from byzjax._validation import ConfigError
from byzjax.aggregators import Median, TrMean
from byzjax.algorithms import DGD
from byzjax.attacks import ALittleIsEnough
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.problems import LogisticRegression
from byzjax.simulate import Experiment
from byzjax.sweep import run_grid


def grid(n_honest=4, f=1, p=12, c=3, n_train=400, lrs=(0.05, 0.1, 0.2), seeds=2, aggregator=None, rounds=4,
         split="dirichlet"):
    ds = synthetic_dataset(seed=0, n_train=n_train, n_test=50, num_features=p, num_classes=c, separation=0.5)
    problem = LogisticRegression(num_features=p, num_classes=c, lam=1e-2)
    agg = aggregator if aggregator is not None else Pipeline([NNM(f)], TrMean(f))
    oracle = RobustOracle(problem, agg, ALittleIsEnough(), n_honest=n_honest, n_byz=f)
    exps = [Experiment(oracle, DGD(lr=lr), rounds=rounds, eval_every=2) for lr in lrs]
    datas = stack_seeds([federated_classification(ds, n_honest, split, 1.0, s) for s in range(seeds)])
    return exps, jax.vmap(jax.random.key)(jnp.arange(seeds)), datas


def test_mesh_shape_minimises_padded_runs():
    rng = np.random.default_rng(0)
    for _ in range(300):
        s, c, d = (int(v) for v in rng.integers(1, 33, size=3))
        d_s, d_c = dev.mesh_shape(s, c, d)
        assert d_s * d_c == d
        work = math.ceil(s / d_s) * d_s * math.ceil(c / d_c) * d_c
        best = min(math.ceil(s / a) * a * math.ceil(c / (d // a)) * (d // a) for a in range(1, d + 1) if d % a == 0)
        assert work == best >= s * c
        if s % d == 0:
            assert (d_s, d_c) == (d, 1)  # seeds that divide: shard seeds, data not replicated


def test_pad_axis_repeats_the_last_entry():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.standard_normal((int(rng.integers(1, 5)), 3))
        size = x.shape[0] + int(rng.integers(0, 4))
        y = dev.pad_axis(x, size)
        assert y.shape == (size, 3)
        np.testing.assert_array_equal(y[: len(x)], x)
        np.testing.assert_array_equal(y[len(x) :], np.broadcast_to(x[-1], (size - len(x), 3)))


def test_configs_that_fit_respects_the_budget():
    rng = np.random.default_rng(2)
    for _ in range(200):
        shared, per_run = int(rng.integers(0, 10**6)), int(rng.integers(1, 10**5))
        spd, shards, n = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 40))
        budget = int(rng.integers(0, 3 * 10**6))
        k = dev.configs_that_fit(budget, shared, per_run, spd, shards, n)
        assert k % shards == 0 and shards <= k <= shards * math.ceil(n / shards)
        if k > shards:  # more than the minimum only when it fits
            assert shared + spd * (k // shards) * per_run <= budget
        if k < shards * math.ceil(n / shards):  # one more per device would not fit
            assert shared + spd * (k // shards + 1) * per_run > budget


def test_chunks_never_change_results_and_are_reported():
    exps, keys, datas = grid()
    whole = run_grid(exps, keys, datas, show_progress=False)
    tiny = run_grid(exps, keys, datas, show_progress=False, max_memory=1)  # one configuration per call
    capped = run_grid(exps, keys, datas, show_progress=False, max_batch=4)  # 2 configurations x 2 seeds
    assert whole.plans[0]["chunks"] == 1 and whole.plans[0]["configs_per_call"] == 3
    assert tiny.plans[0]["chunks"] == 3 and tiny.plans[0]["configs_per_call"] == 1
    assert capped.plans[0]["chunks"] == 2 and capped.plans[0]["configs_per_call"] == 2
    assert whole.devices == {"count": 1, "kinds": [f"cpu:{jax.devices()[0].device_kind}"], "platform": "cpu",
                             "processes": 1}
    for other in (tiny, capped):
        for a, b in zip(whole.traces, other.traces):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_memory_estimate_within_a_factor_two_of_xla_and_printed(capsys):
    exps, keys, datas = grid(n_honest=10, p=100, c=10, n_train=1000, lrs=(0.05, 0.1))
    res = run_grid(exps, keys, datas, show_progress=True, label="mem")
    plan = res.plans[0]
    assert plan["compiled_bytes"] is not None  # XLA's CPU backend has a memory analysis
    data_bytes = dev.tree_bytes(jax.tree.map(np.asarray, datas))
    assert plan["compiled_bytes"] >= data_bytes  # the data is an argument of the program, counted once
    assert 0.5 <= plan["estimate_bytes"] / plan["compiled_bytes"] <= 2.0
    assert plan["budget_source"].endswith("devices") or plan["budget_source"] == "device.memory_stats"
    err = capsys.readouterr().err
    assert "mem program 1: 4 runs, 2 configurations x 2 seeds per call (1 call) on a 1x1" in err


def test_many_workers_n_1000_small_d():
    exps, keys, datas = grid(n_honest=950, f=50, p=3, c=2, n_train=2000, lrs=(0.1,), seeds=1,
                             aggregator=Median(), rounds=2, split="iid")
    res = run_grid(exps, keys, datas, show_progress=False)
    loss = res.traces[0].metrics["loss"][0]
    assert loss.shape == (2,) and np.all(np.isfinite(loss))


def test_bad_arguments_are_one_line_errors():
    exps, keys, datas = grid(lrs=(0.1,), seeds=1)
    with pytest.raises(ConfigError, match=r"run_grid: devices must be in \[1, 1\]"):
        run_grid(exps, keys, datas, devices=3)
    with pytest.raises(ConfigError, match="run_grid: max_memory must be a number of bytes > 0 or None, got -5"):
        run_grid(exps, keys, datas, max_memory=-5)
    with pytest.raises(ConfigError, match="run_grid: max_batch must be an integer >= 1 or None, got 0"):
        run_grid(exps, keys, datas, max_batch=0)
    with pytest.raises(ConfigError, match=r"initialize_distributed: process_id must be in \[0, 2\), got 2"):
        dev.initialize_distributed("127.0.0.1:1", 2, 2)
    with pytest.raises(ConfigError, match="initialize_distributed: give the coordinator address"):
        dev.initialize_distributed(None, 2, None)


def test_single_process_needs_no_runtime(monkeypatch):
    for name in ("BYZJAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS", "BYZJAX_NUM_PROCESSES", "BYZJAX_PROCESS_ID",
                 *dev._CLUSTER_ENV):
        monkeypatch.delenv(name, raising=False)
    info = dev.initialize_distributed()
    assert info.is_writer and info.process_id == 0 and info.num_processes == 1
    assert info.local_devices == info.global_devices == jax.device_count()
    monkeypatch.setenv("BYZJAX_NUM_PROCESSES", "x")
    with pytest.raises(ConfigError, match="BYZJAX_NUM_PROCESSES must be an integer, got 'x'"):
        dev.initialize_distributed()
