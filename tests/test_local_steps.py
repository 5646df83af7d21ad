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
        loss_i, grad_i = np_logistic_loss_grad(np.asarray(x, np.float64), np.asarray(data.shards.x[i][real], np.float64),
                                               np.asarray(data.shards.y[i][real]), 1e-2, 12, 3)
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
