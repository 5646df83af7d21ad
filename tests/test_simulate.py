"""Runner and sweep: transforms, determinism, recompilation, bad input."""

import io

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.aggregators import Average, TrMean
from byzjax.algorithms import DGD, DNAG, PIGS
from byzjax.attacks import ALittleIsEnough, AbstractAttack, Optimal_ALittleIsEnough
from byzjax.data import stack_seeds, federated_classification
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.simulate import Experiment, run
from byzjax.sweep import group_by_structure, run_grid, stack_experiments, sweep_function
from helpers import tiny_classification

jit_run = eqx.filter_jit(run)  # one compilation per structure and shapes (an eager run compiles each scan apart)


def setup(n_h=5, f=1, attack=None):
    ds, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Pipeline([NNM(f)], TrMean(f)), attack or Optimal_ALittleIsEnough(),
                          n_honest=n_h, n_byz=f)
    return ds, data, problem, oracle


def test_sweep_row_equals_single_run_and_same_key_is_identical():
    ds, data, problem, oracle = setup()
    exps = [Experiment(oracle, DNAG(lr=lr, momentum=0.9), rounds=7, eval_every=3) for lr in (0.05, 0.2)]
    datas = stack_seeds([data, federated_classification(ds, 5, "dirichlet", 1.0, 1)])
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    res = run_grid(exps, keys, datas, show_progress=False)
    assert res.programs == 1
    for c, exp in enumerate(exps):
        for s in range(2):
            single = jit_run(keys[s], exp, jax.tree.map(lambda a: jnp.asarray(a[s]), datas))
            np.testing.assert_allclose(res.traces[c].metrics["loss"][s], single.metrics["loss"], rtol=1e-10)
            np.testing.assert_allclose(res.traces[c].eval_metrics["val_acc"][s], single.eval_metrics["val_acc"])
    again = jit_run(keys[0], exps[0], jax.tree.map(lambda a: jnp.asarray(a[0]), datas))
    first = jit_run(keys[0], exps[0], jax.tree.map(lambda a: jnp.asarray(a[0]), datas))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), again, first))


def test_swept_number_does_not_recompile():
    ds, data, problem, oracle = setup()
    exps = [Experiment(oracle, DGD(lr=lr), rounds=3, eval_every=3) for lr in (0.1, 0.2, 0.3, 0.4)]

    st = eqx.partition(exps[0], eqx.is_array)[1]
    sweep = sweep_function(st)
    fn = jax.jit(chex.assert_max_traces(lambda *args: sweep(*args), n=1))  # a second trace raises
    datas = stack_seeds([data])
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    for pair in (exps[:2], exps[2:]):
        arrays = eqx.partition(stack_experiments(pair), eqx.is_array)[0]
        fn(arrays, keys, jax.tree.map(jnp.asarray, datas))
    # a different f of the rules is a number too: same program
    ds, data, problem, oracle2 = setup(f=1)
    assert len(group_by_structure(exps + [Experiment(eqx.tree_at(lambda o: o.aggregator.agg.f, oracle, jnp.asarray(0, jnp.int32)),
                                                                 DGD(lr=0.1), rounds=3, eval_every=3)])) == 1
    # D-GD runs as D-NAG with momentum 0 (one program); PIGS is another structure
    assert len(group_by_structure(exps + [Experiment(oracle, DNAG(), rounds=3, eval_every=3)])) == 1
    assert len(group_by_structure(exps + [Experiment(oracle, PIGS(), rounds=3, eval_every=3)])) == 2


def test_eval_schedule_and_comm_rounds():
    ds, data, problem, oracle = setup()
    trace = jit_run(jax.random.key(0), Experiment(oracle, DGD(lr=0.1), rounds=7, eval_every=3), data)
    np.testing.assert_array_equal(trace.eval_iters, [0, 3, 6, 7])
    np.testing.assert_array_equal(trace.metrics["comm_rounds"], np.arange(1, 8))
    assert trace.metrics["loss"].shape == (7,) and trace.eval_metrics["test_acc"].shape == (4,)
    acc0 = np.mean(np.argmax(ds.val_x @ np.asarray(problem.unpack(problem.init(jax.random.fold_in(jax.random.key(0), 0)))[0])
                             + np.asarray(problem.unpack(problem.init(jax.random.fold_in(jax.random.key(0), 0)))[1]), 1) == ds.val_y)
    np.testing.assert_allclose(trace.eval_metrics["val_acc"][0], acc0)


class NaNInf(AbstractAttack):
    def byzantine_vectors(self, view, n_byz, key, present=None):
        rows = jnp.full((n_byz, view.honest.shape[1]), jnp.inf)
        return rows.at[0, ::2].set(jnp.nan)


def test_inf_and_nan_rows_never_poison_a_run():
    ds, data, problem, oracle = setup(f=2, attack=NaNInf())
    trace = jit_run(jax.random.key(0), Experiment(oracle, DNAG(lr=0.2), rounds=10, eval_every=5), data)
    assert np.all(np.isfinite(trace.metrics["loss"])) and np.all(np.isfinite(trace.final_params))
    assert trace.metrics["loss"][-1] < trace.metrics["loss"][0]


def test_bad_input_is_a_one_line_error_before_compiling():
    ds, data, problem = tiny_classification(n_honest=4)
    with pytest.raises(ConfigError, match=r"TrMean: needs 2f < n, got f=3 with n=6"):
        RobustOracle(problem, TrMean(3), ALittleIsEnough(), n_honest=4, n_byz=2).check()
    with pytest.raises(ConfigError, match="f must be >= 0"):
        TrMean(-1)
    with pytest.raises(ConfigError, match="NNM: needs f < n"):
        Pipeline([NNM(7)], Average()).check(6)
    with pytest.raises(ConfigError, match="DGD lr must be a positive"):
        DGD(lr=-0.1)
    with pytest.raises(ConfigError, match="momentum must be in"):
        DNAG(momentum=1.5)
    with pytest.raises(ConfigError, match="eta must be a positive"):
        PIGS(eta=0.0)
    with pytest.raises(ConfigError, match="ratio must be in"):
        Optimal_ALittleIsEnough(ratio=0.3)
    with pytest.raises(ConfigError, match="rounds must be >= 1"):
        Experiment(RobustOracle(problem, Average(), None, n_honest=4, n_byz=0), DGD(), rounds=0)
    with pytest.raises(ConfigError, match="expected an integer"):
        TrMean(1.5)
    from byzjax.sweep import use_compilation_cache

    with pytest.raises(ConfigError, match="use_compilation_cache: path must be a folder name, got 3"):
        use_compilation_cache(3)


def test_progress_reports_once_per_round_for_vmapped_runs():
    ds, data, problem, oracle = setup()
    exps = [Experiment(oracle, DGD(lr=lr), rounds=20, eval_every=5) for lr in (0.1, 0.2, 0.3)]
    seen = []

    class Recorder(progress.ProgressBar):
        def update(self, t):
            seen.append(t)

    datas = stack_seeds([data, data])
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    from byzjax import sweep as sweep_mod

    orig = sweep_mod.progress.ProgressBar
    sweep_mod.progress.ProgressBar = lambda total, **kw: Recorder(total, stream=io.StringIO())
    try:
        run_grid(exps, keys, datas)
    finally:
        sweep_mod.progress.ProgressBar = orig
    assert sorted(seen) == sorted(set(seen)) and seen[-1] == 19 and len(seen) <= 21


def test_label_flipping_workers_send_gradients_on_flipped_labels():
    from byzjax.algorithms import Environment
    from byzjax.attacks import LabelFlipping

    ds, data, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), LabelFlipping(), n_honest=4, n_byz=2)
    x = problem.init(jax.random.key(0))
    out, _ = Environment(oracle, data.shards).query(x, oracle.init(x.dtype), jax.random.key(1))
    flipped = data.shards._replace(y=2 - data.shards.y)  # 3 classes: 9 - y becomes (c - 1) - y
    grads = jax.vmap(jax.grad(problem.loss), in_axes=(None, 0))(x, jax.tree.map(jnp.asarray, data.shards))
    fgrads = jax.vmap(jax.grad(problem.loss), in_axes=(None, 0))(x, jax.tree.map(jnp.asarray, flipped))
    expected = (grads.sum(0) + 2 * fgrads.mean(0)) / 6
    np.testing.assert_allclose(out.g_hat, expected, rtol=1e-10)
    np.testing.assert_allclose(out.honest_grad, grads.mean(0), rtol=1e-12)


def test_a_second_grid_of_the_same_structure_is_not_traced_or_compiled_again(monkeypatch):
    """run_grid keeps its jitted programs: a second grid of the same structure and shapes (other
    step sizes) traces nothing and compiles nothing, and its rows are still its own runs; another
    structure is a new program; the least recently used program goes when the cache is full."""
    import byzjax.sweep as sweep_mod

    ds, data, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    traced = []

    def counting(key, experiment, data):
        traced.append(experiment.rounds)
        return run(key, experiment, data)

    compiled = []
    listener = lambda event, secs, **kw: compiled.append(event) if event.endswith("backend_compile_duration") else None  # noqa: E731
    monkeypatch.setattr(sweep_mod, "run", counting)
    monkeypatch.setattr(sweep_mod, "_PROGRAMS", [])
    datas = stack_seeds([data])
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    grid = lambda lrs, rounds=4: run_grid([Experiment(oracle, DGD(lr=lr), rounds=rounds, eval_every=2)  # noqa: E731
                                           for lr in lrs], keys, datas, show_progress=False)
    first = grid([0.1, 0.3])
    assert traced == [4]
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = grid([0.3, 0.1])
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert traced == [4] and compiled == [] and second.compile_s < first.compile_s
    for a, b in ((second.traces[0], first.traces[1]), (second.traces[1], first.traces[0])):  # its own arrays
        np.testing.assert_array_equal(a.metrics["loss"], b.metrics["loss"])
    assert not np.allclose(first.traces[0].metrics["loss"], first.traces[1].metrics["loss"])
    grid([0.1, 0.3], rounds=6)  # another structure: traced
    assert traced == [4, 6]
    monkeypatch.setattr(sweep_mod, "PROGRAM_CACHE_SIZE", 1)
    grid([0.2, 0.4], rounds=6)  # the most recent: kept
    assert traced == [4, 6] and len(sweep_mod._PROGRAMS) == 1
    grid([0.2, 0.4])  # dropped for it: traced again
    assert traced == [4, 6, 4]


def test_programs_without_a_progress_bar_are_read_back_from_the_persistent_cache(monkeypatch):
    """The test session keeps JAX's persistent compilation cache (tests/conftest.py,
    ``sweep.use_compilation_cache``): a grid compiled again after ``clear_program_cache`` is read
    back from it when it has no progress bar; with one (a host callback in the program, which JAX
    does not store) it is compiled again every time."""
    import byzjax.sweep as sweep_mod

    assert jax.config.jax_compilation_cache_dir and jax.config.jax_persistent_cache_min_compile_time_secs == 0
    ds, data, problem = tiny_classification(n_honest=3)
    oracle = RobustOracle(problem, Average(), None, n_honest=3, n_byz=0)
    datas, keys = stack_seeds([data]), jax.vmap(jax.random.key)(jnp.arange(1))
    hits = []
    listener = lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None  # noqa: E731
    monkeypatch.setattr(sweep_mod, "_PROGRAMS", [])

    def grid(show_progress):
        sweep_mod.clear_program_cache()
        hits.clear()
        res = run_grid([Experiment(oracle, DGD(lr=0.1), rounds=3, eval_every=3)], keys, datas,
                       show_progress=show_progress)
        return len(hits), res.traces[0].metrics["loss"]

    jax.monitoring.register_event_listener(listener)
    try:
        grid(False)
        quiet_hits, quiet = grid(False)
        grid(True)
        bar_hits, bar = grid(True)
    finally:
        jax.monitoring.unregister_event_listener(listener)
    assert (quiet_hits, bar_hits) == (1, 0)  # the sweep program; the small eager ops are kept in memory
    np.testing.assert_array_equal(quiet, bar)
