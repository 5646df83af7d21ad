"""Fewer, fuller programs (issue 12, speed): runs that differ only in f share one program through
the absent-worker path, D-GD runs as D-NAG with momentum 0, PIGS's inner solves under vmap take
each run's own iterations; every merged run equals the same run in its own program."""

from pathlib import Path

import jax
import numpy as np
import pytest

from byzjax.algorithms import DGD, DNAG
from byzjax.app.byzfl import load_byzfl
from byzjax.app.config import build_experiment, parse_config, plan, program_runs
from byzjax.app.runner import execute, prepare
from byzjax.simulate import run
from byzjax.sweep import group_by_structure

PAPER = Path(__file__).parent / "data" / "byzfl_paper_config.json"
N_H = 5

RAW = {"rounds": 4, "eval_every": 2, "seeds": 2,
       "data": {"source": "synthetic", "n_honest": N_H, "split": "dirichlet", "alpha": 1.0},
       "problem": {"name": "logistic", "lam": 0.01},
       "byzantine": {"f": [1, 2], "attack": "Optimal_ALittleIsEnough"},
       "aggregator": {"name": "TrMean", "pre_aggs": ["NNM"]},
       "algorithm": [{"name": "DNAG", "lr": 0.1, "momentum": 0.9}, {"name": "DGD", "lr": 0.2},
                     {"name": "PIGS", "eta": [0.5, 8.0], "inner_tol": 1e-8}]}


def test_dgd_is_dnag_with_momentum_zero_bit_for_bit():
    cfg = parse_config(RAW | {"byzantine": {"f": 1, "attack": "ALIE"}, "seeds": 1})
    _, problem, data = prepare(cfg)
    one = jax.tree.map(lambda a: a[0], data)
    spec = next(r for r in cfg.runs if r.algorithm.name == "DGD")
    exp = build_experiment(spec, problem, N_H, cfg.rounds, cfg.eval_every)
    form = exp.program_form()
    assert isinstance(exp.algorithm, DGD) and isinstance(form.algorithm, DNAG)
    assert float(form.algorithm.momentum) == 0.0 and float(form.algorithm.lr) == float(exp.algorithm.lr)
    key = jax.random.key(3)
    alone, shared = jax.jit(run)(key, exp, one), jax.jit(run)(key, form, one)
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(shared)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_runs_differing_in_f_and_dgd_dnag_share_programs():
    cfg = parse_config(RAW)
    specs = program_runs(cfg)
    assert [s.max_f for s in specs] == [2] * len(specs)  # f in {1, 2}: every run gets max_f = 2 rows
    assert [s.columns for s in specs] == [r.columns for r in cfg.runs]
    _, groups = plan(cfg)
    assert len(cfg.runs) == 8 and len(groups) == 2  # {D-NAG, D-GD} x f, PIGS x eta x f
    # without the f merge: one program per f for each of the two structures
    _, problem, _ = prepare(cfg)
    alone = [build_experiment(r, problem, N_H, 4, 2) for r in cfg.runs]
    assert len(group_by_structure(alone)) == 4


@pytest.mark.parametrize("byz, masked", [
    ({"f": [0, 1, 2]}, {0: False, 1: True, 2: True}),  # f = 0 stays unmasked (no attack search for nothing)
    ({"f": [1, 2], "max_f": 3}, {1: True, 2: True}),  # the user's max_f is kept
    ({"f": 2}, {2: False}),  # one f: nothing to merge
    ({"f": [1, 2], "participation": [1.0, 0.5]}, {1: False, 2: False}),  # participation draws keep their shape
])
def test_program_runs_masks_only_several_positive_f(byz, masked):
    cfg = parse_config(RAW | {"byzantine": byz | {"attack": "ALIE"}})
    for spec in program_runs(cfg):
        assert (spec.max_f is not None) == masked[spec.f], spec.columns
        if spec.max_f is not None:
            assert spec.max_f == byz.get("max_f", max(byz["f"]))


def test_rules_without_absent_support_keep_their_programs():
    cfg = parse_config(RAW | {"aggregator": {"name": "MDA"}, "byzantine": {"f": [1, 2], "attack": "ALIE"}})
    assert all(s.max_f is None for s in program_runs(cfg))


def test_paper_grid_is_eight_programs():
    cfg, _ = load_byzfl(PAPER)
    _, groups = plan(cfg)
    assert len(cfg.runs) == 64 and sorted(len(g) for g in groups) == [4] * 4 + [12] * 4


def _compare(trace, ref, what):
    assert set(trace.metrics) == set(ref.metrics), what
    for name in ref.metrics:
        a, b = np.asarray(trace.metrics[name]), np.asarray(ref.metrics[name])
        if name in ("comm_rounds", "inner_iters", "inner_capped"):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} {name}")
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"{what} {name}")
    np.testing.assert_allclose(trace.final_params, ref.final_params, rtol=1e-9, atol=1e-12, err_msg=what)
    for name in ref.eval_metrics:
        np.testing.assert_allclose(trace.eval_metrics[name], ref.eval_metrics[name], rtol=1e-12, err_msg=what)


def _alone(cfg, problem, data, rid, seed):
    """Run ``rid`` in its own program: n_byz = f, no masks, its own algorithm, no vmap."""
    spec = cfg.runs[rid]
    assert spec.max_f is None
    exp = build_experiment(spec, problem, N_H, cfg.rounds, cfg.eval_every)
    s = cfg.seeds.index(seed)
    return jax.jit(run)(jax.random.key(seed), exp, jax.tree.map(lambda a: a[s], data))


def test_merged_f_and_methods_equal_each_run_in_its_own_program():
    """f in {1, 2} x {D-NAG, D-GD}: one program (the f = 1 runs on 2 masked rows, D-GD as D-NAG);
    D-GD at f = 1 and D-NAG at f = 2 against their own programs: the same metrics (float64), the same
    metric names (no ``byz_sent`` from the masks)."""
    cfg = parse_config(RAW | {"x64": True, "seeds": 1, "byzantine": {"f": [1, 2], "attack": "ALIE"},
                              "algorithm": RAW["algorithm"][:2]})
    prepared = prepare(cfg)
    runs, _, meta = execute(cfg, None, show_progress=False, prepared=prepared)
    assert meta["programs"] == 1 and len(runs) == 4
    for rid, seed, cols, trace in runs:
        if (cols["algorithm"], cols["f"]) in (("DGD", 1), ("DNAG", 2)):
            _compare(trace, _alone(cfg, prepared[1], prepared[2], rid, seed), f"{cols['method']} f={cols['f']}")


def test_vmapped_pigs_solves_take_each_runs_own_iterations():
    """PIGS with two etas in one program (its inner solves run one after the other under vmap):
    each run equals the run alone, inner iterations included, and those differ between the runs."""
    cfg = parse_config(RAW | {"x64": True, "seeds": 1, "byzantine": {"f": 1, "attack": "ALIE"},
                              "algorithm": RAW["algorithm"][2:]})
    prepared = prepare(cfg)
    runs, _, meta = execute(cfg, None, show_progress=False, prepared=prepared)
    assert meta["programs"] == 1 and len(runs) == 2
    for rid, seed, cols, trace in runs:
        _compare(trace, _alone(cfg, prepared[1], prepared[2], rid, seed), cols["method"])
    iters = [tuple(np.asarray(t.metrics["inner_iters"])) for _, _, _, t in runs]
    assert iters[0] != iters[1]


@pytest.mark.parametrize("attack", ["Optimal_ALittleIsEnough", "Optimal_InnerProductManipulation"])
def test_vmapped_optimal_search_equals_each_run_alone(attack):
    """The Optimal attacks' search runs run by run under vmap (``sequential_vmap``): the rows of a
    batch of rounds (own honest rows, pipeline f and present rows per run) equal each round alone."""
    from byzjax import registry
    from byzjax.aggregators import TrMean
    from byzjax.attacks import AttackerView
    from byzjax.preaggregators import NNM, Pipeline

    rng = np.random.default_rng(4)
    cls = registry.lookup("attack", attack)
    n_h, n_byz, d, runs = 6, 3, 7, 5
    honest = rng.normal(size=(runs, n_h, d)) + rng.normal(size=(runs, 1, d))
    fs = np.array([1, 2, 1, 3, 2])
    present = np.arange(n_byz)[None, :] < fs[:, None]

    def rows(honest, f, present):
        view = AttackerView(honest, None, None, None, Pipeline([NNM(f)], TrMean(f)))
        return cls().byzantine_vectors(view, n_byz, jax.random.key(0), present)

    batched = jax.jit(jax.vmap(rows))(honest, fs, present)
    for r in range(runs):
        alone = jax.jit(rows)(honest[r], fs[r], present[r])
        np.testing.assert_allclose(batched[r], alone, rtol=1e-12, atol=1e-12, err_msg=f"run {r}")
