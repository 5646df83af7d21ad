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


def cell_rows(curves: dict, f="5", split="dirichlet", alpha="1.0", attack="Optimal_ALittleIsEnough", l_star=0.5):
    """metrics.csv-like attacked rows, one seed: ``curves`` = method label -> gaps over rounds 0..T
    (the algorithm column is the label's name without its dash: "D-GD(lr=0.03)" -> "DGD")."""
    return [{"run": str(i), "seed": "0", "stage": "attacked", "f": f, "attack": attack, "method": m,
             "algorithm": m.split("(")[0].replace("-", ""), "split": split,
             "alpha": alpha, "lam": "0.001", "n_honest": "20", "iteration": str(t), "comm_round": str(t),
             "loss": repr(float(l_star + g))} for i, (m, gaps) in enumerate(curves.items()) for t, g in enumerate(gaps)]


def test_gap_table_rounds_to_1_1x_the_cells_lowest_gap_lowest_and_final_gaps():
    """Per method: lowest gap and round, final gap, rounds to 1.1 x the lowest gap of ANY method of
    the cell (blank if never), speed-up = D-GD's rounds / the method's; random curves, checked
    against a direct NumPy evaluation."""
    from byzjax.app.reproduce import gap_table
    from byzjax.app.results import instance_key

    rng = np.random.default_rng(0)
    for _ in range(20):
        curves = {m: np.exp(np.cumsum(rng.normal(-0.05, 0.3, size=30))) for m in
                  ("D-GD(lr=0.03)", "D-NAG(lr=0.03,momentum=0.9)", "PIGS(eta=1.5)")}
        rows = cell_rows(curves)
        levels = {instance_key(rows[0], "0"): 0.5}
        table = gap_table(rows, levels)
        target = 1.1 * min(g.min() for g in curves.values())
        reach = {m: (np.flatnonzero(g <= target)[:1].tolist() or [None])[0] for m, g in curves.items()}
        assert [r["method"] for r in table] == list(curves)
        for r in table:
            g = curves[r["method"]]
            assert float(r["lowest_gap"]) == pytest.approx(g.min(), rel=1e-3)
            assert r["lowest_gap_round"] == int(np.argmin(g)) and float(r["final_gap"]) == pytest.approx(g[-1], rel=1e-3)
            assert float(r["target_gap"]) == pytest.approx(target, rel=1e-3)
            mine, gd = reach[r["method"]], reach["D-GD(lr=0.03)"]
            assert r["rounds_to_target"] == ("" if mine is None else mine)
            want = f"{gd / mine:.2f}" if mine and gd else ""
            assert r["speedup_over_dgd"] == want
        assert any(r["rounds_to_target"] != "" for r in table)  # the best method reaches its own minimum


def test_convergence_figure_draws_the_predicted_floor_per_method(tmp_path, monkeypatch):
    from byzjax.app import plotting
    from byzjax.app.results import instance_key

    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    rows = cell_rows({"D-GD(lr=0.03)": np.geomspace(1, 1e-2, 20), "PIGS(eta=1.5)": np.geomspace(1, 1e-3, 20)})
    floors = {("Optimal_ALittleIsEnough", "D-GD(lr=0.03)"): 0.02, ("Optimal_ALittleIsEnough", "PIGS(eta=1.5)"): np.inf}
    plotting.plot_convergence(rows, tmp_path / "loss", {instance_key(rows[0], "0"): 0.5}, "t", level_name="L^*",
                              floors=floors)
    ax = figs[0].axes[0]
    flat = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert len(flat) == 1 and np.allclose(flat[0].get_ydata(), 0.02)  # the infinite floor is not drawn
    assert ax.get_ylabel() == "$L_H(x_t) - L^*$" and "$L^*$ = 0.5" in figs[0]._suptitle.get_text()


def test_diagnostic_figure_shows_error_against_the_bound_and_kappa_hat(tmp_path):
    """The bound drawn is trace_theory's per round; the ratio in the title is its maximum."""
    from byzjax.app import plotting

    rng = np.random.default_rng(1)
    spread, gn = rng.uniform(0.5, 2, 30), rng.uniform(0.1, 3, 30)
    error = np.sqrt(0.3 * spread * rng.uniform(0.2, 1, 30))
    rows = [{"iteration": str(t), "comm_round": str(t), "error": repr(float(error[t])), "spread": repr(float(spread[t])),
             "grad_norm": repr(float(gn[t])), "kappa_hat": repr(float(error[t] ** 2 / spread[t]))} for t in range(30)]
    plotting.plot_diagnostics(rows, tmp_path / "diag", kappa=0.6, mu=0.1, title="t")
    assert (tmp_path / "diag.png").stat().st_size > 0 and (tmp_path / "diag.pdf").stat().st_size > 0
    ref = trace_theory({"error": error, "spread": spread, "grad_norm": gn, "kappa_hat": error**2 / spread}, 0.6, 0.1)
    assert np.all(ref["bound_ratio"] <= 1 + 1e-12)  # kappa_hat <= 0.3 < 0.6: every round under its bound
