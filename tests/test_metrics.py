"""Metric names live in one table (byzjax.metrics): every name a run produces is listed there,
reaches metrics.csv, and is never mistaken for a configuration label by the plots."""

import csv

import jax
import numpy as np
import pytest

from byzjax import registry
from byzjax.app.cli import main
from byzjax.app.plotting import NOT_LABELS
from byzjax.metrics import COUNTER, EVAL_METRICS, ROUND_METRICS
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.aggregators import TrMean
from byzjax.attacks import SignFlipping
from byzjax.simulate import Experiment, run
from helpers import small_synthetic, tiny_classification


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: these tests check the config path
    and its columns, not the data (the full source: tests/test_reproduce.py)."""
    with small_synthetic():
        yield


@pytest.mark.parametrize("name", sorted(registry.registry("algorithm")))
def test_every_algorithm_metric_is_registered(name):
    """A run of every registered algorithm (masked oracle, so byz_sent is produced too) returns only
    registered names, and the problem's evaluation names are registered as well."""
    _, data, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Pipeline([NNM(1)], TrMean(1)), SignFlipping(), n_honest=4, n_byz=1,
                          participation=0.5)
    alg = registry.lookup("algorithm", name)()
    trace = run(jax.random.key(0), Experiment(oracle, alg, rounds=4, eval_every=2), data)
    produced = set(trace.metrics) - {COUNTER}
    assert produced <= set(ROUND_METRICS), produced - set(ROUND_METRICS)
    assert {"loss", "grad_norm", "error", "spread", "byz_sent"} <= produced
    assert set(trace.eval_metrics) <= set(EVAL_METRICS)
    assert set(ROUND_METRICS) | set(EVAL_METRICS) <= NOT_LABELS


def test_byz_sent_reaches_metrics_csv(tmp_path):
    """With absent workers the documented byz_sent column is written (it used to be dropped)."""
    cfg = tmp_path / "absent.toml"
    cfg.write_text("""
seeds = 1
rounds = 6
eval_every = 3
[data]
source = "synthetic"
n_honest = 5
[byzantine]
f = [0, 2]
max_f = 2
participation = 0.5
attack = "SignFlipping"
[aggregator]
name = "TrMean"
[[algorithm]]
name = "DGD"
lr = 0.1
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--no-plot"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    sent = {r["f"]: [] for r in rows}
    for r in rows:
        if r["byz_sent"] != "":
            sent[r["f"]].append(int(float(r["byz_sent"])))
    assert sent["0"] == [0] * 6
    assert len(sent["2"]) == 6 and set(sent["2"]) <= {0, 1, 2} and np.mean(sent["2"]) > 0
