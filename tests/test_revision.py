"""``byzjax reproduce revision --quick`` end to end on synthetic data: the stages, the AUC choices,
the tables and figures, and the resume from stored stages."""

import csv
import json

import numpy as np
import pytest

from byzjax.app import revision
from byzjax.app.cli import main
from helpers import small_synthetic


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: the protocol's stages, choices and
    files do not depend on the data's size (the full source: tests/test_reproduce.py's short --quick)."""
    with small_synthetic():
        yield


@pytest.fixture(scope="module")
def quick(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("revision") / "quick"
    assert main(["reproduce", "revision", "--quick", "--data", "synthetic", "--out", str(out), "--quiet"]) == 0
    return out


def rows(path):
    return list(csv.DictReader(open(path)))


def test_full_protocol_settings():
    s = revision.settings(quick=False)
    assert (s["n_honest"], s["fs"], s["rounds"], s["eval_every"], s["lam"], s["seeds"]) == (
        40, [0, 1, 5, 10, 20], 5000, 100, 0.01, 5)
    assert s["levels"] == [("iid", None), ("dirichlet", 0.1), ("dirichlet", 1.0), ("dirichlet", 5.0)]
    assert s["dgd_lrs"] == [0.05, 0.1, 0.2, 0.5, 1.0] and s["multipliers"] == {
        "PIGS": [5, 10, 20, 50, 100], "AEG": [0.25, 0.5, 1, 2], "prox-AEG": [0.2, 0.5, 1, 2, 5, 10, 20]}
    assert revision.grid_run_rounds(s, 5) == (5 + 16 + 4 * 4) * 4 * 5 * 5000


def test_files_and_figures(quick):
    s = revision.settings(quick=True)
    for name in ("metrics.csv", "summary.csv", "revision_steps.csv", "revision_final.csv", "reproduce.json"):
        assert (quick / name).stat().st_size > 0, name
    for split, alpha in s["levels"]:
        level = revision.level_name(split, alpha)
        for kind in ("tuning", "loss"):
            assert (quick / "figures" / f"revision_{kind}_{level}.png").stat().st_size > 5000
    final = rows(quick / "revision_final.csv")
    assert {(r["level"], int(r["f"]), r["method"]) for r in final} == {
        (revision.level_name(*lv), f, m) for lv in s["levels"] for f in s["fs"] for m in revision.FAMILIES}
    assert all(int(r["seeds"]) == s["seeds"] for r in final)


def test_candidate_grids_are_anchored_on_the_dgd_choice(quick):
    """Stage 1 tries every D-GD lr; stage 2 every multiple of the chosen lr; one selected per method."""
    s = revision.settings(quick=True)
    steps = rows(quick / "revision_steps.csv")
    log = json.loads((quick / "reproduce.json").read_text())
    for level, chosen in log["chosen_steps"].items():
        mine = [r for r in steps if r["level"] == level]
        got = {m: sorted(float(r["step"]) for r in mine if r["method"] == m) for m in revision.FAMILIES}
        assert got["D-GD"] == s["dgd_lrs"]
        for fam, mult in s["multipliers"].items():
            assert got[fam] == pytest.approx(sorted(m * chosen["D-GD"] for m in mult))
        for fam in revision.FAMILIES:
            sel = [r for r in mine if r["method"] == fam and r["selected"] == "True"]
            assert len(sel) == 1 and float(sel[0]["step"]) == pytest.approx(chosen[fam])


def test_choice_is_the_lowest_auc_of_the_f0_curves_in_metrics(quick):
    """Recomputed from metrics.csv: per level and method, the chosen step has the lowest mean over
    seeds of the mean training loss over the iterations (non-finite curves dropped)."""
    metrics = [r for r in rows(quick / "metrics.csv") if r["stage"].startswith("tuning") and r["loss"]]
    curves = {}
    for r in metrics:
        curves.setdefault((r["level"], r["family"], float(r["step"]), r["seed"]), []).append(float(r["loss"]))
    log = json.loads((quick / "reproduce.json").read_text())
    for level, chosen in log["chosen_steps"].items():
        for fam in revision.FAMILIES:
            score = {}
            for (lv, fm, step, _), loss in curves.items():
                if lv == level and fm == fam and np.all(np.isfinite(loss)):
                    score.setdefault(step, []).append(np.mean(loss))
            best = min(score, key=lambda st: (np.mean(score[st]), st))
            assert best == pytest.approx(chosen[fam]), (level, fam)


def test_attacked_runs_use_the_tuned_steps_and_every_f(quick):
    s = revision.settings(quick=True)
    log = json.loads((quick / "reproduce.json").read_text())
    grid = [r for r in rows(quick / "summary.csv") if r["stage"] == "grid"]
    assert {int(r["f"]) for r in grid} == {f for f in s["fs"] if f > 0}
    for r in grid:
        assert float(r["step"]) == pytest.approx(log["chosen_steps"][r["level"]][r["family"]])
        assert r["attack"] == "Optimal_ALittleIsEnough" and r["aggregator"] == "Huber"
    assert log["run_rounds_per_s"] > 0


def test_rerun_resumes_from_the_stages(quick, capsys):
    before = (quick / "revision_final.csv").read_text()
    capsys.readouterr()
    assert main(["reproduce", "revision", "--quick", "--data", "synthetic", "--out", str(quick), "--quiet"]) == 0
    n = 3 * len(revision.settings(quick=True)["levels"])
    assert f"resuming: {n} of {n} stages done (nothing to compute)" in capsys.readouterr().out
    assert (quick / "revision_final.csv").read_text() == before
    assert json.loads((quick / "reproduce.json").read_text())["stages_computed"] == 0


def test_short_long_options_are_refused_for_revision(tmp_path, capsys):
    assert main(["reproduce", "revision", "--steps", "paper", "--out", str(tmp_path / "r")]) == 2
    assert "byzjax: error: command line: reproduce revision tunes its steps" in capsys.readouterr().err
    assert main(["reproduce", "revision", "--stored-only", "--out", str(tmp_path / "r")]) == 2
    assert "--stored-only applies to reproduce short|long only" in capsys.readouterr().err
