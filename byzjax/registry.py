"""Components by name (ByzFL's class names, plus the paper's short names).

``registry(kind)`` is the table of one kind (aggregator, preaggregator, attack, algorithm,
problem); ``config_params(cls)`` the parameters a config file may set on a class and the type
each takes; ``build`` / ``build_problem`` instantiate a component from its name and parameters.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from byzjax import aggregators, algorithms, attacks, networks, preaggregators, problems
from byzjax._validation import ConfigError

ALIASES = {
    "D-GD": "DGD", "moDSGD": "DGD", "D-NAG": "DNAG", "DSGD": "DNAG", "FedProxyProx": "PIGS",
    "IPM": "InnerProductManipulation", "ALIE": "ALittleIsEnough",
    "Optimal_IPM": "Optimal_InnerProductManipulation", "Optimal_ALIE": "Optimal_ALittleIsEnough",
    "logistic": "LogisticRegression", "None": "NoAttack", "none": "NoAttack",
    "Huber": "AdaptiveClipping",  # the authors' later code's name for it (HuberMean is another rule)
}


# Problems a config can name: each class builds itself from the loaded data set's shapes
# (``AbstractProblem.from_dataset(dataset, **params)``); the networks under ByzFL's model names
# (``byzjax.networks.NETWORK_PROBLEMS``: logreg_mnist, fc_mnist, cnn_mnist, cnn_cifar, ResNet18).
PROBLEMS: dict[str, type[problems.AbstractProblem]] = {"LogisticRegression": problems.LogisticRegression,
                                                       **networks.NETWORK_PROBLEMS}


def _concrete_subclasses(module, base) -> dict[str, type]:
    return {
        name: obj for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and not inspect.isabstract(obj) and not name.startswith("_")
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + "."))
    }


KINDS = ("aggregator", "preaggregator", "attack", "algorithm", "problem")


def registry(kind: str) -> dict[str, type]:
    """``{name: class}`` of every registered component of ``kind`` (one of ``KINDS``)."""
    if kind == "aggregator":
        out = _concrete_subclasses(aggregators, aggregators.AbstractAggregator)
        out.pop("Pipeline", None)
        return out
    if kind == "preaggregator":
        return _concrete_subclasses(preaggregators, preaggregators.AbstractPreAggregator)
    if kind == "attack":
        return _concrete_subclasses(attacks, attacks.AbstractAttack)
    if kind == "algorithm":
        return _concrete_subclasses(algorithms, algorithms.AbstractAlgorithm)
    if kind == "problem":
        return dict(PROBLEMS)
    raise KeyError(kind)


def canonical(kind: str, name: str) -> str:
    """The registered name of ``name`` (itself or the target of an alias), with an error listing the choices."""
    if not isinstance(name, str):
        raise ConfigError(f"{kind} name must be a string, got {name!r}")
    table = registry(kind)
    key = ALIASES.get(name, name)
    if key not in table:
        raise ConfigError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))}")
    return key


def lookup(kind: str, name: str) -> type:
    """The class registered under ``name`` (or an alias), with an error listing the choices."""
    return registry(kind)[canonical(kind, name)]


class Param(NamedTuple):
    """A parameter a config may set: its type (``int``, ``number``, ``bool``, ``str``), its default
    (``inspect.Parameter.empty`` when required) and whether it may be left unset (``None``)."""

    kind: str
    default: object
    optional: bool


def _param_kind(p: inspect.Parameter) -> Param | None:
    ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "Any")
    optional = p.default is None or "None" in ann
    base = ann.replace("| None", "").replace("None |", "").strip()
    if base in ("int", "bool", "str", "float"):
        return Param("number" if base == "float" else base, p.default, optional)
    if base not in ("Any", "_empty", "empty"):
        return None  # a component or a tuple: set by the builder, never by a config
    d = p.default
    if isinstance(d, bool):
        return Param("bool", d, optional)
    if isinstance(d, str):
        return Param("str", d, optional)
    if d is None or d is inspect.Parameter.empty or isinstance(d, (int, float)):
        return Param("number", d, optional)
    return None


def config_params(cls: type) -> dict[str, Param]:
    """The constructor parameters of ``cls`` that a config file may set, with their types."""
    out = {}
    for name, p in inspect.signature(cls).parameters.items():
        kind = _param_kind(p)
        if kind is not None and name == "f":  # the rules' Byzantine count is an integer, however annotated
            kind = kind._replace(kind="int")
        if kind is not None:
            out[name] = kind
    return out


def build(kind: str, name: str, params: dict):
    """Instantiate ``name`` with keyword ``params``; a bad parameter is a one-line ConfigError."""
    cls = lookup(kind, name)
    allowed = [p for p in inspect.signature(cls).parameters]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ConfigError(f"{kind} {name}: unknown parameter(s) {unknown}; allowed: {allowed}")
    try:
        return cls(**params)
    except ConfigError as err:
        raise ConfigError(f"{kind} {name}: {err}" if name not in str(err) else str(err)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{kind} {name}: {err}") from None


def problem_params(name: str) -> dict[str, Param]:
    """The parameters of problem ``name`` a config may set (those not fixed by the data's shapes)."""
    return {k: p for k, p in config_params(lookup("problem", name)).items() if p.default is not inspect.Parameter.empty}


def build_problem(name: str, dataset, params: dict):
    """Problem ``name`` built for ``dataset`` (its feature and class counts) with keyword ``params``."""
    cls = lookup("problem", name)
    allowed = problem_params(name)
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ConfigError(f"problem {name}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    try:
        return cls.from_dataset(dataset, **params)
    except ConfigError as err:
        raise ConfigError(f"problem {name}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"problem {name}: {err}") from None
