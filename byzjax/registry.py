"""Components by name (ByzFL's class names, plus the paper's short names)."""

from __future__ import annotations

import inspect

from byzjax import aggregators, algorithms, attacks, preaggregators, problems
from byzjax._validation import ConfigError

ALIASES = {
    "D-GD": "DGD", "moDSGD": "DGD", "D-NAG": "DNAG", "DSGD": "DNAG", "FedProxyProx": "PIGS",
    "IPM": "InnerProductManipulation", "ALIE": "ALittleIsEnough",
    "Optimal_IPM": "Optimal_InnerProductManipulation", "Optimal_ALIE": "Optimal_ALittleIsEnough",
    "logistic": "LogisticRegression", "None": "NoAttack", "none": "NoAttack",
}


def _concrete_subclasses(module, base) -> dict[str, type]:
    return {
        name: obj for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and not inspect.isabstract(obj) and not name.startswith("_")
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + "."))
    }


def registry(kind: str) -> dict[str, type]:
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
        return {"LogisticRegression": problems.LogisticRegression}
    raise KeyError(kind)


def lookup(kind: str, name: str) -> type:
    """The class registered under ``name`` (or an alias), with an error listing the choices."""
    table = registry(kind)
    cls = table.get(ALIASES.get(name, name))
    if cls is None:
        raise ConfigError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))}")
    return cls


def build(kind: str, name: str, params: dict):
    """Instantiate ``name`` with keyword ``params``; a bad parameter is a one-line ConfigError."""
    cls = lookup(kind, name)
    allowed = [p for p in inspect.signature(cls).parameters]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ConfigError(f"{kind} {name}: unknown parameter(s) {unknown}; allowed: {allowed}")
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{kind} {name}: {err}") from None
