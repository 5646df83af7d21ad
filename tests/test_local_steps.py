"""Training metrics as an option (exact full-batch or the mini-batches sent) and local steps (FedAvg)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.aggregators import Average
from byzjax.app.config import build_experiment, parse_config
from byzjax.oracle import RobustOracle
from byzjax.problems import LogisticRegression
from helpers import np_logistic_loss_grad, tiny_classification

TRACED = []


class CountedLogistic(LogisticRegression):
    """Logistic regression that records every trace of its loss (by shard size)."""

    def loss(self, x, shard):
        TRACED.append(shard.x.shape)
        return super().loss(x, shard)


def test_default_metrics_stay_exact_and_the_option_removes_the_full_pass():
    ds, data, problem = tiny_classification(n_honest=4, split="iid")
    problem = CountedLogistic(num_features=12, num_classes=3, lam=1e-2)
    shards = jax.tree.map(jnp.asarray, data.shards)
    x = problem.init(jax.random.key(1))
    outs = {}
    for exact in (None, True, False):
        oracle = RobustOracle(problem, Average(), n_honest=4, n_byz=0, batch_size=8, exact_metrics=exact)
        TRACED.clear()
        out, _ = jax.jit(oracle.__call__)(x, shards, oracle.init(x.dtype), jax.random.key(2))
        outs[exact] = (out, len(TRACED))
    assert outs[None][1] == outs[True][1] == 2 and outs[False][1] == 1  # full pass + mini-batch, or mini-batch only
    exact_out = outs[None][0]
    for i in range(4):  # default: full-batch L_H and grad L_H (NumPy reference)
        real = np.asarray(data.shards.mask[i]) > 0
        feats = np.asarray(data.shards.x[i][real], np.float64)
        _, grad_i = np_logistic_loss_grad(np.asarray(x, np.float64), feats, np.asarray(data.shards.y[i][real]),
                                          1e-2, 12, 3)
        np.testing.assert_allclose(np.asarray(exact_out.honest_grads[i]), grad_i, rtol=1e-6, atol=1e-9)
    fast = outs[False][0]  # without: metrics of the mini-batches sent; Average of them is g_hat exactly
    np.testing.assert_allclose(np.asarray(fast.honest_grad), np.asarray(fast.g_hat), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(fast.g_hat), np.asarray(exact_out.g_hat), rtol=1e-12)  # same batches sent
    assert float(exact_out.error) > 1e-6 and float(fast.error) < 1e-12
    assert not np.isclose(float(fast.honest_loss), float(exact_out.honest_loss))


def test_exact_metrics_option_errors_and_config():
    ds, data, problem = tiny_classification(n_honest=3)
    with pytest.raises(ConfigError, match="exact_metrics must be True, False or None"):
        RobustOracle(problem, Average(), n_honest=3, n_byz=0, exact_metrics="no")
    raw = {"data": {"n_honest": 3}, "algorithm": [{"name": "DGD"}], "metrics": {"exact": False}}
    cfg = parse_config(raw)
    assert cfg.to_dict()["metrics"] == {"exact": False}
    assert build_experiment(cfg.runs[0], problem, 3, 2, 1).oracle.exact_metrics is False
    assert build_experiment(parse_config(raw | {"metrics": {}}).runs[0], problem, 3, 2, 1).oracle.exact_metrics
    with pytest.raises(ConfigError, match=r"config \[metrics\]: exact must be true or false"):
        parse_config(raw | {"metrics": {"exact": "no"}})
    with pytest.raises(ConfigError, match=r"config \[metrics\]: unknown key\(s\) \['every'\]"):
        parse_config(raw | {"metrics": {"every": 2}})


# ---- local steps (FedAvg) ----------------------------------------------------------------------

def test_one_local_step_with_the_fedavg_server_is_dsgd_exactly():
    from byzjax.aggregators import TrMean
    from byzjax.algorithms import DGD, FedAvg
    from byzjax.attacks import SignFlipping
    from byzjax.simulate import Experiment, run

    ds, data, problem = tiny_classification(n_honest=5)
    data = jax.tree.map(jnp.asarray, data)

    def trace(alg, **workers):
        oracle = RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=5, n_byz=1,
                              batch_size=8, **workers)
        return jax.jit(run)(jax.random.key(3), Experiment(oracle, alg, rounds=6, eval_every=3), data)

    ref = trace(DGD(lr=0.3))
    for alg, workers in ((FedAvg(lr=0.3), {"local_steps": 1}),):
        got = trace(alg, **workers)
        np.testing.assert_array_equal(np.asarray(got.final_params), np.asarray(ref.final_params))
        np.testing.assert_array_equal(np.asarray(got.metrics["error"]), np.asarray(ref.metrics["error"]))


def test_k_local_steps_equal_a_numpy_loop():
    ds, data, problem = tiny_classification(n_honest=3, split="iid")
    shards = jax.tree.map(jnp.asarray, data.shards)
    x = problem.init(jax.random.key(0))
    key = jax.random.key(5)
    K, lr, b = 4, 0.2, 6
    oracle = RobustOracle(problem, Average(), n_honest=3, n_byz=0, batch_size=b, local_steps=K, local_lr=lr)
    out, _ = jax.jit(oracle.__call__)(x, shards, oracle.init(x.dtype), key)
    keys = jax.random.split(jax.random.fold_in(key, 3), 3)
    draw = jax.jit(lambda s, k: problem.minibatch(s, k, b))
    sent = []
    for i in range(3):
        shard = jax.tree.map(lambda a: a[i], shards)
        xk = np.asarray(x, np.float64)
        for k in range(K):
            wkey = keys[i] if k == 0 else jax.random.fold_in(keys[i], k)
            batch = np.asarray(draw(shard, wkey).mask) > 0
            assert batch.sum() == b
            _, g = np_logistic_loss_grad(xk, np.asarray(shard.x)[batch].astype(np.float64),
                                         np.asarray(shard.y)[batch], 1e-2, 12, 3)
            xk = xk - lr * g
        sent.append((np.asarray(x, np.float64) - xk) / lr)
    np.testing.assert_allclose(np.asarray(out.g_hat), np.mean(sent, axis=0), rtol=1e-9, atol=1e-12)
    # full-batch local steps (no batch_size) differ from one gradient step, and K = 1 is the gradient
    full = RobustOracle(problem, Average(), n_honest=3, n_byz=0, local_steps=K, local_lr=lr)
    one = RobustOracle(problem, Average(), n_honest=3, n_byz=0)
    out_k, _ = jax.jit(full.__call__)(x, shards, full.init(x.dtype), key)
    out_1, _ = jax.jit(one.__call__)(x, shards, one.init(x.dtype), key)
    assert not np.allclose(np.asarray(out_k.g_hat), np.asarray(out_1.g_hat))
    np.testing.assert_allclose(np.asarray(out_k.honest_grad), np.asarray(out_1.honest_grad), rtol=1e-12)  # exact


def test_fedavg_server_momentum_and_milestones_equal_numpy():
    from byzjax.algorithms import FedAvg
    from byzjax.problems import make_quadratic
    from byzjax.simulate import Experiment, run

    problem, data, info = make_quadratic(4, 5, mu=0.5, L=2.0, seed=1)
    a, bvec = np.asarray(data.shards.a), np.asarray(data.shards.b)
    lr, beta, decay, milestones, T = 0.3, 0.5, 0.1, (3, 5), 7
    alg = FedAvg(lr=lr, momentum=beta, learning_rate_decay=decay, milestones=milestones)
    oracle = RobustOracle(problem, Average(), n_honest=4, n_byz=0)
    trace = run(jax.random.key(0), Experiment(oracle, alg, rounds=T, eval_every=T), data)
    x, m = np.zeros(5), np.zeros(5)
    for t in range(T):
        g = np.mean([a[i] @ (x - bvec[i]) for i in range(4)], axis=0)
        m = g + beta * m
        x = x - lr * decay ** sum(t >= s for s in milestones) * m
    np.testing.assert_allclose(np.asarray(trace.final_params), x, rtol=1e-10)
    adam = run(jax.random.key(0), Experiment(oracle, FedAvg(lr=0.1, optimizer="adam"), rounds=3, eval_every=3), data)
    assert np.all(np.isfinite(np.asarray(adam.final_params)))


def test_local_steps_config_and_errors():
    from byzjax.algorithms import FedAvg

    ds, data, problem = tiny_classification(n_honest=3)
    raw = {"data": {"n_honest": 3}, "workers": {"batch_size": 4, "local_steps": 3, "local_lr": [0.1, 0.2]},
           "algorithm": [{"name": "FedAvg", "lr": 1.0, "momentum": 0.9, "learning_rate_decay": 0.5}]}
    cfg = parse_config(raw)
    assert cfg.to_dict()["workers"] == {"batch_size": [4], "local_steps": 3, "local_lr": [0.1, 0.2]}
    assert [r.columns["local_lr"] for r in cfg.runs] == [0.1, 0.2] and cfg.runs[0].columns["local_steps"] == 3
    exp = build_experiment(cfg.runs[1], problem, 3, 2, 1)
    assert exp.oracle.local_steps == 3 and float(exp.oracle.local_lr) == 0.2
    assert isinstance(exp.algorithm, FedAvg) and float(exp.algorithm.momentum) == 0.9
    for workers, match in (({"local_steps": 2}, r"local_steps = 2 needs local_lr"),
                           ({"local_lr": 0.1}, r"local_lr is only used with local_steps > 1"),
                           ({"local_steps": [1, 2], "local_lr": 0.1}, r"local_steps cannot be swept"),
                           ({"local_steps": 0}, r"local_steps must be a positive integer, got 0")):
        with pytest.raises(ConfigError, match=match):
            parse_config(raw | {"workers": workers})
    with pytest.raises(ConfigError, match=r"local_steps=2 needs local_lr"):
        RobustOracle(problem, Average(), n_honest=3, n_byz=0, local_steps=2)
    with pytest.raises(ConfigError, match=r"local_lr must be a positive number"):
        RobustOracle(problem, Average(), n_honest=3, n_byz=0, local_steps=2, local_lr=-1.0)
    with pytest.raises(ConfigError, match=r"FedAvg: optimizer must be one of \('sgd', 'adam'\), got 'lion'"):
        FedAvg(optimizer="lion")
    with pytest.raises(ConfigError, match=r"milestones must be increasing non-negative rounds, got \[5, 3\]"):
        FedAvg(milestones=(5, 3))
