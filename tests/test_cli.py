"""The command line on synthetic data: run, plot, errors."""

import csv
import json

import numpy as np
import pytest

from byzjax.app.cli import main
from byzjax.app.config import parse_config
from helpers import small_synthetic


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: these tests check files and the
    command line, not the data (the full source: tests/test_reproduce.py)."""
    with small_synthetic():
        yield


CONFIG = """
name = "cli-test"
seeds = 2
rounds = 12
eval_every = 4

[data]
source = "synthetic"
split = "dirichlet"
alpha = 1.0
n_honest = 6

[problem]
name = "LogisticRegression"
lam = 1e-3

[byzantine]
f = 1
attack = [{name = "ALittleIsEnough", tau = 1.5}, "SignFlipping"]

[aggregator]
name = "TrMean"
pre_aggs = ["NNM"]

[[algorithm]]
name = "DGD"
lr = [0.05, 0.1]

[[algorithm]]
name = "D-NAG"
lr = 0.05
momentum = 0.9
"""


def test_run_writes_tidy_results_and_figures(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    summary = list(csv.DictReader(open(out / "summary.csv")))
    # 2 attacks x 3 methods x 2 seeds runs, 12 iterations + the final evaluation row each
    assert len(summary) == 12 and len(rows) == 12 * 13
    assert {r["method"] for r in rows} == {"D-GD(lr=0.05)", "D-GD(lr=0.1)", "D-NAG(lr=0.05,momentum=0.9)"}
    assert {r["attack"] for r in rows} == {"ALittleIsEnough", "SignFlipping"}
    evals = [r for r in rows if r["val_acc"] != ""]
    assert {int(r["iteration"]) for r in evals} == {0, 4, 8, 12}
    for s in summary:  # summary agrees with the per-round rows
        mine = [float(r["loss"]) for r in rows if r["run"] == s["run"] and r["seed"] == s["seed"] and r["loss"]]
        assert float(s["final_loss"]) == pytest.approx(mine[-1]) and float(s["min_loss"]) == pytest.approx(min(mine))
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["name"] == "cli-test" and meta["meta"]["programs"] >= 2
    assert list((out / "figures").glob("loss_*.png")) and list((out / "figures").glob("loss_*.pdf"))
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "loss_f1_dirichlet_alpha1.0.png").exists()


@pytest.mark.parametrize(
    "patch, message",
    [
        (('name = "TrMean"', 'name = "TrimmedMean"'), "unknown aggregator 'TrimmedMean'; allowed: "),
        (("f = 1", "f = 6"), "TrMean: needs 2f < n, got f=6 with n=12"),
        (("f = 1", "f = -1"), "f must be a non-negative integer"),
        (("lr = [0.05, 0.1]", "lr = [0.05, -0.1]"), "DGD lr must be a positive number"),
        (("lr = [0.05, 0.1]", "step = 0.1"), "algorithm DGD: unknown parameter(s) ['step']"),
        (('source = "synthetic"', 'source = "/nonexistent/folder"'), "data folder not found: /nonexistent/folder"),
        (("rounds = 12", "rounds = 'many'"), "rounds must be a positive integer"),
        (("[[algorithm]]", "[[algorithm]]\n["), "malformed TOML"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, capsys, patch, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace(*patch, 1))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byzjax: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_grid_expansion_is_the_cartesian_product():
    cfg = parse_config({"rounds": 5, "byzantine": {"f": [1, 2], "attack": ["SignFlipping", "ALIE"]},
                        "aggregator": {"name": "TrMean"}, "algorithm": [{"name": "PIGS", "eta": [1, 2, 4]}]})
    assert len(cfg.runs) == 2 * 2 * 3
    assert cfg.runs[0].columns["method"] == "PIGS(eta=1)"


def test_help_mentions_every_subcommand(capsys):
    """The top-level help lists every subcommand the parser defines, and each subcommand's own
    help runs and describes its options."""
    import argparse

    from byzjax.app.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"run", "plot", "reproduce"} <= set(sub.choices)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in sub.choices)
    for name, parser in sub.choices.items():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        own = capsys.readouterr().out
        options = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"]
        assert all(opt in own for opt in options), (name, options)


def test_curves_never_merge_runs_that_differ_in_a_swept_number():
    """Two runs with the same attack and method but different tau (or participation) are two
    curves, each with its own values, labelled by what tells them apart."""
    from byzjax.app.plotting import curves

    rows = [{"run": str(run), "seed": str(seed), "f": "1", "attack": "ALIE", "method": "D-GD(lr=0.1)",
             "attack_tau": str(tau), "comm_round": str(t), "loss": str(10 * run + seed + t)}
            for run, tau in ((0, 1.5), (1, 3.0)) for seed in (0, 1) for t in range(3)]
    rows += [{"run": "2", "seed": "0", "f": "1", "attack": "SignFlipping", "method": "D-GD(lr=0.1)",
              "comm_round": str(t), "loss": "1.0"} for t in range(3)]
    out = curves(rows, "loss")
    assert set(out) == {("ALIE", "D-GD(lr=0.1), attack_tau=1.5"), ("ALIE", "D-GD(lr=0.1), attack_tau=3.0"),
                        ("SignFlipping", "D-GD(lr=0.1)")}
    x, vals = out[("ALIE", "D-GD(lr=0.1), attack_tau=3.0")]
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_array_equal(vals, [[10, 11, 12], [11, 12, 13]])


def test_results_of_finished_programs_survive_an_interrupted_grid(tmp_path, monkeypatch, capsys):
    """The run is interrupted after its first compiled program: the files already hold that
    program's runs (and say the grid is incomplete), and nothing else."""
    import byzjax.app.runner as runner

    real = runner.run_grid

    def interrupted(*args, on_chunk=None, **kwargs):
        def stop(traces, timing):
            on_chunk(traces, timing)
            raise KeyboardInterrupt

        return real(*args, on_chunk=stop, **kwargs)

    monkeypatch.setattr(runner, "run_grid", interrupted)
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 130  # Ctrl-C: one line, exit 130
    assert "byzjax: interrupted" in capsys.readouterr().err
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["complete"] is False and 0 < meta["finished_runs"] < meta["total_runs"] == 6
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert len({s["run"] for s in summary}) == meta["finished_runs"] and len(summary) == 2 * meta["finished_runs"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["run"] for r in rows} == {s["run"] for s in summary}


def test_l_ref_is_per_problem_instance():
    """Two splits are two objectives L_H: each run's gap is to the lowest loss of its own split and
    seed, never to another split's (lower) minimum."""
    from types import SimpleNamespace

    from byzjax.app.results import summarise

    def run(rid, seed, split, losses):
        metrics = {"loss": np.array(losses), "comm_rounds": np.arange(1, len(losses) + 1)}
        return rid, seed, {"split": split, "alpha": "", "lam": 0.001}, SimpleNamespace(metrics=metrics, eval_metrics={})

    runs = [run(0, 0, "iid", [2.0, 1.0, 0.9]), run(1, 0, "iid", [2.0, 0.8, 0.85]),
            run(2, 0, "dirichlet", [2.0, 0.5, 0.4]), run(3, 1, "dirichlet", [2.0, 0.6, 0.7])]
    summary = {r["run"]: r for r in summarise(runs, {})}
    assert [summary[i]["l_ref"] for i in range(4)] == [0.8, 0.8, 0.4, 0.6]
    assert summary[0]["final_gap"] == pytest.approx(0.1) and summary[3]["final_gap"] == pytest.approx(0.1)


def test_output_is_line_buffered_into_a_log_file(tmp_path):
    """``nohup byzjax ... > log``: stdout is a file, which Python block-buffers; the CLI switches it to
    line buffering so the plan and result lines are in the log while the runs go on."""
    import subprocess
    import sys

    script = ("import sys; from byzjax.app.cli import main; main(['list']); "
              "sys.stderr.write(f'line_buffering={sys.stdout.line_buffering}')")
    with open(tmp_path / "log", "w") as log:
        done = subprocess.run([sys.executable, "-c", script], stdout=log, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("line_buffering=True")
    assert "aggregator" in (tmp_path / "log").read_text().lower()
