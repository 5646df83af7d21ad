"""ByzFL's benchmark config.json read as it is (issue 12): ``byzjax.app.byzfl`` and ``byzjax run --byzfl``.

The expected runs come from an independent statement of ByzFL's ``generate_all_combinations``
(benchmark.py): every list is a sweep (a list of tables expands each), except ``pre_aggregators`` and
``milestones`` unless their first item is a list; nested tables expand recursively; keys in file order.
Then tolerated_f = f where absent (else pairs tolerated_f < f dropped), then training x data seeds."""

import copy
import itertools
import json
from pathlib import Path

import pytest

from byzjax._validation import ConfigError
from byzjax.app.byzfl import load_byzfl, translate

PAPER = Path(__file__).parent / "data" / "byzfl_paper_config.json"
RESTRICTED = ("pre_aggregators", "milestones")


def combinations(node, key=None):
    """Every concrete version of ``node`` under ByzFL's list-means-sweep rule (itertools.product)."""
    if isinstance(node, dict):
        keys = list(node)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(combinations(node[k], k) for k in keys))]
    if isinstance(node, list):
        if not node or (key in RESTRICTED and not isinstance(node[0], list)):
            return [node]
        return [v for item in node for v in (combinations(item) if isinstance(item, dict) else [item])]
    return [node]


def byzfl_trainings(config):
    """ByzFL's list of trainings: combinations, tolerated_f, seeds (training seeds x data seeds)."""
    out = []
    for c in combinations(config):
        b = c["benchmark_config"]
        if "tolerated_f" not in config["benchmark_config"]:
            b["tolerated_f"] = b["f"]
        elif b["tolerated_f"] < b["f"]:
            continue
        for i in range(b.get("nb_training_seeds", 1)):
            for j in range(b.get("nb_data_distribution_seeds", 1)):
                d = copy.deepcopy(c)
                d["benchmark_config"]["training_seed"] = b.get("training_seed", 0) + i
                d["benchmark_config"]["data_distribution_seed"] = b.get("data_distribution_seed", 0) + j
                out.append(d)
    return out


SPLIT = {"iid": "iid", "dirichlet_niid": "dirichlet", "gamma_similarity_niid": "gamma_similarity",
         "extreme_niid": "extreme"}


def expected_line(t):
    """One ByzFL training as the byzjax run it must be (this test's own mapping table)."""
    b, model = t["benchmark_config"], t["model"]
    alg = b.get("training_algorithm", {"name": "DSGD", "parameters": {}})
    p = alg.get("parameters", {})
    if "learning_rate" in p:  # the authors' layout: per-algorithm step and momentum
        if alg["name"] == "DSGD":
            method, worker_m = f"DNAG lr={p['learning_rate']} momentum={p['momentum']}", 0.0
        elif alg["name"] == "moDSGD":
            method, worker_m = f"DGD lr={p['learning_rate']}", p["momentum"]
        else:
            method, worker_m = f"PIGS eta={p['learning_rate']}", 0.0
        lam, batch = model["weight_decay"], t["honest_clients"]["batch_size"]
    else:  # ByzFL's layout: server SGD on the clients' momenta
        method, worker_m = f"DGD lr={model.get('learning_rate', 0.1)}", t["honest_clients"].get("momentum", 0.9)
        lam, batch = t["honest_clients"].get("weight_decay", 1e-4), t["honest_clients"].get("batch_size", 32)
    dist = b["data_distribution"]
    param = dist.get("distribution_parameter") if SPLIT[dist["name"]] in ("dirichlet", "gamma_similarity") else None
    pre = t.get("pre_aggregators", [])
    pipeline = "+".join([q["name"] for q in pre] + [t["aggregator"]["name"]])
    agg_params = " ".join(f"{k}={v}" for k, v in sorted(t["aggregator"].get("parameters", {}).items()))
    seed = b["training_seed"] if b.get("nb_data_distribution_seeds", 1) == 1 else b["data_distribution_seed"]
    attack = " ".join([t["attack"]["name"]] + [f"{k}={v}" for k, v in sorted(t["attack"].get("parameters", {}).items())])
    return (f"f={b['f']} tolerated={b['tolerated_f']} attack={attack} agg={pipeline} {agg_params} "
            f"method={method} worker_momentum={float(worker_m)} batch={batch or 'full'} split={SPLIT[dist['name']]} "
            f"param={param} n_honest={b['nb_honest_clients']} lam={lam} seed={seed}")


def byzjax_lines(grid):
    """The same line for every run x seed of a byzjax grid."""
    lines = []
    for r in grid.runs:
        params = " ".join(f"{k}={v}" for k, v in r.algorithm.params.items())
        rule = r.aggregator.rule.params
        agg_params = " ".join(f"{k}={v}" for k, v in sorted(rule.items()))
        attack = " ".join([r.attack.name] + [f"{k}={v}" for k, v in sorted(r.attack.params.items())])
        for seed in grid.seeds:
            lines.append(
                f"f={r.f} tolerated={r.f if r.tolerated_f is None else r.tolerated_f} attack={attack} "
                f"agg={r.aggregator.label} {agg_params} method={r.algorithm.name} {params} "
                f"worker_momentum={float(r.worker_momentum or 0.0)} batch={r.batch_size or 'full'} "
                f"split={r.data.split} param={r.data.alpha} n_honest={r.data.n_honest} "
                f"lam={grid.problem.params['lam']} seed={seed}")
    return lines


def test_the_papers_config_expands_to_byzfls_64_runs():
    config = json.loads(PAPER.read_text())
    want = sorted(expected_line(t) for t in byzfl_trainings(config))
    grid, translation = load_byzfl(PAPER)
    got = sorted(byzjax_lines(grid))
    assert len(want) == 64 and got == want
    assert grid.raw == config  # recorded as written
    assert grid.rounds == 500 and grid.eval_every == 2 and grid.x64 and grid.data_instances[0].val_fraction == 0.2
    assert all(n.startswith("byzfl: ") and "\n" not in n for n in translation.notes)
    assert any("DSGD" in n and "D-NAG" in n for n in translation.notes)
    assert any("FedProxyProx -> PIGS" in n for n in translation.notes)
    assert any("mnist -> Fashion-MNIST" in n for n in translation.notes)


def random_upstream_config(rng):
    """A ByzFL-layout config with a random subset of its sweepable fields given as lists."""
    def pick(options, k_max=2):
        k = int(rng.integers(1, k_max + 1))
        values = [options[i] for i in sorted(rng.choice(len(options), size=k, replace=False))]
        return values if (k > 1 or rng.random() < 0.5) else values[0]

    fs = pick([1, 2])
    bench = {"training_algorithm": {"name": "DSGD", "parameters": {}}, "nb_steps": 3, "f": fs,
             "nb_honest_clients": pick([4, 6]),
             "data_distribution": [d for d in ({"name": "gamma_similarity_niid", "distribution_parameter": pick([1.0, 0.5])},
                                               {"name": "extreme_niid"}, {"name": "iid", "distribution_parameter": None},
                                               {"name": "dirichlet_niid", "distribution_parameter": pick([0.3, 3.0])})
                                   if rng.random() < 0.5] or [{"name": "iid"}]}
    if rng.random() < 0.5:
        bench["tolerated_f"] = pick([1, 2, 3])  # tolerated_f = 1 with f = 2: ByzFL drops the pair
    seeds = "nb_training_seeds" if rng.random() < 0.5 else "nb_data_distribution_seeds"
    bench[seeds], bench[seeds.replace("nb_", "").replace("seeds", "seed")] = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    aggregators = [{"name": "GeometricMedian", "parameters": {"nu": pick([0.1, 0.2]), "T": 3}},
                   {"name": "TrMean", "parameters": {}}, {"name": "Median"}]
    pipelines = [[{"name": "Clipping", "parameters": {"c": 2.0}}, {"name": "NNM", "parameters": {}}], [],
                 [{"name": "NNM"}]]
    attacks = [{"name": "SignFlipping", "parameters": {}}, {"name": "ALittleIsEnough", "parameters": {"tau": pick([1.0, 2.0])}},
               {"name": "Gaussian", "parameters": {"sigma": 2.0}}]
    return {"benchmark_config": bench,
            "model": {"name": "logreg_mnist", "dataset_name": "fashionmnist", "nb_labels": 10, "loss": "NLLLoss",
                      "learning_rate": pick([0.1, 0.05]), "milestones": []},
            "aggregator": pick(aggregators), "pre_aggregators": pick(pipelines[:2]) if rng.random() < 0.5 else pipelines[int(rng.integers(3))],
            "honest_clients": {"momentum": pick([0.9, 0.0]), "weight_decay": 0.0001, "batch_size": pick([25, 8])},
            "attack": pick(attacks),
            "evaluation_and_results": {"evaluation_delta": 50, "store_per_client_metrics": True}}


def test_byzfls_own_layout_sweeps_every_list_as_byzfl_does():
    """Seeded random configs (every sweepable field a scalar, a one-element or a two-element list)."""
    import numpy as np

    from byzjax.app.config import parse_config

    rng = np.random.default_rng(0)
    checked = dropping = 0
    while checked < 25:
        config = random_upstream_config(rng)
        want = sorted(expected_line(t) for t in byzfl_trainings(config))
        if len(want) > 128:
            continue
        if not want:  # every (f, tolerated_f) pair dropped: refused, nothing would run
            with pytest.raises(ConfigError, match=r"tolerated_f: .* every pair has tolerated_f < f"):
                translate(copy.deepcopy(config))
            continue
        listed = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
        bench = config["benchmark_config"]
        dropping += any(t < f for f in listed(bench["f"]) for t in listed(bench.get("tolerated_f", bench["f"])))
        translation = translate(copy.deepcopy(config))
        grid = parse_config(translation.config)
        assert sorted(byzjax_lines(grid)) == want, config
        assert any("[workers] momentum" in n for n in translation.notes)
        assert any("after aggregation" in n for n in translation.notes)
        checked += 1
    assert dropping >= 3  # some configs had pairs to drop


def test_pairs_tolerated_f_below_f_are_dropped_as_byzfl_drops_them(tmp_path, capsys):
    """tolerated_f in {1, 5} x f in {1, 5}: ByzFL's run_benchmark keeps tolerated_f >= f (three of the four
    pairs); byzjax's grid is those runs, one note per dropped group, and the dry run lists what is left."""
    from byzjax.app.cli import main

    config = json.loads(PAPER.read_text())
    config["benchmark_config"]["tolerated_f"] = [1, 5]
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    grid, translation = load_byzfl(file)
    want = sorted(expected_line(t) for t in byzfl_trainings(config))
    assert sorted(byzjax_lines(grid)) == want and len(want) == 3 * 32  # 64 runs over two f: 32 per pair
    assert {(r.f, r.tolerated_f) for r in grid.runs} == {(1, 1), (1, 5), (5, 5)}
    n_dropped = sum(1 for c in combinations(config) if c["benchmark_config"]["tolerated_f"] < c["benchmark_config"]["f"])
    assert n_dropped == 32
    drops = [n for n in translation.notes if "dropped" in n]
    assert drops == [f"byzfl: dropped {n_dropped} runs with tolerated_f=1 < f=5 (ByzFL skips them)"]
    assert grid.to_dict()["byzantine"]["drop_tolerated_below_f"] is True  # recorded: the resolved grid reads back
    from byzjax.app.config import parse_config

    pairs = lambda g: [(r.f, r.tolerated_f, r.columns["algorithm"]) for r in g.runs]  # noqa: E731
    assert pairs(parse_config(grid.to_dict())) == pairs(grid)
    # the dry run: the notes, then only the runs left (tolerated_f in {0, 1, 5}: three groups dropped, in grid order)
    small = TINY | {"benchmark_config": TINY["benchmark_config"] | {"f": [1, 5], "tolerated_f": [0, 1, 5],
                                                                      "nb_honest_clients": 12}}
    file.write_text(json.dumps(small))
    assert main(["run", "--byzfl", str(file), "--dry-run", "--data", "synthetic"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "dropped" in line] == [
        f"byzfl: dropped 2 runs with tolerated_f={t} < f={f} (ByzFL skips them)" for t, f in [(0, 1), (0, 5), (1, 5)]]
    runs = [line for line in out if line.startswith("run ")]
    assert len(runs) == 2 * 3 and out[-1].startswith("6 runs x 1 seeds = 6 trajectories")
    assert {(line.split("  f=")[1].split()[0], line.split("tolerated_f=")[1].split()[0]) for line in runs} == {
        ("1", "1"), ("1", "5"), ("5", "5")}


def test_a_toml_grid_keeps_the_full_product_unless_told_to_drop():
    from byzjax.app.config import dropped_runs, parse_config

    raw = {"byzantine": {"f": [0, 2, 4], "tolerated_f": [1, 3], "attack": ["SignFlipping", "ALIE"]},
           "algorithm": {"name": "DGD"}}
    full = parse_config(raw)
    pairs = [(r.f, r.tolerated_f) for r in full.runs]
    assert len(pairs) == 2 + 2 * 2 * 2 and not dropped_runs(full)  # f = 0 once per tolerated_f, not per attack
    drop = parse_config(raw | {"byzantine": raw["byzantine"] | {"drop_tolerated_below_f": True}})
    assert [(r.f, r.tolerated_f) for r in drop.runs] == [p for p in pairs if p[1] >= p[0]]
    assert [(r.f, r.tolerated_f) for r in dropped_runs(drop)] == [p for p in pairs if p[1] < p[0]]
    from byzjax.app.config import program_runs

    assert {r.max_f for r in program_runs(drop) if r.f} == {None}  # only f = 2 is left: no shared max_f = 4
    with pytest.raises(ConfigError, match=r"^config \[byzantine\]: every tolerated_f \[1\] is below every f \[2, 4\]"):
        parse_config(raw | {"byzantine": {"f": [2, 4], "tolerated_f": 1, "drop_tolerated_below_f": True}})
    with pytest.raises(ConfigError, match=r"drop_tolerated_below_f must be true or false .*, got 'yes'"):
        parse_config(raw | {"byzantine": raw["byzantine"] | {"drop_tolerated_below_f": "yes"}})


def mutated(path, value):
    config = json.loads(PAPER.read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


REFUSED = [
    (("benchmark_config", "nb_steps"), [100, 200], r"benchmark_config\.nb_steps: is a list of 2 values"),
    (("benchmark_config", "nb_workers_total"), 3, (r"benchmark_config\.nb_workers_total: is not a ByzFL benchmark "
                                                  r"field byzjax supports \(value 3")),
    (("benchmark_config", "tolerated_f"), [0], (r"benchmark_config\.tolerated_f: \[0\] with f \[1, 5\]: every pair "
                                               r"has tolerated_f < f, which ByzFL drops .*: nothing is left to run")),
    (("benchmark_config", "nb_training_seeds"), 1.5, r"benchmark_config\.nb_training_seeds: must be an integer >= 1"),
    (("benchmark_config", "size_train_set"), 1.0, r"benchmark_config\.size_train_set: must be in \(0, 1\)"),
    (("benchmark_config", "data_distribution"), [{"name": "pathological_niid"}],
     r"benchmark_config\.data_distribution\[0\]\.name: unknown distribution 'pathological_niid'"),
    (("benchmark_config", "data_distribution"), [{"name": "iid", "distribution_parameter": [1.0, 2.0]}],
     r"benchmark_config\.data_distribution\[0\]\.distribution_parameter: is a list of 2 values"),
    (("benchmark_config", "training_algorithm"), {"name": "FedAvg", "parameters": {}},
     r"benchmark_config\.training_algorithm\.name: FedAvg"),
    (("benchmark_config", "training_algorithm"), [{"name": "SCAFFOLD", "parameters": {"learning_rate": 0.1}}],
     r"benchmark_config\.training_algorithm\[0\]\.name: unknown ByzFL training algorithm 'SCAFFOLD'"),
    (("benchmark_config", "training_algorithm"),
     [{"name": "DSGD", "parameters": {"learning_rate": 0.1, "optimizer_name": "Adam"}}],
     r"training_algorithm\[0\]\.parameters\.optimizer_name: 'Adam' is not supported"),
    (("benchmark_config", "training_algorithm"),
     [{"name": "DSGD", "parameters": {"learning_rate": 0.1, "learning_rate_decay": 0.5, "milestones": [100]}}],
     r"training_algorithm\[0\]\.parameters\.milestones: step-size schedules"),
    (("benchmark_config", "training_algorithm"),
     [{"name": "moDSGD", "parameters": {"learning_rate": 0.1, "momentum": 0.9}},
      {"name": "FedProxyProx", "parameters": {"learning_rate": 1.0, "momentum": 0.0}}],
     r"benchmark_config\.training_algorithm: moDSGD's client momentum must be the same"),
    (("model", "name"), "ResNet50", r"model\.name: 'ResNet50' is not a byzjax model"),
    (("model", "dataset_name"), "emnist", r"model\.dataset_name: 'emnist' is not supported"),
    (("model", "loss"), "MSELoss", r"model\.loss: 'MSELoss' is not supported"),
    (("model", "weight_decay"), [0.001, 0.01], r"model\.weight_decay: is a list of 2 values"),
    (("aggregator",), [{"name": "Zeno", "parameters": {}}], r"aggregator\[0\]\.name: unknown aggregator 'Zeno'"),
    (("aggregator",), [{"name": "TrMean", "parameters": {"beta": 0.1}}],
     r"aggregator\[0\]\.parameters\.beta: aggregator TrMean has no parameter 'beta'"),
    (("pre_aggregators",), [{"name": "Clipping", "parameters": {"c": [1.0, 2.0]}}],
     r"pre_aggregators\[0\]\.parameters\.c: is a list \[1\.0, 2\.0\], which ByzFL does not sweep"),
    (("attack",), [{"name": "Foe", "parameters": {}}], r"attack\[0\]\.name: unknown attack 'Foe'"),
    (("evaluation_and_results", "store_models"), True, r"evaluation_and_results\.store_models: true is not supported"),
    (("evaluation_and_results", "evaluation_delta"), 0, (r"evaluation_and_results\.evaluation_delta: must be an "
                                                        r"integer >= 1, got 0")),
    (("honest_clients", "batch_size"), [0, 32], r"honest_clients\.batch_size: mixes 0"),
    (("extra_section",), {}, r"config\.extra_section: is not a ByzFL benchmark field"),
]


def test_each_unsupported_field_is_refused_by_name_in_one_line(tmp_path):
    for path, value, match in REFUSED:
        file = tmp_path / "config.json"
        file.write_text(json.dumps(mutated(path, value)))
        with pytest.raises(ConfigError, match=match) as err:
            load_byzfl(file)
        assert "\n" not in str(err.value) and str(err.value).startswith(f"{file}: "), path
    both = mutated(("benchmark_config", "nb_training_seeds"), 2)
    both["benchmark_config"]["nb_data_distribution_seeds"] = 3
    with pytest.raises(ConfigError, match=r"benchmark_config\.nb_data_distribution_seeds: byzjax's seed sets the "
                                          r"data split and the initialisation together"):
        translate(both)


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"benchmark_config": {"f": [1, }')
    with pytest.raises(ConfigError, match=r"bad\.json: malformed JSON: .* \(line 1, column"):
        load_byzfl(bad)
    with pytest.raises(ConfigError, match="ByzFL config file not found"):
        load_byzfl(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="byzfl config: must be a JSON object, got list"):
        load_byzfl(bad)


TINY = {"benchmark_config": {"nb_steps": 3, "nb_honest_clients": 4, "f": 1, "size_train_set": 0.8,
                             "data_distribution": [{"name": "gamma_similarity_niid", "distribution_parameter": 0.5}]},
        "model": {"name": "logreg_mnist", "dataset_name": "mnist", "learning_rate": [0.05, 0.1]},
        "aggregator": {"name": "TrMean"}, "pre_aggregators": [{"name": "NNM"}],
        "honest_clients": {"momentum": 0.0, "weight_decay": 0.0, "batch_size": 0},
        "attack": [{"name": "SignFlipping"}],
        "evaluation_and_results": {"evaluation_delta": 1, "store_per_client_metrics": False}}


def test_dry_run_prints_the_notes_the_runs_and_the_programs(tmp_path, capsys):
    from byzjax.app.cli import main

    assert main(["run", "--byzfl", str(PAPER), "--dry-run", "--data", "synthetic"]) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    memory = [line for line in captured.err.splitlines() if line.startswith("program ")]
    assert len(memory) == 8 and all("estimated memory per device" in line for line in memory)
    assert all(line.startswith(f"program {g}: ") for g, line in enumerate(memory))
    notes = [line for line in out if line.startswith("byzfl: ")]
    runs = [line for line in out if line.startswith("run ")]
    assert len(runs) == 64 and notes and len(out) == len(notes) + 64 + 1
    # programs: data instance x attack x {D-GD/D-NAG, PIGS} (f and PIGS's six steps share one)
    assert out[-1] == "64 runs x 1 seeds = 64 trajectories of 500 rounds in 8 compiled programs"
    assert not (tmp_path / "results").exists()
    assert main(["run", str(PAPER), "--byzfl", str(PAPER), "--dry-run"]) == 2
    assert "run needs a TOML CONFIG or --byzfl CONFIG.json (one of them), got both" in capsys.readouterr().err
    assert main(["run", str(PAPER), "--dry-run"]) == 2
    assert "is a JSON file; CONFIG is a TOML file (for a ByzFL benchmark config.json use --byzfl)" in \
        capsys.readouterr().err


def test_a_tiny_byzfl_config_runs_on_synthetic_data(tmp_path, capsys, monkeypatch):
    import csv

    from byzjax.app.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY | {"evaluation_and_results": TINY["evaluation_and_results"]
                                         | {"results_directory": "./res"}}))
    monkeypatch.chdir(tmp_path)  # ByzFL's results_directory is relative to where it runs
    assert main(["run", "--byzfl", str(config), "--data", "synthetic", "--no-plot", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "byzfl: results_directory ./res -> --out ./res" in out
    record = json.loads((tmp_path / "res" / "config.json").read_text())
    assert record["as_written"] == json.loads(config.read_text())
    assert record["config"]["data"]["split"] == "gamma_similarity" and record["config"]["data"]["gamma"] == 0.5
    with open(tmp_path / "res" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(float(r["lr"]) for r in rows) == [0.05, 0.1]
    assert {r["method"] for r in rows} == {"D-GD(lr=0.05)", "D-GD(lr=0.1)"} and {r["algorithm"] for r in rows} == {"DGD"}
    assert all(r["split"] == "gamma_similarity" and float(r["alpha"]) == 0.5 for r in rows)
    with open(tmp_path / "res" / "metrics.csv") as fh:
        metrics = list(csv.DictReader(fh))
    assert sorted((m["run"], int(m["iteration"])) for m in metrics) == [(r, i) for r in "01" for i in range(4)]
    losses = [float(m["loss"]) for m in metrics if m["loss"]]
    assert len(losses) >= 2 * 3 and all(0 < v < 10 for v in losses)
    # the dry run's memory estimate is the plan the runner made (same formula, same data shapes)
    from byzjax.app.config import plan, program_memory

    grid = load_byzfl(config)[0].override(source="synthetic")
    _, groups = plan(grid)
    assert [m["estimate_bytes"] for m in program_memory(grid, groups)] == \
        [q["estimate_bytes"] for q in record["meta"]["plans"]]
