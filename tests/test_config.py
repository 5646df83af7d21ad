"""The config path: TOML -> typed specs -> experiments; strict validation; the resolved record."""

import json

import jax
import numpy as np
import pytest

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.app.cli import main
from byzjax.app.config import GridSpec, load_config, parse_config
from byzjax.app.runner import execute
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset
from byzjax.problems import LogisticRegression

from helpers import small_synthetic


@pytest.fixture(scope="module", autouse=True)
def small_data():
    """``source = "synthetic"`` is ``helpers.SMALL_SYNTHETIC`` here: these tests check the config path
    and its columns, not the data (the full source: tests/test_reproduce.py)."""
    with small_synthetic():
        yield


BASE = {"rounds": 2, "eval_every": 1, "data": {"source": "synthetic", "n_honest": 4},
        "byzantine": {"f": 1, "attack": "SignFlipping"}, "aggregator": {"name": "TrMean"},
        "algorithm": [{"name": "DGD", "lr": 0.1}]}


def tiny_prepared(cfg: GridSpec, p=6, c=3):
    ds = synthetic_dataset(n_train=200, n_test=40, num_features=p, num_classes=c, separation=0.5)
    problem = cfg.problem.build(ds)
    datas = [federated_classification(ds, cfg.data.n_honest, cfg.data.split, cfg.data.alpha, s) for s in cfg.seeds]
    return ds, problem, stack_seeds(datas)


def with_(path: str, value, base=BASE):
    """``base`` with the dotted ``path`` set to ``value`` (a deep copy)."""
    raw = json.loads(json.dumps(base))
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {}) if not k.isdigit() else node[int(k)]
    node[keys[-1]] = value
    return raw


# ---- issue 9 bugs ---------------------------------------------------------------------------

def test_unknown_problem_key_is_refused():
    with pytest.raises(ConfigError, match=r"config \[problem\] \(LogisticRegression\): unknown key\(s\) \['lamda'\]"):
        parse_config(with_("problem", {"name": "LogisticRegression", "lamda": 0.1}))


def test_problem_is_built_from_the_registry_with_its_parameters(monkeypatch):
    class Scaled(LogisticRegression):
        pass

    monkeypatch.setitem(registry.PROBLEMS, "Scaled", Scaled)
    cfg = parse_config(with_("problem", {"name": "Scaled", "lam": 0.25}))
    ds, problem, _ = tiny_prepared(cfg)
    assert type(problem) is Scaled and float(problem.lam) == 0.25 and problem.num_features == ds.num_features
    assert cfg.to_dict()["problem"] == {"name": "Scaled", "lam": 0.25}
    assert parse_config(with_("problem", {"name": "Scaled"})).problem.params == {"lam": 1e-3}  # the class default
    with pytest.raises(ConfigError, match="unknown problem 'Nope'; allowed: .*LogisticRegression"):
        parse_config(with_("problem", {"name": "Nope"}))


@pytest.mark.parametrize("x64", [True, False])
def test_x64_of_the_config_applies_through_execute(tmp_path, x64):
    toml = tmp_path / "c.toml"
    toml.write_text(f'x64 = {str(x64).lower()}\nrounds = 2\neval_every = 1\n[data]\nsource = "synthetic"\n'
                    'n_honest = 4\n[[algorithm]]\nname = "DGD"\n')
    cfg = load_config(toml)
    with jax.enable_x64(not x64):  # whatever the caller's setting, the config's wins
        prepared = tiny_prepared(cfg)
        runs, _, meta = execute(cfg, None, prepared=prepared, show_progress=False)
    assert runs[0][3].final_params.dtype == (np.float64 if x64 else np.float32)
    assert meta["x64"] is x64


def test_recorded_config_is_what_ran(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('rounds = 50\nseeds = 3\n[data]\nsource = "synthetic"\nn_honest = 3\n'
                    '[aggregator]\nname = "CenteredClipping"\n[[algorithm]]\nname = "DGD"\n')
    out = tmp_path / "out"
    assert main(["run", str(toml), "--out", str(out), "--rounds", "2", "--seeds", "1", "--x64", "--quiet",
                 "--no-plot"]) == 0
    rec = json.loads((out / "config.json").read_text())
    cfg = rec["config"]
    assert (cfg["rounds"], cfg["seeds"], cfg["x64"]) == (2, [0], True)
    assert rec["as_written"]["rounds"] == 50 and rec["meta"]["x64"] is True
    assert rec["command_line"][1:] == ["run", str(toml), "--out", str(out), "--rounds", "2", "--seeds", "1", "--x64",
                                       "--quiet", "--no-plot"]
    assert cfg["problem"] == {"name": "LogisticRegression", "lam": 0.001}  # defaults filled in
    assert cfg["data"]["val_fraction"] == 0.2 and cfg["data"]["split"] == "iid"
    assert cfg["aggregator"] == {"name": "CenteredClipping", "L": 1, "tau": 100.0, "pre_aggs": []}
    assert cfg["algorithm"] == [{"name": "DGD", "lr": 0.1}]
    assert parse_config(cfg).to_dict() == cfg  # the record reads back as the same grid


# ---- typed specs ----------------------------------------------------------------------------

def test_resolved_config_round_trips_and_runs_carry_numbers():
    rng = np.random.default_rng(0)
    for _ in range(20):  # random grids: to_dict -> parse_config -> to_dict is the identity
        raw = with_("byzantine.f", [int(v) for v in rng.choice(4, size=rng.integers(1, 3), replace=False)])
        raw = with_("algorithm", [{"name": "DNAG", "lr": [float(v) for v in rng.uniform(0.01, 1, 2)],
                                   "momentum": float(rng.uniform(0, 0.99))}, {"name": "PIGS"}], raw)
        raw = with_("workers", {"batch_size": [int(rng.integers(1, 64))]}, raw)
        cfg = parse_config(raw)
        assert parse_config(cfg.to_dict()).to_dict() == cfg.to_dict()
        for run in cfg.runs:  # numeric columns equal the numbers the run is built from
            alg = run.algorithm
            for k, v in alg.params.items():
                assert run.columns[k] == v and isinstance(v, float)
        assert len(cfg.runs) == len(raw["byzantine"]["f"]) * 3


def test_aliases_resolve_to_registered_names_and_labels_keep_the_paper_names():
    cfg = parse_config(with_("algorithm", [{"name": "D-NAG", "lr": 0.05}, {"name": "DGD"}]))
    assert [r.algorithm.name for r in cfg.runs] == ["DNAG", "DGD"]
    assert [r.columns["method"] for r in cfg.runs] == ["D-NAG(lr=0.05)", "D-GD"]
    default_lr = registry.config_params(registry.lookup("algorithm", "DGD"))["lr"].default
    assert cfg.runs[0].columns["lr"] == 0.05 and cfg.runs[1].columns["lr"] == default_lr  # the default is a column


def test_the_algorithm_column_is_the_specs_name_whatever_the_label():
    """``algorithm`` (every run's column, in summary.csv and metrics.csv) is the registered name of the
    run's algorithm (aliases resolved), or the variant its parameters select (AEG with prox = true is
    ProxAEG, also when prox is swept: the label of AEG and ProxAEG both start "AEG")."""
    algs = [{"name": "moDSGD", "lr": [0.1, 0.2]}, {"name": "D-NAG", "lr": 0.05}, {"name": "DSGD"},
            {"name": "FedProxyProx", "eta": 2.0}, {"name": "AEG", "prox": [False, True]}, {"name": "AEG", "prox": True},
            {"name": "FedAvg"}]
    cfg = parse_config(with_("algorithm", algs))
    got = [(r.columns["method"], r.columns["algorithm"]) for r in cfg.runs]
    assert got == [("D-GD(lr=0.1)", "DGD"), ("D-GD(lr=0.2)", "DGD"), ("D-NAG(lr=0.05)", "DNAG"), ("D-NAG", "DNAG"),
                   ("PIGS(eta=2)", "PIGS"), ("AEG(prox=False)", "AEG"), ("AEG(prox=True)", "ProxAEG"),
                   ("AEG(prox=True)", "ProxAEG"), ("FedAvg", "FedAvg")]
    assert all(list(r.columns).index("algorithm") == list(r.columns).index("method") + 1 for r in cfg.runs)
    # a parameter named like the column would be written method_algorithm, never over it
    from byzjax.app.config import RESERVED_COLUMNS

    assert "algorithm" in RESERVED_COLUMNS


# ---- strict validation (issue 10 "Bad input") -----------------------------------------------

BAD = [
    ("seeds", 1.5, "seeds must be a positive count"),
    ("seeds", True, "seeds must be a positive count"),
    ("seeds", 0, "seeds must be a positive integer, got 0"),
    ("seeds", [], "seeds must be a positive count"),
    ("seeds", [1, 1], "seeds must be a positive count or a non-empty list of distinct"),
    ("max_batch", "big", "max_batch must be a positive integer, got 'big'"),
    ("max_batch", 0, "max_batch must be a positive integer, got 0"),
    ("max_batch", -1, "max_batch must be a positive integer, got -1"),
    ("rounds", True, "rounds must be a positive integer, got True"),
    ("eval_every", 2.0, "eval_every must be a positive integer, got 2.0"),
    ("x64", "false", "x64 must be true or false"),
    ("x64", 1, "x64 must be true or false"),
    ("name", 3, "name must be a non-empty string"),
    ("problem.lam", -1, r"lam must be a finite number >= 0, got -1"),
    ("problem.lam", True, r"lam must be a finite number >= 0, got True"),
    ("problem.lam", [0.1, 0.2], "lam cannot be swept"),
    ("problem.lamda", 0.1, r"unknown key\(s\) \['lamda'\]"),
    ("data.val_fraction", 1.5, r"val_fraction must be a finite number > 0 and < 1, got 1.5"),
    ("data.val_fraction", 0, r"val_fraction must be a finite number > 0 and < 1, got 0"),
    ("data.n_honest", True, "n_honest must be a positive integer or a list of them, got True"),
    ("data.n_honest", 0, "n_honest must be a positive integer or a list of them, got 0"),
    ("data.split", "byclass", "split must be one of 'iid', 'dirichlet'"),
    ("data.normalization", "z", "normalization must be one of 'dataset', 'mnist'"),
    ("data.normalization", [0.1, 0.0], "normalization std must be a finite number > 0"),
    ("data.sourc", "x", r"config \[data\]: unknown key\(s\) \['sourc'\]"),
    ("byzantine.f", True, "f must be a non-negative integer or a list of them, got True"),
    ("byzantine.f", [], "f is an empty list"),
    ("byzantine.f", 1.0, "f must be a non-negative integer"),
    ("byzantine.attack", [], "attack is an empty list"),
    ("byzantine.participation", "1", r"participation must be a probability in \[0, 1\]"),
    ("byzantine.participation", float("nan"), r"participation must be a probability in \[0, 1\]"),
    ("workers.batch_size", 0, "batch_size must be a positive integer"),
    ("workers.batch_size", [], "batch_size is an empty list"),
    ("workers.momentum", True, r"momentum must be a number in \[0, 1\)"),
    ("algorithm.0.lr", [], "lr is an empty list"),
    ("algorithm.0.lr", "0.1", "algorithm DGD: lr must be a finite number or a list of them, got '0.1'"),
    ("algorithm.0.lr", True, "algorithm DGD: lr must be a finite number"),
    ("algorithm.0.lr", float("inf"), "algorithm DGD: lr must be a finite number"),
    ("algorithm.0.name", "SGD", "unknown algorithm 'SGD'; allowed: "),
    ("aggregator.f", 1.5, "aggregator TrMean: f must be an integer"),
    ("aggregator.f", [1, True], "aggregator TrMean: f must be an integer, got True"),
    ("aggregator.pre_aggs", [{"name": "Bucketing", "s": 2.0}], "preaggregator Bucketing: s must be an integer"),
    ("aggregator", [], r"\[\[aggregator\]\] is an empty list"),
    ("aggregator", [{"name": "TrMean"}, {"pre_aggs": ["NNM"]}], r"\[aggregator 2\] needs name = a registered"),
    ("aggregator", [{"name": "TrMean", "pre_aggs": [{"name": "NNM", "k": 1}]}],
     r"preaggregator NNM: unknown parameter\(s\) \['k'\]"),
    ("data.split", ["iid", "iid"], "split lists a value twice"),
    ("data.split", ["iid", "dirichlet"], "split 'dirichlet' needs alpha"),
    ("data.n_honest", [4, 0], "n_honest must be a positive integer, got 0"),
    ("byzantine.attack", {"name": "MinMax", "direction": 1}, "attack MinMax: direction must be a string or a list of them, got 1"),
    ("byzantine.attack", {"name": "Optimal_ALIE", "agg": "TrMean"}, r"unknown parameter\(s\) \['agg'\]"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_values_are_one_line_errors(path, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(with_(path, value))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("alpha", [float("inf"), float("nan"), 0.0, -1.0, True, "1"])
def test_dirichlet_alpha_must_be_a_positive_finite_number(alpha):
    raw = with_("data", {"source": "synthetic", "n_honest": 4, "split": "dirichlet", "alpha": alpha})
    with pytest.raises(ConfigError, match=r"config \[data\]: alpha must be a positive number or a list of them, got"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="alpha is only used with split = 'dirichlet'"):
        parse_config(with_("data.alpha", 1.0))


@pytest.mark.parametrize("contents, message", [
    (b"\xff\xfe\x00binary\x81", "not a UTF-8 text file"),
    (b"\x00\x01\x02", "malformed TOML"),
    (None, "is a directory, not a TOML file"),
])
def test_unreadable_config_files_are_one_line_errors(tmp_path, capsys, contents, message):
    path = tmp_path / "c.toml"
    if contents is None:
        path.mkdir()
    else:
        path.write_bytes(contents)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byzjax: error:") and message in err and "\n" not in err


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    (["--seeds", "-1"], "--seeds must be a positive integer, got -1"),
    (["--rounds", "0"], "--rounds must be a positive integer, got 0"),
])
def test_bad_command_line_overrides_are_one_line_errors(tmp_path, capsys, argv, message):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nsource = "synthetic"\n[[algorithm]]\nname = "DGD"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--seeds", "--tune-rounds", "--max-batch", "--eval-every"])
def test_bad_reproduce_counts_are_one_line_errors(tmp_path, capsys, flag):
    assert main(["reproduce", "short", "--quick", "--data", "synthetic", "--out", str(tmp_path), flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag} must be a positive integer, got 0" in err and "\n" not in err
