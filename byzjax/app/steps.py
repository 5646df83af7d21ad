"""Step sizes given as theory's expressions in a config (``lr = "1/L"``), resolved per problem instance.

An algorithm's step may be written as ``"c/L"``, ``"c/delta"`` or ``"c*mu"`` (``c`` a positive number,
``"1/L"``, ``"1/delta"`` and ``"mu"`` for ``c = 1``): ``L`` and ``mu`` are the largest and smallest
Hessian eigenvalues of the honest loss ``L_H`` and ``delta = ||hessian(L_H - L_0)||`` the
similarity constant, all measured at the runs' initial point ``x0`` (``byzjax.theory.smoothness``,
``strong_convexity``, ``similarity_delta``), the constants of ``theory.recommended_steps``: D-GD /
D-NAG ``lr = 1/L``, PIGS ``eta = 1/delta``, AEG ``theta = 1/L`` and ``gamma = mu`` (arXiv
2602.03329, the reduction to an inexact gradient oracle and its algorithms).

``parse_step`` reads the string when the config is parsed (a one-line ``ConfigError`` for anything
else); ``resolve_step`` turns it into the number for one instance's measured ``StepConstants``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import NamedTuple

import jax
import numpy as np

from byzjax._validation import ConfigError

_PATTERN = re.compile(r"^\s*(?:(?P<c>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<op>[/*])\s*)?(?P<const>L|delta|mu)\s*$")
ALLOWED = '"1/L", "c/L", "1/delta", "c/delta", "mu" or "c*mu" (c a positive number)'


@dataclasses.dataclass(frozen=True)
class StepExpr:
    """A step written as ``c / L``, ``c / delta`` or ``c * mu``."""

    factor: float
    constant: str  # "L", "delta" or "mu"

    def __str__(self) -> str:
        c = f"{self.factor:g}"
        return f"{c}*mu" if self.constant == "mu" else f"{c}/{self.constant}"


class StepConstants(NamedTuple):
    """``L``, ``mu`` and ``delta`` of one problem instance at the runs' initial point."""

    L: float
    mu: float
    delta: float


def parse_step(where: str, key: str, value: str) -> StepExpr:
    """``StepExpr`` of a config string (``"1/L"``, ``"0.5/L"``, ``"1/delta"``, ``"mu"``, ``"2*mu"``);
    ``ConfigError`` naming the component, the key and the value otherwise. ``c/mu`` and ``c*L``
    are refused (no method's theory gives such a step)."""
    m = _PATTERN.match(value) if isinstance(value, str) else None
    if m is None or (m["op"] == "/" and m["const"] == "mu") or (m["op"] == "*" and m["const"] != "mu"):
        raise ConfigError(f"{where}: {key} must be a finite number or a list of them, got {value!r} (a step may also "
                          f"be written {ALLOWED})")
    c = 1.0 if m["c"] is None else float(m["c"])
    if not (math.isfinite(c) and c > 0):
        raise ConfigError(f"{where}: {key} = {value!r} needs a positive finite factor c")
    return StepExpr(c, m["const"])


def resolve_step(expr: StepExpr, constants: StepConstants) -> float:
    """The number ``expr`` stands for: ``c / L``, ``c / delta`` or ``c * mu``."""
    value = getattr(constants, expr.constant)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"step {str(expr)!r}: the measured {expr.constant} = {value!r} is not a positive number")
    return expr.factor * value if expr.constant == "mu" else expr.factor / value


def measure_constants(problem, shards, x0, key, iters: int = 300) -> StepConstants:
    """``L``, ``mu`` and ``delta`` of ``L_H`` at ``x0`` (``shards``: the honest workers' of one
    instance), by power iteration on Hessian-vector products (``byzjax.theory``)."""
    from byzjax.theory import constants_at

    L, mu, delta = constants_at(problem, shards, x0, key, iters)
    return StepConstants(float(L), float(mu), float(delta))


def has_step_expressions(params: dict) -> bool:
    """Whether any value of ``params`` (a component's parameters, a tuple for a sweep) is a ``StepExpr``."""
    return any(isinstance(v, StepExpr) or (isinstance(v, tuple) and any(isinstance(u, StepExpr) for u in v))
               for v in params.values())


def instance_constants(problem, shards, x0=None, key=None) -> StepConstants:
    """``measure_constants`` at the runs' initial point: ``x0``, else ``problem.init(fold_in(key, 0))``
    as ``byzjax.simulate.run``."""
    key = jax.random.key(0) if key is None else key
    start = problem.init(jax.random.fold_in(key, 0)) if x0 is None else np.asarray(x0)
    return measure_constants(problem, shards, jax.numpy.asarray(start), jax.random.fold_in(key, 7))


def resolve_grid(cfg, problem, data):
    """``cfg`` (a ``GridSpec``) with every step expression of its ``[[algorithm]]`` tables replaced
    by its number, measured on the grid's first data instance for its first seed (one number for the
    whole grid, so every instance runs the same step; ``data``: that instance's stacked
    per-seed ``FederatedData`` of ``runner.prepare``; the runs' initial point as ``simulate.run``),
    so the runs' method labels, number columns and ``config.json`` hold the resolved values.
    Returns ``(cfg, record)``, ``record`` = ``{"L", "mu", "delta", "steps": [{"algorithm", parameter:
    [expression, number]}]}`` (empty, and ``cfg`` unchanged, without expressions)."""
    if not any(has_step_expressions(a.params) for a in cfg.algorithms):
        return cfg, {}
    shards = jax.tree.map(lambda a: a[0], data.shards)
    constants = instance_constants(problem, shards, cfg.problem.x0, jax.random.key(cfg.seeds[0]))

    def one(v):
        return resolve_step(v, constants) if isinstance(v, StepExpr) else v

    algorithms, steps = [], []
    for alg in cfg.algorithms:
        if not has_step_expressions(alg.params):
            algorithms.append(alg)
            continue
        params = {k: tuple(one(u) for u in v) if isinstance(v, tuple) else one(v) for k, v in alg.params.items()}
        algorithms.append(dataclasses.replace(alg, params=params))
        entry = {"algorithm": alg.name}
        for k, v in alg.params.items():
            if has_step_expressions({k: v}):
                entry[k] = [[str(u), one(u)] for u in v] if isinstance(v, tuple) else [str(v), one(v)]
        steps.append(entry)
    record = {"L": constants.L, "mu": constants.mu, "delta": constants.delta, "steps": steps}
    return dataclasses.replace(cfg, algorithms=tuple(algorithms)), record
