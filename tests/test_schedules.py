"""The FedAvg server's step-size schedules: ByzFL's MultiStepLR (learning_rate_decay at milestones) and
optax's cosine and exponential decays, in Python and in config files."""

from __future__ import annotations

import csv
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byzjax._validation import ConfigError
from byzjax.aggregators import Average
from byzjax.algorithms import CosineLR, ExponentialLR, FedAvg, MultiStepLR
from byzjax.app.config import load_config, parse_config, plan
from byzjax.app.runner import execute
from byzjax.oracle import RobustOracle
from byzjax.problems import make_quadratic
from byzjax.simulate import Experiment, run
from helpers import small_synthetic
from test_config import tiny_prepared


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: the schedules do not depend on the
    data (the full source: tests/test_reproduce.py)."""
    with small_synthetic():
        yield


def byzfl_lrs(lr: float, gamma: float, milestones, rounds: int) -> list[float]:
    """The step of each round of ByzFL's server, simulated the way PyTorch steps it:
    ``MultiStepLR(optimizer, milestones, gamma)`` takes scheduler step 0 at construction and one
    step after every round's ``optimizer.step()``; at scheduler step ``e`` the step is multiplied by
    ``gamma`` once per occurrence of ``e`` in ``milestones``. Round ``t`` uses the step of scheduler step ``t``."""
    counts = Counter(milestones)
    current = lr * gamma ** counts[0]
    out = []
    for e in range(1, rounds + 1):
        out.append(current)
        current *= gamma ** counts[e]
    return out


def lrs(alg: FedAvg, rounds: int) -> np.ndarray:
    return np.asarray(jax.vmap(alg.schedule())(jnp.arange(rounds)))


def test_multistep_lr_equals_the_pytorch_multisteplr_rule():
    rng = np.random.default_rng(0)
    for case in range(8):
        rounds = int(rng.integers(5, 40))
        k = int(rng.integers(0, 5))
        milestones = tuple(sorted(rng.choice(rounds + 3, size=k, replace=False).tolist()))  # may include 0 and > rounds
        lr, gamma = float(rng.uniform(0.01, 2.0)), float(rng.uniform(0.05, 1.0))
        alg = FedAvg(lr=lr, learning_rate_decay=gamma, milestones=milestones)
        np.testing.assert_allclose(lrs(alg, rounds), byzfl_lrs(lr, gamma, milestones, rounds), rtol=1e-12,
                                   err_msg=f"case {case}: milestones {milestones}")
    # defaults: no milestones is the constant step, whatever the decay
    np.testing.assert_array_equal(lrs(FedAvg(lr=0.3, learning_rate_decay=0.1), 6), np.full(6, 0.3))


def test_cosine_and_exponential_equal_optax():
    rng = np.random.default_rng(1)
    for case in range(5):
        lr = float(rng.uniform(0.01, 2.0))
        steps, alpha = int(rng.integers(1, 30)), float(rng.uniform(0, 1))
        cosine = FedAvg(lr=lr, schedule="cosine", decay_steps=steps, alpha=alpha)
        ref = optax.cosine_decay_schedule(lr, steps, alpha)
        np.testing.assert_allclose(lrs(cosine, 3 * steps), np.asarray(ref(jnp.arange(3 * steps))), rtol=1e-12,
                                   atol=1e-15, err_msg=f"cosine case {case}")
        rate, every, begin = float(rng.uniform(0.1, 1.5)), int(rng.integers(1, 6)), int(rng.integers(0, 8))
        for staircase in (False, True):
            expo = FedAvg(lr=lr, schedule="exponential", decay_rate=rate, transition_steps=every,
                          transition_begin=begin, staircase=staircase)
            ref = optax.exponential_decay(lr, every, rate, begin, staircase)
            np.testing.assert_allclose(lrs(expo, 30), np.asarray(ref(jnp.arange(30))), rtol=1e-12,
                                       err_msg=f"exponential case {case}, staircase {staircase}")
    # the defaults of the optional keys: alpha 0 (down to 0), one transition per round from round 0
    np.testing.assert_allclose(lrs(FedAvg(lr=1.0, schedule="cosine", decay_steps=4), 6),
                               [1.0, 0.5 + 0.5 * np.cos(np.pi / 4), 0.5, 0.5 - 0.5 * np.cos(np.pi / 4), 0.0, 0.0],
                               atol=1e-15)
    np.testing.assert_allclose(lrs(FedAvg(lr=1.0, schedule="exponential", decay_rate=0.5), 4), [1, 0.5, 0.25, 0.125])
    assert isinstance(FedAvg().lr_schedule, MultiStepLR)
    assert isinstance(FedAvg(schedule="cosine", decay_steps=3).lr_schedule, CosineLR)
    assert isinstance(FedAvg(schedule="exponential", decay_rate=0.9).lr_schedule, ExponentialLR)


def test_schedule_numbers_are_traced_leaves():
    """A swept decay, cosine alpha or decay_steps is an array leaf: vmapped schedules equal the single ones."""
    decays = jnp.asarray([0.1, 0.5, 0.9])
    got = jax.vmap(lambda d: FedAvg(lr=1.0, learning_rate_decay=d, milestones=(2, 4)).schedule()(5))(decays)
    np.testing.assert_allclose(got, np.asarray(decays) ** 2, rtol=1e-12)
    steps = jnp.asarray([2, 4, 8])
    got = jax.vmap(lambda s: FedAvg(lr=1.0, schedule="cosine", decay_steps=s).schedule()(2))(steps)
    np.testing.assert_allclose(got, [0.0, 0.5, 0.5 + 0.5 * np.cos(np.pi / 4)], atol=1e-15)


def np_run(a, b, lr_of_round, rounds: int, beta: float = 0.0):
    """Heavy-ball SGD on the mean of the quadratics ``(x - b_i)^T a_i (x - b_i) / 2`` with step ``lr_of_round(t)``
    (PyTorch's SGD: ``m = g + beta m``, ``x -= lr_t m``)."""
    x, m = np.zeros(a.shape[-1]), np.zeros(a.shape[-1])
    for t in range(rounds):
        g = np.mean([a[i] @ (x - b[i]) for i in range(len(a))], axis=0)
        m = g + beta * m
        x = x - lr_of_round(t) * m
    return x


def test_the_step_of_every_round_of_a_run_follows_the_schedule():
    problem, data, _ = make_quadratic(3, 4, mu=0.5, L=2.0, seed=2)
    a, b = np.asarray(data.shards.a), np.asarray(data.shards.b)
    oracle = RobustOracle(problem, Average(), n_honest=3, n_byz=0)
    rounds = 9
    cases = [
        (FedAvg(lr=0.6, momentum=0.5, learning_rate_decay=0.3, milestones=(0, 4, 7)),
         lambda t: byzfl_lrs(0.6, 0.3, (0, 4, 7), rounds)[t], 0.5),
        (FedAvg(lr=0.6, schedule="cosine", decay_steps=6, alpha=0.2),
         lambda t: 0.6 * (0.8 * 0.5 * (1 + np.cos(np.pi * min(t, 6) / 6)) + 0.2), 0.0),
        (FedAvg(lr=0.6, schedule="exponential", decay_rate=0.7, transition_steps=2, transition_begin=1, staircase=True),
         lambda t: 0.6 * (0.7 ** np.floor((t - 1) / 2) if t > 1 else 1.0), 0.0),
    ]
    for alg, lr_of_round, beta in cases:
        trace = run(jax.random.key(0), Experiment(oracle, alg, rounds=rounds, eval_every=rounds), data)
        np.testing.assert_allclose(np.asarray(trace.final_params), np_run(a, b, lr_of_round, rounds, beta),
                                   rtol=1e-10, err_msg=type(alg.lr_schedule).__name__)


BASE = {"rounds": 2, "eval_every": 1, "data": {"source": "synthetic", "n_honest": 3}}


def test_schedules_in_a_config_file_and_their_columns(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('rounds = 3\neval_every = 3\n[data]\nsource = "synthetic"\nn_honest = 3\n'
                    '[[algorithm]]\nname = "FedAvg"\nlr = 0.5\nlearning_rate_decay = [0.1, 0.5]\nmilestones = [1, 2]\n'
                    '[[algorithm]]\nname = "FedAvg"\nlr = 0.5\nschedule = "cosine"\ndecay_steps = 3\n'
                    '[[algorithm]]\nname = "FedAvg"\nlr = 0.5\nschedule = "exponential"\ndecay_rate = 0.9\n')
    cfg = load_config(toml)
    cols = [r.columns for r in cfg.runs]
    assert [(c["schedule"], c.get("learning_rate_decay"), c.get("milestones")) for c in cols] == [
        ("multistep", 0.1, "[1, 2]"), ("multistep", 0.5, "[1, 2]"), ("cosine", None, None), ("exponential", None, None)]
    # every number of the schedule is a column, the defaults of the optional keys filled in
    assert (cols[2]["decay_steps"], cols[2]["method_alpha"]) == (3, 0.0)  # "alpha" is the data's Dirichlet column
    assert (cols[3]["decay_rate"], cols[3]["transition_steps"], cols[3]["transition_begin"]) == (0.9, 1, 0)
    resolved = cfg.to_dict()["algorithm"]
    assert resolved[0]["milestones"] == [1, 2] and resolved[1] == {
        "name": "FedAvg", "lr": 0.5, "momentum": 0.0, "optimizer": "sgd", "schedule": "cosine", "decay_steps": 3,
        "alpha": 0.0}
    assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()  # the record reads back as the same grid
    # the decay sweep is one program; the three schedules are three
    assert plan(cfg)[1] == [[0, 1], [2], [3]]
    # the columns reach summary.csv (the decay sweep alone: one compiled program)
    one = parse_config(cfg.to_dict() | {"algorithm": cfg.to_dict()["algorithm"][:1]})
    out = tmp_path / "out"
    runs, _, _ = execute(one, out, show_progress=False, prepared=tiny_prepared(one))
    with open(out / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [(row["schedule"], row["learning_rate_decay"], row["milestones"]) for row in summary] == [
        ("multistep", "0.1", "[1, 2]"), ("multistep", "0.5", "[1, 2]")]
    final = [np.asarray(r[3].final_params) for r in runs]
    assert not np.allclose(final[0], final[1])  # the swept decay changes the run


def test_milestone_lists_sweep_as_lists_of_lists():
    cfg = parse_config(BASE | {"algorithm": [{"name": "FedAvg", "milestones": [[1], [1, 2], []]}]})
    assert [r.columns["milestones"] for r in cfg.runs] == ["[1]", "[1, 2]", "[]"]
    assert [r.algorithm.build().lr_schedule.milestones for r in cfg.runs] == [(1,), (1, 2), ()]
    assert cfg.to_dict()["algorithm"][0]["milestones"] == [[1], [1, 2], []]
    assert plan(cfg)[1] == [[0], [1], [2]]  # milestones are static: one program each


@pytest.mark.parametrize("algorithm, match", [
    ({"schedule": "step"}, r"FedAvg: schedule must be one of \('multistep', 'cosine', 'exponential'\), got 'step'"),
    ({"schedule": "cosine"}, r"FedAvg: schedule 'cosine' needs decay_steps \(the rounds"),
    ({"schedule": "exponential"}, r"FedAvg: schedule 'exponential' needs decay_rate"),
    ({"schedule": "cosine", "decay_steps": 5, "milestones": [2]},
     r"FedAvg: milestones belongs to schedule 'multistep', not to schedule 'cosine' \(its keys: \['alpha', 'decay_steps'\]\)"),
    ({"decay_rate": 0.5}, r"FedAvg: decay_rate belongs to schedule 'exponential', not to schedule 'multistep'"),
    ({"milestones": [5, 3]}, r"FedAvg: milestones must be increasing non-negative rounds, got \[5, 3\]"),
    ({"milestones": [-1]}, r"FedAvg: milestones must be increasing non-negative rounds, got \[-1\]"),
    ({"milestones": 3}, r"algorithm FedAvg: milestones must be a list of integers \(or a list of such lists, a sweep\), got 3"),
    ({"milestones": [1.5]}, r"milestones must be a list of integers .*got \[1.5\]"),
    ({"learning_rate_decay": 0.0}, r"FedAvg learning_rate_decay must be a positive number, got \[0.0\]"),
    ({"schedule": "cosine", "decay_steps": 0}, r"FedAvg: decay_steps must be a positive integer, got decay_steps=\[0\]"),
    ({"schedule": "cosine", "decay_steps": 4, "alpha": 1.5}, r"FedAvg: alpha must be in \[0, 1\], got alpha=\[1.5\]"),
    ({"schedule": "exponential", "decay_rate": 0.5, "transition_steps": 0},
     r"FedAvg: transition_steps must be a positive integer, got transition_steps=\[0\]"),
    ({"schedule": "exponential", "decay_rate": 0.5, "transition_begin": -2},
     r"FedAvg: transition_begin must be a non-negative integer"),
    ({"schedule": "exponential", "decay_rate": 0.5, "staircase": "yes"}, r"staircase must be true or false"),
    ({"schedule": "cosine", "decay_steps": 2.5}, r"decay_steps must be an integer"),
])
def test_schedule_errors_are_one_line(algorithm, match):
    with pytest.raises(ConfigError, match=match) as err:
        plan(parse_config(BASE | {"algorithm": [{"name": "FedAvg", **algorithm}]}))
    assert "\n" not in str(err.value)


def test_python_errors():
    with pytest.raises(ConfigError, match=r"FedAvg: milestones must be increasing non-negative rounds, got \[2, 2\]"):
        FedAvg(milestones=(2, 2))
    with pytest.raises(ConfigError, match=r"FedAvg: milestones must be increasing non-negative rounds, got 3"):
        FedAvg(milestones=3)
    with pytest.raises(ConfigError, match=r"FedAvg: alpha belongs to schedule 'cosine'"):
        FedAvg(alpha=0.1)
