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


def test_reference_optimum_rejects_bad_settings():
    problem, data, _ = make_quadratic(3, 4, seed=0)
    with pytest.raises(ConfigError, match="reference_optimum: need tol > 0"):
        reference_optimum(problem, _shards(data), tol=0.0)
    with pytest.raises(ConfigError, match=r"reference_optimum: x0 must have shape \(4,\)"):
        reference_optimum(problem, _shards(data), np.zeros(3))
