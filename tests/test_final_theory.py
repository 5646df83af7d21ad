"""L and mu at each run's final point (``runner.final_theory``, ``theory.final_constants``): closed forms
on quadratics, a NumPy float64 Hessian on a small logistic problem, NaN for non-finite parameters, the
on-disk cache (written, reused without a measurement, a damaged file measured again) and the
summary.csv columns of ``byzjax run`` (kept when a grid resumes)."""

import json
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import byzjax.images
import byzjax.theory
from byzjax.app import runner
from byzjax.app.config import parse_config
from byzjax.app.results import FINAL_THEORY_COLUMNS, SUMMARY_MEASURES, FinalTheory, read_table, stored_finals
from byzjax.data import FederatedData, Shards, synthetic_dataset
from byzjax.problems import LogisticRegression, make_quadratic
from byzjax.simulate import Trace

CONFIG = """
seeds = [0, 1]
[data]
source = "synthetic"
n_honest = 3
[problem]
name = "LogisticRegression"
[byzantine]
f = 0
[aggregator]
name = "Average"
[[algorithm]]
name = "DGD"
"""
P, C, LAM = 4, 3, 0.05  # features, classes, ridge of the small logistic problem (d = (P + 1) C = 15)


@pytest.fixture
def counted(monkeypatch):
    """Fresh in-memory caches; the distinct points of every ``_constants_at_points`` call counted (a
    block is padded to a power of two by repeating its first point)."""
    monkeypatch.setattr(runner, "_FINAL_CACHE", {})
    monkeypatch.setattr(runner, "_INSTANCE_CACHE", {})
    rows, real = [], byzjax.theory._constants_at_points

    def counting(problem, shards, xs, key, iters, rtol):
        if not isinstance(xs, jax.core.Tracer):  # constants_at calls it inside its own jit
            rows.append(len(np.unique(np.asarray(xs), axis=0)))
        return real(problem, shards, xs, key, iters, rtol)

    monkeypatch.setattr(byzjax.theory, "_constants_at_points", counting)
    return rows


def fake_runs(params, seeds=(0, 1)):
    """``(run id, seed, columns, trace)`` with the given final parameters ``params[run][seed]``."""
    return [(r, seed, {"method": "m"}, Trace({}, {}, np.zeros(0, int), np.asarray(x)))
            for r, per_seed in enumerate(params) for seed, x in zip(seeds, per_seed)]


def logistic_instance(rng, seeds=2, workers=3, m=12):
    """Random shards (seed axis first) with padded samples (mask 0) in every worker."""
    x = rng.standard_normal((seeds, workers, m, P))
    y = rng.integers(0, C, (seeds, workers, m))
    mask = (rng.random((seeds, workers, m)) < 0.75).astype(float)
    mask[..., 0] = 1.0
    return LogisticRegression(num_features=P, num_classes=C, lam=LAM), FederatedData(Shards(x, y, mask), {})


def numpy_hessian(x, shards) -> np.ndarray:
    """Float64 Hessian of ``L_H = (1/n) sum_i (1/m_i) sum_j CE_j + (lam/2)||x||^2``: per sample
    ``kron(a a^T, diag(p) - p p^T)`` with ``a = (features, 1)`` (the layout ``W.ravel(), b``)."""
    w, b = x[: P * C].reshape(P, C), x[P * C:]
    h = np.zeros((x.size, x.size))
    for feats, mask in zip(shards.x, shards.mask):
        hw = np.zeros_like(h)
        for a, real in zip(feats, mask):
            z = a @ w + b
            p = np.exp(z - z.max())
            p /= p.sum()
            aa = np.append(a, 1.0)
            hw += real * np.kron(np.outer(aa, aa), np.diag(p) - np.outer(p, p))
        h += hw / mask.sum()
    return h / len(shards.x) + LAM * np.eye(x.size)


def test_quadratic_final_constants_are_the_closed_form_without_a_power_step(counted):
    cfg = parse_config(tomllib.loads(CONFIG))
    rng = np.random.default_rng(0)
    for seed in range(3):
        problem, data, info = make_quadratic(3, 5, mu=0.5, L=20.0, hessian_spread=0.7, seed=seed)
        stacked = FederatedData(jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * 2), data.shards), {})
        keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
        points = [[rng.standard_normal(5) * 10, rng.standard_normal(5)], [np.full(5, np.nan), info["x_star"]]]
        got = runner.final_theory(cfg, problem, stacked, keys, fake_runs(points))
        eig = np.linalg.eigvalsh(np.asarray(data.shards.a, np.float64).mean(axis=0))
        for k in [(0, 0), (0, 1), (1, 1)]:
            assert got[k].L_final == pytest.approx(eig[-1], rel=1e-12) == pytest.approx(info["L"], rel=1e-10)
            assert got[k].mu_final == pytest.approx(eig[0], rel=1e-12) == pytest.approx(info["mu"], rel=1e-10)
        assert np.isnan(got[(1, 0)].L_final) and np.isnan(got[(1, 0)].mu_final)
    assert counted == []  # a constant Hessian costs no power iteration


def test_logistic_final_L_is_the_top_hessian_eigenvalue_and_mu_is_lam(counted):
    cfg = parse_config(tomllib.loads(CONFIG))
    rng = np.random.default_rng(1)
    problem, data = logistic_instance(rng)
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    scales = [0.0, 0.3, 1.0, 3.0]  # at 0 the softmax is uniform; far out it saturates (small L)
    points = [[s * rng.standard_normal(problem.dim) for _ in cfg.seeds] for s in scales]
    got = runner.final_theory(cfg, problem, data, keys, fake_runs(points))
    assert counted == [4, 4]  # one block of every run per seed
    for r, per_seed in enumerate(points):
        for s, (seed, x) in enumerate(zip(cfg.seeds, per_seed)):
            shards = jax.tree.map(lambda a: np.asarray(a[s]), data.shards)
            top = np.linalg.eigvalsh(numpy_hessian(x, shards))[-1]
            L = got[(r, seed)].L_final
            assert top * (1 - 1e-5) <= L <= top * (1 + 1e-10), (r, seed, L, top)  # a Rayleigh quotient: from below
            assert got[(r, seed)].mu_final == LAM
            # 300 fixed power steps from the same start vector give the same number (the early stop
            # loses nothing), and constants_at (L_x0's estimator) is the same estimator
            loss = byzjax.theory.honest_loss(problem, shards)
            L300 = byzjax.theory.smoothness(loss, jnp.asarray(x), jax.random.fold_in(keys[s], 7), 300)
            assert L == pytest.approx(float(L300), rel=1e-6)
    at_x = [float(v) for v in byzjax.theory.constants_at(problem, shards, jnp.asarray(x), jax.random.fold_in(keys[s], 7))[:2]]
    assert at_x == pytest.approx([L, LAM], rel=1e-12)


def test_non_finite_final_params_get_nan_without_a_measurement(counted):
    cfg = parse_config(tomllib.loads(CONFIG))
    rng = np.random.default_rng(2)
    problem, data = logistic_instance(rng)
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    good = rng.standard_normal(problem.dim)
    bad = [good.copy() for _ in range(3)]
    bad[0][3], bad[1][0], bad[2][-1] = np.nan, np.inf, -np.inf
    points = [[bad[0], good], [bad[1], bad[2]]]
    got = runner.final_theory(cfg, problem, data, keys, fake_runs(points))
    assert counted == [1]  # only seed 1's finite point
    for k in [(0, 0), (1, 0), (1, 1)]:
        assert np.isnan(got[k].L_final) and np.isnan(got[k].mu_final)
    assert np.isfinite(got[(0, 1)].L_final) and got[(0, 1)].mu_final == LAM
    # a problem without instance theory (not strongly convex) gets nothing, at no cost
    flat = LogisticRegression(num_features=P, num_classes=C, lam=0.0)
    assert runner.final_theory(cfg, flat, data, keys, fake_runs(points)) == {} and counted == [1]


def test_the_cache_is_written_reused_and_remeasured_when_damaged(counted, tmp_path, monkeypatch):
    cfg = parse_config(tomllib.loads(CONFIG))
    rng = np.random.default_rng(3)
    problem, data = logistic_instance(rng)
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    x = [rng.standard_normal(problem.dim) for _ in range(4)]
    points = [[x[0], x[1]], [x[2], x[1]], [x[0], x[3]]]  # run 2 seed 0 repeats run 0's point: measured once
    first = runner.final_theory(cfg, problem, data, keys, fake_runs(points), cache_dir=tmp_path)
    assert counted == [2, 2] and first[(2, 0)] == first[(0, 0)]
    files = sorted(tmp_path.glob("final-*.json"))
    assert len(files) == 2  # one per instance (seed)
    stored = {h: v for f in files for h, v in json.loads(f.read_text())["points"].items()}
    assert sorted(stored) == sorted(runner.params_digest(v) for v in x)
    for k, v in first.items():
        assert stored[runner.params_digest(points[k[0]][cfg.seeds.index(k[1])])] == list(v)
    # another process (empty memory) reads the files: nothing measured, the same numbers
    monkeypatch.setattr(runner, "_FINAL_CACHE", {})
    assert runner.final_theory(cfg, problem, data, keys, fake_runs(points), cache_dir=tmp_path) == first
    assert counted == [2, 2]
    # a new final point is measured alone and added to its instance's file
    new = rng.standard_normal(problem.dim)
    more = runner.final_theory(cfg, problem, data, keys, fake_runs(points + [[new, x[1]]]), cache_dir=tmp_path)
    assert counted == [2, 2, 1] and {k: more[k] for k in first} == first
    assert sum(len(json.loads(f.read_text())["points"]) for f in files) == 5
    # a damaged file is measured again (its instance's points only) and rewritten
    monkeypatch.setattr(runner, "_FINAL_CACHE", {})
    (seed0,) = [f for f in files if runner.params_digest(new) in f.read_text()]
    seed0.write_text('{"version": 1, "iters": 300, "points": {"ab')
    again = runner.final_theory(cfg, problem, data, keys, fake_runs(points + [[new, x[1]]]), cache_dir=tmp_path)
    assert counted == [2, 2, 1, 3] and again == more  # seed 0's three distinct points; seed 1 read back
    assert len(json.loads(seed0.read_text())["points"]) == 3


def test_byzjax_run_writes_the_columns_and_a_resumed_grid_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_FINAL_CACHE", {})
    monkeypatch.setattr(byzjax.images, "load_source", lambda source, **kw: synthetic_dataset(
        seed=0, n_train=150, n_test=20, num_features=6, num_classes=3, separation=1.0))
    monkeypatch.setattr(byzjax.theory, "optimum_and_constants", lambda problem, shards, x0, key: (  # not tested here
        byzjax.theory.ReferenceOptimum(np.zeros(problem.dim), 0.5, 0.0), (2.0, 0.1, 1.0), (1.0, 0.1, 1.0)))
    raw = tomllib.loads(CONFIG)
    raw |= {"rounds": 3, "x64": True, "eval_every": 3}
    raw["problem"]["lam"] = 0.1
    raw["algorithm"] = [{"name": "DGD", "lr": [0.1, 1e300]}]  # the second one overflows: non-finite final params
    cfg = parse_config(raw)
    out = tmp_path / "out"
    runs, _, _ = runner.execute(cfg, out, show_progress=False)
    rows = read_table(out / "summary.csv")
    assert {c for c in FINAL_THEORY_COLUMNS} <= set(rows[0]) and set(FINAL_THEORY_COLUMNS) <= SUMMARY_MEASURES
    _, problem, data = runner.prepare(cfg)
    by = {(rid, seed): tr for rid, seed, _, tr in runs}
    keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
    for r in rows:
        rid, seed = int(r["run"]), int(r["seed"])
        x = np.asarray(by[(rid, seed)].final_params)
        if not np.all(np.isfinite(x)):
            assert r["L_final"] == r["mu_final"] == "nan"
            continue
        s = cfg.seeds.index(seed)
        shards = jax.tree.map(lambda a: a[s], data.shards)
        L, _, _ = byzjax.theory.constants_at(problem, shards, jnp.asarray(x), jax.random.fold_in(keys[s], 7))
        assert float(r["L_final"]) == pytest.approx(float(L), rel=1e-6) and float(r["mu_final"]) == 0.1
    assert sum(r["L_final"] == "nan" for r in rows) == 2  # the diverged run, both seeds
    assert len(list((out / "instances").glob("final-*.json"))) == 2
    # resumed (every run read back from metrics.csv, no final parameters there): the columns are kept
    back = stored_finals(out)
    assert sorted(back) == sorted((int(r["run"]), int(r["seed"])) for r in rows)
    assert all(isinstance(v, FinalTheory) for v in back.values())
    assert {k: repr(tuple(v)) for k, v in back.items()} == \
        {(int(r["run"]), int(r["seed"])): repr((float(r["L_final"]), float(r["mu_final"]))) for r in rows}
    _, _, meta = runner.execute(cfg, out, show_progress=False)
    assert meta["resumed_runs"] == 2 and meta["programs"] == 0
    again = read_table(out / "summary.csv")
    assert [(r["L_final"], r["mu_final"]) for r in again] == [(r["L_final"], r["mu_final"]) for r in rows]


def test_reproduce_measures_each_stored_final_point_once_and_keeps_it_in_the_stages_folder(counted, tmp_path,
                                                                                            monkeypatch):
    from byzjax.app.reproduce import split_theory

    monkeypatch.setattr(byzjax.images, "load_source", lambda source, **kw: synthetic_dataset(
        seed=0, n_train=150, n_test=20, num_features=P, num_classes=C, separation=1.0))
    monkeypatch.setattr(byzjax.theory, "optimum_and_constants", lambda problem, shards, x0, key: (
        byzjax.theory.ReferenceOptimum(np.zeros(problem.dim), 0.5, 0.0), (2.0, LAM, 1.0), (1.0, LAM, 1.0)))
    raw = tomllib.loads(CONFIG) | {"rounds": 2, "x64": True}
    raw["problem"]["lam"] = LAM
    cfg = parse_config(raw)
    prepared = runner.prepare(cfg)
    rng = np.random.default_rng(4)
    points = [[rng.standard_normal(prepared[1].dim) for _ in cfg.seeds] for _ in range(3)]
    runs = [(r + 10, seed, cols, tr) for r, seed, cols, tr in fake_runs(points)]  # run ids after an offset
    kappas, instances, finals = {}, {}, {}
    split_theory(prepared, [(cfg, 10)], kappas, instances, tmp_path, runs, finals)
    assert sorted(finals) == sorted((r, s) for r, s, _, _ in runs) and counted == [3, 3]
    assert all(v.mu_final == LAM and v.L_final > LAM for v in finals.values())
    assert len(list(tmp_path.glob("final-*.json"))) == len(list(tmp_path.glob("instance-*.json"))) == 2
    monkeypatch.setattr(runner, "_FINAL_CACHE", {})  # a rerun in another process: read from the folder
    again = {}
    split_theory(prepared, [(cfg, 10)], {}, {}, tmp_path, runs, again)
    assert again == finals and counted == [3, 3]
