"""The library path validates like the command line: through the README's ``jax.jit(run)(key, exp,
data)``, a bad setting is a one-line ``ConfigError`` at construction or when the experiment meets its
data, never a silent run or a traceback from deep in JAX."""

import dataclasses

import jax
import numpy as np
import pytest

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.aggregators import Average, TrMean
from byzjax.algorithms import DGD
from byzjax.attacks import LabelFlipping, SignFlipping
from byzjax.oracle import RobustOracle
from byzjax.problems import AbstractProblem, LogisticRegression, Quadratic, make_quadratic
from byzjax.simulate import Experiment, run
from helpers import np_logistic_loss_grad, tiny_classification


def test_trmean_with_2f_at_least_n_is_rejected_before_running():
    _, data, problem = tiny_classification(n_honest=20)
    with pytest.raises(ConfigError, match=r"TrMean\b.*11"):
        RobustOracle(problem, TrMean(f=11), SignFlipping(), n_honest=20, n_byz=1)


def test_n_honest_disagreeing_with_the_data_is_an_error_under_jit():
    _, data, problem = tiny_classification(n_honest=20)
    oracle = RobustOracle(problem, TrMean(f=1), SignFlipping(), n_honest=10, n_byz=1)
    exp = Experiment(oracle, DGD(lr=0.1), rounds=2, eval_every=2)
    with pytest.raises(ConfigError, match="RobustOracle: n_honest=10 but the data holds shards for 20 workers"):
        jax.jit(run)(jax.random.key(0), exp, data)


@pytest.mark.parametrize("field, value, expected", [
    ("attack", "SignFlipping", "attack must be an AbstractAttack"),
    ("aggregator", "TrMean", "aggregator must be an AbstractAggregator"),
    ("problem", None, "problem must be an AbstractProblem"),
])
def test_a_component_of_the_wrong_type_names_the_type_expected(field, value, expected):
    _, _, problem = tiny_classification(n_honest=4)
    args = {"problem": problem, "aggregator": TrMean(f=1), "attack": SignFlipping()} | {field: value}
    with pytest.raises(ConfigError, match=f"RobustOracle: {expected}"):
        RobustOracle(args["problem"], args["aggregator"], args["attack"], n_honest=4, n_byz=1)


def test_experiment_components_are_typed():
    _, _, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    with pytest.raises(ConfigError, match="Experiment: algorithm must be an AbstractAlgorithm"):
        Experiment(oracle, "DGD", rounds=2)


def test_a_list_for_a_step_size_is_a_config_error():
    with pytest.raises(ConfigError, match="expected a single number, got the list .*; to sweep, give a list in the config"):
        DGD(lr=[0.01, 0.03])


def _swept_fields(cls):
    """``(name, default value)`` of every array field of ``cls()`` (the numbers that may be swept)."""
    default = cls()
    return [(f.name, getattr(default, f.name)) for f in dataclasses.fields(default)
            if isinstance(getattr(default, f.name), jax.Array)]


SWEPT = [(kind, name, field, value) for kind in ("algorithm", "attack")
         for name, cls in sorted(registry.registry(kind).items()) for field, value in _swept_fields(cls)]


def test_the_swept_numbers_are_found():
    assert {("algorithm", "DGD", "lr"), ("attack", "Gaussian", "sigma")} <= {s[:3] for s in SWEPT}


@pytest.mark.parametrize("kind, name, field, value", SWEPT, ids=[f"{s[1]}.{s[2]}" for s in SWEPT])
def test_every_swept_number_goes_through_a_converter(kind, name, field, value):
    """A list where a number is expected is rejected by the converters (and so never reaches JAX)."""
    cls = registry.registry(kind)[name]
    v = np.asarray(value).item()
    with pytest.raises(ConfigError, match="to sweep, give a list in the config file"):
        cls(**{field: [v, v]})


@pytest.mark.parametrize("cls, has_labels, has_samples", [(LogisticRegression, True, True), (Quadratic, False, False)])
def test_problem_capabilities_are_declared_on_the_class(cls, has_labels, has_samples):
    assert (cls.has_labels, cls.has_samples) == (has_labels, has_samples)
    assert not AbstractProblem.has_labels and not AbstractProblem.has_samples


def test_label_flipping_on_a_problem_without_labels_is_rejected_at_construction():
    quad, _, _ = make_quadratic(3, 4)
    with pytest.raises(ConfigError, match="LabelFlipping: needs labels, and Quadratic has none"):
        RobustOracle(quad, Average(), LabelFlipping(), n_honest=3, n_byz=1)
    RobustOracle(quad, Average(), LabelFlipping(), n_honest=3, n_byz=0)  # never called: fine


def test_user_given_initial_point_is_where_the_run_starts():
    """``Experiment(..., x0=...)``: the run starts at x0 whatever the seed (one D-GD step against NumPy)."""
    _, data, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    x0 = np.random.default_rng(0).normal(size=problem.dim)
    exp = Experiment(oracle, DGD(lr=0.5), rounds=1, eval_every=1, x0=x0)
    sh = data.shards
    grad = np.mean([np_logistic_loss_grad(x0, sh.x[i][sh.mask[i] > 0].astype(np.float64), sh.y[i][sh.mask[i] > 0],
                                          1e-2, 12, 3)[1] for i in range(4)], axis=0)
    run_jit = jax.jit(run)
    for seed in (0, 1):
        np.testing.assert_allclose(run_jit(jax.random.key(seed), exp, data).final_params, x0 - 0.5 * grad, rtol=1e-10)


@pytest.mark.parametrize("x0, message", [
    (np.zeros(5), r"Experiment: x0 must have shape \(39,\) \(the dimension of LogisticRegression\), got shape \(5,\)"),
    (np.zeros((3, 13)), r"got shape \(3, 13\)"),
    ("weights.npz", "Experiment: x0 must be an array of numbers"),
])
def test_initial_point_of_the_wrong_size_is_a_config_error(x0, message):
    _, _, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    with pytest.raises(ConfigError, match=message):
        Experiment(oracle, DGD(), rounds=2, x0=x0)
