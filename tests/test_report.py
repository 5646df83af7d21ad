"""Validation-selected test accuracy in summary.csv, and ``byzjax report`` (tables and figures that agree
with summary.csv)."""

import math

import numpy as np
import pytest

from byzjax.app.results import SUMMARY_MEASURES, StoredTrace, config_columns, summarise, trace_rows
from byzjax.metrics import COUNTER


def hand_trace(rng, n_iter, every, rounds_per_iter, with_val=True, ties=False):
    """A trace with loss, a round counter of ``rounds_per_iter`` per iteration and evaluations every
    ``every`` iterations and at the end."""
    iters = np.array(sorted(set(range(0, n_iter + 1, every)) | {n_iter}))
    levels = np.array([0.3, 0.5, 0.7]) if ties else rng.random(len(iters))
    val = rng.choice(levels, size=len(iters)) if ties else levels
    evals = {"test_acc": rng.random(len(iters))}
    if with_val:
        evals["val_acc"] = val
    metrics = {"loss": rng.random(n_iter) + 1.0, COUNTER: rounds_per_iter * np.arange(1, n_iter + 1)}
    return StoredTrace(metrics, evals, iters)


def test_summary_reports_test_accuracy_at_the_best_validation_evaluation():
    rng = np.random.default_rng(3)
    for case in range(60):
        n_iter, every, per = int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        trace = hand_trace(rng, n_iter, every, per, ties=case % 2 == 0)
        val, test = trace.eval_metrics["val_acc"], trace.eval_metrics["test_acc"]
        if case % 5 == 0:
            val[0] = np.nan  # a nan evaluation is never the best
        (row,) = summarise([(0, 0, {"f": 1}, trace)], {})
        # reference: the earliest evaluation of highest finite validation accuracy, its round as metrics.csv writes it
        best = max(v for v in val if np.isfinite(v))
        i = next(i for i, v in enumerate(val) if v == best)
        t = int(trace.eval_iters[i])
        want_round = trace_rows(0, 0, {}, trace)[t]["comm_round"]  # the round metrics.csv gives that evaluation
        assert row["test_acc_at_best_val"] == test[i] and row["best_val_round"] == want_round
        assert row["best_test_acc"] >= row["test_acc_at_best_val"]
    no_val = hand_trace(rng, 5, 2, 1, with_val=False)
    (row,) = summarise([(0, 0, {"f": 1}, no_val)], {})
    assert math.isnan(row["test_acc_at_best_val"]) and row["best_val_round"] is None
    never = hand_trace(rng, 5, 2, 1)
    never.eval_metrics["val_acc"][:] = np.nan
    (row,) = summarise([(0, 0, {"f": 1}, never)], {})
    assert math.isnan(row["test_acc_at_best_val"]) and row["best_val_round"] is None
    quadratic = StoredTrace({"loss": np.ones(3), COUNTER: np.arange(1, 4)}, {}, np.array([0, 3]))
    (row,) = summarise([(0, 0, {"f": 1}, quadratic)], {})
    assert "test_acc_at_best_val" not in row


def test_every_summary_column_is_a_measurement_or_a_config_column():
    rng = np.random.default_rng(0)
    cols = {"f": 1, "attack": "ALIE", "aggregator": "TrMean", "method": "D-GD(lr=0.1)", "lr": 0.1, "attack_tau": 1.5}
    trace = hand_trace(rng, 6, 2, 1)
    trace.metrics |= {k: rng.random(6) for k in ("error", "spread", "grad_norm", "kappa_hat", "inner_iters",
                                                  "inner_capped")}
    (row,) = summarise([(0, 0, cols, trace)], {0: {"compile_s": 1.0, "run_s": 2.0, "batch": 4, "devices": 1}})
    assert config_columns(list(row)) == list(cols)
    assert {k for k in row if k not in cols and k not in ("run", "seed")} <= SUMMARY_MEASURES
