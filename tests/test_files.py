"""Result files under faults: kills mid-write, a full disk, bad --out paths, resume, Ctrl-C, bad CSVs."""

import csv
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import byzjax.app.runner as runner
from byzjax.app.cli import main
from byzjax.app.files import OutputError
from byzjax.app.results import read_table, write_results
from helpers import small_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: these tests check files and the
    command line, not the data (the full source: tests/test_reproduce.py)."""
    with small_synthetic():
        yield


CONFIG = """
name = "files-test"
seeds = 2
rounds = 6
eval_every = 3

[data]
source = "synthetic"
split = "iid"
n_honest = 5

[problem]
name = "LogisticRegression"
lam = 1e-3

[byzantine]
f = 1
attack = "SignFlipping"

[aggregator]
name = "TrMean"

[[algorithm]]
name = "DGD"
lr = [0.05, 0.1]

[[algorithm]]  # another structure than D-GD's (D-NAG would share its program): two compiled programs
name = "AEG"
theta = 0.05
"""

# ---------------------------------------------------------------- atomic writes under SIGKILL / full disk

WRITER = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    import numpy as np
    from byzjax.app.results import write_results

    out, n_iter, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def runs(v):  # every loss cell of version v is v + 0.1234567891234567 + t * 1e-9 (17 digits)
        t = np.arange(n_iter)
        tr = SimpleNamespace(metrics={"loss": v + 0.1234567891234567 + t * 1e-9, "comm_rounds": t + 1},
                             eval_metrics={}, eval_iters=np.zeros(0, int))
        return [(r, s, {"method": "D-GD(lr=0.1)"}, tr) for r in range(8) for s in range(2)]

    v = start
    while True:
        write_results(out, {"meta": {"version": v, "complete": True}}, runs(v), {})
        print(v, flush=True)
        v += 1
        if len(sys.argv) > 4:
            break
""")


def check_version(out: Path, n_iter: int) -> tuple[int, int]:
    """The files on disk are complete versions: every cell is a full number of one version, and
    the write order (metrics.csv, summary.csv, config.json last) holds: a file is never newer
    than the one written before it, nor more than one version older than metrics.csv."""
    record = json.loads((out / "config.json").read_text())
    rows = read_table(out / "metrics.csv", required=("run", "seed", "loss"))
    assert len(rows) == 16 * (n_iter + 1) == record["meta"]["metrics_rows"]
    body = [r for r in rows if r["loss"] != ""]
    version = int(float(body[0]["loss"]))
    expected = {repr(version + 0.1234567891234567 + t * 1e-9) for t in range(n_iter)}
    assert {r["loss"] for r in body} == expected  # no value cut mid-number, no mixed versions
    summary = read_table(out / "summary.csv", required=("final_loss",))
    (summary_version,) = {int(float(s["final_loss"])) for s in summary}
    assert version - 1 <= record["meta"]["version"] <= summary_version <= version
    return record["meta"]["version"], version


def test_sigkill_mid_write_leaves_a_complete_earlier_version(tmp_path):
    """A child rewrites a 16-run grid's files in a loop and is SIGKILLed at random times;
    after every kill the files on disk are one complete version."""
    out, n_iter = tmp_path / "grid", 400
    rng = random.Random(0)
    kills, start, seen = 0, 0, set()
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(n_iter), str(start)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one version is complete
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        rec, data = check_version(out, n_iter)
        seen.add(data)
        start = data + 1
    assert kills == 4 and len(seen) == 4


def test_file_size_limit_keeps_previous_files(tmp_path):
    """A real write error (RLIMIT_FSIZE, as on a full disk): one-line OutputError, the previous
    complete files kept, no temporary file left behind."""
    out = tmp_path / "grid"
    script = WRITER.replace("v = start", textwrap.dedent("""
        import resource, signal
        from byzjax.app.files import OutputError
        write_results(out, {"meta": {"version": 0, "complete": True}}, runs(0), {})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        try:
            write_results(out, {"meta": {"version": 1, "complete": True}}, runs(1), {})
        except OutputError as err:
            print("ERR", err)
        raise SystemExit
        v = start"""))
    res = subprocess.run([sys.executable, "-c", script, str(out), "300", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    line = res.stdout.strip()
    assert line.startswith("ERR cannot write") and "File too large" in line and "\n" not in line, res.stderr
    assert check_version(out, 300) == (0, 0)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.csv", "summary.csv"]


def fake_runs(v, n_iter=5):
    t = np.arange(n_iter)
    tr = SimpleNamespace(metrics={"loss": v + 1.0 + t * 0.1, "comm_rounds": t + 1}, eval_metrics={},
                         eval_iters=np.zeros(0, int))
    return [(0, 0, {"method": "m"}, tr)]


def test_disk_full_is_one_line_and_keeps_previous_files(tmp_path, monkeypatch):
    """ENOSPC on every fsync (monkeypatched): the error names the file; nothing on disk changed."""
    write_results(tmp_path, {"meta": {"complete": True}}, fake_runs(0), {})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"cannot write .*metrics\.csv: No space left on device"):
        write_results(tmp_path, {"meta": {"complete": True}}, fake_runs(7), {})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_non_finite_values_are_written_not_emptied(tmp_path):
    tr = SimpleNamespace(metrics={"loss": np.array([1.0, np.inf, np.nan]), "grad_norm": np.array([1.0, -np.inf, 2.0]),
                                  "comm_rounds": np.arange(1, 4)}, eval_metrics={}, eval_iters=np.zeros(0, int))
    write_results(tmp_path, {"meta": {}}, [(0, 0, {"method": "m"}, tr)], {})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["loss"] for r in rows] == ["1.0", "inf", "nan", ""]  # last row: final, not measured
    assert [r["grad_norm"] for r in rows][:3] == ["1.0", "-inf", "2.0"]
    s = list(csv.DictReader(open(tmp_path / "summary.csv")))[0]
    assert s["min_loss"] == "1.0" and s["diverged"] == "True" and s["diverged_round"] == "1"


def test_divergence_rule_against_a_reference_loop():
    """``diverged_at`` and ``finite_min`` on seeded random loss curves with inf/nan/huge values."""
    from byzjax.app.results import DIVERGENCE_FACTOR, diverged_at, finite_min

    rng = np.random.default_rng(0)
    for _ in range(300):
        loss = rng.uniform(0.1, 3.0, size=rng.integers(1, 12))
        for i in rng.choice(len(loss), size=rng.integers(0, 3)):
            loss[i] = rng.choice([np.inf, -np.inf, np.nan, 1e7 * max(loss[0], 1.0), 0.5e6 * loss[0]])
        comm = np.arange(len(loss)) * 2
        limit = DIVERGENCE_FACTOR * max(abs(loss[0]), 1.0)
        want = next((2 * t for t, v in enumerate(loss) if not np.isfinite(v) or v > limit or not np.isfinite(loss[0])),
                    None)
        assert diverged_at(loss, comm) == want
        fin = [v for v in loss if np.isfinite(v)]
        assert (np.isnan(finite_min(loss)) and not fin) or finite_min(loss) == min(fin)


DIVERGING = CONFIG.replace("""lr = [0.05, 0.1]

[[algorithm]]  # another structure than D-GD's (D-NAG would share its program): two compiled programs
name = "AEG"
theta = 0.05""", """lr = [0.05, 1e30]

[[algorithm]]
name = "PIGS"
eta = 1e8
inner_max_iter = 4""").replace("seeds = 2", "seeds = 1")


def test_diverged_runs_and_capped_inner_solves_are_reported(tmp_path, capsys):
    cfg = tmp_path / "div.toml"
    cfg.write_text(DIVERGING)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--no-plot"]) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    summary = {s["method"]: s for s in csv.DictReader(open(out / "summary.csv"))}
    for method, s in summary.items():
        mine = [r for r in rows if r["method"] == method and r["loss"] != ""]
        loss = np.array([float(r["loss"]) for r in mine])
        assert all(r["loss"] for r in mine)  # non-finite values are cells, not blanks
        limit = 1e6 * max(abs(loss[0]), 1.0)
        bad = [int(r["comm_round"]) for r, v in zip(mine, loss) if not np.isfinite(v) or v > limit]
        assert s["diverged"] == str(bool(bad)) and s["diverged_round"] == (str(bad[0]) if bad else "")
        assert float(s["min_loss"]) == loss[np.isfinite(loss)].min()
    assert summary["D-GD(lr=1e+30)"]["diverged"] == "True" and summary["D-GD(lr=0.05)"]["diverged"] == "False"
    pigs = next(s for m, s in summary.items() if m.startswith("PIGS"))
    inner = [int(r["inner_iters"]) for r in rows if r["method"].startswith("PIGS") and r["inner_iters"]]
    assert int(pigs["inner_capped_rounds"]) == sum(i >= 4 for i in inner) > 0
    assert "runs diverged" in err and "D-GD(lr=1e+30)" in err and "iteration cap" in err
    assert json.loads((out / "config.json").read_text())["warnings"]


@pytest.mark.parametrize("damage, message", [
    ("truncate", "checksum mismatch"), ("flip", "checksum mismatch"), ("json", "unreadable"),
    ("no-npz", "unreadable"), ("format", "not a byzjax archive"), ("object", "unreadable arrays"),
])
def test_damaged_archives_are_refused(tmp_path, damage, message):
    """Stage archives (npz + JSON with sha256): every damage is a ``DamagedArchive``; an object
    array (which would need pickle) is refused even with a matching checksum."""
    import hashlib
    import io

    from byzjax.app.files import DamagedArchive, load_archive, save_archive

    stem = tmp_path / "stage"
    arrays = {"0/metrics/loss": np.linspace(0, 1, 50, dtype=np.float32), "0/eval_iters": np.arange(3)}
    save_archive(stem, arrays, {"runs": [[0, 0, {"method": "m"}]]})
    back, meta = load_archive(stem)
    assert meta == {"runs": [[0, 0, {"method": "m"}]]} and back.keys() == arrays.keys()
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    npz, rec = stem.with_suffix(".npz"), stem.with_suffix(".json")
    data = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        npz.write_bytes(data[:60] + bytes([data[60] ^ 1]) + data[61:])
    elif damage == "json":
        rec.write_text(rec.read_text()[:30])
    elif damage == "no-npz":
        npz.unlink()
    elif damage == "format":
        rec.write_text(json.dumps({"sha256": "0", "meta": {}}))
    else:
        buf = io.BytesIO()
        np.savez(buf, x=np.array([{"a": 1}], dtype=object), allow_pickle=True)
        npz.write_bytes(buf.getvalue())
        record = json.loads(rec.read_text())
        rec.write_text(json.dumps(record | {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    with pytest.raises(DamagedArchive, match=message):
        load_archive(stem)


# ---------------------------------------------------------------- --out checks, resume, --force, Ctrl-C


@pytest.fixture
def no_compute(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("computed before the --out check")

    monkeypatch.setattr(runner, "prepare", fail)


def bad_outs(tmp_path):
    (tmp_path / "afile").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    read_only = ro / "out" if os.geteuid() != 0 else Path("/sys/byzjax-files-test")  # root ignores chmod
    return [("", "is empty"), (str(tmp_path / "afile"), "is a file"),
            (str(tmp_path / "afile" / "sub"), "which is a file"), (str(read_only), "cannot be written")]


def test_bad_out_is_one_line_before_anything_is_computed(tmp_path, capsys, no_compute):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    for out, message in bad_outs(tmp_path):
        for argv in (["run", str(cfg), "--out", out, "--quiet"],
                     ["reproduce", "short", "--quick", "--data", "synthetic", "--out", out, "--quiet"]):
            assert main(argv) == 2, (argv, message)
            err = capsys.readouterr().err.strip()
            assert err.startswith("byzjax: error:") and message in err and "\n" not in err, err


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The grid run once, uninterrupted."""
    d = tmp_path_factory.mktemp("fresh")
    (d / "exp.toml").write_text(CONFIG)
    assert main(["run", str(d / "exp.toml"), "--out", str(d / "out"), "--quiet", "--no-plot"]) == 0
    return d


def count_computed(monkeypatch):
    computed = []
    real = runner.run_grid

    def counting(experiments, *a, **k):
        computed.append(len(experiments))
        return real(experiments, *a, **k)

    monkeypatch.setattr(runner, "run_grid", counting)
    return computed


def test_rerun_resumes_without_recomputing(fresh, monkeypatch, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(fresh / "out", out)
    before = {n: (out / n).read_bytes() for n in ("metrics.csv", "summary.csv")}
    computed = count_computed(monkeypatch)
    assert main(["run", str(fresh / "exp.toml"), "--out", str(out), "--quiet", "--no-plot"]) == 0
    assert computed == [0]
    assert {n: (out / n).read_bytes() for n in before} == before
    assert json.loads((out / "config.json").read_text())["meta"]["resumed_runs"] == 3


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(fresh, monkeypatch, tmp_path, capsys):
    """Ctrl-C after the first compiled program: exit 130, one line, files valid and marked
    incomplete; the same command then computes only the missing runs, and metrics.csv is
    byte-identical to the uninterrupted run's."""
    real = runner.run_grid

    def interrupted(*args, on_chunk=None, **kwargs):
        def stop(traces, timing):
            on_chunk(traces, timing)
            raise KeyboardInterrupt

        return real(*args, on_chunk=stop, **kwargs)

    monkeypatch.setattr(runner, "run_grid", interrupted)
    out = tmp_path / "out"
    argv = ["run", str(fresh / "exp.toml"), "--out", str(out), "--quiet", "--no-plot"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("byzjax: interrupted:") and "marked incomplete" in err and "\n" not in err
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["complete"] is False and meta["interrupted"] is True and 0 < meta["finished_runs"] < 3
    assert len(read_table(out / "metrics.csv")) == meta["metrics_rows"]
    monkeypatch.setattr(runner, "run_grid", real)
    computed = count_computed(monkeypatch)
    assert main(argv) == 0
    assert computed == [3 - meta["finished_runs"]]
    assert (out / "metrics.csv").read_bytes() == (fresh / "out" / "metrics.csv").read_bytes()
    assert json.loads((out / "config.json").read_text())["meta"]["complete"] is True


def test_ctrl_c_before_the_first_program_marks_the_folder_incomplete(fresh, monkeypatch, tmp_path, capsys):
    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_grid", stop)
    out = tmp_path / "out"
    assert main(["run", str(fresh / "exp.toml"), "--out", str(out), "--quiet", "--no-plot"]) == 130
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["complete"] is False and meta["finished_runs"] == 0
    assert "holds 0 of 3 runs" in capsys.readouterr().err


def test_other_config_is_refused_unless_force(fresh, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(fresh / "out", out)
    (out / "figures").mkdir()
    (out / "figures" / "loss_f9_stale.png").write_bytes(b"old")
    argv = ["run", str(fresh / "exp.toml"), "--out", str(out), "--quiet", "--no-plot", "--rounds", "4"]
    prepare = runner.prepare
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("computed before refusing"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byzjax: error:") and str(out) in err and "--force" in err and "\n" not in err
    monkeypatch.setattr(runner, "prepare", prepare)
    assert main(argv + ["--force"]) == 0
    assert not (out / "figures" / "loss_f9_stale.png").exists()
    assert {int(r["iteration"]) for r in read_table(out / "metrics.csv")} == set(range(5))


# ---------------------------------------------------------------- plot on bad files


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"", "is empty"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[: b.rfind(b"\n", 0, len(b) // 2) + 1], "config.json records"),  # cut at a line end
    (lambda b: bytes(range(256)) * 4, "binary"),
    (lambda b: b.replace(b"run,seed", b"rnu,seed", 1), "lacks the column"),
])
def test_plot_refuses_a_damaged_metrics_file(fresh, tmp_path, capsys, damage, message):
    out = tmp_path / "out"
    shutil.copytree(fresh / "out", out)
    (out / "metrics.csv").write_bytes(damage((out / "metrics.csv").read_bytes()))
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byzjax: error:") and message in err and "\n" not in err, err
    assert not (out / "figures").exists()


def test_plot_of_an_incomplete_folder_warns(fresh, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(fresh / "out", out)
    record = json.loads((out / "config.json").read_text())
    record["meta"]["complete"] = False
    (out / "config.json").write_text(json.dumps(record))
    assert main(["plot", str(out)]) == 0
    assert "is incomplete" in capsys.readouterr().err
    assert list((out / "figures").glob("loss_*.png"))
