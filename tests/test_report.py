"""Validation-selected test accuracy in summary.csv, and ``byzjax report`` (tables and figures that agree
with summary.csv)."""

import csv
import itertools
import math
import os

import numpy as np
import pytest

from byzjax.app.cli import main
from byzjax.app.report import heatmap_grids, read_summary, tables, worst_cases
from byzjax.app.results import (SUMMARY_MEASURES, StoredTrace, config_columns, parse_cell, summarise, trace_rows,
                                write_csv)
from byzjax.app.selection import setting_columns
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
    cols = {"f": 1, "attack": "ALIE", "aggregator": "TrMean", "method": "D-GD(lr=0.1)", "algorithm": "DGD", "lr": 0.1,
            "attack_tau": 1.5}
    trace = hand_trace(rng, 6, 2, 1)
    trace.metrics |= {k: rng.random(6) for k in ("error", "spread", "grad_norm", "kappa_hat", "inner_iters",
                                                  "inner_capped")}
    (row,) = summarise([(0, 0, cols, trace)], {0: {"compile_s": 1.0, "run_s": 2.0, "batch": 4, "devices": 1}})
    assert config_columns(list(row)) == list(cols)
    assert {k for k in row if k not in cols and k not in ("run", "seed")} <= SUMMARY_MEASURES


# ---- byzjax report ---------------------------------------------------------------------------

INSTANCES = [("iid", ""), ("dirichlet", 0.5)]
AGGS, LRS, ATTACKS, SEEDS = ["NNM+TrMean", "Median"], [0.1, 0.5], ["SignFlipping", "ALIE"], [0, 1, 2]
ACC = ("final_test_acc", "best_test_acc", "test_acc_at_best_val")


def hand_folder(path, rng, accuracy=True, nan_run=True, instances=INSTANCES):
    """A result folder as ``byzjax run`` writes it for two data instances x f in {0, 1} x two attacks
    (f = 0: attack none) x two aggregators x two lrs x three seeds; random measurements (few distinct
    values, so worst cases tie), one run's validation accuracy nan."""
    rows, run = [], 0
    for (split, alpha), f in itertools.product(instances, [0, 1]):
        for attack, agg, lr in itertools.product(ATTACKS[:1] if f == 0 else ATTACKS, AGGS, LRS):
            for seed in SEEDS:
                r = {"run": run, "seed": seed, "f": f, "attack": attack if f else "none", "aggregator": agg,
                     "method": f"D-GD(lr={lr:g})", "algorithm": "DGD", "split": split, "alpha": alpha, "lam": 0.001,
                     "n_honest": 4, "lr": lr, "l_ref": 0.4, "final_loss": float(rng.choice([0.5, 0.7, 0.9, 1.3])),
                     "min_loss": 0.4, "diverged": bool(rng.random() < 0.1)}
                if accuracy:
                    best = float(rng.choice([0.6, 0.7, 0.8]))
                    r |= {"best_test_acc": best, "final_test_acc": best - 0.05, "best_val_acc": float(rng.choice([0.6, 0.7])),
                          "final_val_acc": 0.5, "test_acc_at_best_val": best - 0.02, "best_val_round": 4}
                r |= {"compile_s": 1.0, "run_s": 0.5}
                if f:
                    r["attack_tau"] = 1.5 if attack == "ALIE" else ""
                rows.append(r)
            run += 1
    if nan_run and accuracy:
        for r in rows:
            if r["run"] == 9 and r["seed"] == 1:
                r["best_val_acc"] = math.nan
    rows.sort(key=lambda r: (r["f"] > 0, r["run"], r["seed"]))  # f = 0 rows first, as written: attack_tau last
    path.mkdir(parents=True, exist_ok=True)
    write_csv(path / "summary.csv", rows)
    return rows


def _key(r):
    return (r["split"], str(r["alpha"]), str(r["f"]), r["aggregator"])


def reference(rows, metric, higher):
    """NumPy reference: per setting, lr -> attack -> seed values; the selected lr (best worst case of the
    seed mean, nan never chosen, first lr on ties) and, at it, mean/std per attack and the worst case."""
    vals = {}
    for r in rows:
        vals.setdefault(_key(r), {}).setdefault(str(r["lr"]), {}).setdefault(r["attack"], []).append(float(r[metric]))
    chosen = {}
    for k, by_lr in vals.items():
        worst = {lr: (min if higher else max)(np.mean(v) for v in by_a.values()) for lr, by_a in by_lr.items()}
        worst = {lr: w for lr, w in worst.items() if not np.isnan(w)
                 and not any(np.isnan(np.mean(v)) for v in by_lr[lr].values())}
        best = (max if higher else min)(worst.values())
        chosen[k] = next(lr for lr in by_lr if lr in worst and worst[lr] == best)
    return chosen


def test_report_tables_agree_with_summary_csv(tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = hand_folder(tmp_path / "run", rng)
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 0
    out = tmp_path / "rep"
    for name in ("selection", "results", "candidates"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file()
    for stem in ("heatmap_test_acc_at_best_val_n_honest4_DGD", "heatmap_final_loss_n_honest4_DGD",
                 "vs_f_test_acc_at_best_val_n_honest4_DGD_iid", "vs_f_test_acc_at_best_val_n_honest4_DGD_dirichlet_alpha=0.5"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000, stem
    printed = capsys.readouterr().out
    assert f"wrote {out / 'results.csv'}" in printed
    chosen = reference(rows, "best_val_acc", True)
    read = lambda name: list(csv.DictReader(open(out / f"{name}.csv")))  # noqa: E731
    selection = {_key(r): r["lr"] for r in read("selection")}
    assert selection == chosen
    results = read("results")
    assert {(_key(r), r["lr"]) for r in results} == set(chosen.items())
    md = (out / "results.md").read_text()
    for r in results:
        at = [s for s in rows if _key(s) == _key(r) and str(s["lr"]) == r["lr"]]
        by_attack = {}
        for s in at:
            by_attack.setdefault(s["attack"], []).append(s)
        for m, higher in [(m, True) for m in ACC] + [("final_loss", False)]:
            stats = {a: (np.mean([s[m] for s in ss]), np.std([s[m] for s in ss])) for a, ss in by_attack.items()}
            if r["attack"] == "worst case":
                a = (min if higher else max)(stats, key=lambda a: stats[a][0])
                want = stats[a]
            else:
                want = stats[r["attack"]]
            assert parse_cell(r[f"{m}_mean"]) == pytest.approx(want[0], abs=1e-12), (r, m)
            assert parse_cell(r[f"{m}_std"]) == pytest.approx(want[1], abs=1e-12), (r, m)
        assert f"{parse_cell(r['test_acc_at_best_val_mean']):.4g} ± {parse_cell(r['test_acc_at_best_val_std']):.4g}" in md
        n_attacks = len(by_attack)
        assert int(r["seeds"]) == 3 and (r["attack"] == "worst case") == (n_attacks > 1 and r["attack"] not in by_attack)
    assert sum(r["attack"] == "worst case" for r in results) == 2 * 2  # f = 1 settings: instances x aggregators
    cands = read("candidates")
    assert len(cands) == len({(s["run"]) for s in rows})  # one row per (setting, lr, attack) = per run
    assert {(_key(c), c["lr"]) for c in cands if c["selected"] == "True"} == set(chosen.items())


def test_heatmap_grids_hold_the_worst_case_per_instance_and_f(tmp_path):
    rng = np.random.default_rng(11)
    rows = hand_folder(tmp_path, rng, nan_run=False)
    summary = read_summary(tmp_path)
    results = tables(summary)["results"]
    grids = heatmap_grids(worst_cases(results, setting_columns(list(summary[0]) + ["attack_tau"])), "final_loss")
    ((fig, (aggs, hets, fs, values)),) = grids.items()
    assert dict(fig) == {"n_honest": "4", "algorithm": "DGD"}
    assert aggs == AGGS and hets == ["iid", "dirichlet(alpha=0.5)"] and fs == ["0", "1"]
    chosen = reference(rows, "best_val_acc", True)
    for (i, (split, alpha)), (j, f), agg in itertools.product(enumerate(INSTANCES), enumerate([0, 1]), AGGS):
        k = (split, str(alpha), str(f), agg)
        at = [r for r in rows if _key(r) == k and str(r["lr"]) == chosen[k]]
        want = max(np.mean([r["final_loss"] for r in at if r["attack"] == a]) for a in {r["attack"] for r in at})
        assert values[agg][i, j] == pytest.approx(want, abs=1e-12)


def test_a_folder_without_accuracy_gets_loss_tables_and_loss_figures(tmp_path):
    rng = np.random.default_rng(5)
    rows = hand_folder(tmp_path / "run", rng, accuracy=False, instances=INSTANCES[:1])
    assert main(["report", str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "report"
    selection = list(csv.DictReader(open(out / "selection.csv")))
    assert {r["rule"] for r in selection} == {"lowest worst case of final_loss"}
    assert {_key(r): r["lr"] for r in selection} == reference(rows, "final_loss", False)
    header = next(csv.reader(open(out / "results.csv")))
    assert "final_loss_mean" in header and not any("acc" in c for c in header)
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "heatmap_final_loss_n_honest4_DGD.png" in figures and not any("acc" in p for p in figures)
    assert "vs_f_final_loss_n_honest4_DGD_iid.pdf" in figures


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    cases = {"missing": None, "empty_dir": lambda p: p.mkdir(),
             "no_columns": lambda p: (p.mkdir(), (p / "summary.csv").write_text("a,b\r\n1,2\r\n")),
             "no_rows": lambda p: (p.mkdir(), (p / "summary.csv").write_text(",".join(
                 ["run", "seed", "f", "attack", "aggregator", "method", "final_loss"]) + "\r\n")),
             "a_file": lambda p: p.write_text("x")}
    wants = {"missing": "is not a folder", "empty_dir": "has no summary.csv", "no_columns": "lacks the column",
             "no_rows": "has a header but no rows", "a_file": "is not a folder"}
    for name, make in cases.items():
        p = tmp_path / name
        if make:
            make(p)
        assert main(["report", str(p)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("byzjax: error: ") and wants[name] in err and err.count("\n") == 1, (name, err)


OLD_GRID = {"rounds": 2, "data": {"source": "synthetic", "n_honest": 4}, "byzantine": {"f": [0, 1], "attack": "ALIE"},
            "algorithm": [{"name": "moDSGD", "lr": [0.1, 0.5]}, {"name": "AEG", "prox": [False, True]}]}
OLD_ALGORITHMS = ["DGD", "DGD", "AEG", "ProxAEG"]  # per algorithm point, by hand; the grid: f x algorithm


def old_folder(path, rng, record):
    """A folder as an older byzjax wrote it: summary.csv without the algorithm column, and ``record``
    as its config.json; one row per run of ``OLD_GRID`` and seed."""
    from byzjax.app.config import parse_config
    from byzjax.app.files import write_json

    runs = parse_config(OLD_GRID).runs
    rows = [{"run": i, "seed": seed} | {k: v for k, v in r.columns.items() if k != "algorithm"}
            | {"final_loss": float(rng.random()), "l_ref": 0.1} for i, r in enumerate(runs) for seed in (0, 1)]
    path.mkdir(parents=True, exist_ok=True)
    write_csv(path / "summary.csv", rows)
    if record is not None:
        write_json(path / "config.json", record)
    return rows


def test_a_folder_written_before_the_algorithm_column_gets_it_from_its_recorded_grid(tmp_path, capsys):
    """``byzjax run``'s config.json records the resolved grid: the report reads the algorithm of each
    row's run from it (the label "AEG(prox=True)" would say AEG); a folder without a recorded grid, or
    whose rows are not its runs, is a one-line error naming summary.csv and the missing column."""
    from byzjax.app.config import parse_config

    rng = np.random.default_rng(2)
    rows = old_folder(tmp_path / "old", rng, {"config": parse_config(OLD_GRID).to_dict()})
    summary = read_summary(tmp_path / "old")
    want = [OLD_ALGORITHMS[int(r["run"]) % len(OLD_ALGORITHMS)] for r in rows]
    assert [r["algorithm"] for r in summary] == want
    assert all(list(r).index("algorithm") == list(r).index("method") + 1 for r in summary)
    assert main(["report", str(tmp_path / "old")]) == 0
    selection = list(csv.DictReader(open(tmp_path / "old" / "report" / "selection.csv")))
    assert sorted({r["algorithm"] for r in selection}) == ["AEG", "DGD", "ProxAEG"]
    capsys.readouterr()
    moved = {"config": parse_config(OLD_GRID | {"algorithm": [{"name": "DGD", "lr": [0.1, 0.5]}]}).to_dict()}
    for name, record, message in [("reproduce", {"experiment": "short"}, "records no grid to derive it from; "
                                   "rerun the 'byzjax reproduce short' that wrote it (it reads its runs back"),
                                  ("none", None, "records no grid to derive it from"),
                                  ("other", moved, "is not run"),
                                  ("bad", {"config": {"rounds": 0}}, "does not parse")]:
        old_folder(tmp_path / name, rng, record)
        assert main(["report", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"byzjax: error: report: {tmp_path / name / 'summary.csv'} has no 'algorithm' column")
        assert message in err and err.count("\n") == 1, (name, err)


GRID = """
rounds = 3
eval_every = 1
seeds = 2
[data]
source = "synthetic"
n_honest = 4
[byzantine]
f = [0, 1]
max_f = 1
attack = {name = "ALittleIsEnough", tau = [1.0, 3.0]}
[aggregator]
name = "TrMean"
[[algorithm]]
name = "DGD"
lr = [0.1, 0.5]
"""


@pytest.mark.skipif(not os.environ.get("BYZJAX_SLOW_TESTS"), reason="compiles a grid (~30 s on 2 CPU cores); "
                    "BYZJAX_SLOW_TESTS=1 runs it")
def test_report_of_a_real_grid_agrees_with_its_summary(tmp_path, capsys):
    """One compiled program (f <= max_f, tau and lr are array leaves): the report of what
    ``byzjax run`` wrote; two attack variants (tau) are two attacks of the worst case."""
    (tmp_path / "c.toml").write_text(GRID)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(out), "--quiet", "--no-plot"]) == 0
    assert main(["report", str(out)]) == 0
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert all(r["test_acc_at_best_val"] != "" and r["best_val_round"] != "" for r in summary)
    results = list(csv.DictReader(open(out / "report" / "results.csv")))
    labels = {r["attack"] for r in results if r["f"] == "1"}
    assert labels == {"ALittleIsEnough(tau=1.0)", "ALittleIsEnough(tau=3.0)", "worst case"}
    for f in ("0", "1"):  # the selected lr: best worst case over (attack, tau) of the seed-mean best_val_acc
        worst = {}
        for lr in ("0.1", "0.5"):
            by = {}
            for r in summary:
                if r["f"] == f and r["lr"] == lr:
                    by.setdefault((r["attack"], r["attack_tau"]), []).append(float(r["best_val_acc"]))
            worst[lr] = min(np.mean(v) for v in by.values())
        best = max(worst.values())
        want = next(lr for lr in ("0.1", "0.5") if worst[lr] == best)
        rows = [r for r in results if r["f"] == f]
        assert {r["lr"] for r in rows} == {want}
        at = [float(r["test_acc_at_best_val"]) for r in summary if r["f"] == f and r["lr"] == want]
        got = next(r for r in rows if r["attack"] in ("none", "worst case"))
        assert float(got["test_acc_at_best_val_mean"]) == pytest.approx(
            min(np.mean(at[:2]), np.mean(at[2:])) if f == "1" else np.mean(at), abs=1e-12)  # runs tau=1, tau=3
    assert (out / "report" / "figures" / "heatmap_final_loss_n_honest4_DGD.pdf").is_file()


def test_heatmap_rows_go_from_homogeneous_to_heterogeneous():
    splits = [("extreme", ""), ("gamma_similarity", "0.5"), ("dirichlet", "0.1"), ("iid", ""), ("dirichlet", "5.0")]
    results = [{"f": f, "aggregator": "A", "split": s, "alpha": a, "algorithm": "DGD", "attack": "none",
                "final_loss_mean": float(i + 10 * int(f))} for i, (s, a) in enumerate(splits) for f in ("0", "1")]
    ((_, (aggs, hets, fs, grids)),) = heatmap_grids(worst_cases(results, ["f", "aggregator", "split", "alpha"]),
                                                    "final_loss").items()
    assert hets == ["iid", "dirichlet(alpha=5.0)", "dirichlet(alpha=0.1)", "gamma_similarity(gamma=0.5)", "extreme"]
    order = [3, 4, 2, 1, 0]
    assert aggs == ["A"] and fs == ["0", "1"]
    np.testing.assert_array_equal(grids["A"], np.array([[i, i + 10] for i in order], dtype=float))
