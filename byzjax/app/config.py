"""Experiment description files (TOML) -> a grid of runs.

See README.md ("Config files") for the format. Any component parameter given as
a list is swept (Cartesian product); ``byzantine.f``, ``byzantine.attack``,
``byzantine.tolerated_f`` and ``byzantine.participation`` may be lists too. Runs
that share their static structure are compiled once; ``byzantine.max_f`` puts
every ``f <= max_f`` into one structure (rows past ``f`` masked as absent).
"""

from __future__ import annotations

import inspect
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.data import DEFAULT_DATA_DIR

TOP_KEYS = {"name", "seeds", "rounds", "eval_every", "x64", "max_batch", "data", "problem", "byzantine",
            "aggregator", "algorithm", "workers"}
DATA_KEYS = {"source", "split", "alpha", "n_honest", "normalization", "val_fraction"}


@dataclass
class RunSpec:
    """One configuration of a grid: its label columns and how to build it."""

    columns: dict
    f: int  # Byzantine workers
    attack: tuple  # (name, params)
    aggregator: dict
    algorithm: tuple  # (name, params)
    tolerated_f: int | None = None  # the f the rules assume (ByzFL benchmark name; None: f)
    max_f: int | None = None  # Byzantine rows allocated (None: f, unmasked)
    participation: float | None = None  # P(a Byzantine worker sends in a round) (None: 1, unmasked)
    batch_size: int | None = None  # samples per honest worker and round (None: full batch)
    worker_momentum: float | None = None  # honest workers send momenta (None: gradients)


@dataclass
class GridConfig:
    name: str
    seeds: list[int]
    rounds: int
    eval_every: int
    x64: bool
    max_batch: int | None
    data: dict
    problem: dict
    runs: list[RunSpec]
    raw: dict = field(default_factory=dict)


def _component(entry, what: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise ConfigError(f"{what} must be a name or a table with a 'name' key, got {entry!r}")


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _product(params: dict) -> list[dict]:
    """Cartesian product over list-valued parameters."""
    keys = list(params)
    choices = [_as_list(params[k]) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(name: str, params: dict) -> str:
    """``D-GD(lr=0.1)``-style label used in tables and legends."""
    short = {"DGD": "D-GD", "DNAG": "D-NAG"}.get(registry.ALIASES.get(name, name), registry.ALIASES.get(name, name))
    inner = ",".join(f"{k}={_fmt(v)}" for k, v in params.items())
    return f"{short}({inner})" if inner else short


def parse_config(raw: dict) -> GridConfig:
    """Validate a config dictionary and expand it into a grid of runs."""
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"config: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    seeds = raw.get("seeds", 1)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"config: seeds must be a positive count or a list of non-negative integers, got {raw.get('seeds')!r}")
    rounds = raw.get("rounds", 100)
    eval_every = raw.get("eval_every", 10)
    for key, val in (("rounds", rounds), ("eval_every", eval_every)):
        if not isinstance(val, int) or val < 1:
            raise ConfigError(f"config: {key} must be a positive integer, got {val!r}")

    data = dict(raw.get("data", {}))
    bad = set(data) - DATA_KEYS
    if bad:
        raise ConfigError(f"config [data]: unknown key(s) {sorted(bad)}; allowed: {sorted(DATA_KEYS)}")
    data.setdefault("source", "fashion-mnist")
    data.setdefault("split", "iid")
    data.setdefault("n_honest", 20)
    data.setdefault("normalization", "dataset")
    if data["split"] not in ("iid", "dirichlet"):
        raise ConfigError(f"config [data]: split must be 'iid' or 'dirichlet', got {data['split']!r}")
    if data["split"] == "dirichlet" and not isinstance(data.get("alpha"), (int, float)):
        raise ConfigError("config [data]: split 'dirichlet' needs a numeric alpha")
    if not isinstance(data["n_honest"], int) or data["n_honest"] < 1:
        raise ConfigError(f"config [data]: n_honest must be a positive integer, got {data['n_honest']!r}")

    problem = dict(raw.get("problem", {"name": "LogisticRegression"}))
    problem.setdefault("name", "LogisticRegression")
    registry.lookup("problem", problem["name"])

    byz = dict(raw.get("byzantine", {}))
    byz_keys = ["attack", "f", "max_f", "participation", "tolerated_f"]
    bad = set(byz) - set(byz_keys)
    if bad:
        raise ConfigError(f"config [byzantine]: unknown key(s) {sorted(bad)}; allowed: {byz_keys}")
    fs = _as_list(byz.get("f", 0))
    if not all(_count(f) for f in fs):
        raise ConfigError(f"config [byzantine]: f must be a non-negative integer or a list of them, got {byz.get('f')!r}")
    declared = _as_list(byz.get("tolerated_f"))
    if "tolerated_f" in byz and not all(_count(f) for f in declared):
        raise ConfigError(f"config [byzantine]: tolerated_f must be a non-negative integer or a list of them, "
                          f"got {byz.get('tolerated_f')!r}")
    max_f = byz.get("max_f")
    if max_f is not None and not (_count(max_f) and max_f >= max(fs)):
        raise ConfigError(f"config [byzantine]: max_f must be an integer >= every f (largest f: {max(fs)}), got {max_f!r}")
    participations = _as_list(byz.get("participation"))
    if "participation" in byz and not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1
                                          for p in participations):
        raise ConfigError(f"config [byzantine]: participation must be a probability in [0, 1] or a list of them, "
                          f"got {byz.get('participation')!r}")
    attacks = [_component(a, "byzantine.attack") for a in _as_list(byz.get("attack", "NoAttack"))]
    for name, _ in attacks:
        registry.lookup("attack", name)

    workers = dict(raw.get("workers", {}))
    if set(workers) - {"batch_size", "momentum"}:
        raise ConfigError(f"config [workers]: unknown key(s) {sorted(set(workers) - {'batch_size', 'momentum'})}; "
                          "allowed: ['batch_size', 'momentum']")
    batch_sizes = _as_list(workers.get("batch_size"))
    if "batch_size" in workers and not all(_count(b) and b >= 1 for b in batch_sizes):
        raise ConfigError(f"config [workers]: batch_size must be a positive integer or a list of them, "
                          f"got {workers.get('batch_size')!r}")
    momenta = _as_list(workers.get("momentum"))
    if "momentum" in workers and not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                         for b in momenta):
        raise ConfigError(f"config [workers]: momentum must be a number in [0, 1) or a list of them, "
                          f"got {workers.get('momentum')!r}")

    agg = dict(raw.get("aggregator", {"name": "Average"}))
    agg_name, agg_params = _component(agg, "aggregator")
    pre = [_component(p, "aggregator.pre_aggs") for p in _as_list(agg_params.pop("pre_aggs", []))]
    registry.lookup("aggregator", agg_name)
    for name, _ in pre:
        registry.lookup("preaggregator", name)
    pipelines = [(agg_p, pre_p) for agg_p in _product(agg_params)
                 for pre_p in itertools.product(*[[(n, q) for q in _product(p)] for n, p in pre])]

    algs = raw.get("algorithm")
    if not algs:
        raise ConfigError("config: at least one [[algorithm]] table is required (e.g. name = \"DGD\", lr = 0.1)")
    algs = [_component(a, "algorithm") for a in _as_list(algs)]
    for name, _ in algs:
        registry.lookup("algorithm", name)

    runs = []
    grid = itertools.product(fs, declared, participations, batch_sizes, momenta, attacks, pipelines, algs)
    for f, tolerated_f, participation, batch_size, beta, (att_name, att_params), (agg_p, pre_p), \
            (alg_name, alg_params) in grid:
        for att_p, alg_p in itertools.product(_product(att_params), _product(alg_params)):
            cols = {
                "f": f, "attack": att_name if f else "none", "aggregator": _pipeline_label(agg_name, pre),
                "method": method_label(alg_name, alg_p), "split": data["split"],
                "alpha": data.get("alpha", ""), "lam": problem.get("lam", ""),
            }
            if tolerated_f is not None:
                cols["tolerated_f"] = tolerated_f
            if participation is not None:
                cols["participation"] = participation
            if batch_size is not None:
                cols["batch_size"] = batch_size
            if beta is not None:
                cols["worker_momentum"] = beta
            cols |= {f"attack_{k}": v for k, v in att_p.items()}
            cols |= {f"aggregator_{k}": v for k, v in agg_p.items()}
            cols |= {f"{n}_{k}": v for n, q in pre_p for k, v in q.items()}
            runs.append(RunSpec(cols, f, (att_name, att_p), {"name": agg_name, "params": agg_p, "pre": list(pre_p)},
                                (alg_name, alg_p), tolerated_f, max_f, participation, batch_size, beta))
    return GridConfig(raw.get("name", "experiment"), seeds, rounds, eval_every, bool(raw.get("x64", False)),
                      raw.get("max_batch"), data, problem, runs, raw)


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _pipeline_label(agg: str, pre: list) -> str:
    return "+".join([p for p, _ in pre] + [agg])


def load_config(path: str | os.PathLike) -> GridConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def resolve_source(source: str) -> str:
    """``fashion-mnist`` -> the Debian package's folder; other values pass through."""
    return str(DEFAULT_DATA_DIR) if source in ("fashion-mnist", "default") else source


def _with_f(kind: str, name: str, params: dict, f: int) -> dict:
    """Fill a rule's ``f`` with the declared number of Byzantine workers when not given."""
    cls = registry.lookup(kind, name)
    if "f" in inspect.signature(cls).parameters and "f" not in params:
        return params | {"f": f}
    return params


def build_experiment(spec: RunSpec, problem, n_honest: int, rounds: int, eval_every: int):
    """The ``Experiment`` of one grid entry (components instantiated and bound)."""
    from byzjax.oracle import RobustOracle
    from byzjax.preaggregators import Pipeline
    from byzjax.simulate import Experiment

    f = spec.f if spec.tolerated_f is None else spec.tolerated_f
    pre = [registry.build("preaggregator", n, _with_f("preaggregator", n, p, f)) for n, p in spec.aggregator["pre"]]
    agg_name, agg_params = spec.aggregator["name"], spec.aggregator["params"]
    agg = registry.build("aggregator", agg_name, _with_f("aggregator", agg_name, agg_params, f))
    pipeline = Pipeline(pre, agg)
    att_name, att_params = spec.attack
    rows = spec.f if spec.max_f is None else spec.max_f
    attack = registry.build("attack", att_name, att_params) if rows else None
    oracle = RobustOracle(problem, pipeline, attack, n_honest=n_honest, n_byz=rows,
                          byz_count=None if spec.max_f is None else spec.f, participation=spec.participation,
                          batch_size=spec.batch_size, momentum=spec.worker_momentum)
    alg = registry.build("algorithm", *spec.algorithm)
    exp = Experiment(oracle, alg, rounds=rounds, eval_every=eval_every)
    exp.check()
    return exp
