"""What honest workers send: mini-batch (stochastic) gradients and worker momentum; metrics stay exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.aggregators import Average, TrMean
from byzjax.algorithms import DGD, Environment
from byzjax.attacks import SignFlipping
from byzjax.app.config import build_experiment, parse_config
from byzjax.oracle import RobustOracle
from byzjax.problems import make_quadratic
from byzjax.simulate import Experiment, run
from byzjax.sweep import group_by_structure
from helpers import np_logistic_loss_grad, tiny_classification


def test_minibatch_draws_b_distinct_real_samples_uniformly():
    _, data, problem = tiny_classification(n_honest=3)
    shard = jax.tree.map(lambda a: jnp.asarray(a[0]), data.shards)
    real = np.asarray(shard.mask) > 0
    counts = np.zeros(real.shape)
    for k in range(400):
        mask = np.asarray(problem.minibatch(shard, jax.random.key(k), 10).mask)
        assert mask.sum() == 10 and np.all(mask[~real] == 0) and set(np.unique(mask)) <= {0, 1}
        counts += mask
    freq = counts[real] / 400  # each real sample with probability 10 / m
    assert abs(freq.mean() - 10 / real.sum()) < 1e-12 and freq.std() < 0.05
    everything = problem.minibatch(shard, jax.random.key(0), 10_000).mask  # more than the shard holds
    np.testing.assert_array_equal(everything, shard.mask)


def test_workers_send_minibatch_gradients_and_metrics_stay_full_batch():
    n_h = 4
    _, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Average(), None, n_honest=n_h, n_byz=0, batch_size=8)
    x = problem.init(jax.random.key(0))
    key = jax.random.key(1)
    out, _ = Environment(oracle, data.shards).query(x, oracle.init(x.dtype), key)
    shards = jax.tree.map(jnp.asarray, data.shards)
    keys = jax.random.split(jax.random.fold_in(key, 3), n_h)
    sh = data.shards
    sent, full = [], []
    for i in range(n_h):
        batch = np.asarray(problem.minibatch(jax.tree.map(lambda a: a[i], shards), keys[i], 8).mask) > 0
        assert batch.sum() == 8
        sent.append(np_logistic_loss_grad(np.asarray(x), sh.x[i][batch].astype(np.float64), sh.y[i][batch],
                                          1e-2, 12, 3)[1])
        real = sh.mask[i] > 0
        full.append(np_logistic_loss_grad(np.asarray(x), sh.x[i][real].astype(np.float64), sh.y[i][real], 1e-2, 12, 3))
    np.testing.assert_allclose(out.g_hat, np.mean(sent, axis=0), rtol=1e-9)  # the mean of the stochastic gradients
    np.testing.assert_allclose(out.honest_loss, np.mean([f[0] for f in full]), rtol=1e-10)  # exact L_H
    np.testing.assert_allclose(out.honest_grad, np.mean([f[1] for f in full], axis=0), rtol=1e-9)
    assert out.error > 0  # no attack, Average: the oracle error is the sampling noise alone


def test_batch_as_large_as_the_shards_is_full_batch_and_small_batches_are_noisy():
    _, data, problem = tiny_classification(n_honest=4)

    def trace(batch_size):
        oracle = RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=4, n_byz=1, batch_size=batch_size)
        return run(jax.random.key(2), Experiment(oracle, DGD(lr=0.5), rounds=30, eval_every=10), data)

    full, whole, small = trace(None), trace(10_000), trace(4)
    np.testing.assert_allclose(whole.metrics["loss"], full.metrics["loss"], rtol=1e-10)
    assert small.metrics["loss"][-1] < small.metrics["loss"][0]  # SGD still descends
    assert np.mean(small.metrics["error"]) > 1.5 * np.mean(full.metrics["error"])


def test_batch_size_config_sweeps_in_one_program_and_bad_values_are_errors():
    _, _, problem = tiny_classification(n_honest=4)
    raw = {"rounds": 3, "data": {"n_honest": 4}, "workers": {"batch_size": [4, 16, 64]},
           "byzantine": {"f": 1, "attack": "ALIE"}, "aggregator": {"name": "TrMean"}, "algorithm": [{"name": "DGD"}]}
    cfg = parse_config(raw)
    assert [r.columns["batch_size"] for r in cfg.runs] == [4, 16, 64]
    exps = [build_experiment(s, problem, 4, 3, 1) for s in cfg.runs]
    assert len(group_by_structure(exps)) == 1
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        parse_config(raw | {"workers": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"config \[workers\]: unknown key"):
        parse_config(raw | {"workers": {"local_step": 5}})
    quad, _, _ = make_quadratic(3, 4)
    with pytest.raises(ConfigError, match="Quadratic has no samples to draw mini-batches from"):
        RobustOracle(quad, Average(), None, n_honest=3, n_byz=0, batch_size=2).check()


def test_worker_momentum_equals_numpy_recursion():
    """m_i <- beta m_i + (1 - beta) g_i(x_t) from m_i = 0 (ByzFL), Average of the momenta, D-GD: 5 rounds."""
    n_h, beta, lr = 4, 0.8, 0.5
    _, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Average(), None, n_honest=n_h, n_byz=0, momentum=beta)
    trace = run(jax.random.key(6), Experiment(oracle, DGD(lr=lr), rounds=5, eval_every=5), data)
    sh = data.shards
    x = np.asarray(problem.init(jax.random.fold_in(jax.random.key(6), 0)))
    m = np.zeros((n_h, x.size))
    for _ in range(5):
        g = np.array([np_logistic_loss_grad(x, sh.x[i][sh.mask[i] > 0].astype(np.float64), sh.y[i][sh.mask[i] > 0],
                                            1e-2, 12, 3)[1] for i in range(n_h)])
        m = beta * m + (1 - beta) * g
        x = x - lr * m.mean(axis=0)
    np.testing.assert_allclose(trace.final_params, x, rtol=1e-9, atol=1e-12)


def test_zero_momentum_is_plain_gradients_and_momentum_config_sweeps():
    _, data, problem = tiny_classification(n_honest=4)

    def trace(momentum):
        oracle = RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=4, n_byz=1, momentum=momentum)
        return run(jax.random.key(2), Experiment(oracle, DGD(lr=0.5), rounds=10, eval_every=5), data)

    np.testing.assert_allclose(trace(0.0).metrics["loss"], trace(None).metrics["loss"], rtol=1e-12)
    raw = {"rounds": 3, "data": {"n_honest": 4}, "workers": {"momentum": [0.0, 0.9], "batch_size": 16},
           "byzantine": {"f": 1, "attack": "ALIE"}, "aggregator": {"name": "TrMean"}, "algorithm": [{"name": "DGD"}]}
    cfg = parse_config(raw)
    assert [r.columns["worker_momentum"] for r in cfg.runs] == [0.0, 0.9]
    assert len(group_by_structure([build_experiment(s, problem, 4, 3, 1) for s in cfg.runs])) == 1
    with pytest.raises(ConfigError, match=r"momentum must be a number in \[0, 1\)"):
        parse_config(raw | {"workers": {"momentum": 1.0}})
    with pytest.raises(ConfigError, match=r"worker momentum must be in \[0, 1\)"):
        RobustOracle(problem, Average(), None, n_honest=4, n_byz=0, momentum=-0.1).check()
