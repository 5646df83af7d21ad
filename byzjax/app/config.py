"""Experiment description files (TOML) -> typed specs -> a grid of runs.

See README.md ("Config files") for the format. ``parse_config(raw)`` validates a config
dictionary once, section by section, into frozen specs (``DataSpec``, ``ProblemSpec``,
``ByzantineSpec``, ``WorkersSpec``, ``AggregatorSpec``, ``ComponentSpec``), each the image of
one config section, so a new option is one field. Types are strict: a bool is not a number, a
string is not a bool, a list is a sweep and never empty. ``GridSpec.runs`` expands the grid:
any component parameter given as a list is swept (Cartesian product); ``byzantine.f``,
``byzantine.attack``, ``byzantine.tolerated_f``, ``byzantine.participation`` and the
``[workers]`` values may be lists too. ``GridSpec.to_dict()`` is the resolved config (every
default filled in), the record of what ran. Runs that share their static structure are
compiled once; ``byzantine.max_f`` puts every ``f <= max_f`` into one structure (and, when it is not
given, several positive f share one: ``program_runs``). ``[metrics] exact``
(true / false; default: the problem's, true for logistic regression, false for networks) says whether
the logged training metrics are full-batch (``RobustOracle(exact_metrics=...)``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from byzjax import registry
from byzjax._validation import ConfigError
from byzjax.app.steps import has_step_expressions
from byzjax.data import DEFAULT_DATA_DIR, SPLITS

# ----------------------------------------------------------------------------------------------
# Strict value checks: one-line errors naming the section, the key, the value and what is allowed.


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fail(where: str, key: str, allowed: str, value) -> ConfigError:
    return ConfigError(f"{where}: {key} must be {allowed}, got {value!r}")


def check_int(where: str, key: str, value, minimum: int | None = None) -> int:
    """``value`` as an integer ``>= minimum`` (a bool or a float is refused)."""
    allowed = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}")
    if not _is_int(value) or (minimum is not None and value < minimum):
        raise _fail(where, key, allowed, value)
    return value


def check_number(where: str, key: str, value, *, low=None, high=None, low_open=False, high_open=False,
                 allowed: str | None = None) -> float:
    """``value`` as a finite number in the given interval (a bool, NaN or inf is refused)."""
    if allowed is None:
        parts = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
                 f"{'<' if high_open else '<='} {high:g}" if high is not None else ""]
        allowed = "a finite number" + (" " + " and ".join(p for p in parts if p) if any(parts) else "")
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise _fail(where, key, allowed, value)
    return value


def check_bool(where: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, key, "true or false (a TOML boolean, not a string)", value)
    return value


def check_str(where: str, key: str, value, choices=None) -> str:
    if not isinstance(value, str) or (choices is not None and value not in choices) or not value:
        allowed = "one of " + ", ".join(repr(c) for c in choices) if choices else "a non-empty string"
        raise _fail(where, key, allowed, value)
    return value


def _listed(where: str, key: str, value, check, what: str) -> tuple:
    """A scalar or a non-empty list of scalars (a sweep), each passed through ``check``."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: {key} is an empty list (a sweep needs at least one value; "
                              f"give {what} or a list of them)")
        return tuple(check(v) for v in value)
    try:
        return (check(value),)
    except ConfigError:
        raise ConfigError(f"{where}: {key} must be {what} or a list of them, got {value!r}") from None


def _known(where: str, table: dict, allowed) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _step_or_number(where: str, key: str, param: registry.Param, value):
    """An algorithm's number, or a step written as theory's expression (``byzjax.app.steps``:
    ``"1/L"``, ``"c/delta"``, ``"mu"``, ...), resolved per instance before the runs are built."""
    if isinstance(value, str):
        from byzjax.app.steps import parse_step

        return parse_step(where, key, value)
    return _param_value(where, key, param, value)


def _param_value(where: str, key: str, param: registry.Param, value):
    if param.kind == "int":
        return check_int(where, key, value)
    if param.kind == "bool":
        return check_bool(where, key, value)
    if param.kind == "str":
        return check_str(where, key, value)
    return check_number(where, key, value)


# ----------------------------------------------------------------------------------------------
# Specs: one frozen dataclass per config section.


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class SequenceValue:
    """One parameter value that is a sequence of integers (FedAvg's ``milestones``), not a sweep:
    in a config file a list of integers is one such value and a list of lists sweeps them."""

    values: tuple[int, ...]

    def __str__(self) -> str:
        return "[" + ", ".join(str(v) for v in self.values) + "]"


def _sequence_params(kind: str, cls: type) -> tuple[str, ...]:
    """The parameters of ``cls`` whose one value is a sequence (``AbstractAlgorithm.sequence_params``)."""
    return cls.sequence_params if kind == "algorithm" else ()


def _sequence(where: str, key: str, value):
    """A list of integers (one ``SequenceValue``) or a non-empty list of such lists (a sweep)."""
    allowed = "a list of integers (or a list of such lists, a sweep)"
    if not isinstance(value, list):
        raise _fail(where, key, allowed, value)
    if value and all(isinstance(v, list) for v in value):
        return tuple(_sequence(where, key, v) for v in value)
    if not all(_is_int(v) for v in value):
        raise _fail(where, key, allowed, value)
    return SequenceValue(tuple(value))


def _plain(v):
    """A parameter value as written in the resolved config (a sweep or a sequence as a list)."""
    if isinstance(v, SequenceValue):
        return list(v.values)
    if isinstance(v, tuple):
        return [_plain(e) for e in v]
    return v if _is_plain(v) else str(v)  # a step expression (byzjax.app.steps): its text


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component and its parameters; a tuple value is a sweep (see ``expand``)."""

    kind: str
    name: str  # the registered name (aliases resolved)
    params: dict = field(default_factory=dict)
    given: str = ""  # the name as written in the config (for labels); "" = name

    @classmethod
    def parse(cls, kind: str, entry, where: str, exclude=()) -> ComponentSpec:
        if isinstance(entry, str):
            name, raw = entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, raw = entry["name"], {k: v for k, v in entry.items() if k != "name"}
        else:
            raise ConfigError(f"{where} must be a name or a table with a 'name' key, got {entry!r}")
        canonical = registry.canonical(kind, name)
        component = registry.lookup(kind, name)
        allowed = {k: p for k, p in registry.config_params(component).items() if k not in exclude}
        sequences = _sequence_params(kind, component)
        unknown = [k for k in raw if k not in allowed and k not in sequences]
        if unknown:
            raise ConfigError(f"{kind} {canonical}: unknown parameter(s) {unknown}; "
                              f"allowed: {sorted([*allowed, *sequences])}")
        what = {"int": "an integer", "bool": "true or false", "str": "a string", "number": "a finite number"}
        params = {}
        for k, v in raw.items():
            if k in sequences:
                params[k] = _sequence(f"{kind} {canonical}", k, v)
                continue
            if kind == "algorithm" and allowed[k].kind == "number" and (
                    isinstance(v, str) or (isinstance(v, list) and any(isinstance(u, str) for u in v))):
                # a step written as theory's "1/L", "c/delta", "mu", ... (byzjax.app.steps)
                check = lambda x, k=k: _step_or_number(f"{kind} {canonical}", k, allowed[k], x)  # noqa: E731
                values = _listed(f"{kind} {canonical}", k, v, check, what["number"]) if isinstance(v, list) else (check(v),)
                params[k] = values if isinstance(v, list) else values[0]
                continue
            values = _listed(f"{kind} {canonical}", k, v, lambda x, k=k: _param_value(
                f"{kind} {canonical}", k, allowed[k], x), what[allowed[k].kind])
            params[k] = values if isinstance(v, list) else values[0]
        return cls(kind, canonical, params, name if name != canonical else "")

    @property
    def label_name(self) -> str:
        return self.given or self.name

    def expand(self) -> list[ComponentSpec]:
        """One spec per point of the Cartesian product of the swept (tuple-valued) parameters."""
        keys = list(self.params)
        choices = [v if isinstance(v, tuple) else (v,) for v in self.params.values()]
        return [dataclasses.replace(self, params=dict(zip(keys, combo))) for combo in itertools.product(*choices)]

    def resolved(self) -> dict:
        """``{"name": ..., **params}`` with every default the config could have set filled in
        (``f`` of the rules, filled from ``[byzantine]`` at build time, is left out), including the
        defaults that depend on another parameter's (unswept) value (``dependent_defaults``)."""
        cls = registry.lookup(self.kind, self.name)
        params = registry.config_params(cls)
        defaults = {k: p.default for k, p in params.items()
                    if k != "f" and p.default is not None and _is_plain(p.default)}
        if self.kind == "algorithm":
            for selector, tables in cls.dependent_defaults.items():
                value = self.params.get(selector, defaults.get(selector))
                defaults |= tables.get(value, {}) if not isinstance(value, tuple) else {}
        params = defaults | self.params
        return {"name": self.name, **{k: _plain(v) for k, v in params.items()}}

    def build(self, **extra):
        if has_step_expressions(self.params):
            raise ConfigError(f"{self.kind} {self.name}: the step expressions in {self.resolved()} are resolved from "
                              f"the measured L, mu, delta before building (byzjax.app.steps.resolve_grid)")
        params = {k: v.values if isinstance(v, SequenceValue) else v for k, v in self.params.items()}
        return registry.build(self.kind, self.name, params | extra)


def _is_plain(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def method_label(name: str, params: dict) -> str:
    """``D-GD(lr=0.1)``-style label used in tables and legends."""
    canon = registry.ALIASES.get(name, name)
    short = {"DGD": "D-GD", "DNAG": "D-NAG"}.get(canon, canon)
    inner = ",".join(f"{k}={_fmt(v)}" for k, v in params.items())
    return f"{short}({inner})" if inner else short


def algorithm_name(alg: ComponentSpec) -> str:
    """The ``algorithm`` column of a run of ``alg`` (one point of a sweep): the algorithm's registered
    name (aliases resolved: ``D-GD`` and ``moDSGD`` are ``DGD``), or the named variant its resolved
    parameters select (``AbstractAlgorithm.variants``: AEG with ``prox = true`` is ``ProxAEG``).
    Set from the spec, so that tables group runs by algorithm without reading the ``method`` label."""
    params = alg.resolved()
    for variant, values in registry.lookup("algorithm", alg.name).variants.items():
        if all(k in params and params[k] == v and type(params[k]) is type(v) for k, v in values.items()):
            return variant
    return alg.name


@dataclass(frozen=True)
class AggregatorSpec:
    """``[aggregator]``: the robust rule and the pre-aggregators applied before it, in order.

    ``[[aggregator]]`` tables (``parse_all``) give several pipelines, each with its own
    ``pre_aggs`` list; a list-valued parameter of a rule or pre-aggregator is swept inside its table.
    """

    rule: ComponentSpec
    pre: tuple[ComponentSpec, ...] = ()

    @classmethod
    def parse(cls, table, where: str = "aggregator") -> AggregatorSpec:
        if not isinstance(table, dict):
            raise ConfigError(f"config: [{where}] must be a table, got {table!r}")
        table = dict(table)
        pre_raw = table.pop("pre_aggs", [])
        if not isinstance(pre_raw, list):
            pre_raw = [pre_raw]
        if "name" not in table:
            raise ConfigError(f"config: [{where}] needs name = a registered aggregator (e.g. \"TrMean\"), "
                              f"got keys {sorted(table)}")
        pre = tuple(ComponentSpec.parse("preaggregator", p, f"{where}.pre_aggs") for p in pre_raw)
        return cls(ComponentSpec.parse("aggregator", table, where), pre)

    @classmethod
    def parse_all(cls, raw) -> tuple[AggregatorSpec, ...]:
        """One ``[aggregator]`` table or a non-empty list of ``[[aggregator]]`` tables."""
        if isinstance(raw, list):
            if not raw:
                raise ConfigError("config: [[aggregator]] is an empty list (give at least one table)")
            return tuple(cls.parse(t, f"aggregator {i + 1}") for i, t in enumerate(raw))
        return (cls.parse(raw),)

    def expand(self) -> list[AggregatorSpec]:
        return [AggregatorSpec(rule, tuple(pre)) for rule in self.rule.expand()
                for pre in itertools.product(*[p.expand() for p in self.pre])]

    @property
    def label(self) -> str:
        return "+".join([p.label_name for p in self.pre] + [self.rule.label_name])

    def resolved(self) -> dict:
        return self.rule.resolved() | {"pre_aggs": [p.resolved() for p in self.pre]}


NORMALIZATIONS = ("dataset", "mnist")
SPLIT_PARAMETER = {"dirichlet": "alpha", "gamma_similarity": "gamma"}  # the config key of each split's parameter


@dataclass(frozen=True)
class DataSpec:
    """``[data]``: where the data comes from and how the training part is divided.

    ``source``: ``"fashion-mnist"`` (the Debian package), ``"synthetic"``, a folder of MNIST-format
    IDX files, or ``"cifar10:DIR"`` (CIFAR-10's python pickles ``data_batch_1..5`` and ``test_batch``
    in ``DIR``; the prefix says which format a folder holds, and works with ``--data`` too). The
    problem's ``input_layout`` decides whether the samples stay images ``[H, W, C]`` (networks) or
    are flattened (logistic regression); ``"synthetic"`` then means ``byzjax.images.synthetic_images``
    of the network's input shape. ``normalization``: ``"dataset"``, ``"mnist"``, ``[mean, std]`` or
    per channel ``[[means], [stds]]`` (CIFAR-10).
    """

    source: str = "fashion-mnist"
    split: str = "iid"  # one of byzjax.data.SPLITS, or "partition" (given by the ``partition`` file)
    alpha: float | None = None  # the split's parameter: Dirichlet alpha, or gamma (config key ``gamma``)
    n_honest: int = 20
    normalization: str | tuple = "dataset"
    val_fraction: float = 0.2
    partition: str | None = None  # an .npz of index arrays per honest worker (see byzjax.data.load_partition)

    @classmethod
    def parse(cls, table: dict, base: Path | None = None) -> DataSpec:
        """One data instance (a list in ``split``, ``alpha`` or ``n_honest`` is refused: see ``parse_all``)."""
        instances = cls.parse_all(table, base)
        if len(instances) > 1:
            raise ConfigError("config [data]: lists of split / alpha / n_honest give several data instances; "
                              "read them with DataSpec.parse_all")
        return instances[0]

    @classmethod
    def parse_all(cls, table: dict, base: Path | None = None) -> tuple[DataSpec, ...]:
        """The data instances of ``[data]``: lists of ``split``, ``alpha`` and ``n_honest`` sweep.

        The instances are ``n_honest x (split, parameter)`` in the order given, where ``alpha``
        applies to the Dirichlet split only and ``gamma`` (in [0, 1]) to ``gamma_similarity`` only
        (``split = ["iid", "dirichlet", "gamma_similarity"], alpha = [0.1, 1], gamma = 0.5`` gives iid,
        Dirichlet(0.1), Dirichlet(1), gamma-similarity(0.5)); ``extreme`` takes none. Both are stored
        in ``DataSpec.alpha`` (the split's one parameter, as ByzFL's ``distribution_parameter``).
        """
        w = "config [data]"
        _known(w, table, [f.name for f in dataclasses.fields(cls)] + ["gamma"])
        source = check_str(w, "source", table.get("source", cls.source))
        n_honests = _listed(w, "n_honest", table.get("n_honest", cls.n_honest), lambda v: check_int(w, "n_honest", v, 1),
                            "a positive integer")
        val_fraction = check_number(w, "val_fraction", table.get("val_fraction", cls.val_fraction), low=0, high=1,
                                    low_open=True, high_open=True)
        norm = table.get("normalization", cls.normalization)
        if isinstance(norm, list):
            allowed = "'dataset', 'mnist', [mean, std] or per channel [[means], [stds]]"
            if len(norm) != 2:
                raise _fail(w, "normalization", allowed, norm)
            if isinstance(norm[0], list) or isinstance(norm[1], list):
                if not (isinstance(norm[0], list) and isinstance(norm[1], list) and len(norm[0]) == len(norm[1])
                        and norm[0]):
                    raise _fail(w, "normalization", allowed + " (as many means as stds)", norm)
                norm = (tuple(check_number(w, "normalization mean", v) for v in norm[0]),
                        tuple(check_number(w, "normalization std", v, low=0, low_open=True) for v in norm[1]))
            else:
                norm = (check_number(w, "normalization mean", norm[0]),
                        check_number(w, "normalization std", norm[1], low=0, low_open=True))
        else:
            check_str(w, "normalization", norm, NORMALIZATIONS)
        partition = table.get("partition")
        if partition is not None:
            if "split" in table or "alpha" in table or "gamma" in table:
                raise ConfigError(f"{w}: give either partition (a file of worker indices) or split/alpha/gamma, not both")
            partition = check_str(w, "partition", partition)
            if base is not None and not Path(partition).is_absolute():
                partition = str(base / partition)
            return tuple(cls(source, "partition", None, n, norm, val_fraction, partition) for n in n_honests)
        splits = _listed(w, "split", table.get("split", cls.split), lambda v: check_str(w, "split", v, SPLITS),
                         "one of " + ", ".join(repr(c) for c in SPLITS))
        if len(set(splits)) != len(splits):
            raise ConfigError(f"{w}: split lists a value twice, got {list(splits)!r}")
        checks = {"alpha": (dict(low=0, low_open=True), "a positive number"),
                  "gamma": (dict(low=0, high=1, allowed="a number in [0, 1]"), "a number in [0, 1]")}
        values = {}
        for split, key in SPLIT_PARAMETER.items():
            bounds, what = checks[key]
            if key in table:
                values[split] = _listed(w, key, table[key], lambda v, k=key, b=bounds: check_number(w, k, v, **b), what)
            if split in splits and key not in table:
                raise ConfigError(f"{w}: split {split!r} needs {key} = {what} (or a list of them)")
            if split not in splits and key in table:
                raise ConfigError(f"{w}: {key} is only used with split = {split!r} (split is "
                                  f"{splits[0] if len(splits) == 1 else list(splits)!r})")
        pairs = [(s, a) for s in splits for a in values.get(s, (None,))]
        return tuple(cls(source, s, a, n, norm, val_fraction, None) for n in n_honests for s, a in pairs)

    def resolved(self) -> dict:
        out = dataclasses.asdict(self)
        if isinstance(self.normalization, tuple):
            out["normalization"] = [list(v) if isinstance(v, tuple) else v for v in self.normalization]
        if self.partition is not None:
            del out["split"]
        if self.split == "gamma_similarity":
            out["gamma"] = out.pop("alpha")
        return {k: v for k, v in out.items() if v is not None}


# Bounds of problem parameters a config may set (the problem classes do not check them yet).
PROBLEM_BOUNDS = {"lam": dict(low=0.0)}


@dataclass(frozen=True)
class ProblemSpec:
    """``[problem]``: a registered problem, built from the data's shapes with ``params``."""

    name: str = "LogisticRegression"
    params: dict = field(default_factory=dict)  # every settable parameter, defaults filled in
    init: str | None = None  # an .npz initial point (see load_init)
    x0: np.ndarray | None = field(default=None, compare=False, repr=False)  # its flat vector (unchecked size)

    @classmethod
    def parse(cls, table: dict, base: Path | None = None) -> ProblemSpec:
        w = "config [problem]"
        if not isinstance(table, dict):
            raise ConfigError(f"{w} must be a table, got {table!r}")
        name = registry.canonical("problem", check_str(w, "name", table.get("name", cls.name)))
        allowed = registry.problem_params(name)
        _known(f"{w} ({name})", table, ["name", "init", *allowed])
        params = {}
        for k, p in allowed.items():
            value = table.get(k, p.default)
            if value is None and p.optional:  # an optional parameter left unset
                continue
            if isinstance(value, list):
                raise ConfigError(f"{w}: {k} cannot be swept (give one value), got {value!r}")
            if p.kind == "number":
                params[k] = check_number(w, k, value, **PROBLEM_BOUNDS.get(k, {}))
            else:
                params[k] = _param_value(w, k, p, value)
        init = table.get("init")
        x0 = None
        if init is not None:
            init = check_str(w, "init", init)
            if base is not None and not Path(init).is_absolute():
                init = str(base / init)
            x0 = read_init(init)
        return cls(name, params, init, x0)

    def resolved(self) -> dict:
        return {"name": self.name, **self.params} | ({"init": self.init} if self.init else {})

    def build(self, dataset):
        """The problem for ``dataset``; with ``init``, its initial point is checked against it."""
        problem = registry.build_problem(self.name, dataset, self.params)
        if self.x0 is not None:
            check_init(self.x0, problem, self.init)
        return problem


@dataclass(frozen=True)
class ByzantineSpec:
    """``[byzantine]``: Byzantine counts, the attacks, what the rules are told, participation.

    ``drop_tolerated_below_f``: leave out of the grid the runs whose ``tolerated_f`` (the f the rules
    assume) is below their ``f``, as ByzFL's benchmark does (``byzjax run --byzfl`` sets it); by default
    the grid is the full product of ``f`` and ``tolerated_f``.
    """

    f: tuple[int, ...] = (0,)
    attacks: tuple[ComponentSpec, ...] = ()
    tolerated_f: tuple[int | None, ...] = (None,)
    max_f: int | None = None
    participation: tuple[float | None, ...] = (None,)
    drop_tolerated_below_f: bool = False

    def keeps(self, f: int, tolerated_f: int | None) -> bool:
        """Whether the grid has runs with this ``(f, tolerated_f)`` (``drop_tolerated_below_f``)."""
        return not (self.drop_tolerated_below_f and tolerated_f is not None and tolerated_f < f)

    @classmethod
    def parse(cls, table: dict) -> ByzantineSpec:
        w = "config [byzantine]"
        _known(w, table, ["attack", "f", "max_f", "participation", "tolerated_f", "drop_tolerated_below_f"])
        fs = _listed(w, "f", table.get("f", 0), lambda v: check_int(w, "f", v, 0), "a non-negative integer")
        tolerated = (None,)
        if "tolerated_f" in table:
            tolerated = _listed(w, "tolerated_f", table["tolerated_f"], lambda v: check_int(w, "tolerated_f", v, 0),
                                "a non-negative integer")
        drop = check_bool(w, "drop_tolerated_below_f", table.get("drop_tolerated_below_f", False))
        if drop and all(t is not None and t < f for f in fs for t in tolerated):
            raise ConfigError(f"{w}: every tolerated_f {list(tolerated)} is below every f {list(fs)}, and "
                              f"drop_tolerated_below_f drops those runs: nothing is left to run")
        max_f = table.get("max_f")
        if max_f is not None and not (_is_int(max_f) and max_f >= max(fs)):
            raise ConfigError(f"{w}: max_f must be an integer >= every f (largest f: {max(fs)}), got {max_f!r}")
        part = (None,)
        if "participation" in table:
            part = _listed(w, "participation", table["participation"],
                           lambda v: check_number(w, "participation", v, low=0, high=1),
                           "a probability in [0, 1]")
        attack_raw = table.get("attack", "NoAttack")
        if isinstance(attack_raw, list) and not attack_raw:
            raise ConfigError(f"{w}: attack is an empty list (give a name, a table or a list of them)")
        attacks = tuple(ComponentSpec.parse("attack", a, "byzantine.attack", exclude=("f",))
                        for a in (attack_raw if isinstance(attack_raw, list) else [attack_raw]))
        return cls(fs, attacks, tolerated, max_f, part, drop)

    def resolved(self) -> dict:
        out = {"f": list(self.f), "attack": [a.resolved() for a in self.attacks]}
        if self.tolerated_f != (None,):
            out["tolerated_f"] = list(self.tolerated_f)
        if self.drop_tolerated_below_f:
            out["drop_tolerated_below_f"] = True
        if self.max_f is not None:
            out["max_f"] = self.max_f
        if self.participation != (None,):
            out["participation"] = list(self.participation)
        return out


@dataclass(frozen=True)
class WorkersSpec:
    """``[workers]``: what the honest workers send (mini-batch gradients, momenta)."""

    batch_size: tuple[int | None, ...] = (None,)
    momentum: tuple[float | None, ...] = (None,)
    local_steps: int = 1  # SGD steps per worker and round (static: one value)
    local_lr: tuple[float | None, ...] = (None,)

    @classmethod
    def parse(cls, table: dict) -> WorkersSpec:
        w = "config [workers]"
        _known(w, table, ["batch_size", "momentum", "local_steps", "local_lr"])
        batch = (None,)
        if "batch_size" in table:
            batch = _listed(w, "batch_size", table["batch_size"], lambda v: check_int(w, "batch_size", v, 1),
                            "a positive integer")
        momentum = (None,)
        if "momentum" in table:
            momentum = _listed(w, "momentum", table["momentum"],
                               lambda v: check_number(w, "momentum", v, low=0, high=1, high_open=True),
                               "a number in [0, 1)")
        steps = table.get("local_steps", 1)
        if isinstance(steps, list):
            raise ConfigError(f"{w}: local_steps cannot be swept (it fixes the program's structure), got {steps!r}")
        steps = check_int(w, "local_steps", steps, 1)
        local_lr = (None,)
        if "local_lr" in table:
            local_lr = _listed(w, "local_lr", table["local_lr"],
                               lambda v: check_number(w, "local_lr", v, low=0, low_open=True), "a positive number")
        if steps > 1 and local_lr == (None,):
            raise ConfigError(f"{w}: local_steps = {steps} needs local_lr (the workers' SGD step)")
        if steps == 1 and local_lr != (None,):
            raise ConfigError(f"{w}: local_lr is only used with local_steps > 1 (one step sends a gradient)")
        return cls(batch, momentum, steps, local_lr)

    def resolved(self) -> dict:
        out = {}
        if self.local_steps > 1:
            out["local_steps"] = self.local_steps
            out["local_lr"] = list(self.local_lr)
        if self.batch_size != (None,):
            out["batch_size"] = list(self.batch_size)
        if self.momentum != (None,):
            out["momentum"] = list(self.momentum)
        return out


@dataclass(frozen=True)
class RunSpec:
    """One configuration of a grid: the numbers and components it is built from, and its columns."""

    columns: dict  # label and numeric columns for the result files
    f: int  # Byzantine workers
    attack: ComponentSpec
    aggregator: AggregatorSpec
    algorithm: ComponentSpec
    tolerated_f: int | None = None  # the f the rules assume (ByzFL benchmark name; None: f)
    max_f: int | None = None  # Byzantine rows allocated (None: f, unmasked)
    participation: float | None = None  # P(a Byzantine worker sends in a round) (None: 1, unmasked)
    batch_size: int | None = None  # samples per honest worker and round (None: full batch)
    worker_momentum: float | None = None  # honest workers send momenta (None: gradients)
    exact_metrics: bool | None = None  # [metrics] exact (None: the problem's default)
    local_steps: int = 1  # [workers] local_steps
    local_lr: float | None = None  # [workers] local_lr
    data: DataSpec | None = None  # the run's data instance (split, alpha, n_honest)


# Columns a run always or optionally has; an algorithm parameter with one of these names is
# written as ``method_<name>``.
RESERVED_COLUMNS = {"run", "seed", "iteration", "comm_round", "stage", "f", "attack", "aggregator", "method",
                    "algorithm", "split", "alpha", "lam", "n_honest", "tolerated_f", "participation", "batch_size",
                    "worker_momentum", "local_steps", "local_lr"}

TOP_KEYS = {"name", "seeds", "rounds", "eval_every", "x64", "max_batch", "data", "problem", "byzantine",
            "aggregator", "algorithm", "workers", "metrics"}


def _seeds(where: str, key: str, value) -> tuple[int, ...]:
    if _is_int(value):
        return tuple(range(check_int(where, key, value, 1)))
    if isinstance(value, list) and value and all(_is_int(s) and s >= 0 for s in value) \
            and len(set(value)) == len(value):
        return tuple(value)
    raise _fail(where, key, "a positive count or a non-empty list of distinct non-negative integers", value)


@dataclass(frozen=True)
class GridSpec:
    """A whole config file, validated: the sections' specs and the grid of runs they expand to."""

    name: str
    seeds: tuple[int, ...]
    rounds: int
    eval_every: int
    x64: bool
    max_batch: int | None
    data_instances: tuple[DataSpec, ...]  # [data] with its lists of split / alpha / n_honest expanded
    problem: ProblemSpec
    byzantine: ByzantineSpec
    workers: WorkersSpec
    aggregators: tuple[AggregatorSpec, ...]
    algorithms: tuple[ComponentSpec, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # the config as written
    exact_metrics: bool | None = None  # [metrics] exact: full-batch training metrics (None: the problem's default)

    @cached_property
    def runs(self) -> list[RunSpec]:
        return expand(self)

    @property
    def data(self) -> DataSpec:
        """The data instance of a grid that has one (``data_instances`` lists them all)."""
        if len(self.data_instances) > 1:
            labels = ", ".join(_data_label(d) for d in self.data_instances)
            raise ConfigError(f"GridSpec.data: this grid has {len(self.data_instances)} data instances ({labels}); "
                              f"read GridSpec.data_instances (each run's is RunSpec.data)")
        return self.data_instances[0]

    def override(self, *, seeds=None, rounds=None, x64=None, source=None, max_batch=None) -> GridSpec:
        """This grid with command-line overrides, validated like the config values."""
        changes = {}
        if seeds is not None:
            changes["seeds"] = _seeds("command line", "--seeds", seeds)
        if rounds is not None:
            changes["rounds"] = check_int("command line", "--rounds", rounds, 1)
        if x64 is not None:
            changes["x64"] = check_bool("command line", "--x64", x64)
        if max_batch is not None:
            changes["max_batch"] = check_int("command line", "--max-batch", max_batch, 1)
        if source is not None:
            source = check_str("command line", "--data", source)
            changes["data_instances"] = tuple(dataclasses.replace(d, source=source) for d in self.data_instances)
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        """The resolved config: what runs, every default filled in; ``parse_config`` reads it back."""
        out = {"name": self.name, "seeds": list(self.seeds), "rounds": self.rounds, "eval_every": self.eval_every,
               "x64": self.x64}
        if self.max_batch is not None:
            out["max_batch"] = self.max_batch
        out |= {"data": _data_resolved(self.data_instances), "problem": self.problem.resolved(),
                "byzantine": self.byzantine.resolved()}
        if self.workers.resolved():
            out["workers"] = self.workers.resolved()
        aggs = [a.resolved() for a in self.aggregators]
        out["aggregator"] = aggs[0] if len(aggs) == 1 else aggs
        out["algorithm"] = [a.resolved() for a in self.algorithms]
        if self.exact_metrics is not None:
            out["metrics"] = {"exact": self.exact_metrics}
        return out


GridConfig = GridSpec  # the former name


def _data_label(d: DataSpec) -> str:
    key = SPLIT_PARAMETER.get(d.split)
    split = f"{d.split}({key}={d.alpha:g})" if key else d.split
    return f"{split} n_honest={d.n_honest}"


def _data_resolved(instances: tuple[DataSpec, ...]) -> dict:
    """``[data]`` of the resolved config: one instance's table, or lists that expand back to the instances."""
    out = instances[0].resolved()
    if len(instances) == 1:
        return out
    n_honest = list(dict.fromkeys(d.n_honest for d in instances))
    out["n_honest"] = n_honest if len(n_honest) > 1 else n_honest[0]
    if instances[0].partition is None:
        splits = list(dict.fromkeys(d.split for d in instances))
        out["split"] = splits if len(splits) > 1 else splits[0]
        for split, key in SPLIT_PARAMETER.items():
            out.pop(key, None)
            values = list(dict.fromkeys(d.alpha for d in instances if d.split == split))
            if values:
                out[key] = values if len(values) > 1 else values[0]
    return out


def parse_config(raw: dict, base: str | os.PathLike | None = None) -> GridSpec:
    """Validate a config dictionary (parsed TOML) into a ``GridSpec``; ``base`` is the folder that
    relative file names (``partition``, ``init``) are taken from (default: the working directory)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a table, got {raw!r}")
    _known("config", raw, TOP_KEYS)
    base = None if base is None else Path(base)
    w = "config"
    name = check_str(w, "name", raw.get("name", "experiment"))
    seeds = _seeds(w, "seeds", raw.get("seeds", 1))
    rounds = check_int(w, "rounds", raw.get("rounds", 100), 1)
    eval_every = check_int(w, "eval_every", raw.get("eval_every", 10), 1)
    x64 = check_bool(w, "x64", raw.get("x64", False))
    max_batch = raw.get("max_batch")
    if max_batch is not None:
        check_int(w, "max_batch", max_batch, 1)
    for section in ("data", "problem", "byzantine", "workers", "metrics"):
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"config: [{section}] must be a table, got {raw[section]!r}")
    data = DataSpec.parse_all(raw.get("data", {}), base)
    problem = ProblemSpec.parse(raw.get("problem", {}), base)
    byzantine = ByzantineSpec.parse(raw.get("byzantine", {}))
    workers = WorkersSpec.parse(raw.get("workers", {}))
    aggregators = AggregatorSpec.parse_all(raw.get("aggregator", {"name": "Average"}))
    algs = raw.get("algorithm")
    if not algs:
        raise ConfigError("config: at least one [[algorithm]] table is required (e.g. name = \"DGD\", lr = 0.1)")
    algorithms = tuple(ComponentSpec.parse("algorithm", a, "algorithm") for a in (algs if isinstance(algs, list)
                                                                                 else [algs]))
    metrics = raw.get("metrics", {})
    _known("config [metrics]", metrics, ["exact"])
    exact = None if "exact" not in metrics else check_bool("config [metrics]", "exact", metrics["exact"])
    return GridSpec(name, seeds, rounds, eval_every, x64, max_batch, data, problem, byzantine, workers,
                    aggregators, algorithms, raw, exact)


def _numbers(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "name" and _is_number(v)}


def _algorithm_columns(params: dict) -> dict:
    """Every number, string and integer sequence (written ``[30, 60]``) of the algorithm's resolved
    parameters (``method_<name>`` for a reserved column name)."""
    cols = {}
    for k, v in params.items():
        if isinstance(v, list):
            v = str(SequenceValue(tuple(v)))
        elif k == "name" or not (_is_number(v) or isinstance(v, str)):
            continue
        cols[f"method_{k}" if k in RESERVED_COLUMNS else k] = v
    return cols


def expand(grid: GridSpec) -> list[RunSpec]:
    """The runs of ``grid``: ``product_runs`` without the ``(f, tolerated_f)`` pairs ``[byzantine]``
    leaves out (``ByzantineSpec.keeps``: ``drop_tolerated_below_f``, ByzFL's filter)."""
    return [r for r in product_runs(grid) if grid.byzantine.keeps(r.f, r.tolerated_f)]


def dropped_runs(grid: GridSpec) -> list[RunSpec]:
    """The runs of ``product_runs(grid)`` that ``expand`` leaves out, in grid order."""
    return [r for r in product_runs(grid) if not grid.byzantine.keeps(r.f, r.tolerated_f)]


def product_runs(grid: GridSpec) -> list[RunSpec]:
    """Every run of the Cartesian product of ``grid``'s swept values, in a fixed order.

    Data instances (outermost), f, tolerated_f, participation, batch size, worker momentum,
    local lr, attack, pipeline, algorithm. At f = 0 the attack plays no part, so one run (attack
    column ``"none"``, built with the first attack so that it shares its structure under
    ``max_f``) stands for all attacks. The columns hold every number the run is built from,
    including each component's defaults (``ComponentSpec.resolved``), e.g. CenteredClipping's tau,
    the ``method`` label (``method_label``, for legends) and the ``algorithm`` (``algorithm_name``,
    what tables group by).
    """
    b, wk = grid.byzantine, grid.workers
    pipelines = [p for agg in grid.aggregators for p in agg.expand()]
    attacks = [a for att in b.attacks for a in att.expand()]
    algorithms = [a for alg in grid.algorithms for a in alg.expand()]
    runs = []
    for data, f, tolerated_f, participation, batch_size, beta, local_lr, (k, attack), pipeline, alg in \
            itertools.product(grid.data_instances, b.f, b.tolerated_f, b.participation, wk.batch_size, wk.momentum,
                              wk.local_lr, enumerate(attacks), pipelines, algorithms):
        if f == 0 and k > 0:
            continue  # the f = 0 run does not depend on the attack
        cols = {"f": f, "attack": attack.label_name if f else "none", "aggregator": pipeline.label,
                "method": method_label(alg.label_name, alg.params), "algorithm": algorithm_name(alg),
                "split": data.split,
                "alpha": "" if data.alpha is None else data.alpha, "lam": grid.problem.params.get("lam", ""),
                "n_honest": data.n_honest}
        for key, value in (("tolerated_f", tolerated_f), ("participation", participation),
                           ("batch_size", batch_size), ("worker_momentum", beta), ("local_lr", local_lr)):
            if value is not None:
                cols[key] = value
        if wk.local_steps > 1:
            cols["local_steps"] = wk.local_steps
        if f:
            cols |= {f"attack_{k}": v for k, v in _numbers(attack.resolved()).items()}
        cols |= {f"aggregator_{k}": v for k, v in _numbers(pipeline.rule.resolved()).items()}
        cols |= {f"{p.name}_{k}": v for p in pipeline.pre for k, v in _numbers(p.resolved()).items()}
        unresolved = [k for k, v in alg.params.items() if has_step_expressions({k: v})]  # columns once resolved
        cols |= _algorithm_columns({k: v for k, v in alg.resolved().items() if k not in unresolved})
        runs.append(RunSpec(cols, f, attack, pipeline, alg, tolerated_f, b.max_f, participation, batch_size, beta,
                            grid.exact_metrics, wk.local_steps, local_lr, data))
    return runs


def _supports_absent(pipeline: AggregatorSpec) -> bool:
    """Whether every rule of ``pipeline`` accepts a row mask of the workers present (the classes'
    ``supports_absent``)."""
    return registry.lookup("aggregator", pipeline.rule.name).supports_absent and all(
        registry.lookup("preaggregator", p.name).supports_absent for p in pipeline.pre)


def program_runs(grid: GridSpec) -> list[RunSpec]:
    """``grid.runs`` as the runner builds them: when ``[byzantine] max_f`` is not given and ``f``
    lists several positive values, every run with ``f > 0`` whose pipeline supports absent workers
    (``_supports_absent``) and without ``participation`` (whose per-row draws would be of another
    shape) gets ``max_f = max(f)``, so that runs differing only in f share one
    compiled program through the absent-worker path (``max_f`` Byzantine rows, the ``max_f - f``
    absent ones masked: every rule and the attack see the rows present alone, the same results;
    ``byzjax.oracle``). f = 0 runs stay unmasked: in an attacked program they would pay the
    attack's search for rows that are never sent. Columns and labels are unchanged."""
    b = grid.byzantine
    positive = sorted({r.f for r in grid.runs if r.f > 0})  # the f that run (drop_tolerated_below_f)
    if b.max_f is not None or len(positive) < 2:
        return grid.runs
    return [dataclasses.replace(r, max_f=positive[-1])
            if r.f > 0 and r.participation is None and _supports_absent(r.aggregator) else r for r in grid.runs]


def read_config_text(path: Path, what: str = "config", fmt: str = "TOML") -> str:
    """The UTF-8 text of a config file; a missing, unreadable or binary file is a one-line
    ``ConfigError`` naming ``what`` it should be (``"config"``, ``"ByzFL config"``) and its format."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a {fmt} file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}); a {what} is a {fmt} text file") from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from None


def load_config(path: str | os.PathLike) -> GridSpec:
    """Read and validate a TOML config file (relative data/init file names are taken from its folder)."""
    path = Path(path)
    text = read_config_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {' '.join(str(err).split())}") from None
    try:
        return parse_config(raw, base=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def resolve_source(source: str) -> str:
    """``fashion-mnist`` -> the Debian package's folder; other values pass through."""
    return str(DEFAULT_DATA_DIR) if source in ("fashion-mnist", "default") else source


# ----------------------------------------------------------------------------------------------
# A user-given initial point ([problem] init = "FILE.npz").


def read_init(path: str | os.PathLike) -> np.ndarray:
    """The flat initial point stored in ``path`` (an .npz), before its size is checked.

    Accepted layouts: one array (any key, or ``x0``) holding the flat vector in byzjax's layout,
    or ``weight`` ``[c, p]`` and ``bias`` ``[c]`` as in PyTorch's ``nn.Linear`` state_dict, mapped
    to byzjax's layout ``theta = (W, b)`` with ``W = weight.T`` (``[p, c]``, row-major) then ``b``
    (``LogisticRegression.unpack``).
    """
    where = f"[problem] init {path}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"{where}: not a readable .npz file ({' '.join(str(err).split())})") from None
    if set(arrays) >= {"weight", "bias"}:
        extra = sorted(set(arrays) - {"weight", "bias"})
        if extra:
            raise ConfigError(f"{where}: unexpected arrays {extra} beside weight and bias")
        weight, bias = arrays["weight"], arrays["bias"]
        if weight.ndim != 2 or bias.ndim != 1 or bias.shape[0] != weight.shape[0]:
            raise ConfigError(f"{where}: weight must be [c, p] and bias [c] (nn.Linear layout), "
                              f"got weight {weight.shape} and bias {bias.shape}")
        flat = np.concatenate([weight.T.reshape(-1), bias])
    elif len(arrays) == 1:
        flat = next(iter(arrays.values()))
        if flat.ndim != 1:
            raise ConfigError(f"{where}: the flat initial point must be a 1-D array, got shape {flat.shape}")
    else:
        raise ConfigError(f"{where}: expected one flat array or the arrays weight and bias, found {sorted(arrays)}")
    if flat.dtype.kind not in "iuf":
        raise ConfigError(f"{where}: values must be real numbers, got dtype {flat.dtype}")
    flat = flat.astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ConfigError(f"{where}: contains {int(np.sum(~np.isfinite(flat)))} non-finite values")
    return flat


def check_init(flat: np.ndarray, problem, path="init") -> np.ndarray:
    """``flat`` if it has the problem's dimension ``d``, else a one-line error."""
    if flat.shape != (problem.dim,):
        raise ConfigError(f"[problem] init {path}: has {flat.size} values, {type(problem).__name__} needs "
                          f"d = {problem.dim}")
    return flat


def load_init(path: str | os.PathLike, problem) -> np.ndarray:
    """The initial point of ``problem`` stored in ``path`` (see ``read_init``), as a flat ``[d]`` array."""
    return check_init(read_init(path), problem, path)


# ----------------------------------------------------------------------------------------------
# Specs -> experiments.


def _with_f(component: ComponentSpec, f: int) -> ComponentSpec:
    """Fill a rule's ``f`` with the declared number of Byzantine workers when not given."""
    cls = registry.lookup(component.kind, component.name)
    if "f" in registry.config_params(cls) and "f" not in component.params:
        return dataclasses.replace(component, params=component.params | {"f": f})
    return component


def build_experiment(spec: RunSpec, problem, n_honest: int, rounds: int, eval_every: int, x0=None):
    """The ``Experiment`` of one grid entry (components instantiated and bound)."""
    from byzjax.oracle import RobustOracle
    from byzjax.preaggregators import Pipeline
    from byzjax.simulate import Experiment

    f = spec.f if spec.tolerated_f is None else spec.tolerated_f
    pre = [_with_f(p, f).build() for p in spec.aggregator.pre]
    agg = _with_f(spec.aggregator.rule, f).build()
    pipeline = Pipeline(pre, agg)
    rows = spec.f if spec.max_f is None else spec.max_f
    attack = spec.attack.build() if rows else None
    oracle = RobustOracle(problem, pipeline, attack, n_honest=n_honest, n_byz=rows,
                          byz_count=None if spec.max_f is None else spec.f, participation=spec.participation,
                          batch_size=spec.batch_size, momentum=spec.worker_momentum, exact_metrics=spec.exact_metrics,
                          local_steps=spec.local_steps, local_lr=spec.local_lr)
    alg = spec.algorithm.build()
    exp = Experiment(oracle, alg, rounds=rounds, eval_every=eval_every, x0=x0)
    exp.check()
    return exp


# ----------------------------------------------------------------------------------------------
# The plan of a grid without running it (``byzjax run CONFIG --dry-run``).


def _stand_in_dataset(problem_name: str, n_honest: int):
    """A tiny synthetic data set of the problem's input layout: the programs' structure does not
    depend on the number of samples, so it stands in for the real data when counting programs."""
    from byzjax.data import synthetic_dataset
    from byzjax.images import synthetic_images

    cls = registry.lookup("problem", problem_name)
    n = max(8 * n_honest, 40)
    if cls.input_layout == "image":
        return synthetic_images(cls.sample_shape or (28, 28, 1), n_train=n, n_test=10)
    return synthetic_dataset(n_train=n, n_test=10, num_features=8)


def plan(grid: GridSpec) -> tuple[list[dict], list[list[int]]]:
    """``(columns of each run, groups of run indices)``: one group per compiled program, i.e. per
    data instance and static structure (``byzjax.sweep.group_by_structure`` on experiments built on
    a stand-in data set); nothing is run."""
    from byzjax.sweep import group_by_structure

    runs = program_runs(grid)
    groups = []
    for data in grid.data_instances:
        members = [i for i, r in enumerate(runs) if r.data == data]
        problem = registry.build_problem(grid.problem.name, _stand_in_dataset(grid.problem.name, data.n_honest),
                                         grid.problem.params)
        exps = [build_experiment(runs[i], problem, data.n_honest, grid.rounds, grid.eval_every) for i in members]
        groups += [[members[j] for j in g] for g in group_by_structure(exps)]
    return [r.columns for r in runs], groups


def _seed_layout(dataset, data: DataSpec, seeds) -> object:
    """One seed's ``FederatedData`` as the runner stacks it (shards padded to the widest seed's
    largest shard), its shards as zero-stride arrays: the shapes and dtypes, no copy of the data."""
    from byzjax.data import FederatedData, Shards, split_indices

    width = max(max(len(s) for s in split_indices(dataset.train_y, data.n_honest, data.split, data.alpha, seed))
                for seed in seeds)
    shape = (data.n_honest, width)
    x = np.broadcast_to(np.zeros((), dataset.train_x.dtype), shape + dataset.sample_shape)
    shards = Shards(x, np.broadcast_to(np.zeros((), np.int32), shape), np.broadcast_to(np.zeros((), x.dtype), shape))
    return FederatedData(shards, {"val": (dataset.val_x, dataset.val_y), "test": (dataset.test_x, dataset.test_y)})


def program_memory(grid: GridSpec, groups: list[list[int]], devices=None, max_memory: int | None = None) -> list[dict]:
    """The memory plan of every program of ``plan(grid)`` before anything is compiled, as
    ``byzjax.sweep.run_grid`` makes it: per device, ``shared + seeds x configurations per call x
    per_run`` bytes (``byzjax.devices.estimate_run_bytes`` for one run on the real data's shapes,
    the per-seed data counted once per seed), the configurations per call being the most that fit
    the budget (``devices.configs_that_fit``; ``max_memory`` or what the device reports).

    One dict per program: ``estimate_bytes``, ``shared_bytes``, ``per_run_bytes``,
    ``configs_per_call``, ``calls``, ``budget_bytes``. The data is loaded (not split into copies);
    a partition file's programs are estimated on the iid widths of its worker count.
    """
    import jax

    from byzjax import devices as dev
    from byzjax.images import load_source
    from byzjax.sweep import _per_run_estimate

    devs = dev.resolve_devices(devices)
    budget = dev.device_memory_budget(devs[0])[0] if max_memory is None else int(max_memory)
    runs, out, loaded = program_runs(grid), [], {}
    cls = registry.lookup("problem", grid.problem.name)
    with jax.enable_x64(grid.x64):
        for members in groups:
            data = runs[members[0]].data
            key = (resolve_source(data.source), str(data.normalization), data.val_fraction)
            if key not in loaded:
                loaded[key] = load_source(key[0], layout=cls.input_layout, image_shape=cls.sample_shape,
                                          normalization=data.normalization, val_fraction=data.val_fraction)
            dataset = loaded[key]
            layout = data if data.partition is None else dataclasses.replace(data, split="iid", alpha=None)
            one_seed = _seed_layout(dataset, layout, grid.seeds)
            problem = grid.problem.build(dataset)
            exp = build_experiment(runs[members[0]], problem, data.n_honest, grid.rounds, grid.eval_every)
            n_seeds, n_configs = len(grid.seeds), len(members)
            cap = n_configs if grid.max_batch is None else max(1, min(n_configs, grid.max_batch // n_seeds))
            d_s, d_c = dev.mesh_shape(n_seeds, cap, len(devs)) if len(devs) > 1 else (1, 1)
            seeds_per_device = math.ceil(n_seeds / d_s)
            shared = seeds_per_device * dev.tree_bytes(one_seed)
            per_run = _per_run_estimate(exp, one_seed)
            per_call = dev.configs_that_fit(budget, shared, per_run, seeds_per_device, d_c, cap)
            out.append({"estimate_bytes": int(shared + seeds_per_device * (per_call // d_c) * per_run),
                        "shared_bytes": int(shared), "per_run_bytes": int(per_run), "configs_per_call": per_call,
                        "calls": math.ceil(n_configs / per_call), "budget_bytes": int(budget)})
    return out


def format_bytes(n: int) -> str:
    """``n`` bytes in MiB below 1 GiB, else GiB (3 significant digits)."""
    return f"{n / 2 ** 20:.3g} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.3g} GiB"


def describe_components() -> list[str]:
    """One line per registered component, by kind: its name and its parameters with their defaults."""
    lines = []
    for kind in registry.KINDS:
        lines.append(f"{kind}s:")
        for name, cls in sorted(registry.registry(kind).items()):
            params = (registry.problem_params(name) if kind == "problem" else registry.config_params(cls))
            inner = ", ".join([f"{k}={p.default!r}" if p.default is None or _is_plain(p.default) else f"{k} (required)"
                               for k, p in params.items()] + [f"{k}=[...]" for k in _sequence_params(kind, cls)])
            lines.append(f"  {name}({inner})")
    return lines
