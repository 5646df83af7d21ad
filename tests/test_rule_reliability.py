"""The reliability battery: every registered aggregator and pre-aggregator, up to f arbitrary rows.

For each rule (a pre-aggregator runs as ``Pipeline((pre,), TrMean(F))``) and many seeded
inputs of ``N - F`` honest Gaussian rows plus ``F`` Byzantine rows (any sign, copies of one
vector, independent rows, one far row beside an honest copy; magnitudes from 1e3 to the
oracle's sanitising cap; NaN and +-Inf rows):

- the output is finite;
- its distance to the honest mean does not grow with the attacker's magnitude: at every
  magnitude up to the cap it stays within ``GROWTH`` times the distance at 1e3 (plus a
  small fraction of the honest spread), and with non-finite rows within the same bound
  of the worst distance at 1e3 or with ``F`` more honest-looking rows.

Rules without robustness declare ``robust = False`` (``Average``) and are only checked for
what they promise (nothing). A rule registered without a case here fails
``test_every_registered_rule_has_a_case``. One compiled program per rule and dtype: all
inputs of a rule go through one ``jit(vmap(aggregate))``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import aggregators as A
from byzjax import preaggregators as P
from byzjax.oracle import sanitise
from byzjax.registry import registry

N, F, D = 11, 2, 5
SEEDS = 12
MAGNITUDES = (1e3, 1e10, "cap")
GROWTH = 3.0  # allowed growth of the deviation from magnitude 1e3 to the cap
SLACK = 0.05  # ... plus this fraction of the honest spread (rounding, ties)
DROP_SLACK = 0.25  # non-finite rows: a rule may drop up to 2F honest rows instead (a shift ~ spread F / N)
KEY = jax.random.key(3)

AGGREGATORS = {
    "Average": A.Average,
    "Median": A.Median,
    "TrMean": lambda: A.TrMean(F),
    "Meamed": lambda: A.Meamed(F),
    "GeometricMedian": A.GeometricMedian,
    "SmoothedWeiszfeld": A.SmoothedWeiszfeld,
    "CenteredClipping": A.CenteredClipping,
    "HuberMean": A.HuberMean,
    "AdaptiveClipping": lambda: A.AdaptiveClipping(F),
    "FLTrust": A.FLTrust,
    "Krum": lambda: A.Krum(F),
    "MultiKrum": lambda: A.MultiKrum(F),
    "MoNNA": lambda: A.MoNNA(F),
    "Bulyan": lambda: A.Bulyan(F),
    "MDA": lambda: A.MDA(F),
    "SMEA": lambda: A.SMEA(F),
    "CAF": lambda: A.CAF(F),
    "DnC": lambda: A.DnC(F),
    "SignGuard": A.SignGuard,
    "ClippedClustering": A.ClippedClustering,
}
PREAGGREGATORS = {
    "NNM": lambda: P.NNM(F),
    "Bucketing": lambda: P.Bucketing(2),
    "Clipping": lambda: P.Clipping(2.0),
    "ARC": lambda: P.ARC(F),
}
EXTRA = {  # variants beside the defaults
    "CAF_power_step": lambda: A.CAF(F, power_step=True),
    "Meamed_byzfl": lambda: A.Meamed(F, ties="byzfl"),
}


def build(name):
    if name in PREAGGREGATORS:
        return P.Pipeline((PREAGGREGATORS[name](),), A.TrMean(F))
    return {**AGGREGATORS, **EXTRA}[name]()


@pytest.fixture(params=sorted(registry("aggregator")) + sorted(registry("preaggregator")))
def registered(request):
    return request.param


def test_every_registered_rule_has_a_case(registered):
    """A new aggregator or pre-aggregator needs a case in this battery."""
    assert registered in AGGREGATORS or registered in PREAGGREGATORS, f"no reliability case for {registered}"


def cap(dtype) -> float:
    """The magnitude of the oracle's sanitised Inf row for N rows of dimension D."""
    return float(sanitise(jnp.full((N, D), jnp.inf, dtype))[0, 0])


def honest_rows(rng):
    return rng.normal(size=D) * rng.uniform(0.0, 5.0) + rng.normal(size=(N - F, D))


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


FINITE_KINDS = ("copies", "opposite", "independent", "one_far")


def byzantine_rows(kind, magnitude, rng, honest):
    u = unit(rng.normal(size=D))
    if kind == "copies":  # F copies of one far vector, random sign
        return np.tile(rng.choice([-1.0, 1.0]) * magnitude * u, (F, 1))
    if kind == "opposite":
        return np.stack([magnitude * u, -magnitude * u])
    if kind == "independent":
        return magnitude * unit(rng.normal(size=(F, D)))
    return np.stack([magnitude * u, honest.mean(axis=0)])  # one far row beside an honest-looking one


NONFINITE_KINDS = ("honest", "nan", "inf", "minus_inf", "one_coordinate", "nan_and_inf", "one_nan")


def nonfinite_rows(kind, rng, honest):
    rows = np.tile(honest.mean(axis=0), (F, 1))
    if kind == "honest":  # the baseline: F more rows from the honest distribution
        rows = honest.mean(axis=0) + rng.normal(size=(F, D))
    elif kind == "nan":
        rows[:] = np.nan
    elif kind == "inf":
        rows[:] = np.inf
    elif kind == "minus_inf":
        rows[:] = -np.inf
    elif kind == "one_coordinate":
        rows[:, rng.integers(D)] = rng.choice([-np.inf, np.inf, np.nan])
    elif kind == "nan_and_inf":
        rows[0], rows[1] = np.nan, np.inf
    else:  # one NaN row, one honest-looking row
        rows[0] = np.nan
    return rows


def battery(dtype):
    """``(inputs [B, N, D], honest means [B, D], labels)``: per seed, every finite kind at
    every magnitude, then every non-finite kind."""
    inputs, means, labels = [], [], []
    for seed in range(SEEDS):
        for kind in FINITE_KINDS:
            for magnitude in MAGNITUDES:
                rng = np.random.default_rng([seed, FINITE_KINDS.index(kind)])  # same directions at every size
                honest = honest_rows(rng)
                size = cap(dtype) if magnitude == "cap" else magnitude
                inputs.append(np.concatenate([honest, byzantine_rows(kind, size, rng, honest)]))
                means.append(honest.mean(axis=0))
                labels.append((seed, kind, magnitude))
        for kind in NONFINITE_KINDS:
            rng = np.random.default_rng([seed, 0])
            honest = honest_rows(rng)
            inputs.append(np.concatenate([honest, nonfinite_rows(kind, rng, honest)]))
            means.append(honest.mean(axis=0))
            labels.append((seed, kind, None))
    return np.stack(inputs).astype(dtype), np.stack(means), labels


BATTERY = {np.float64: battery(np.float64), np.float32: battery(np.float32)}
INPUTS_PER_RULE = len(BATTERY[np.float64][2])


def run_battery(rule, dtype):
    inputs, means, labels = BATTERY[dtype]
    state = rule.init(D, jnp.dtype(dtype))
    out = jax.jit(jax.vmap(lambda x: rule.aggregate(x, state, KEY)[0]))(jnp.asarray(inputs))
    out = np.asarray(out, dtype=np.float64)
    return out, np.linalg.norm(out - means, axis=1), labels


def check_bounded(name, out, dev, labels, spread):
    """Finite everywhere; deviations at larger magnitudes / non-finite rows bounded by those at 1e3."""
    assert np.all(np.isfinite(out)), f"{name}: non-finite output for {[l for l, o in zip(labels, out) if not np.isfinite(o).all()][:5]}"
    at = {label: d for label, d in zip(labels, dev)}
    for seed in range(SEEDS):
        base = {kind: at[(seed, kind, 1e3)] for kind in FINITE_KINDS}
        for kind in FINITE_KINDS:
            bound = GROWTH * base[kind] + SLACK * spread
            for magnitude in MAGNITUDES[1:]:
                assert at[(seed, kind, magnitude)] <= bound, (
                    f"{name}: seed {seed}, {kind}: deviation {at[(seed, kind, magnitude)]:.3g} at magnitude "
                    f"{magnitude} against {base[kind]:.3g} at 1e3")
        bound = GROWTH * max(*base.values(), at[(seed, "honest", None)]) + DROP_SLACK * spread
        for kind in NONFINITE_KINDS:
            assert at[(seed, kind, None)] <= bound, (
                f"{name}: seed {seed}, {kind} rows: deviation {at[(seed, kind, None)]:.3g} against "
                f"{max(base.values()):.3g} for far rows at 1e3")


SPREAD = np.sqrt(D)  # root-mean-square distance of a honest row to its mean (unit Gaussians)


@pytest.mark.parametrize("name", sorted(AGGREGATORS) + sorted(PREAGGREGATORS) + sorted(EXTRA))
def test_up_to_f_arbitrary_rows_move_the_output_boundedly(name):
    """float64: every rule; the deviation from the honest mean does not grow with the attack."""
    rule = build(name)
    if not rule.robust:
        pytest.skip(f"{name} declares robust = False")
    out, dev, labels = run_battery(rule, np.float64)
    check_bounded(name, out, dev, labels, SPREAD)


@pytest.mark.parametrize("name", ["CAF", "SMEA", "SmoothedWeiszfeld", "TrMean", "Krum", "NNM"])
def test_float32_up_to_f_arbitrary_rows(name):
    """float32 for the rules whose squares overflowed (and two hot rules): same properties."""
    out, dev, labels = run_battery(build(name), np.float32)
    check_bounded(name, out, dev, labels, SPREAD)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["CAF", "SMEA", "SmoothedWeiszfeld"])
def test_issue_minimal_case_sanitised_inf_row(name, dtype):
    """Four zero rows and one sanitised Inf row: the rules stay at 0 (TrMean returns 0 exactly)."""
    x = np.zeros((5, 3), dtype)
    x[4] = np.asarray(sanitise(jnp.full((5, 3), jnp.inf, dtype)))[0]
    rule = {"CAF": A.CAF(2), "SMEA": A.SMEA(2), "SmoothedWeiszfeld": A.SmoothedWeiszfeld()}[name]
    out = rule(x, KEY)
    assert np.all(np.isfinite(out))
    # SmoothedWeiszfeld's smoothing gives the far row weight 1/dist against 1/nu: a shift of at most nu
    assert np.linalg.norm(out) <= (0.1 if name == "SmoothedWeiszfeld" else 1e-6)


def test_average_is_declared_not_robust():
    assert not A.Average.robust and A.TrMean.robust and P.Pipeline((P.NNM(1),), A.Average()).robust is False
