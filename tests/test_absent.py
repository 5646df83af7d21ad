"""Byzantine workers that are absent from some rounds, and a declared f different from the
actual count: masked rows must behave exactly like rows never sent, and both numbers sweep
inside one compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.aggregators import MDA, Krum, Median, TrMean
from byzjax.algorithms import DNAG, Environment
from byzjax.attacks import AttackerView, Optimal_ALittleIsEnough, Optimal_InnerProductManipulation, SignFlipping
from byzjax.app.config import build_experiment, parse_config
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.simulate import Experiment, run
from byzjax.sweep import group_by_structure
from helpers import tiny_classification

N_H = 6


def experiment(problem, n_byz, attack, rounds=8, **masking):
    oracle = RobustOracle(problem, Pipeline([NNM(2)], TrMean(2)), attack, n_honest=N_H, n_byz=n_byz, **masking)
    exp = Experiment(oracle, DNAG(lr=0.2, momentum=0.9), rounds=rounds, eval_every=4)
    exp.check()
    return exp


@pytest.mark.parametrize("attack", [Optimal_ALittleIsEnough(), SignFlipping()])
def test_rows_past_the_count_are_as_if_never_sent(attack):
    """2 Byzantine workers in 4 rows (byz_count=2) == an oracle with exactly 2 rows: same trajectory."""
    _, data, problem = tiny_classification(n_honest=N_H)
    key = jax.random.key(3)
    exact = run(key, experiment(problem, 2, attack), data)
    masked = run(key, experiment(problem, 4, attack, byz_count=2), data)
    np.testing.assert_allclose(masked.metrics["loss"], exact.metrics["loss"], rtol=1e-10)
    np.testing.assert_allclose(masked.final_params, exact.final_params, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(masked.metrics["byz_sent"], 2)
    assert "byz_sent" not in exact.metrics  # unmasked oracles keep their metrics as before


def test_participation_extremes_and_frequency():
    """participation 1 == everyone sends; 0 == no Byzantine row at all; 0.5 sends Binomial(4, 0.5) rows."""
    _, data, problem = tiny_classification(n_honest=N_H)
    key, attack = jax.random.key(5), Optimal_ALittleIsEnough()
    everyone = run(key, experiment(problem, 3, attack), data)
    always = run(key, experiment(problem, 3, attack, participation=1.0), data)
    np.testing.assert_allclose(always.metrics["loss"], everyone.metrics["loss"], rtol=1e-10)
    nobody = run(key, experiment(problem, 3, attack, participation=0.0), data)
    honest_only = run(key, experiment(problem, 0, None), data)
    np.testing.assert_allclose(nobody.metrics["loss"], honest_only.metrics["loss"], rtol=1e-10)
    half = run(key, experiment(problem, 4, attack, rounds=400, participation=0.5), data).metrics["byz_sent"]
    assert abs(np.mean(half) - 2.0) < 0.25 and np.std(half) > 0.5  # mean 2, std 1 over 400 rounds
    assert set(np.unique(half)) <= {0, 1, 2, 3, 4}


def test_absent_rows_get_a_different_draw_each_round_and_seed():
    _, data, problem = tiny_classification(n_honest=N_H)
    exp = experiment(problem, 4, SignFlipping(), rounds=40, participation=0.5)
    a, b = (run(jax.random.key(s), exp, data).metrics["byz_sent"] for s in (0, 1))
    assert not np.array_equal(a, b) and len(np.unique(a)) > 1


@pytest.mark.parametrize("pipeline", [lambda: Pipeline([NNM(2)], TrMean(2)), lambda: TrMean(2), Median,
                                      lambda: Krum(2)])
@pytest.mark.parametrize("attack", [Optimal_ALittleIsEnough, Optimal_InnerProductManipulation])
def test_optimal_attack_optimises_against_the_rows_received(pipeline, attack):
    """The line-search objective with 4 rows of which 2 present == the objective with 2 rows,
    on the fast paths (NNM distances reused, sorted honest columns) and the generic one."""
    h = jnp.asarray(np.random.default_rng(0).normal(size=(N_H, 15)) + 1.0)
    key, present = jax.random.key(0), jnp.array([True, False, True, False])
    view = AttackerView(h, aggregator=pipeline())
    for reuse in (True, False):
        obj = attack().objective(view, 4, key, reuse=reuse, present=present)
        ref = attack().objective(view, 2, key, reuse=False)
        for tau in (0.0, 0.7, 3.0, 25.0):
            np.testing.assert_allclose(obj(tau), ref(tau), rtol=1e-10, err_msg=f"reuse={reuse}, tau={tau}")


def test_declared_and_actual_f_sweep_in_one_program():
    """f (actual Byzantine workers) up to max_f and tolerated_f (what the rules assume) are numbers:
    the whole grid is one structure; without max_f every f is its own program."""
    _, _, problem = tiny_classification(n_honest=N_H)
    raw = {"rounds": 4, "data": {"n_honest": N_H},
           "byzantine": {"f": [0, 1, 3], "tolerated_f": [1, 2], "max_f": 3, "participation": [1.0, 0.7],
                         "attack": "ALIE"},
           "aggregator": {"name": "TrMean", "pre_aggs": ["NNM"]}, "algorithm": [{"name": "DGD", "lr": 0.1}]}
    cfg = parse_config(raw)
    assert len(cfg.runs) == 3 * 2 * 2
    exps = [build_experiment(s, problem, N_H, 4, 2) for s in cfg.runs]
    assert len(group_by_structure(exps)) == 1
    for spec, exp in zip(cfg.runs, exps):
        oracle = exp.oracle
        assert oracle.n_byz == 3 and int(oracle.byz_count) == spec.f
        assert int(oracle.aggregator.agg.f) == int(oracle.aggregator.pre_aggs[0].f) == spec.columns["tolerated_f"]
        assert float(oracle.participation) == spec.columns["participation"]
    del raw["byzantine"]["max_f"], raw["byzantine"]["participation"]
    exps = [build_experiment(s, problem, N_H, 4, 2) for s in parse_config(raw).runs]
    assert len(group_by_structure(exps)) == 3  # one per f


def test_aggregator_parameters_given_as_lists_are_swept():
    cfg = parse_config({"byzantine": {"f": 2}, "aggregator": {"name": "CenteredClipping", "tau": [1.0, 10.0],
                                                              "pre_aggs": [{"name": "Clipping", "c": [1.0, 2.0]}]},
                        "algorithm": [{"name": "DGD"}]})
    assert sorted((r.columns["aggregator_tau"], r.columns["Clipping_c"]) for r in cfg.runs) == [
        (1.0, 1.0), (1.0, 2.0), (10.0, 1.0), (10.0, 2.0)]


@pytest.mark.parametrize("byz, message", [
    ({"f": [1, 4], "max_f": 3}, "max_f must be an integer >= every f (largest f: 4)"),
    ({"f": 1, "participation": 1.5}, "participation must be a probability in [0, 1]"),
    ({"f": 1, "tolerated_f": -1}, "tolerated_f must be a non-negative integer"),
])
def test_bad_masking_config_is_a_one_line_error(byz, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_config({"byzantine": byz, "algorithm": [{"name": "DGD"}]})


def test_oracle_checks_the_fewest_rows_a_round_can_deliver():
    _, _, problem = tiny_classification(n_honest=4)
    # 2f < n holds for all 7 rows but not for the 4 honest rows alone, which participation < 1 can leave
    with pytest.raises(ConfigError, match="TrMean: needs 2f < n, got f=2 with n=4"):
        RobustOracle(problem, TrMean(2), SignFlipping(), n_honest=4, n_byz=3, participation=0.5).check()
    RobustOracle(problem, TrMean(2), SignFlipping(), n_honest=4, n_byz=3, byz_count=1).check()  # 5 rows: fine
    with pytest.raises(ConfigError, match=r"byz_count must be in \[0, n_byz=3\]"):
        RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=4, n_byz=3, byz_count=4).check()
    with pytest.raises(ConfigError, match="MDA: does not support absent workers"):
        RobustOracle(problem, MDA(1), SignFlipping(), n_honest=4, n_byz=2, participation=0.5).check()


def test_environment_query_reports_rows_sent():
    _, data, problem = tiny_classification(n_honest=N_H)
    oracle = RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=N_H, n_byz=3, byz_count=1)
    x = problem.init(jax.random.key(0))
    out, _ = Environment(oracle, data.shards).query(x, oracle.init(x.dtype), jax.random.key(1))
    grads = np.asarray(out.honest_grads)
    rows = np.concatenate([grads, -grads.mean(0, keepdims=True)])  # SignFlipping: minus the honest mean
    s = np.sort(rows, axis=0)
    np.testing.assert_allclose(out.g_hat, s[1:-1].mean(0), rtol=1e-10)
    assert int(out.byz_sent) == 1
