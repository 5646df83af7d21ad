"""One config for the whole grid (issue 12): [[aggregator]] tables, data sweeps, f = 0 runs once,
every number a column; ``run --dry-run``, ``list``, ``--version``; ByzFL benchmark configs."""

import itertools

import pytest

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.app.config import parse_config

BASE = {"rounds": 2, "eval_every": 1, "data": {"source": "synthetic", "n_honest": 4},
        "byzantine": {"f": 1, "attack": "SignFlipping"}, "aggregator": {"name": "TrMean"},
        "algorithm": [{"name": "DGD", "lr": 0.1}]}


def config(**sections):
    return BASE | sections


def test_aggregator_tables_sweep_pipelines_with_their_own_pre_aggregators():
    aggs = [{"name": "TrMean", "pre_aggs": ["NNM"]}, {"name": "CenteredClipping", "tau": [1.0, 3.0]},
            {"name": "Median", "pre_aggs": [{"name": "Bucketing", "s": [1, 2]}, "NNM"]}]
    cfg = parse_config(config(aggregator=aggs))
    labels = [r.columns["aggregator"] for r in cfg.runs]
    assert labels == ["NNM+TrMean", "CenteredClipping", "CenteredClipping", "Bucketing+NNM+Median",
                      "Bucketing+NNM+Median"]
    assert [r.columns["aggregator_tau"] for r in cfg.runs[1:3]] == [1.0, 3.0]
    assert [r.columns["Bucketing_s"] for r in cfg.runs[3:]] == [1, 2]
    assert [p.name for p in cfg.runs[0].aggregator.pre] == ["NNM"] and cfg.runs[1].aggregator.pre == ()
    again = parse_config(cfg.to_dict())  # the resolved config reads back to the same runs
    assert [r.columns for r in again.runs] == [r.columns for r in cfg.runs]


def test_resolved_defaults_of_every_component_are_columns():
    cfg = parse_config(config(aggregator={"name": "CenteredClipping"}))
    (run,) = cfg.runs
    for kind, spec, prefix in (("aggregator", run.aggregator.rule, "aggregator_"), ("attack", run.attack, "attack_"),
                               ("algorithm", run.algorithm, "")):
        params = registry.config_params(registry.lookup(kind, spec.name))
        numbers = {k: p.default for k, p in params.items() if k != "f" and isinstance(p.default, (int, float))
                   and not isinstance(p.default, bool)}
        for k, v in numbers.items():
            assert run.columns[prefix + k] == (0.1 if (kind, k) == ("algorithm", "lr") else v), (kind, k)
    assert "aggregator_tau" in run.columns  # CenteredClipping's default radius


def test_f0_runs_are_not_duplicated_per_attack():
    rng_cases = list(itertools.product([[0], [0, 1], [1, 2], [0, 2, 3]], [1, 2, 3], [1, 2]))
    for fs, n_attacks, n_algs in rng_cases:
        attacks = ["SignFlipping", "LabelFlipping", "Gaussian"][:n_attacks]
        algs = [{"name": "DGD", "lr": 0.1 * (i + 1)} for i in range(n_algs)]
        cfg = parse_config(config(byzantine={"f": fs, "attack": attacks}, algorithm=algs))
        n_zero = fs.count(0)
        assert len(cfg.runs) == (n_zero + (len(fs) - n_zero) * n_attacks) * n_algs
        zero = [r for r in cfg.runs if r.f == 0]
        assert len(zero) == n_zero * n_algs and {r.columns["attack"] for r in zero} <= {"none"}
        assert len({tuple(sorted(r.columns.items())) for r in cfg.runs}) == len(cfg.runs)  # all distinct


def test_data_lists_sweep_instances_and_grid_data_names_them_in_one_line():
    cfg = parse_config(config(data={"source": "synthetic", "n_honest": [4, 6], "split": ["iid", "dirichlet"],
                                    "alpha": [0.5, 1.0]}))
    inst = [(d.n_honest, d.split, d.alpha) for d in cfg.data_instances]
    assert inst == [(n, s, a) for n in (4, 6) for s, a in (("iid", None), ("dirichlet", 0.5), ("dirichlet", 1.0))]
    assert [(r.columns["n_honest"], r.columns["split"], r.columns["alpha"]) for r in cfg.runs] == \
        [(n, s, "" if a is None else a) for n, s, a in inst]
    assert [r.data for r in cfg.runs] == list(cfg.data_instances)
    again = parse_config(cfg.to_dict())
    assert again.data_instances == cfg.data_instances
    # the runner runs every instance (tests/test_data_instances.py); GridSpec.data is one instance's
    with pytest.raises(ConfigError, match=r"GridSpec.data: this grid has 6 data instances \(iid n_honest=4, "
                                          r"dirichlet\(alpha=0.5\).*read GridSpec.data_instances") as err:
        cfg.data
    assert "\n" not in str(err.value)
    single = parse_config(config(data={"source": "synthetic", "split": "dirichlet", "alpha": [2.0]}))
    assert single.data.alpha == 2.0 and single.data.n_honest == 20


# ---- byzjax run --dry-run, list, --version ----------------------------------------------------

def test_dry_run_lists_every_run_and_counts_programs_without_running(tmp_path, capsys):
    from byzjax.app.cli import main
    from byzjax.app.config import load_config, plan

    toml = tmp_path / "c.toml"
    toml.write_text('rounds = 3\n[data]\nsource = "synthetic"\nn_honest = 4\nsplit = ["iid", "dirichlet"]\nalpha = 1.0\n'
                    '[byzantine]\nf = [0, 1]\nattack = ["SignFlipping", "ALIE"]\n'
                    '[[aggregator]]\nname = "TrMean"\npre_aggs = ["NNM"]\n[[aggregator]]\nname = "Median"\n'
                    '[[algorithm]]\nname = "DGD"\nlr = [0.1, 0.2]\n')
    assert main(["run", str(toml), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    cfg = load_config(toml)
    columns, groups = plan(cfg)
    assert len(columns) == 2 * 2 * (1 + 2) * 2 and len(lines) == len(columns) + 1
    assert sorted(i for g in groups for i in g) == list(range(len(columns)))
    # lr is an array leaf: runs differing only in lr share a program; splits, f, attacks and pipelines do not
    key = lambda c: (c["split"], c["f"], c["attack"], c["aggregator"])  # noqa: E731
    assert len(groups) == len({key(c) for c in columns})
    assert all(len({key(columns[i]) for i in g}) == 1 for g in groups)
    assert lines[-1].endswith(f"in {len(groups)} compiled programs")
    assert "f=1" in lines[-2] and "lr=0.2" in lines[-2] and not (tmp_path / "out").exists()


def test_list_and_version(capsys):
    from byzjax import __version__
    from byzjax.app.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "aggregators:" in out and "  CenteredClipping(" in out and "tau=" in out and "attacks:" in out
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"byzjax {__version__}"


def test_run_without_out_or_dry_run_is_a_one_line_error(tmp_path, capsys):
    from byzjax.app.cli import main

    toml = tmp_path / "c.toml"
    toml.write_text('[data]\nsource = "synthetic"\n[[algorithm]]\nname = "DGD"\n')
    assert main(["run", str(toml)]) == 2
    assert "run needs --out DIR" in capsys.readouterr().err
