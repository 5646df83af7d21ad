"""Theory in the application: summary.csv's theory columns, the exact L* per instance, ``byzjax theory``."""

import csv

import numpy as np
import pytest
import scipy.optimize

from byzjax.app.cli import main
from byzjax.app.config import parse_config
from byzjax.app.config import build_experiment
from byzjax.app.runner import execute
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset
from byzjax.theory import proven_kappa, trace_theory
from helpers import np_logistic_loss_grad

CONFIG = """
name = "theory-app"
seeds = 2
rounds = 10
eval_every = 5
x64 = true

[data]
source = "synthetic"
split = "dirichlet"
alpha = 1.0
n_honest = 5

[problem]
name = "LogisticRegression"
lam = 1e-2

[byzantine]
f = 1
attack = ["SignFlipping"]

[aggregator]
name = "TrMean"
pre_aggs = ["NNM"]

[[algorithm]]
name = "DGD"
lr = [0.1, 0.3]
"""


def small_prepare(cfg):
    """``runner.prepare`` on a small Gaussian mixture (400 samples, 12 features, 3 classes)."""
    ds = synthetic_dataset(seed=0, n_train=400, n_test=50, num_features=12, num_classes=3, separation=1.0)
    data = stack_seeds([federated_classification(ds, cfg.data.n_honest, cfg.data.split, cfg.data.alpha, seed)
                        for seed in cfg.seeds])
    return ds, cfg.problem.build(ds), data


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    import tomllib

    out = tmp_path_factory.mktemp("theory") / "out"
    cfg = parse_config(tomllib.loads(CONFIG))
    prepared = small_prepare(cfg)
    runs, _, _ = execute(cfg, out, show_progress=False, prepared=prepared)
    summary = list(csv.DictReader(open(out / "summary.csv")))
    return cfg, prepared, runs, summary


def np_honest(x, shards, lam):
    """``L_H`` and its gradient in float64 NumPy: the mean over workers of their masked losses."""
    p, c = shards.x.shape[-1], x.size // (shards.x.shape[-1] + 1)
    values, grads = [], []
    for w in range(shards.x.shape[0]):
        keep = np.asarray(shards.mask[w]) > 0
        v, g = np_logistic_loss_grad(x, np.asarray(shards.x[w][keep], np.float64), np.asarray(shards.y[w][keep]),
                                     lam, p, c)
        values.append(v)
        grads.append(g)
    return float(np.mean(values)), np.mean(grads, axis=0)


def test_l_star_is_the_numpy_optimum_and_below_every_loss(grid):
    cfg, (_, _, data), runs, summary = grid
    for s, seed in enumerate(cfg.seeds):
        shards = type(data.shards)(*(np.asarray(a[s]) for a in data.shards))
        rows = [r for r in summary if int(r["seed"]) == seed]
        l_star = {float(r["l_star"]) for r in rows}
        assert len(l_star) == 1  # one instance per seed
        l_star = l_star.pop()
        dim = shards.x.shape[-1] * 3 + 3
        res = scipy.optimize.minimize(np_honest, np.zeros(dim), args=(shards, 1e-2), jac=True, method="L-BFGS-B",
                                      options=dict(gtol=1e-11, ftol=0.0, maxiter=5000, maxcor=30))
        g = np.linalg.norm(res.jac)
        assert g < 1e-6
        # strong convexity mu >= lam: 0 <= L(x_np) - L* <= ||grad||^2 / (2 lam)
        assert -1e-12 <= res.fun - l_star <= g**2 / (2 * 1e-2) + 1e-12
        for rid, sd, _, trace in runs:
            if sd == seed:
                assert np.all(np.asarray(trace.metrics["loss"]) >= l_star - 1e-12)
        for r in rows:
            assert float(r["gap_star"]) == pytest.approx(float(r["final_loss"]) - l_star, abs=1e-15)
            assert float(r["gap_star"]) >= float(r["final_gap"])  # l_ref (lowest loss seen) >= L*


def test_theory_columns_are_trace_theory_with_the_proven_kappa(grid):
    cfg, _, runs, summary = grid
    oracle = build_experiment(cfg.runs[0], grid[1][1], cfg.data.n_honest, cfg.rounds, cfg.eval_every).oracle
    kappa = proven_kappa(oracle.aggregator, 6, 1)
    assert kappa is not None
    by = {(int(r["run"]), int(r["seed"])): r for r in summary}
    for rid, seed, _, trace in runs:
        row = by[(rid, seed)]
        ref = trace_theory(trace.metrics, kappa, 1.0)
        assert row["kappa_source"] == "proven" and float(row["kappa"]) == pytest.approx(kappa)
        for k in ("G2_b0", "G2", "B2", "kappa_b2", "kappa_hat_max"):
            assert float(row[k]) == pytest.approx(ref[k], rel=1e-12), k
        assert row["kappa_b2_lt_1"] == str(ref["kappa_b2_lt_1"])
        mu = float(row["kappa"]) * float(row["G2"]) / (2 * float(row["floor_dgd"]) * (1 - float(row["kappa_b2"])))
        assert mu >= 1e-2 * (1 - 1e-6)  # mu of L_H at x0 is at least lam


def test_theory_command_prints_the_probe(tmp_path, capsys, monkeypatch):
    from byzjax.app import runner

    monkeypatch.setattr(runner, "prepare", small_prepare)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG.replace("seeds = 2", "seeds = 1"))
    assert main(["theory", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[f = 1, attack = SignFlipping, aggregator = ") and out[0].endswith("seed 0")
    assert out[1] == "workers n = 6, Byzantine f = 1"
    assert any(line.startswith("L* = ") for line in out)
    kappa = next(line for line in out if line.startswith("proven kappa = "))
    assert "unknown" not in kappa  # TrMean after NNM has a proven kappa
    assert out[-1].startswith("predicted ranking: ") and "DGD" in out[-1]
    floor = next(line for line in out if line.startswith("predicted D-GD floor"))
    assert float(floor.rsplit("= ", 1)[1]) >= 0


def fake_rows(rounds, seeds):
    """metrics.csv-like rows of two methods under one attack (decreasing losses)."""
    return [{"run": str(i), "seed": str(s), "attack": "SignFlipping", "method": m, "split": "iid", "alpha": "",
             "lam": "0.01", "iteration": str(t), "comm_round": str(t), "loss": str(1.0 + (1 + i + s) / (1 + t))}
            for i, m in enumerate(("D-GD(lr=0.1)", "D-NAG(lr=0.1)")) for s in range(seeds) for t in range(rounds + 1)]


@pytest.mark.parametrize("rounds, seeds", [(40, 1), (300, 2)])
def test_convergence_figure_zoom_beside_the_panel_and_the_band_it_draws(tmp_path, monkeypatch, rounds, seeds):
    from byzjax.app import plotting

    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    plotting.plot_convergence(fake_rows(rounds, seeds), tmp_path / "loss", title="t")
    axes = figs[0].axes
    text = figs[0]._suptitle.get_text()
    if rounds <= 100:  # nothing to zoom on: one panel, no inset
        assert len(axes) == 1
    else:  # a zoom beside the panel (not over it), titled with its real range
        main, zoom = axes
        assert zoom.get_position().x0 > main.get_position().x1
        assert zoom.get_title() == f"zoom: rounds 0-100 of 0-{rounds}"
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    assert ("one seed (no band)" in text) == (seeds == 1) and ("min-max" in text) == (seeds > 1)
    assert sum(len(ax.collections) for ax in axes) == (0 if seeds == 1 else 2 * len(axes))


def test_accuracy_panels_have_y_labels(tmp_path, monkeypatch):
    from byzjax.app import plotting

    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    rows = [r | {"val_acc": "0.5", "test_acc": "0.6"} for r in fake_rows(10, 1)]
    plotting.plot_accuracy(rows, tmp_path / "acc", title="t", ylim=None)
    assert [ax.get_ylabel() for ax in figs[0].axes] == ["val accuracy", "test accuracy"]
