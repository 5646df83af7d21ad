"""``byzjax reproduce short --quick`` on synthetic data: files, properties, table consistency."""

import csv
import json
import shutil
from collections import defaultdict

import numpy as np
import pytest

from byzjax.app.cli import main
from helpers import small_synthetic

ROUNDS_COLUMNS = ["f", "split", "attack", "method", "steps", "rounds_1e-2", "rounds_1e-3", "speedup_1e-2", "speedup_1e-3"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "short"
    assert main(["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(out), "--quiet"]) == 0
    return out


def rows(path):
    return list(csv.DictReader(open(path)))


def test_files_exist_and_are_well_formed(quick):
    for name in ("metrics.csv", "summary.csv", "short_rounds.csv", "short_floor.csv", "config.json", "reproduce.json"):
        assert (quick / name).stat().st_size > 0, name
    for stem in ("loss_short_f1_iid", "accuracy_short_f1_iid"):
        for ext in ("png", "pdf"):
            assert (quick / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    table = rows(quick / "short_rounds.csv")
    assert list(table[0]) == ROUNDS_COLUMNS
    assert {r["attack"] for r in table} == {"Optimal IPM", "Optimal ALIE"}
    assert {r["method"].split("(")[0] for r in table} == {"D-GD", "D-NAG", "PIGS"}
    metrics = rows(quick / "metrics.csv")
    attacked = [r for r in metrics if r["stage"] == "attacked"]
    assert {int(r["iteration"]) for r in attacked} == set(range(21))
    assert all(np.isfinite(float(r["loss"])) for r in metrics if r["loss"])
    smooth = json.loads((quick / "reproduce.json").read_text())["smoothness"]["iid"]  # reported next to the steps
    assert smooth["L_at_init"] > 0 and smooth["2/L"] == pytest.approx(2 / smooth["L_at_init"], rel=1e-3)


def test_nesterov_below_gd_without_attack(quick):
    """Same lr, f = 0, no attack: D-NAG's training loss is below D-GD's after the same rounds."""
    final = {}
    for r in rows(quick / "metrics.csv"):
        if r["f"] == "0" and r["loss"] and r["method"].startswith(("D-GD", "D-NAG")):
            lr = r["lr"]
            final[(r["method"][:4], lr, int(r["iteration"]))] = float(r["loss"])
    last = max(t for *_, t in final)
    lrs = {lr for _, lr, _ in final}
    assert len(lrs) == 4
    for lr in lrs:
        for t in (10, last):
            assert final[("D-NA", lr, t)] < final[("D-GD", lr, t)], (lr, t)


def test_rounds_table_agrees_with_metrics(quick):
    metrics = [r for r in rows(quick / "metrics.csv") if r["stage"] in ("attacked", "reference") and r["loss"]]
    inst = lambda r: (r["split"], r["alpha"], r["lam"], r["seed"])  # noqa: E731 (one L_H per split and seed)
    l_ref = defaultdict(lambda: np.inf)
    for r in metrics:
        l_ref[inst(r)] = min(l_ref[inst(r)], float(r["loss"]))
    series = defaultdict(list)
    for r in metrics:
        if r["stage"] == "attacked":
            series[(r["attack"], r["method"])].append((int(r["comm_round"]), float(r["loss"]) - l_ref[inst(r)]))
    names = {"Optimal_InnerProductManipulation": "Optimal IPM", "Optimal_ALittleIsEnough": "Optimal ALIE"}
    checked = 0
    for row in rows(quick / "short_rounds.csv"):
        key = next(k for k in series if names[k[0]] == row["attack"] and k[1] == row["method"])
        pts = sorted(series[key])
        for tag, gap in (("1e-2", 1e-2), ("1e-3", 1e-3)):
            hit = [c for c, g in pts if g <= gap]
            assert row[f"rounds_{tag}"] == (str(hit[0]) if hit else "")
            checked += 1
        gd = next(r for r in rows(quick / "short_rounds.csv") if r["attack"] == row["attack"] and r["method"].startswith("D-GD"))
        if row["rounds_1e-2"] and gd["rounds_1e-2"] and int(row["rounds_1e-2"]) > 0:
            assert float(row["speedup_1e-2"]) == pytest.approx(int(gd["rounds_1e-2"]) / int(row["rounds_1e-2"]), abs=0.01)
    assert checked == 12


def test_rerun_resumes_from_finished_stages(quick, capsys):
    before = (quick / "metrics.csv").read_text()
    stages = sorted(p.name for p in (quick / "stages").glob("*.json") if not p.name.startswith(("instance-", "final-")))
    assert len(stages) == 4  # tuning lr grid, tuning eta grid, two (f, attack) chunks
    instances = sorted(p.name for p in (quick / "stages").glob("instance-*.json"))
    assert len(instances) == 1  # one split, one seed: its L*, L, mu and delta, measured once
    finals = sorted(p.name for p in (quick / "stages").glob("final-*.json"))
    assert len(finals) == 1  # the same instance: L and mu at every run's final point
    assert sorted(p.name for p in (quick / "stages").iterdir()) == sorted(
        [n for s in stages for n in (s, s.replace(".json", ".npz"))] + instances + finals)  # data only: no pickle
    (quick / "metrics.csv").unlink()
    capsys.readouterr()
    assert main(["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(quick), "--quiet"]) == 0
    assert (quick / "metrics.csv").read_text() == before
    assert "resuming: 4 of 4 stages done (nothing to compute)" in capsys.readouterr().out
    log = json.loads((quick / "reproduce.json").read_text())
    assert log["stages_computed"] == 0 and log["compile_s"] == 0.0 and log["wall_s"] > 0


def test_damaged_stages_are_recomputed_with_a_warning(quick, tmp_path, capsys):
    """The lr tuning stage with a pickle in place of its record, the PIGS tuning stage with a truncated
    .npz (the other damages: test_files.py; the two cheapest stages): one rerun recomputes both (same
    results, so the same attacked stages are loaded) with a warning for each, and nothing from the
    pickle is executed."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("code from a stage file was executed",))

    out = tmp_path / "short"
    shutil.copytree(quick / "stages", out / "stages")

    def methods(npz):
        record = json.loads(npz.with_suffix(".json").read_text())
        return {cols["method"].split("(")[0] for _, _, cols in record["meta"]["runs"]}

    stems = {frozenset(methods(p)): p for p in (out / "stages").glob("reference-*.npz")}
    pickled, truncated = stems[frozenset({"D-GD", "D-NAG"})], stems[frozenset({"PIGS"})]
    pickled.with_suffix(".json").unlink()
    pickled.with_suffix(".pkl").write_bytes(pickle.dumps(Boom()))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"stage {truncated.stem} is damaged" in captured.err
    assert f"stage {pickled.stem} is incomplete" in captured.err
    assert captured.err.count("recomputing it") == 2
    assert json.loads((out / "reproduce.json").read_text())["stages_computed"] == 2
    assert (out / "metrics.csv").read_text() == (quick / "metrics.csv").read_text()


def test_paper_eta_grid_under_attack_adds_one_stage_per_eta(quick, tmp_path, capsys, monkeypatch):
    """``--steps tuned+grid`` on the stored tuned stages: in every attacked cell PIGS runs once per eta
    of the paper's grid, each a stage of its own (an interrupted grid keeps its finished runs), as
    rows with ``steps = paper grid``; the tuned rows are unchanged, and the gap table's target is
    1.1 x the lowest gap of every row of the cell, grid rows included."""
    import byzjax.app.reproduce as reproduce

    etas, settings = [4.0, 1.0], reproduce.settings  # two of the paper's six: the same code path, a third of the time
    monkeypatch.setattr(reproduce, "settings", lambda *a, **k: settings(*a, **k) | {"paper_etas": etas})
    monkeypatch.setattr(reproduce, "plot_diagnostics", lambda *a, **k: None)  # per-run figures: tests/test_theory_app.py
    out = tmp_path / "short"
    shutil.copytree(quick / "stages", out / "stages")
    capsys.readouterr()
    args = ["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(out), "--quiet", "--steps", "tuned+grid"]
    assert main(args + ["--stored-only"]) == 0  # the grid's stages are not stored yet: left out, named, not computed
    said = capsys.readouterr().out
    assert f"stored only: 4 of {4 + 2 * len(etas)} stages stored; {2 * len(etas)} not computed yet" in said
    assert said.count("attacked-iid-") == 2 * len(etas)
    assert not [r for r in rows(out / "summary.csv") if r.get("steps") == "paper grid"]
    assert rows(out / "summary.csv") == rows(quick / "summary.csv")
    assert main(args) == 0
    assert f"resuming: 4 of {4 + 2 * len(etas)} stages done" in capsys.readouterr().out
    summary = rows(out / "summary.csv")
    grid = [r for r in summary if r["steps"] == "paper grid"]
    assert sorted((r["attack"], float(r["eta"])) for r in grid) == sorted(
        (a, e) for a in ("Optimal_ALittleIsEnough", "Optimal_InnerProductManipulation") for e in etas)
    assert {(r["algorithm"], r["stage"], r["f"]) for r in grid} == {("PIGS", "attacked", "1")}

    def curves(folder, keep):
        return {(r["stage"], r["attack"], r["method"], r["iteration"]): r["loss"]
                for r in rows(folder / "metrics.csv") if keep(r)}

    assert curves(out, lambda r: r["steps"] != "paper grid") == curves(quick, lambda r: True)
    gaps = rows(out / "short_gaps.csv")
    for attack in ("Optimal IPM", "Optimal ALIE"):
        cell = [r for r in gaps if r["attack"] == attack]
        assert sum(r["steps"] == "paper grid" for r in cell) == len(etas)
        lowest = min(float(r["lowest_gap"]) for r in cell)
        assert all(float(r["target_gap"]) == pytest.approx(1.1 * lowest, rel=1e-3) for r in cell)
    assert sum(r["steps"] == "paper grid" for r in rows(out / "short_rounds.csv")) == 2 * len(etas)
    assert main(args) == 0
    assert f"resuming: {4 + 2 * len(etas)} of {4 + 2 * len(etas)} stages done (nothing to compute)" in capsys.readouterr().out
    assert main(["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(tmp_path / "empty"), "--quiet",
                 "--stored-only"]) == 2  # nothing stored: the tuning stage is named, nothing is written
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stored-only: stage reference-iid-" in err and "is not stored" in err
    assert not (tmp_path / "empty" / "summary.csv").exists()


def test_stage_cache_says_where_it_resumes(tmp_path, monkeypatch, capsys):
    """Stages found stored are loaded, the rest computed and stored; before the first one computed
    after loading some it prints "resuming: k of N stages done" (once), and "(nothing to compute)"
    only when every stage was loaded. ``execute`` is a stub: no program is compiled."""
    import byzjax.app.reproduce as rp

    stored, computed, saved = {}, [], []
    monkeypatch.setattr(rp, "find_stage", lambda stem: stored.get(stem.name.split("-")[0]))
    monkeypatch.setattr(rp, "prepare", lambda cfg, source: "prepared")
    monkeypatch.setattr(rp, "save_stage", lambda stem, *a: saved.append(stem.name.split("-")[0]))

    def execute(cfg, out, show_progress, prepared):
        computed.append(cfg.name)
        return [], {}, {"compile_s": 1.5, "run_s": 2.0}

    monkeypatch.setattr(rp, "execute", execute)

    def raw(name):
        return rp._raw(name, "iid", None, 1e-3, 3, 1, [0], ["NoAttack"], [{"name": "DGD"}], {"name": "Average"},
                       1, False, None)

    for loaded in ([], ["a"], ["a", "b"], ["a", "b", "c"]):
        stored = {name: ([], {}, {}) for name in loaded}
        computed.clear()
        saved.clear()
        cache = rp.StageCache(tmp_path, "synthetic", 3, show_progress=False)
        capsys.readouterr()
        for name in "abc":
            cache.run(name, "iid", raw(name))
        cache.finish()
        out = capsys.readouterr().out
        assert computed == saved == [n for n in "abc" if n not in loaded]
        left = 3 - len(loaded)
        assert (cache.loaded, cache.computed, cache.compile_s) == (len(loaded), left, 1.5 * left)
        if not loaded:
            assert out == ""
        elif len(loaded) < 3:
            assert out == f"resuming: {len(loaded)} of 3 stages done\n"
        else:
            assert out == "resuming: 3 of 3 stages done (nothing to compute)\n"


def test_long_quick_writes_experiment_b(tmp_path):
    """Experiment B's reduced form: Dirichlet(5), lambda = 1e-2, f = 1 under Optimal ALIE, the three
    methods with tuned steps, its rounds table and figures."""
    out = tmp_path / "long"
    with small_synthetic():  # the same stages and files as on the full source (short --quick, above), in a third of the time
        assert main(["reproduce", "long", "--quick", "--data", "synthetic", "--out", str(out), "--quiet"]) == 0
    table = rows(out / "long_rounds.csv")
    assert list(table[0]) == ROUNDS_COLUMNS
    assert {(r["f"], r["split"], r["attack"]) for r in table} == {("1", "dirichlet(5.0)", "Optimal ALIE")}
    assert sorted(r["method"].split("(")[0] for r in table) == ["D-GD", "D-NAG", "PIGS"]
    metrics = rows(out / "metrics.csv")
    assert {r["lam"] for r in metrics} == {"0.01"} and {r["alpha"] for r in metrics} == {"5.0"}
    assert {int(r["iteration"]) for r in metrics if r["stage"] == "attacked"} == set(range(31))
    for ext in ("png", "pdf"):
        assert (out / "figures" / f"loss_long_f1_dirichlet_alpha5.0.{ext}").stat().st_size > 1000
