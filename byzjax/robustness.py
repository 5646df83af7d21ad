"""Empirical (f, kappa)-robustness of an aggregator or pipeline.

An aggregator ``F`` is (f, kappa)-robust (Allouah et al., AISTATS 2023, Def. 1;
PAPER.md section 1) if for every set ``S`` of ``n - f`` inputs

    ||F(x_1..x_n) - mean_S||^2 <= kappa * (1/|S|) sum_{i in S} ||x_i - mean_S||^2.

``empirical_kappa`` measures the ratio of the two sides for ``S`` = the given
honest rows, with the ``f`` other rows chosen by a fixed set of perturbations, and
returns the largest ratio: a lower estimate of the rule's kappa on those honest
vectors. The perturbations are generated here (not by ``byzjax.attacks``), so the
measurement does not depend on the attack library.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import ConfigError, as_matrix
from byzjax.aggregators import AbstractAggregator, apply

ALIE_Z = (-3.0, -1.0, -0.3, 0.3, 1.0, 3.0)
"""Factors ``z`` of the ALIE-like rows ``mean + z * std``."""

FAR = (3.0, 30.0, 1e3)
"""Distances of the far rows, in units of the honest root-mean-square spread."""


@functools.partial(jax.jit, static_argnums=1)
def byzantine_candidates(honest: jax.Array, f: int, key) -> dict[str, jax.Array]:
    """Named ``[f, d]`` blocks of Byzantine rows built from ``honest [n - f, d]``.

    ``spread = sqrt((1/|S|) sum_S ||x_i - mean||^2)`` sets the scale:

    - ``far_r``: ``f`` copies of ``mean + r * spread * u`` for a random unit ``u``, r in ``FAR``;
    - ``alie_z``: ``f`` copies of ``mean + z * std`` (coordinate-wise, ddof 1), z in ``ALIE_Z``;
    - ``sign_flip``: ``f`` copies of ``-mean``;
    - ``gaussian_r``: ``f`` independent ``mean + r * spread * g / sqrt(d)``, ``g ~ N(0, I)``;
    - ``mimic``: ``f`` copies of the honest row farthest from the mean.
    """
    m, d = honest.shape
    mean = jnp.mean(honest, axis=0)
    centred = honest - mean
    spread = jnp.sqrt(jnp.sum(centred**2) / m)
    std = jnp.sqrt(jnp.sum(centred**2, axis=0) / max(m - 1, 1))
    gaussians = jax.random.normal(key, (f + 1, d), honest.dtype)
    u = gaussians[0] / jnp.linalg.norm(gaussians[0])
    copies = lambda b: jnp.broadcast_to(b, (f, d))
    rows = {f"far_{r:g}": copies(mean + r * spread * u) for r in FAR}
    rows |= {f"alie_{z:g}": copies(mean + z * std) for z in ALIE_Z}
    rows["sign_flip"] = copies(-mean)
    rows |= {f"gaussian_{r:g}": mean + r * spread * gaussians[1:] / np.sqrt(d) for r in FAR}
    rows["mimic"] = copies(honest[jnp.argmax(jnp.sum(centred**2, axis=1))])
    return rows


def kappa_ratios(agg: AbstractAggregator, honest, f: int, key=None) -> dict[str, float]:
    """``||F(x) - mean_S||^2 / ((1/|S|) sum_S ||x_i - mean_S||^2)`` for each candidate.

    The honest rows come first and the Byzantine rows last (the oracle's order).
    Every candidate goes through the same compiled ``apply`` with the same ``key``
    (the program the eager call uses, so no extra compilation).
    """
    honest = as_matrix(honest, "honest")
    m, d = honest.shape
    if f < 0:
        raise ConfigError(f"empirical_kappa: f must be >= 0, got f={f}")
    agg.check(m + f)
    key = jax.random.key(0) if key is None else key
    candidates = byzantine_candidates(honest, f, key) if f else {"none": jnp.zeros((0, d), honest.dtype)}
    state = agg.init(d, honest.dtype)
    outs = jnp.stack([apply(agg, jnp.concatenate([honest, b]), state, key)[0] for b in candidates.values()])
    mean = jnp.mean(honest, axis=0)
    variance = jnp.sum((honest - mean) ** 2) / m
    ratios = np.asarray(jnp.sum((outs - mean) ** 2, axis=1) / variance)
    return dict(zip(candidates, ratios.tolist()))


def empirical_kappa(agg: AbstractAggregator, honest, f: int, key=None) -> float:
    """The largest ratio of ``kappa_ratios``: an empirical lower bound on kappa."""
    return max(kappa_ratios(agg, honest, f, key).values())
