"""The theory instrument (byzjax.theory) against closed forms, NumPy float64 solves and the paper's
oracle-error inequality (arXiv 2602.03329, section 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.problems import make_quadratic
from byzjax.theory import reference_optimum
from helpers import np_logistic_loss_grad, tiny_classification


def _shards(data):
    return jax.tree.map(jnp.asarray, data.shards)


def test_reference_optimum_of_a_quadratic_is_its_closed_form():
    """x* = A^{-1} mean_i A_i b_i and L* = mean_i L_i(x*), with heterogeneous Hessians, kappa 100."""
    problem, data, info = make_quadratic(5, 10, mu=0.1, L=10.0, hessian_spread=0.5, spread=2.0, seed=3)
    ref = reference_optimum(problem, _shards(data), np.ones(10))
    assert ref.grad_norm <= 1e-10
    np.testing.assert_allclose(ref.x_star, info["x_star"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ref.loss_star, info["loss_star"], rtol=1e-12)
    assert ref.x_star.dtype == np.float64


def _np_newton(feats, labels, lam, p, c, iters=60):
    """Newton's method in float64 NumPy on the pooled honest loss (mean over workers of the
    per-worker mean NLL), with the Hessian by central differences of the NumPy gradient."""
    def grad(x):
        return np.mean([np_logistic_loss_grad(x, f, y, lam, p, c)[1] for f, y in zip(feats, labels)], axis=0)

    def loss(x):
        return np.mean([np_logistic_loss_grad(x, f, y, lam, p, c)[0] for f, y in zip(feats, labels)])

    d = (p + 1) * c
    x = np.zeros(d)
    for _ in range(iters):
        g = grad(x)
        if np.linalg.norm(g) < 1e-12:
            break
        eye = np.eye(d) * 1e-6
        h = np.stack([(grad(x + e) - grad(x - e)) / 2e-6 for e in eye])
        x = x - np.linalg.solve(0.5 * (h + h.T), g)
    return x, loss(x), np.linalg.norm(grad(x))


def test_reference_optimum_of_a_logistic_problem_matches_a_numpy_newton_solve():
    _, data, problem = tiny_classification(n_honest=4, p=6, c=3, n_train=200)
    sh = data.shards
    feats = [np.asarray(sh.x[i])[np.asarray(sh.mask[i]) > 0] for i in range(4)]
    labels = [np.asarray(sh.y[i])[np.asarray(sh.mask[i]) > 0] for i in range(4)]
    x_np, loss_np, g_np = _np_newton(feats, labels, float(problem.lam), 6, 3)
    assert g_np < 1e-9
    ref = reference_optimum(problem, _shards(data))
    assert ref.grad_norm <= 1e-10
    np.testing.assert_allclose(ref.x_star, x_np, atol=1e-8)
    np.testing.assert_allclose(ref.loss_star, loss_np, rtol=1e-12)


def _np_softmax_hvp_problem(feats, labels, lam, p, c):
    """Gradient and Hessian-vector product of the pooled honest loss (mean over workers of the
    per-worker mean NLL + lam/2 ||x||^2), multinomial logistic regression, float64 NumPy, on the
    pooled samples with weights w_j = 1 / (|H| m_i): ``grad = sum_j w_j a~_j (P_j - e_{y_j})^T + lam x``,
    ``H v = sum_j w_j a~_j (P_j * u_j - P_j (P_j . u_j))^T + lam v``, ``u_j = V^T a_j + v_b``."""
    a = np.concatenate([np.asarray(f, np.float64) for f in feats])
    y = np.concatenate(labels)
    w = np.concatenate([np.full(len(f), 1.0 / (len(feats) * len(f))) for f in feats])[:, None]
    onehot = np.eye(c)[y]

    def probs(x):
        z = a @ x[: p * c].reshape(p, c) + x[p * c :]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def back(s):
        return np.concatenate([(a.T @ (w * s)).ravel(), (w * s).sum(axis=0)])

    def grad(x):
        return back(probs(x) - onehot) + lam * x

    def hvp(x, v):
        prob = probs(x)
        u = a @ v[: p * c].reshape(p, c) + v[p * c :]
        return back(prob * u - prob * np.sum(prob * u, axis=1, keepdims=True)) + lam * v

    return grad, hvp


def test_reference_optimum_converges_on_a_logistic_problem_with_d_in_the_thousands():
    """d = (500 + 1) x 4 = 2004, 20 Dirichlet(1) workers, float32 data, lam = 1e-3 (the paper's).

    The bug it pins: ``jax.scipy.sparse.linalg.cg`` started with ``H 0`` (a Hessian-vector product
    of a compile-time zero), which XLA:CPU returned as NaN on problems this size, so every Newton
    direction was 0, the solve fell back to backtracked gradient steps, stopped at ||grad|| ~ 1e-3 and
    L* came out too high. Now: ||grad L_H(x*)|| <= 1e-10 is reached (``converged``); the float64
    NumPy gradient at x* is below 1e-9 too, which certifies x* and L* by strong convexity (mu >= lam:
    ||x* - argmin|| <= ||g|| / lam, 0 <= L_H(x*) - min L_H <= ||g||^2 / (2 lam) < 1e-15), and L*
    equals the NumPy loss there; every Newton direction meets its forcing term
    ``||H p + g|| <= min(0.5, sqrt||g||) ||g||`` with the NumPy Hessian."""
    from byzjax.data import federated_classification, synthetic_dataset
    from byzjax.problems import LogisticRegression
    from byzjax.theory import _newton_direction, _to_float64

    p, c, lam = 500, 4, 1e-3
    ds = synthetic_dataset(seed=1, n_train=3000, n_test=10, num_features=p, num_classes=c, separation=0.1)
    data = federated_classification(ds, 20, "dirichlet", 1.0, 1)
    assert data.shards.x.dtype == np.float32
    problem = LogisticRegression(num_features=p, num_classes=c, lam=lam)
    sh = data.shards
    feats = [np.asarray(sh.x[i])[np.asarray(sh.mask[i]) > 0] for i in range(20)]
    labels = [np.asarray(sh.y[i])[np.asarray(sh.mask[i]) > 0] for i in range(20)]
    grad, hvp = _np_softmax_hvp_problem(feats, labels, lam, p, c)
    x0 = np.asarray(problem.init(jax.random.key(3)), np.float64)

    ref = reference_optimum(problem, _shards(data), x0)
    assert ref.converged and ref.grad_norm <= 1e-10, ref
    assert ref.newton_iters >= 2 and ref.cg_iters > ref.newton_iters
    g_np = np.linalg.norm(grad(ref.x_star))
    assert g_np <= 1e-9 and g_np**2 / (2 * lam) < 1e-15
    loss_np = np.mean([np_logistic_loss_grad(ref.x_star, f, y, lam, p, c)[0] for f, y in zip(feats, labels)])
    np.testing.assert_allclose(ref.loss_star, loss_np, rtol=1e-13)
    loss_x0 = np.mean([np_logistic_loss_grad(x0, f, y, lam, p, c)[0] for f, y in zip(feats, labels)])
    assert ref.loss_star < loss_x0 - np.linalg.norm(grad(x0)) ** 2 / (2 * 100.0)  # at least one L-step's decrease

    with jax.enable_x64(True):
        problem64, shards64 = _to_float64(problem), _to_float64(_shards(data))
        for x in (x0, 0.5 * (x0 + ref.x_star)):
            g = grad(x)
            cg = _newton_direction(problem64, shards64, jnp.asarray(x), jnp.asarray(g), 1000)
            residual = np.linalg.norm(hvp(x, np.asarray(cg.p)) + g) / np.linalg.norm(g)
            assert bool(cg.curvature_ok) and np.linalg.norm(cg.p) > 0
            assert residual <= min(0.5, np.sqrt(np.linalg.norm(g))) * (1 + 1e-9)
            np.testing.assert_allclose(residual, float(cg.relative_residual), rtol=1e-6)


def test_reference_optimum_warns_when_it_stops_short_of_tol():
    _, data, problem = tiny_classification(n_honest=4, p=6, c=3, n_train=200)
    with pytest.warns(RuntimeWarning, match=r"reference_optimum: the float64 Newton-CG solve stopped at "
                                            r"\|\|grad L_H\|\| = .* > tol = 1.0e-10 after 1 Newton iterations"):
        ref = reference_optimum(problem, _shards(data), max_newton=1)
    assert not ref.converged and ref.grad_norm > 1e-10 and ref.newton_iters == 1


def test_reference_optimum_rejects_bad_settings():
    problem, data, _ = make_quadratic(3, 4, seed=0)
    with pytest.raises(ConfigError, match="reference_optimum: need tol > 0"):
        reference_optimum(problem, _shards(data), tol=0.0)
    with pytest.raises(ConfigError, match=r"reference_optimum: x0 must have shape \(4,\)"):
        reference_optimum(problem, _shards(data), np.zeros(3))


# ---------------------------------------------------------------------------------------------
# Per-round kappa_hat

from byzjax.aggregators import Average, CenteredClipping, GeometricMedian, Krum, Median, SmoothedWeiszfeld, TrMean  # noqa: E402
from byzjax.algorithms import DGD  # noqa: E402
from byzjax.attacks import ALittleIsEnough, SignFlipping  # noqa: E402
from byzjax.data import FederatedData  # noqa: E402
from byzjax.oracle import RobustOracle  # noqa: E402
from byzjax.preaggregators import NNM, Clipping, Pipeline  # noqa: E402
from byzjax.robustness import byzantine_candidates  # noqa: E402
from byzjax.simulate import Experiment, run  # noqa: E402
from byzjax.theory import (  # noqa: E402
    fit_heterogeneity, honest_loss, oracle_error_bound, predicted_floor_dgd, predicted_rounds, proven_kappa,
    recommended_steps, similarity_delta, smoothness, strong_convexity, theory_probe, trace_theory)
import equinox as eqx  # noqa: E402

_run = eqx.filter_jit(run)


def test_kappa_hat_is_the_rounds_error_squared_over_spread_and_nan_without_spread():
    """kappa_hat = error^2 / spread on every round; identical workers (spread exactly 0) give nan."""
    problem, data, _ = make_quadratic(4, 5, mu=0.5, L=4.0, hessian_spread=0.3, spread=1.0, seed=2)
    oracle = RobustOracle(problem, TrMean(1), SignFlipping(), n_honest=4, n_byz=1)
    exp = Experiment(oracle, DGD(lr=0.2), rounds=6, eval_every=3, x0=np.ones(5))
    m = jax.tree.map(np.asarray, _run(jax.random.key(0), exp, data).metrics)
    np.testing.assert_allclose(m["kappa_hat"], m["error"] ** 2 / m["spread"], rtol=1e-12)
    assert np.all(m["kappa_hat"] > 0)
    _, same, _ = make_quadratic(4, 5, mu=0.5, L=4.0, hessian_spread=0.0, spread=0.0, seed=2)
    m0 = jax.tree.map(np.asarray, _run(jax.random.key(0), exp, same).metrics)
    assert np.all(m0["spread"] == 0) and np.all(np.isnan(m0["kappa_hat"]))


# ---------------------------------------------------------------------------------------------
# L, mu, delta, G, B against closed forms on quadratics


def _np_grads(a, b, x):
    """Per-worker gradients A_i (x - b_i), [m, d]."""
    return np.einsum("wij,wj->wi", a, x[None] - b)


def test_L_mu_delta_of_a_quadratic_are_its_closed_forms():
    """L, mu = the ends of geomspace(mu, L, d); delta = ||mean A_i - A_0||_2 (any x: constant Hessian)."""
    problem, data, info = make_quadratic(5, 8, mu=0.2, L=6.0, hessian_spread=0.7, seed=4)
    shards = _shards(data)
    a = np.asarray(data.shards.a)
    x = jnp.asarray(np.random.default_rng(1).normal(size=8))
    loss = honest_loss(problem, shards)
    L = smoothness(loss, x, jax.random.key(0), iters=400)
    np.testing.assert_allclose(L, info["L"], rtol=1e-6)
    np.testing.assert_allclose(strong_convexity(loss, x, jax.random.key(0), iters=1500, L=L), info["mu"], rtol=1e-4)
    delta = np.linalg.norm(a.mean(axis=0) - a[0], 2)
    assert delta > 0
    np.testing.assert_allclose(similarity_delta(problem, shards, x, jax.random.key(1), iters=400), delta, rtol=1e-6)


def test_G_at_B0_is_the_constant_spread_of_shared_hessian_quadratics():
    """With A_i = A the spread (1/m) sum ||A (b_i - b_bar)||^2 does not depend on x: G^2(0) is it,
    and G^2(B^2) = spread - B^2 min_t ||grad_t||^2 down to 0."""
    problem, data, _ = make_quadratic(6, 5, mu=1.0, L=5.0, spread=1.5, seed=5)
    a, b = np.asarray(data.shards.a), np.asarray(data.shards.b)
    cbar = np.einsum("wij,wj->wi", a, b)
    constant = np.mean(np.sum((cbar - cbar.mean(axis=0)) ** 2, axis=1))
    xs = np.random.default_rng(0).normal(size=(7, 5)) * 3
    grads = [_np_grads(a, b, x) for x in xs]
    spread = [np.mean(np.sum((g - g.mean(0)) ** 2, axis=1)) for g in grads]
    gn2 = np.array([np.sum(g.mean(0) ** 2) for g in grads])
    fit = fit_heterogeneity(spread, gn2)
    np.testing.assert_allclose(fit.g2_at_b0, constant, rtol=1e-12)
    np.testing.assert_allclose(fit.g2, np.maximum(0, constant - fit.b2 * gn2.min()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.b2[-1], constant / gn2.min(), rtol=1e-12)


def test_B_of_centred_quadratics_is_the_generalised_eigenvalue():
    """b_i = 0, A_i = A + E_i: spread = x^T S x (S = mean E_i^2), ||grad||^2 = x^T A^2 x, so with G = 0
    the smallest B^2 over all x is lambda_max(A^{-1} S A^{-1}), attained at its top eigenvector."""
    problem, data, _ = make_quadratic(5, 6, mu=0.5, L=4.0, spread=0.0, hessian_spread=0.8, seed=6)
    a = np.asarray(data.shards.a)
    A = a.mean(axis=0)
    E = a - A
    S = np.mean(np.einsum("wij,wjk->wik", E, E), axis=0)
    Ainv = np.linalg.inv(A)
    lam, w = np.linalg.eigh(Ainv @ S @ Ainv)
    top = Ainv @ w[:, -1]
    xs = np.vstack([top, np.random.default_rng(2).normal(size=(5, 6))])
    grads = [_np_grads(a, np.zeros((5, 6)), x) for x in xs]
    spread = [np.mean(np.sum((g - g.mean(0)) ** 2, axis=1)) for g in grads]
    gn2 = [np.sum(g.mean(0) ** 2) for g in grads]
    fit = fit_heterogeneity(spread, gn2)
    np.testing.assert_allclose(fit.b2[-1], lam[-1], rtol=1e-10)
    assert fit.g2[-1] <= 1e-12 * fit.g2_at_b0 and fit.g2_at_b0 == pytest.approx(max(spread), rel=1e-12)


def test_fit_heterogeneity_covers_every_round_minimally():
    """On random (spread, ||grad||^2) rounds: every pair of the fit covers every round, and a smaller
    G^2 at the same B^2 leaves some round uncovered (the LP's value, not an upper estimate)."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        s, g = rng.exponential(size=20), rng.exponential(size=20) * rng.uniform(0.1, 10)
        fit = fit_heterogeneity(s, g)
        slack = fit.g2[:, None] + fit.b2[:, None] * g[None] - s[None]
        assert np.all(slack >= -1e-12)
        tight = fit.g2 > 0
        assert np.all(np.min(slack[tight], axis=1) <= 1e-12)
    with pytest.raises(ConfigError, match="fit_heterogeneity: spread and grad_norm_sq must have the same length"):
        fit_heterogeneity([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="fit_heterogeneity: no finite round"):
        fit_heterogeneity([np.nan], [1.0])


# ---------------------------------------------------------------------------------------------
# Proven kappa, the oracle-error inequality, floors and rounds


def test_proven_kappa_table_and_unknown_cases():
    """Allouah et al. 2023, Table 1 at n = 10, f = 2 (r = f / (n - 2f) = 1/3), and None where unproven."""
    r = 2 / 6
    assert proven_kappa(TrMean(2), 10, 2) == pytest.approx(6 * r * (1 + r))
    assert proven_kappa(Krum(2), 10, 2) == pytest.approx(6 * (1 + r))
    assert proven_kappa(Median(), 10, 2) == pytest.approx(4 * (1 + r) ** 2)
    assert proven_kappa(SmoothedWeiszfeld(), 10, 2) == pytest.approx(4 * (1 + r) ** 2)
    assert proven_kappa(GeometricMedian(), 10, 2) == pytest.approx(4 * (1 + r) ** 2)
    assert proven_kappa(Pipeline([NNM(2)], TrMean(2)), 10, 2) == pytest.approx(8 * 2 / 8 * (6 * r * (1 + r) + 1))
    assert proven_kappa(Pipeline([], Krum(2)), 10, 2) == pytest.approx(6 * (1 + r))
    assert proven_kappa(Average(), 10, 0) == 0.0
    for rule, n, f in ((Average(), 10, 1), (TrMean(1), 10, 2), (CenteredClipping(), 10, 2), (TrMean(2), 4, 2),
                       (Pipeline([Clipping()], TrMean(2)), 10, 2), (Pipeline([NNM(1)], TrMean(2)), 10, 2),
                       (Pipeline([NNM(2)], CenteredClipping()), 10, 2), (TrMean(jnp.array([1, 2])), 10, 2)):
        assert proven_kappa(rule, n, f) is None, (rule, n, f)
    for n in range(3, 30):
        for f in range(0, (n - 1) // 2 + 1):
            for rule in (TrMean(f), Krum(f), Median(), Pipeline([NNM(f)], TrMean(f))):
                k = proven_kappa(rule, n, f)
                assert k is not None and k >= f / (n - 2 * f) - 1e-12  # the lower bound of any rule


def test_proven_kappa_matches_hand_computed_values_of_the_table():
    """Allouah et al. 2023 (arXiv 2302.01772), Table 1 and the NNM lemma, evaluated by hand as exact
    fractions (r = f / (n - 2f); TrMean 6 r (1 + r), Krum 6 (1 + r), CWMed / GM 4 (1 + r)^2, NNM then
    kappa: 8 f / (n - f) (kappa + 1)):
    n = 25, f = 5 (Experiment A, f = 5): r = 1/3, TrMean 8/3, Krum 8, Median 64/9, NNM factor 2;
    n = 21, f = 1 (Experiment A, f = 1): r = 1/19, TrMean 120/361, Krum 120/19, Median 1600/361, NNM factor 2/5;
    n = 7, f = 1: r = 1/5, TrMean 36/25, Krum 36/5, Median 144/25, NNM factor 4/3;
    n = 5, f = 2: r = 2, TrMean 36, Krum 18, Median 36, NNM factor 16/3."""
    table = {  # (n, f): (TrMean, Krum, Median, NNM factor 8 f / (n - f))
        (25, 5): (8 / 3, 8.0, 64 / 9, 2.0),
        (21, 1): (120 / 361, 120 / 19, 1600 / 361, 2 / 5),
        (7, 1): (36 / 25, 36 / 5, 144 / 25, 4 / 3),
        (5, 2): (36.0, 18.0, 36.0, 16 / 3),
    }
    for (n, f), (tm, kr, med, nnm) in table.items():
        assert proven_kappa(TrMean(f), n, f) == pytest.approx(tm, rel=1e-12)
        assert proven_kappa(Krum(f), n, f) == pytest.approx(kr, rel=1e-12)
        assert proven_kappa(Median(), n, f) == pytest.approx(med, rel=1e-12)
        assert proven_kappa(SmoothedWeiszfeld(), n, f) == pytest.approx(med, rel=1e-12)
        assert proven_kappa(Pipeline([NNM(f)], TrMean(f)), n, f) == pytest.approx(nnm * (tm + 1), rel=1e-12)
        assert proven_kappa(Pipeline([NNM(f)], Krum(f)), n, f) == pytest.approx(nnm * (kr + 1), rel=1e-12)
        assert proven_kappa(Pipeline([NNM(f)], Median()), n, f) == pytest.approx(nnm * (med + 1), rel=1e-12)
    # Experiment A's rule NNM -> TrMean: 22/3 at f = 5 and 962/1805 at f = 1
    assert proven_kappa(Pipeline([NNM(5)], TrMean(5)), 25, 5) == pytest.approx(22 / 3, rel=1e-12)
    assert proven_kappa(Pipeline([NNM(1)], TrMean(1)), 21, 1) == pytest.approx(962 / 1805, rel=1e-12)
    # the bounds need n > 2f: none at n = 2f
    assert proven_kappa(Median(), 10, 5) is None and proven_kappa(Pipeline([NNM(5)], TrMean(5)), 10, 5) is None


RULES = {
    "TrMean": lambda f: TrMean(f), "Median": lambda f: Median(), "Krum": lambda f: Krum(f),
    "GM": lambda f: SmoothedWeiszfeld(nu=1e-8, tol=0.0, max_iter=300),
    "NNM+TrMean": lambda f: Pipeline([NNM(f)], TrMean(f)), "NNM+Median": lambda f: Pipeline([NNM(f)], Median()),
    "NNM+Krum": lambda f: Pipeline([NNM(f)], Krum(f)),
    "NNM+GM": lambda f: Pipeline([NNM(f)], SmoothedWeiszfeld(nu=1e-8, tol=0.0, max_iter=300)),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_measured_error_never_exceeds_the_bound_with_the_proven_kappa(name):
    """arXiv 2602.03329, section 2 on random heterogeneous quadratics: at every query point and for
    every block of up to f arbitrary rows (far copies, ALIE-like, sign flip, Gaussian, mimic, huge,
    placed at random positions), ||F(v) - grad L_H||^2 <= kappa (G^2 + B^2 ||grad L_H||^2) for the
    rule's proven kappa and every (G, B) pair fitted on the honest gradients of those points.
    n = 7 rows in every case (one compiled program per rule; f is an array leaf)."""
    n, d = 7, 4
    worst = 0.0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        f = 1 + seed % 2
        m = n - f
        _, data, _ = make_quadratic(m, d, mu=rng.uniform(0.1, 1), L=rng.uniform(2, 10), spread=rng.uniform(0.1, 3),
                                    hessian_spread=rng.uniform(0, 0.9), seed=seed)
        a, b = np.asarray(data.shards.a), np.asarray(data.shards.b)
        xs = rng.normal(size=(3, d)) * rng.uniform(0.1, 5)
        grads = [_np_grads(a, b, x) for x in xs]
        spread = [np.mean(np.sum((g - g.mean(0)) ** 2, axis=1)) for g in grads]
        gn2 = np.array([np.sum(g.mean(0) ** 2) for g in grads])
        fit = fit_heterogeneity(spread, gn2, num=9)
        rule = RULES[name](f)
        kappa = proven_kappa(rule, n, f)
        assert kappa is not None
        for g, g2 in zip(grads, gn2):
            blocks = byzantine_candidates(g, f, seed) | {"huge": np.full((f, d), 1e6) * rng.choice([-1, 1], (f, d))}
            bound = oracle_error_bound(kappa, fit.g2, fit.b2, g2).min()
            for rows in blocks.values():
                v = np.concatenate([g, rows])
                if seed % 3 == 0:
                    v = v[rng.permutation(n)]
                err2 = np.sum((np.asarray(rule(v)) - g.mean(0)) ** 2)
                assert err2 <= bound * (1 + 1e-9) + 1e-12, (name, seed, err2, bound)
                worst = max(worst, err2 / bound)
    assert worst > 0  # the check saw non-trivial errors


def test_predicted_floor_dgd_is_attained_by_a_constant_bias_along_mu():
    """The floor is an upper bound on D-GD's limit, tight when the bias is constant and the Hessian
    is mu I. Shared Hessian A, ALIE rows b = mean + tau std (std of -A b_i: constant in x) under
    Average: the error e = (f / n) tau std is constant, so kappa_hat = ||e||^2 / spread is constant,
    (G^2, B^2) = (spread, 0) fits, and D-GD (step 1/L) ends at x* - A^{-1} e with gap
    e^T A^{-1} e / 2 in [mu / L, 1] x kappa G^2 / (2 mu); = 1 x when L = mu."""
    for L, low in ((1.0, 1.0 - 1e-9), (3.0, 1.0 / 3.0)):
        problem, data, info = make_quadratic(5, 4, mu=1.0, L=L, spread=1.0, seed=7)
        oracle = RobustOracle(problem, Average(), ALittleIsEnough(tau=1.5), n_honest=5, n_byz=2)
        trace = _run(jax.random.key(0), Experiment(oracle, DGD(lr=1.0 / L), rounds=120, eval_every=60), data)
        m = jax.tree.map(np.asarray, trace.metrics)
        np.testing.assert_allclose(m["kappa_hat"], m["kappa_hat"][0], rtol=1e-9)
        fit = fit_heterogeneity(m["spread"], m["grad_norm"] ** 2)
        floor = predicted_floor_dgd(m["kappa_hat"].max(), fit.g2_at_b0, 0.0, info["mu"])
        measured = m["loss"][-1] - info["loss_star"]
        assert low * floor <= measured <= floor * (1 + 1e-9), (L, measured, floor)


def test_floor_and_rounds_formulas():
    assert predicted_floor_dgd(0.5, 2.0, 1.0, 0.1) == pytest.approx(0.5 * 2 / (2 * 0.1 * 0.5))
    assert np.isinf(predicted_floor_dgd(0.5, 2.0, 2.0, 0.1))
    np.testing.assert_allclose(predicted_floor_dgd(1.0, [1.0, 1.0], [0.0, 1.0], 1.0), [0.5, np.inf])
    assert oracle_error_bound(2.0, 1.0, 3.0, 4.0) == pytest.approx(2 * (1 + 12))
    r = predicted_rounds(100.0, 1.0, delta=4.0)
    assert r == pytest.approx({"DGD": 100, "DNAG": 10, "AEG": 20, "PIGS": 4, "prox-AEG": 4})
    assert predicted_rounds(100.0, 1.0, kappa_b2=0.5)["DGD"] == pytest.approx(200)
    assert all(np.isinf(v) for v in predicted_rounds(100.0, 1.0, 4.0, kappa_b2=1.0).values())
    s = recommended_steps(4.0, 1.0, 0.5)
    assert s["DGD"]["lr"] == 0.25 and s["DNAG"]["momentum"] == pytest.approx(1 / 3) and s["PIGS"]["eta"] == 2.0
    assert s["prox-AEG"] == {"theta": 2.0, "gamma": 1.0}


# ---------------------------------------------------------------------------------------------
# The probe


def test_theory_probe_on_a_quadratic():
    """Constant Hessian: L, mu equal at x0 and x*, delta the closed form; L* the closed form; the
    proven kappa of NNM+TrMean; the floor from the reported pair; printable lines."""
    problem, data, info = make_quadratic(5, 6, mu=0.5, L=5.0, spread=1.0, hessian_spread=0.5, seed=8)
    rule = Pipeline([NNM(1)], TrMean(1))
    oracle = RobustOracle(problem, rule, SignFlipping(), n_honest=5, n_byz=1)
    exp = Experiment(oracle, DGD(lr=0.1), rounds=10, x0=np.ones(6))
    p = theory_probe(exp, data, jax.random.key(0), probes=3, iters=600)
    a = np.asarray(data.shards.a)
    for L, mu in ((p.L_x0, p.mu_x0), (p.L_star, p.mu_star)):
        assert L == pytest.approx(info["L"], rel=1e-5) and mu == pytest.approx(info["mu"], rel=1e-3)
    assert p.delta == pytest.approx(np.linalg.norm(a.mean(0) - a[0], 2), rel=1e-5)
    assert p.loss_star == pytest.approx(info["loss_star"], rel=1e-10) and p.grad_norm_star <= 1e-10
    assert p.kappa == pytest.approx(proven_kappa(rule, 6, 1)) and p.kappa_source == "proven"
    assert p.floor_dgd == pytest.approx(float(predicted_floor_dgd(p.kappa, p.G2, p.B2, min(p.mu_x0, p.mu_star))))
    assert p.G2_b0 == pytest.approx(max(p.probe_spread)) and len(p.probe_kappa_hat) == 3
    assert p.steps["DGD"]["lr"] == pytest.approx(1 / max(p.L_x0, p.L_star))
    L, mu = max(p.L_x0, p.L_star), min(p.mu_x0, p.mu_star)
    assert p.rounds == pytest.approx(predicted_rounds(L, mu, p.delta, p.kappa * p.B2))
    assert p.ranking == sorted(p.rounds, key=p.rounds.get) and p.ranking[-1] == "DGD"
    lines = p.to_lines()
    assert all(isinstance(s, str) for s in lines) and any(s.startswith("predicted ranking: ") for s in lines)
    with pytest.raises(ConfigError, match="theory_probe: probes must be >= 2"):
        theory_probe(exp, data, jax.random.key(0), probes=1)


def test_trace_theory_of_a_robust_run_keeps_every_round_under_its_bound():
    """A D-GD run with NNM+TrMean under ALIE on a heterogeneous quadratic: per round the measured
    error^2 is at most the bound from the proven kappa and the run's own (G, B) fit (bound_ratio <= 1),
    the bound is the smallest over the fitted pairs, and the floor is the one of the reported pair."""
    problem, data, info = make_quadratic(6, 5, mu=0.5, L=4.0, spread=1.0, hessian_spread=0.5, seed=9)
    rule = Pipeline([NNM(1)], TrMean(1))
    oracle = RobustOracle(problem, rule, ALittleIsEnough(tau=1.5), n_honest=6, n_byz=1)
    m = jax.tree.map(np.asarray, _run(jax.random.key(0), Experiment(oracle, DGD(lr=0.25), rounds=30, eval_every=10,
                                                                   x0=3 * np.ones(5)), data).metrics)
    kappa = proven_kappa(rule, 7, 1)
    out = trace_theory(m, kappa, info["mu"])
    assert out["kappa_source"] == "proven" and out["kappa"] == kappa
    assert np.all(out["bound_ratio"] <= 1 + 1e-9) and np.max(out["bound_ratio"]) > 0
    fit = fit_heterogeneity(m["spread"], m["grad_norm"] ** 2)
    pairs = kappa * (fit.g2[:, None] + fit.b2[:, None] * m["grad_norm"][None] ** 2)
    np.testing.assert_allclose(out["error_bound"], pairs.min(axis=0), rtol=1e-12)
    assert out["floor_dgd"] == pytest.approx(float(predicted_floor_dgd(kappa, out["G2"], out["B2"], info["mu"])))
    measured = trace_theory(m, None, info["mu"])
    assert measured["kappa_source"] == "measured" and measured["kappa"] == pytest.approx(np.nanmax(m["kappa_hat"]))


# ---------------------------------------------------------------------------------------------
# The attacked fixed point

from byzjax.attacks import Gaussian  # noqa: E402
from byzjax.theory import attacked_fixed_point  # noqa: E402


def test_attacked_fixed_point_of_a_constant_bias_on_the_mean_is_its_closed_form():
    """Average over h honest + f Byzantine rows all equal to c 1 (Gaussian(mu=c, sigma=0)):
    g_hat = (h grad L_H + f c 1) / (h + f), zero at grad L_H = -(f/h) c 1, i.e.
    x_att = x* - (f/h) c A^{-1} 1 (A = mean A_i). Plain D-GD and a heavy-ball iteration both reach
    it; the distance to it decreases to ~0, and its gap L_H(x_att) - L* equals
    (1/2) e^T A^{-1} e with e = (f/h) c 1."""
    h, f, d, c = 5, 2, 6, 0.7
    problem, data, info = make_quadratic(h, d, mu=0.5, L=4.0, hessian_spread=0.4, spread=1.0, seed=11)
    a_mean = np.asarray(data.shards.a).mean(axis=0)
    e = (f / h) * c * np.ones(d)
    x_att = info["x_star"] - np.linalg.solve(a_mean, e)
    oracle = RobustOracle(problem, Average(), Gaussian(mu=c, sigma=0.0), n_honest=h, n_byz=f)
    exp = Experiment(oracle, DGD(lr=0.1), rounds=1, x0=np.zeros(d))
    for step, momentum, iters in ((0.3, 0.0, 400), (0.3, 0.5, 150)):
        fp = attacked_fixed_point(exp, data, jax.random.key(0), step=step, momentum=momentum, iters=iters,
                                  track=x_att)
        np.testing.assert_allclose(fp.x, x_att, atol=1e-9)
        assert fp.residual <= 1e-9 < fp.residuals[0]
        assert fp.distances[-1] <= 1e-9 and fp.distances[0] == pytest.approx(np.linalg.norm(x_att), rel=1e-12)
        np.testing.assert_allclose(fp.loss - info["loss_star"], 0.5 * e @ np.linalg.solve(a_mean, e), rtol=1e-8)
    with pytest.raises(ConfigError, match="attacked_fixed_point: need step > 0"):
        attacked_fixed_point(exp, data, jax.random.key(0), step=0.0)
