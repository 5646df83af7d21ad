"""The convergence figure's predicted floors: drawn where they fall among the curves, named in the
panel title when far above them (so that a vacuous bound never squashes the curves), legend below the panels."""

import numpy as np

from byzjax.app import plotting
from byzjax.app.results import instance_key


def cell_rows(curves: dict, attack="Optimal_ALittleIsEnough", l_star=0.5):
    return [{"run": str(i), "seed": "0", "stage": "attacked", "f": "5", "attack": attack, "method": m,
             "split": "dirichlet", "alpha": "1.0", "lam": "0.001", "n_honest": "20", "iteration": str(t),
             "comm_round": str(t), "loss": repr(float(l_star + g))}
            for i, (m, gaps) in enumerate(curves.items()) for t, g in enumerate(gaps)]


def test_a_floor_above_the_curves_is_a_note_not_a_line(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    rng = np.random.default_rng(0)
    for _ in range(5):
        top = 10 ** rng.uniform(-1, 1)
        curves = {"D-GD(lr=0.03)": np.geomspace(top, top * 1e-2, 20), "PIGS(eta=1.5)": np.geomspace(top, top * 1e-3, 20)}
        inside = top * 10 ** rng.uniform(-2.5, -0.5)
        far = top * 10 ** rng.uniform(3, 6)
        rows = cell_rows(curves)
        floors = {("Optimal_ALittleIsEnough", "D-GD(lr=0.03)"): inside, ("Optimal_ALittleIsEnough", "PIGS(eta=1.5)"): far}
        plotting.plot_convergence(rows, tmp_path / "loss", {instance_key(rows[0], "0"): 0.5}, "t", level_name="L^*",
                                  floors=floors)
        fig = figs.pop()
        ax = fig.axes[0]
        dotted = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
        assert len(dotted) == 1 and np.allclose(dotted[0].get_ydata(), inside)
        lo, hi = ax.get_ylim()
        assert hi < far and lo <= top * 1e-3 and hi >= top  # the axis is the curves' range
        assert not ax.texts and f"above the axis: PIGS(eta=1.5): {far:.3g}" in ax.get_title()  # nothing over the curves
        assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1  # below, not over a panel
        assert "PIGS(eta=1.5): predicted D-GD floor" not in [t.get_text() for t in fig.legends[0].get_texts()]


def test_legend_orders_methods_by_family_then_by_their_numbers(tmp_path, monkeypatch):
    """D-GD, D-NAG, then the others; a step grid in numeric order (eta = 2 before 16), whatever the
    order of the rows."""
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    ordered = ["D-GD(lr=1e-3)", "D-GD(lr=0.03)", "D-NAG(lr=0.03,momentum=0.9)", "PIGS(eta=1), paper grid",
               "PIGS(eta=1.5)", "PIGS(eta=2), paper grid", "PIGS(eta=16), paper grid", "PIGS(eta=32), paper grid"]
    rng = np.random.default_rng(1)
    for _ in range(3):
        shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
        rows = cell_rows({m: np.geomspace(1.0, 0.1 * (1 + i), 10) for i, m in enumerate(shuffled)})
        plotting.plot_convergence(rows, tmp_path / "loss", {instance_key(rows[0], "0"): 0.5}, "t", level_name="L^*")
        assert [t.get_text() for t in figs.pop().legends[0].get_texts()] == ordered
