"""Attacks against NumPy references of their formulas, ByzFL's line search, and their defining properties."""

import dataclasses
import functools
import math
import statistics

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from byzjax import attacks as A  # noqa: E402
from byzjax import registry  # noqa: E402
from byzjax.attacks import AttackerView  # noqa: E402
from byzjax.attacks import _optimal  # noqa: E402
from references import np_nnm, np_trmean  # noqa: E402
from byzjax._validation import ConfigError  # noqa: E402
from byzjax.aggregators import Median, TrMean  # noqa: E402
from byzjax.preaggregators import NNM, Pipeline  # noqa: E402

KEY = jax.random.key(0)


def honest_data(seed, n=12, d=20, offset=6.0):
    """Honest gradients: a common mean plus unit worker noise. With the default ``offset``, three
    coordinates are all positive and three all negative; a small ``offset`` makes a small mean."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([np.full(3, offset), np.full(3, -offset), offset / 6 * rng.normal(size=d - 6)])
    return offsets + rng.normal(size=(n, d))


def damage(agg, honest, rows):
    """``||agg(honest, rows) - mean(honest)||`` with ``agg`` a NumPy aggregator."""
    return np.linalg.norm(agg(np.concatenate([honest, np.asarray(rows)])) - honest.mean(axis=0))


@functools.partial(jax.jit, static_argnums=2)
def byz_rows(attack, honest, n_byz):
    return attack.byzantine_vectors(AttackerView(honest), n_byz, KEY)


def stack(modules):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *modules)


# --- plain formulas -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack, reference",
    [
        (A.NoAttack(), lambda h: h.mean(0)),
        (A.SignFlipping(), lambda h: -h.mean(0)),
        (A.InnerProductManipulation(), lambda h: -2.0 * h.mean(0)),
        (A.InnerProductManipulation(tau=0.7), lambda h: -0.7 * h.mean(0)),
        (A.ALittleIsEnough(), lambda h: h.mean(0) + 1.5 * h.std(0, ddof=1)),
        (A.ALittleIsEnough(tau=-0.3), lambda h: h.mean(0) - 0.3 * h.std(0, ddof=1)),
        (A.Mimic(), lambda h: h[0]),
        (A.Mimic(7), lambda h: h[7]),
        (A.Inf(), lambda h: np.full(h.shape[1], np.inf)),
        (A.LabelFlipping(), lambda h: h.mean(0)),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, A.AbstractAttack) else "",
)
def test_formula_against_numpy(attack, reference):
    h = honest_data(0)
    out = attack(h)
    assert isinstance(out, np.ndarray) and out.shape == (h.shape[1],)
    np.testing.assert_allclose(out, reference(h), rtol=1e-12)
    rows = attack.byzantine_vectors(AttackerView(jnp.asarray(h)), 3, KEY)
    np.testing.assert_allclose(rows, np.tile(reference(h), (3, 1)), rtol=1e-12)


def test_byzfl_documentation_examples():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    np.testing.assert_allclose(A.SignFlipping()(x), [-4.0, -5.0, -6.0])
    np.testing.assert_allclose(A.InnerProductManipulation(2.0)(x), [-8.0, -10.0, -12.0])
    np.testing.assert_allclose(A.ALittleIsEnough(1.5)(x), [8.5, 9.5, 10.5])
    np.testing.assert_allclose(A.Mimic(0)(x), [1.0, 2.0, 3.0])
    assert np.all(np.isposinf(A.Inf()(x)))


@pytest.mark.parametrize("n, f", [(25, 5), (21, 1), (50, 12), (10, 0)])
def test_baruch_zmax(n, f):
    s = math.floor(n / 2 + 1) - f
    z = statistics.NormalDist().inv_cdf((n - s) / n)
    np.testing.assert_allclose(A.ALittleIsEnough.from_baruch(n, f).tau, z, rtol=1e-9)
    swept = A.ALittleIsEnough.from_baruch(jnp.array([n, n]), jnp.array([f, 0]))
    np.testing.assert_allclose(swept.tau[0], z, rtol=1e-9)


def test_gaussian_rows_independent_and_reproducible():
    h = jnp.asarray(honest_data(0))
    attack = A.Gaussian(mu=0.5, sigma=2.0)
    view = AttackerView(h)
    rows = attack.byzantine_vectors(view, 4, KEY)
    np.testing.assert_allclose(rows, 0.5 + 2.0 * jax.random.normal(KEY, (4, h.shape[1]), h.dtype), rtol=1e-12)
    assert len({tuple(np.asarray(r)) for r in rows}) == 4
    np.testing.assert_array_equal(rows, attack.byzantine_vectors(view, 4, KEY))
    assert not np.allclose(rows, attack.byzantine_vectors(view, 4, jax.random.key(1)))
    np.testing.assert_allclose(attack(h, KEY), attack.byzantine_vectors(view, 1, KEY)[0], rtol=1e-12)
    np.testing.assert_array_equal(A.Gaussian(mu=3.0, sigma=0.0)(h), jnp.full(h.shape[1], 3.0))


@pytest.mark.parametrize("b", [1.0, 2.0, 5.0])
def test_fang_against_numpy(b):
    h = honest_data(1)
    rows = np.asarray(A.Fang(b=b).byzantine_vectors(AttackerView(jnp.asarray(h)), 4, KEY))
    mean, low, high = h.mean(0), h.min(0), h.max(0)
    u = np.asarray(jax.random.uniform(KEY, rows.shape, jnp.float64, 1.0, b))
    expected = np.where(mean > 0, np.where(low < 0, low * u, low / u), np.where(high > 0, high * u, high / u))
    np.testing.assert_allclose(rows, expected, rtol=1e-12)
    # Defining property: beyond the honest extreme opposite to the mean, at most a factor b out.
    assert np.all(np.where(mean > 0, rows <= low, rows >= high))
    edge = np.where(mean > 0, low, high)
    ratio = rows / edge
    assert np.all((ratio >= 1 / b - 1e-12) & (ratio <= b + 1e-12))
    assert (b == 1.0) == (len({tuple(r) for r in rows}) == 1)


def test_mimic_heuristic_against_numpy():
    for seed in range(3):
        h = honest_data(seed)
        centred = h - h.mean(0)
        z = np.linalg.svd(centred)[2][0]
        target = np.argmax(np.abs(centred @ z))
        assert int(A.MimicHeuristic().target(jnp.asarray(h))) == target
        np.testing.assert_array_equal(A.MimicHeuristic()(h), h[target])
    # A worker far out along one axis is the one copied.
    h = honest_data(0)
    h[5] += 8.0 * np.eye(h.shape[1])[4]
    np.testing.assert_array_equal(A.MimicHeuristic()(h), h[5])


@pytest.mark.parametrize("cls", [A.MinMax, A.MinSum])
@pytest.mark.parametrize("direction", ["std", "unit_vec", "sign"])
def test_distance_bounded_constraint_and_tightness(cls, direction):
    attack = cls(direction=direction)
    for seed in range(3):
        h = honest_data(seed)
        n = len(h)
        mean = h.mean(0)
        p = {"std": -h.std(0, ddof=1), "unit_vec": -mean / np.linalg.norm(mean), "sign": -np.sign(mean)}[direction]
        b = attack(h)
        gamma = (b - mean) @ p / (p @ p)
        np.testing.assert_allclose(b, mean + gamma * p, rtol=1e-12, atol=1e-12)
        sq = ((h[:, None] - h[None]) ** 2).sum(-1)
        sq_b = ((b - h) ** 2).sum(-1)
        a, c, pp = ((mean - h) ** 2).sum(1), (mean - h) @ p, p @ p
        if cls is A.MinMax:
            assert sq_b.max() <= sq.max() * (1 + 1e-12)
            gamma_star = np.min((-c + np.sqrt(c * c - pp * (a - sq.max()))) / pp)  # largest root per worker
        else:
            assert sq_b.sum() <= sq.sum(1).max() * (1 + 1e-12)
            gamma_star = np.sqrt((sq.sum(1).max() - a.sum()) / (n * pp))
        r2 = sq.max() if cls is A.MinMax else sq.sum(1).max() / n
        tolerance = np.sqrt(r2 / pp) * 2.0 ** (1 - attack.steps)
        assert gamma_star > 0 and gamma_star - tolerance <= gamma <= gamma_star * (1 + 1e-12)


# --- the Optimal attacks' line search -----------------------------------------------------------


def byzfl_line_search(evaluate, start=0.0, delta=10.0, ratio=0.8, evals=20):
    """ByzFL's expansion then contraction phase, as plain Python."""
    best_x, best_y = start, evaluate(start)
    remaining = evals - 1
    while remaining > 0:
        prop_x = best_x + delta
        prop_y = evaluate(prop_x)
        remaining -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
            delta *= 2
        else:
            delta *= ratio
            break
    while remaining > 0:
        prop_x = best_x + delta
        prop_y = evaluate(prop_x)
        remaining -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
        delta *= ratio
    return best_x


@pytest.mark.parametrize(
    "start, delta, ratio, evals", [(0.0, 10.0, 0.8, 20), (1.0, 0.5, 0.6, 7), (2.0, -3.0, 0.9, 1)]
)
def test_positive_line_search_transcribes_byzfl(start, delta, ratio, evals):
    for fn in (lambda t: -((t - 7.3) ** 2), lambda t: jnp.sin(t) * t):
        expected = byzfl_line_search(lambda t: float(fn(t)), start, delta, ratio, evals)
        got = A.positive_line_search(fn, start, delta, ratio, evals).best
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def numpy_base_and_direction(cls, h):
    mean = h.mean(0)
    if cls is A.Optimal_InnerProductManipulation:
        return np.zeros_like(mean), -mean
    return mean, h.std(0, ddof=1)


@pytest.mark.parametrize("cls", [A.Optimal_InnerProductManipulation, A.Optimal_ALittleIsEnough])
@pytest.mark.parametrize("f", [1, 5])
def test_optimal_tau_matches_byzfl_search(cls, f):
    honest = np.stack([honest_data(seed, n=6, d=100, offset=1.0) for seed in range(4)])
    attack = cls(agg=TrMean(f), pre_agg_list=[NNM(f)], f=f)
    search = jax.jit(lambda x: attack.tau(AttackerView(x), f, KEY))
    taus = [float(search(h)) for h in honest]
    for h, tau in zip(honest, taus):
        base, direction = numpy_base_and_direction(cls, h)

        def evaluate(tau):
            x = np.concatenate([h, np.tile(base + tau * direction, (f, 1))])
            return np.linalg.norm(np_trmean(np_nnm(x, f), f) - h.mean(0))

        expected = byzfl_line_search(evaluate)
        assert tau == pytest.approx(expected, rel=1e-12, abs=1e-12)
        if cls is A.Optimal_ALittleIsEnough:
            # Adaptive vs baseline. Not a theorem: with n_h = 8, d = 20 ByzFL's search misses
            # ALIE(1.5)'s damage for several seeds; with n_h = 6, d = 100 it did not in 20 seeds.
            assert evaluate(expected) >= evaluate(1.5)
    assert np.count_nonzero(taus) == len(taus)  # the searches moved: the data are not degenerate


@pytest.mark.parametrize(
    "pipe",
    [Pipeline([NNM(2)], TrMean(2)), Pipeline([NNM(2)], Median()), TrMean(2), Pipeline([], Median())],
    ids=["nnm-trmean", "nnm-median", "trmean", "median"],
)
def test_reusing_objective_equals_generic(pipe):
    h = jnp.asarray(honest_data(2, n=6, offset=1.0))
    attack = A.Optimal_ALittleIsEnough()
    taus = jnp.linspace(-6.0, 30.0, 97)
    objectives = lambda a, v: [jax.vmap(a.objective(v, 2, KEY, r))(taus) for r in (True, False)]  # noqa: E731
    fast, generic = jax.jit(objectives)(attack, AttackerView(h, aggregator=pipe))
    np.testing.assert_allclose(fast, generic, rtol=1e-10, atol=1e-12)


def test_inserted_order_statistic_with_ties():
    h = np.random.default_rng(0).integers(-2, 3, size=(9, 30)).astype(float)
    bs = np.stack([h[3], h[3] + 0.5, np.full(30, 9.0)])
    for agg, reference in ((TrMean(2), lambda x: np_trmean(x, 2)), (Median(), lambda x: np.median(x, axis=0))):
        for n_byz in (0, 3):
            weights = _optimal._rank_weights(agg, 9 + n_byz, h.dtype)
            got = jax.vmap(_optimal._inserted_order_statistic(jnp.asarray(h), n_byz, weights))(jnp.asarray(bs))
            for b, row in zip(bs, got):
                np.testing.assert_allclose(row, reference(np.concatenate([h, np.tile(b, (n_byz, 1))])), atol=1e-12)


def test_pipeline_comes_from_the_view_unless_given_and_f_is_the_count_searched():
    """Without ``agg`` the search runs against the server's pipeline (``view.aggregator``); with
    ``agg``/``pre_agg_list`` against its own. A given ``f`` is the number of copies the search
    assumes, whatever the number of rows sent; without it, the rows sent."""
    h = jnp.asarray(honest_data(5, n=8, offset=1.0))
    server, own = TrMean(2), Median()
    attack, mine = A.Optimal_ALittleIsEnough(), A.Optimal_ALittleIsEnough(agg=own)
    view = AttackerView(h, aggregator=server)
    tau = jax.jit(lambda a, v, n: a.tau(v, n, KEY), static_argnums=2)
    rows_of = jax.jit(lambda a, v, n: a.byzantine_vectors(v, n, KEY), static_argnums=2)
    assert float(tau(mine, view, 3)) == float(tau(attack, AttackerView(h, aggregator=own), 3))
    assert float(tau(attack, view, 3)) != float(tau(mine, view, 3))
    rows = rows_of(A.Optimal_ALittleIsEnough(f=2), view, 3)
    np.testing.assert_array_equal(rows, jnp.broadcast_to(rows_of(attack, view, 2)[0], rows.shape))
    assert not np.allclose(rows[0], rows_of(attack, view, 3)[0])  # 2 copies assumed, not 3
    eager = A.Optimal_ALittleIsEnough(agg=server, f=2)(np.asarray(h))  # ByzFL: f copies
    np.testing.assert_allclose(eager, rows[0], rtol=1e-12)
    with pytest.raises(ConfigError, match="Optimal_ALittleIsEnough: no aggregator to optimise against"):
        attack(np.asarray(h))


# --- protocol properties ------------------------------------------------------------------------

EVERY_ATTACK = [
    A.NoAttack(),
    A.SignFlipping(),
    A.InnerProductManipulation(),
    A.ALittleIsEnough(),
    A.ALittleIsEnough.from_baruch(15, 3),
    A.Mimic(2),
    A.MimicHeuristic(),
    A.Inf(),
    A.Gaussian(),
    A.LabelFlipping(),
    A.Fang(),
    A.MinMax(),
    A.MinSum(direction="sign"),
    A.Optimal_InnerProductManipulation(),
    A.Optimal_ALittleIsEnough(),
]


def test_every_registered_attack_has_a_case():
    assert {type(a).__name__ for a in EVERY_ATTACK} == set(registry.registry("attack"))


@pytest.mark.parametrize("attack", EVERY_ATTACK, ids=lambda a: type(a).__name__)
def test_rows_shape_and_eager_call_is_the_first_row(attack):
    """``[n_byz, d]`` rows, finite except Inf's; the ByzFL-style call returns the first row sent
    by a single Byzantine worker, as NumPy for NumPy input."""
    h = honest_data(3, n=8)
    n_byz, pipe = 3, TrMean(3)
    attack.check(len(h), n_byz)
    view = AttackerView(jnp.asarray(h), aggregator=pipe)
    rows = jax.jit(lambda a, v: a.byzantine_vectors(v, n_byz, KEY))(attack, view)
    assert rows.shape == (n_byz, h.shape[1])
    assert bool(np.all(np.isfinite(rows))) != isinstance(attack, A.Inf)
    if isinstance(attack, A.AbstractCopyAttack) or isinstance(attack, _optimal._OptimalAttack):
        np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
    eager_attack = dataclasses.replace(attack, agg=pipe) if isinstance(attack, _optimal._OptimalAttack) else attack
    out = eager_attack(h)
    assert isinstance(out, np.ndarray)
    one = eager_attack.byzantine_vectors(AttackerView(jnp.asarray(h), aggregator=pipe), 1, KEY)[0]
    np.testing.assert_allclose(out, one, rtol=1e-12)


@pytest.mark.parametrize(
    "batch",
    [
        [A.InnerProductManipulation(tau=t) for t in (0.5, 2.0, -1.0)],
        [A.ALittleIsEnough(tau=t) for t in (0.5, 1.5, 3.0)],
        [A.Mimic(e) for e in (0, 3, 5)],
        [A.Gaussian(mu=m, sigma=s) for m, s in ((0.0, 1.0), (1.0, 0.5), (-2.0, 0.0))],
        [A.Fang(b=b) for b in (1.0, 2.0, 4.0)],
        [
            A.Optimal_ALittleIsEnough(TrMean(g), f=2, start=s, delta=d, ratio=r)
            for g, s, d, r in ((2, 0.0, 10.0, 0.8), (1, 1.0, 1.0, 0.6), (2, 0.0, -4.0, 0.9))
        ],
    ],
    ids=["ipm", "alie", "mimic", "gaussian", "fang", "optimal-alie"],
)
def test_eager_jit_vmap_agree(batch):
    h = jnp.asarray(honest_data(4, n=6, offset=1.0))
    n_byz = 2
    call = lambda a: a.byzantine_vectors(AttackerView(h), n_byz, KEY)  # noqa: E731
    eager = np.stack([call(a) for a in batch])
    jitted = np.stack([jax.jit(call)(a) for a in batch])
    vmapped = jax.jit(jax.vmap(call))(stack(batch))
    np.testing.assert_allclose(jitted, eager, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-10, atol=1e-12)
    assert len({tuple(row[0]) for row in eager}) == len(batch)


# --- adaptive attacks hurt their target at least as much as the baseline ------------------------


@pytest.mark.parametrize("f", [1, 5])
def test_adaptive_attacks_do_at_least_the_baselines_damage(f):
    """Optimal ALIE against ALIE(1.5) is checked in test_optimal_tau_matches_byzfl_search."""
    median, trmean = (lambda x: np.median(x, axis=0)), (lambda x: np_trmean(x, f))
    nnm_trmean, average = (lambda x: np_trmean(np_nnm(x, f), f)), (lambda x: x.mean(axis=0))
    for seed in range(3):
        h = honest_data(seed, n=20, d=40)
        rows = lambda attack: byz_rows(attack, jnp.asarray(h), f)  # noqa: E731
        for agg in (median, trmean):
            assert damage(agg, h, rows(A.Fang())) >= damage(agg, h, rows(A.SignFlipping()))
        baruch = A.ALittleIsEnough.from_baruch(len(h) + f, f)
        for agg in (nnm_trmean, median, average):
            assert damage(agg, h, rows(A.MinMax())) >= damage(agg, h, rows(baruch))


# --- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: A.Optimal_ALittleIsEnough(ratio=0.5), r"ratio must be in \(0.5, 1\), got ratio=\[0.5\]"),
        (lambda: A.Optimal_ALittleIsEnough(ratio=1.0), r"ratio must be in \(0.5, 1\)"),
        (lambda: A.Optimal_InnerProductManipulation(ratio=jnp.array([0.8, 0.4])), r"ratio=\[0.8, 0.4\]"),
        (lambda: A.Optimal_ALittleIsEnough(evals=0), "evals must be a positive integer, got 0"),
        (lambda: A.Optimal_ALittleIsEnough(evals=2.0), "evals must be a positive integer, got 2.0"),
        (lambda: A.Optimal_ALittleIsEnough(delta=0.0), "delta must be non-zero"),
        (lambda: A.Optimal_ALittleIsEnough(f=-1), "f must be None or a non-negative integer, got -1"),
        (lambda: A.Optimal_ALittleIsEnough(agg="TrMean"), "agg must be an aggregator"),
        (lambda: A.Optimal_InnerProductManipulation()(np.ones((5, 3))), "no aggregator to optimise against"),
        (lambda: A.Optimal_InnerProductManipulation(agg=TrMean(3), f=1)(np.ones((4, 3))), "TrMean"),
        (lambda: A.Gaussian(sigma=-1.0), "Gaussian: sigma must be >= 0"),
        (lambda: A.Mimic(-1), "Mimic: epsilon must be >= 0"),
        (lambda: A.Mimic(3)(np.ones((3, 4))), "Mimic: epsilon must be < n_honest = 3"),
        (lambda: A.Mimic(epsilon=1.5), "integer"),
        (lambda: A.Fang(b=0.5), "Fang: b must be >= 1"),
        (lambda: A.MinMax(direction="up"), "MinMax: direction must be 'std', 'unit_vec' or 'sign', got 'up'"),
        (lambda: A.MinSum(steps=0), "MinSum: steps must be a positive integer"),
        (lambda: A.ALittleIsEnough.from_baruch(10, 6), r"from_baruch: needs f >= 0 .* got n=10, f=6"),
        (lambda: A.ALittleIsEnough.from_baruch(25, -1), r"from_baruch: needs f >= 0 .* got n=25, f=-1"),
        (lambda: A.InnerProductManipulation(tau="big"), "number"),
        (lambda: A.SignFlipping()(np.ones(3)), r"honest_vectors must be a 2-D array \[n, d\], got shape \(3,\)"),
    ],
)
def test_bad_configuration_raises(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
