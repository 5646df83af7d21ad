"""Empirical (f, kappa)-robustness of an aggregator or pipeline.

An aggregator ``F`` is (f, kappa)-robust (Allouah et al., AISTATS 2023, Def. 1;
arXiv 2602.03329, its (f, kappa)-robustness definition) if for every set ``S`` of ``n - f`` inputs

    ||F(x_1..x_n) - mean_S||^2 <= kappa * (1/|S|) sum_{i in S} ||x_i - mean_S||^2.

``empirical_kappa`` measures the ratio of the two sides for ``S`` = the given
honest rows, with the ``f`` other rows chosen by a fixed set of perturbations, and
returns the largest ratio: a lower estimate of the rule's kappa on those honest
vectors. The perturbations are generated here, with NumPy on the host (not by
``byzjax.attacks``), so the measurement does not depend on the attack library
and compiles nothing but the rule itself.
"""

from __future__ import annotations

import jax
import numpy as np

from byzjax._validation import ConfigError, as_matrix
from byzjax.aggregators import AbstractAggregator, apply

ALIE_Z = (-3.0, -1.0, -0.3, 0.3, 1.0, 3.0)
"""Factors ``z`` of the ALIE-like rows ``mean + z * std``."""

FAR = (3.0, 30.0, 1e3)
"""Distances of the far rows, in units of the honest root-mean-square spread."""


def byzantine_candidates(honest: np.ndarray, f: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Named ``[f, d]`` blocks of Byzantine rows built from ``honest [n - f, d]``.

    ``spread = sqrt((1/|S|) sum_S ||x_i - mean||^2)`` sets the scale:

    - ``far_r``: ``f`` copies of ``mean + r * spread * u`` for a random unit ``u``, r in ``FAR``;
    - ``alie_z``: ``f`` copies of ``mean + z * std`` (coordinate-wise, ddof 1), z in ``ALIE_Z``;
    - ``sign_flip``: ``f`` copies of ``-mean``;
    - ``gaussian_r``: ``f`` independent ``mean + r * spread * g / sqrt(d)``, ``g ~ N(0, I)``;
    - ``mimic``: ``f`` copies of the honest row farthest from the mean.
    """
    m, d = honest.shape
    mean = honest.mean(axis=0)
    centred = honest - mean
    spread = np.sqrt(np.sum(centred**2) / m)
    std = honest.std(axis=0, ddof=1) if m > 1 else np.zeros(d)
    gaussians = np.random.default_rng(seed).normal(size=(f + 1, d))
    u = gaussians[0] / np.linalg.norm(gaussians[0])
    copies = lambda b: np.tile(b, (f, 1))
    rows = {f"far_{r:g}": copies(mean + r * spread * u) for r in FAR}
    rows |= {f"alie_{z:g}": copies(mean + z * std) for z in ALIE_Z}
    rows["sign_flip"] = copies(-mean)
    rows |= {f"gaussian_{r:g}": mean + r * spread * gaussians[1:] / np.sqrt(d) for r in FAR}
    rows["mimic"] = copies(honest[np.argmax(np.sum(centred**2, axis=1))])
    return {name: b.astype(honest.dtype) for name, b in rows.items()}


def kappa_ratios(agg: AbstractAggregator, honest, f: int, key=None, seed: int = 0) -> dict[str, float]:
    """``||F(x) - mean_S||^2 / ((1/|S|) sum_S ||x_i - mean_S||^2)`` for each candidate.

    The honest rows come first and the Byzantine rows last (the oracle's order).
    Every candidate goes through the compiled ``apply`` (the program the eager call
    uses) with the same ``key``; ``seed`` draws the random candidates.
    """
    honest = np.asarray(as_matrix(honest, "honest"))
    m, d = honest.shape
    if f < 0:
        raise ConfigError(f"empirical_kappa: f must be >= 0, got f={f}")
    agg.check(m + f)
    key = jax.random.key(0) if key is None else key
    candidates = byzantine_candidates(honest, f, seed) if f else {"none": np.zeros((0, d), honest.dtype)}
    state = agg.init(d, honest.dtype)
    mean = honest.mean(axis=0)
    variance = np.sum((honest - mean) ** 2) / m
    ratios = {}
    for name, rows in candidates.items():
        out = np.asarray(apply(agg, np.concatenate([honest, rows]), state, key)[0])
        ratios[name] = float(np.sum((out - mean) ** 2) / variance)
    return ratios


def empirical_kappa(agg: AbstractAggregator, honest, f: int, key=None, seed: int = 0) -> float:
    """The largest ratio of ``kappa_ratios``: an empirical lower bound on kappa."""
    return max(kappa_ratios(agg, honest, f, key, seed).values())
