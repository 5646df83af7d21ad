"""One config for every data instance (issue 12): lists of split / alpha / n_honest run into one
result folder, each instance on its own data with its own L* and mu, the same runs and numbers as
one config per instance; resume, Ctrl-C, the grid signature, ``byzjax theory`` per instance."""

import copy
import itertools

import numpy as np
import pytest

import byzjax.images
import byzjax.theory
from byzjax._validation import ConfigError
from byzjax.app import runner
from byzjax.app.config import parse_config, plan
from byzjax.app.files import Interrupted, OutputError
from byzjax.app.results import read_table
from byzjax.data import split_indices, synthetic_dataset
from byzjax.theory import ReferenceOptimum

SPLITS = {"split": ["iid", "dirichlet"], "alpha": [0.5, 1.0], "n_honest": 4}
RAW = {"name": "instances", "seeds": [0, 3], "rounds": 4, "eval_every": 2, "x64": True,
       "data": {"source": "synthetic"} | SPLITS,
       "problem": {"name": "LogisticRegression", "lam": 1e-2},
       "byzantine": {"f": 1, "attack": "SignFlipping"}, "aggregator": {"name": "TrMean"},
       "algorithm": [{"name": "DGD", "lr": [0.1, 0.3]}]}
INSTANCES = [(4, "iid", None), (4, "dirichlet", 0.5), (4, "dirichlet", 1.0)]
TIMING = {"compile_s", "run_s", "batch", "devices"}


LOADS: list[str] = []


def small_source(source, **kw):
    """Every data load reads a small Gaussian mixture (600 samples, 8 features, 3 classes), counted."""
    LOADS.append(source)
    return synthetic_dataset(seed=0, n_train=600, n_test=60, num_features=8, num_classes=3, separation=1.0)


def fingerprint(mask, labels) -> float:
    """A number that tells the shards of one instance and seed apart: ``sum_w (w + 1) m_w`` plus
    ``1e-3 sum y`` over the real samples (``mask`` ``[w, m]``)."""
    mask, labels = np.asarray(mask, float), np.asarray(labels, float)
    return float(np.sum(mask * (1 + np.arange(mask.shape[0]))[:, None]) + 1e-3 * np.sum(mask * labels))


def expected_fingerprint(n_honest, split, alpha, seed) -> float:
    ds = synthetic_dataset(seed=0, n_train=600, n_test=60, num_features=8, num_classes=3, separation=1.0)
    shards = split_indices(ds.train_y, n_honest, split, alpha, seed)
    return float(sum((w + 1) * len(s) for w, s in enumerate(shards))
                 + 1e-3 * sum(ds.train_y[s].sum() for s in shards))


@pytest.fixture(scope="module", autouse=True)
def small_and_compiled_once():
    """Small data; one jitted sweep function per static structure for the whole module (a program
    of the same structure and shapes, an instance in a grid and the same instance alone, is
    compiled once, so the comparisons below cost no second compilation); and the per-instance
    theory solves replaced by a fingerprint of the instance's shards (``L*``) and ``(L, mu, delta) = (2, 0.5, 1)``, so
    that summary.csv says which data each instance's ``L*`` was computed on (the solves
    themselves: tests/test_theory_app.py)."""
    import equinox as eqx

    import byzjax.sweep

    made, real = [], byzjax.sweep.sweep_function

    def memo(static, ticks=False):
        for s, t, fn in made:
            if t == ticks and eqx.tree_equal(s, static):
                return fn
        made.append((static, ticks, real(static, ticks)))
        return made[-1][2]

    mp = pytest.MonkeyPatch()
    mp.setattr(byzjax.images, "load_source", small_source)
    mp.setattr(byzjax.sweep, "sweep_function", memo)
    mp.setattr(byzjax.theory, "reference_optimum", lambda problem, shards, x0=None: ReferenceOptimum(
        np.zeros(problem.dim), fingerprint(shards.mask, shards.y), 0.0))
    mp.setattr(byzjax.theory, "constants_at", lambda problem, shards, x, key, iters=300: (2.0, 0.5, 1.0))
    mp.setattr(runner, "_INSTANCE_CACHE", {})
    yield
    mp.undo()


@pytest.fixture
def loads():
    LOADS.clear()
    return LOADS


def one_instance(cfg, n_honest, split, alpha):
    raw = copy.deepcopy(cfg.raw)
    raw["data"] = {"source": "synthetic", "split": split, "n_honest": n_honest} | ({} if alpha is None else
                                                                                   {"alpha": alpha})
    return parse_config(raw)


def key(cols: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in cols.items()))


def assert_same_trace(a, b):
    assert set(a.metrics) == set(b.metrics) and set(a.eval_metrics) == set(b.eval_metrics)
    for part in ("metrics", "eval_metrics"):
        for k, v in getattr(a, part).items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(getattr(b, part)[k]), err_msg=k)


def numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING | {"run"}}


def run_alone(cfg, tmp_path_factory):
    """Each data instance of ``cfg`` run as its own config, in its own folder: ``(runs, summary rows)``."""
    runs, rows = [], []
    for inst in cfg.data_instances:
        out = tmp_path_factory.mktemp("one")
        got, _, meta = runner.execute(one_instance(cfg, inst.n_honest, inst.split, inst.alpha), out,
                                      show_progress=False)
        assert meta["programs"] == 1
        runs += got
        rows += read_table(out / "summary.csv")
    return runs, rows


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    return run_alone(parse_config(RAW), tmp_path_factory)


def test_lists_of_split_alpha_n_honest_run_the_same_runs_as_one_config_per_instance(loads, separate, tmp_path,
                                                                                      monkeypatch):
    cfg = parse_config(RAW)
    assert [(d.n_honest, d.split, d.alpha) for d in cfg.data_instances] == INSTANCES
    LOADS.clear()
    shown, real_grid = [], runner.progress.grid
    monkeypatch.setattr(runner.progress, "grid", lambda names, **kw: shown.append(names) or real_grid(names, **kw))
    runs, timing, meta = runner.execute(cfg, tmp_path / "out", show_progress=False)
    # one progress over the programs of every instance, each named by its instance
    assert [name.split(" | ")[0] for name, _ in shown[0]] == \
        ["split=iid, n_honest=4", "split=dirichlet, alpha=0.5, n_honest=4", "split=dirichlet, alpha=1.0, n_honest=4"]
    assert len(loads) == 1  # the data set is read once for all three instances
    assert meta["programs"] == len(INSTANCES) and meta["complete"] and len(timing) == len(cfg.runs) == 6
    sep_runs, sep_rows = separate
    assert sorted((key(c), s) for _, s, c, _ in runs) == sorted((key(c), s) for _, s, c, _ in sep_runs)
    by = {(key(c), s): t for _, s, c, t in sep_runs}
    for rid, seed, cols, trace in runs:
        assert cols == cfg.runs[rid].columns
        assert_same_trace(trace, by[(key(cols), seed)])
    # summary.csv has the instance columns, and per instance the same numbers (L_ref, gaps) as alone
    rows = read_table(tmp_path / "out" / "summary.csv")
    assert len(rows) == len(cfg.runs) * len(cfg.seeds)
    assert {(int(r["n_honest"]), r["split"], r["alpha"]) for r in rows} == \
        {(n, s, "" if a is None else str(a)) for n, s, a in INSTANCES}
    assert_same_rows(cfg, rows, sep_rows)
    for r in rows:  # L* of each instance and seed was computed on that instance's shards of that seed
        alpha = None if r["alpha"] == "" else float(r["alpha"])
        assert float(r["l_star"]) == pytest.approx(expected_fingerprint(4, r["split"], alpha, int(r["seed"])),
                                                   rel=1e-12)
        assert float(r["gap_star"]) == pytest.approx(float(r["final_loss"]) - float(r["l_star"]), rel=1e-12)


def assert_same_rows(cfg, rows, alone_rows):
    """Each summary row equals the row of the same run and seed run alone (timings aside)."""
    def row_key(r):
        return key({k: v for k, v in r.items() if k in cfg.runs[0].columns}), r["seed"]

    alone = {row_key(r): r for r in alone_rows}
    assert len(alone) == len(rows)
    for r in rows:
        assert numbers(r) == numbers(alone[row_key(r)])


def test_resume_and_ctrl_c_of_a_two_instance_folder(loads, monkeypatch, tmp_path, tmp_path_factory):
    raw = copy.deepcopy(RAW)
    raw["data"] = {"source": "synthetic", "split": "dirichlet", "alpha": 0.5, "n_honest": [4, 5]}
    cfg = parse_config(raw)
    alone_runs, alone_rows = run_alone(cfg, tmp_path_factory)
    out = tmp_path / "out"
    calls = []
    real = runner.run_grid

    def second_is_interrupted(experiments, *a, **kw):
        calls.append(len(experiments))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(experiments, *a, **kw)

    monkeypatch.setattr(runner, "run_grid", second_is_interrupted)
    with pytest.raises(Interrupted, match=r"holds 2 of 4 runs, marked incomplete; rerun the same command"):
        runner.execute(cfg, out, show_progress=False)
    kept = read_table(out / "summary.csv")
    assert {r["n_honest"] for r in kept} == {"4"} and len(kept) == 4  # the first instance, both seeds
    calls.clear()
    runs, timing, meta = runner.execute(cfg, out, show_progress=False)
    assert calls == [2] and meta["resumed_runs"] == 2 and meta["complete"] and len(timing) == 4
    rows = read_table(out / "summary.csv")
    assert_same_rows(cfg, rows, alone_rows)
    for r in rows:
        assert float(r["l_star"]) == pytest.approx(expected_fingerprint(int(r["n_honest"]), "dirichlet", 0.5,
                                                                        int(r["seed"])), rel=1e-12)
        assert (float(r["L_x0"]), float(r["mu_star"]), float(r["delta"])) == (2.0, 0.5, 1.0)  # the faked constants
        kb2 = float(r["kappa_b2"])
        assert float(r["pred_rounds_dgd"]) == (pytest.approx(2.0 / ((1 - kb2) * 0.5)) if kb2 < 1 else np.inf)
    by = {(key(c), s): t for _, s, c, t in alone_runs}
    for _, seed, cols, trace in runs:  # the resumed instance is read back from metrics.csv
        np.testing.assert_allclose(np.asarray(trace.metrics["loss"], float),
                                   np.asarray(by[(key(cols), seed)].metrics["loss"], float), rtol=1e-12)
    calls.clear()
    _, _, meta = runner.execute(cfg, out, show_progress=False)  # nothing left: no program runs
    assert calls == [0] and meta["resumed_runs"] == 4 and meta["programs"] == 0
    # the signature covers the whole grid: another n_honest list is another grid
    other = copy.deepcopy(raw)
    other["data"]["n_honest"] = [4, 6]
    with pytest.raises(OutputError, match="holds the results of a different config; use --force"):
        runner.execute(parse_config(other), out, show_progress=False)


def test_prepare_gives_one_data_per_instance_and_execute_refuses_a_mismatch(loads):
    cfg = parse_config(RAW)
    ds, _, data = runner.prepare(cfg)
    datas = runner.instance_datas(cfg, data)
    assert len(loads) == 1 and len(datas) == len(INSTANCES)
    for (n, split, alpha), d in zip(INSTANCES, datas):
        mask = np.asarray(d.shards.mask)
        assert mask.shape[:2] == (2, n)  # seeds x workers
        for s, seed in enumerate(cfg.seeds):  # each worker's real samples: the instance's split of that seed
            sizes = [len(i) for i in split_indices(ds.train_y, n, split, alpha, seed)]
            assert mask[s].sum(axis=1).tolist() == sizes
    with pytest.raises(ConfigError, match=r"a grid of 3 data instances needs one stacked data per instance"):
        runner.execute(cfg, None, show_progress=False, prepared=(ds, None, datas[0]))


def test_dry_run_and_theory_list_every_instance(loads, monkeypatch, tmp_path):
    columns, groups = plan(parse_config(RAW))
    assert len(columns) == 6 and len(groups) == len(INSTANCES)  # lr shares a program, instances do not
    for g in groups:
        assert len({tuple(columns[i][k] for k in ("split", "alpha", "n_honest")) for i in g}) == 1
    toml = tmp_path / "c.toml"
    toml.write_text('seeds = [0, 3]\nrounds = 3\nx64 = true\n[data]\nsource = "synthetic"\nsplit = "dirichlet"\n'
                    'alpha = [0.5, 1.0]\nn_honest = [4, 5]\n[problem]\nname = "LogisticRegression"\nlam = 0.01\n'
                    '[byzantine]\nf = 1\nattack = ["SignFlipping", "ALIE"]\n[aggregator]\nname = "TrMean"\n'
                    '[[algorithm]]\nname = "DGD"\nlr = 0.1\n')

    class Probe:  # what theory_probe was given: the workers of the oracle and the data's fingerprint
        def __init__(self, experiment, data, key):
            self.lines = [f"workers n = {experiment.oracle.n}",
                          f"data {fingerprint(data.shards.mask, data.shards.y)!r}"]

        def to_lines(self):
            return self.lines

    monkeypatch.setattr(byzjax.theory, "theory_probe", Probe)
    for every in (False, True):
        LOADS.clear()
        lines = runner.theory_lines(toml, every=every)
        assert len(loads) == 1
        per = 2 if every else 1  # the oracles of an instance: its two attacks
        assert len(lines) == 4 * per * 3
        for i, (n, alpha) in enumerate(itertools.product((4, 5), (0.5, 1.0))):
            for j, attack in enumerate(("SignFlipping", "ALIE")[:per]):
                header, workers, data = lines[3 * (per * i + j): 3 * (per * i + j) + 3]
                assert header == (f"[f = 1, attack = {attack}, aggregator = TrMean, split = dirichlet, "
                                  f"alpha = {alpha}, n_honest = {n}]  seed 0")
                assert workers == f"workers n = {n + 1}"
                assert data == f"data {expected_fingerprint(n, 'dirichlet', alpha, 0)!r}"


def test_instance_order_is_n_honest_then_split_alpha():
    for ns, splits in itertools.product([[3], [3, 6]], [["iid"], ["dirichlet"], ["iid", "dirichlet"]]):
        raw = copy.deepcopy(RAW)
        raw["data"] = {"source": "synthetic", "n_honest": ns, "split": splits} | (
            {"alpha": [0.5, 2.0]} if "dirichlet" in splits else {})
        cfg = parse_config(raw)
        pairs = [(s, a) for s in splits for a in ((None,) if s == "iid" else (0.5, 2.0))]
        want = [(n, s, a) for n in ns for s, a in pairs]
        assert [(d.n_honest, d.split, d.alpha) for d in cfg.data_instances] == want
        assert runner.instance_runs(cfg) == [[2 * i, 2 * i + 1] for i in range(len(want))]
