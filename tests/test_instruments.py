"""Measured L and mu of the honest loss against closed forms and float64 eigendecompositions."""

import jax
import jax.numpy as jnp
import numpy as np

from byzjax.instruments import honest_loss, smoothness, strong_convexity
from byzjax.problems import make_quadratic
from helpers import tiny_classification


def test_quadratic_extreme_eigenvalues_are_its_spectrum_ends():
    """mean A_i has eigenvalues geomspace(mu, L, d) by construction, whatever the per-worker spread."""
    problem, data, info = make_quadratic(4, 12, mu=0.5, L=8.0, hessian_spread=0.5, seed=1)
    loss = honest_loss(problem, jax.tree.map(jnp.asarray, data.shards))
    x = jnp.asarray(np.random.default_rng(0).normal(size=12))
    L = smoothness(loss, x, jax.random.key(0), iters=400)
    np.testing.assert_allclose(L, info["L"], rtol=1e-4)
    np.testing.assert_allclose(strong_convexity(loss, x, jax.random.key(0), iters=2000, L=L), info["mu"], rtol=1e-3)


def test_logistic_smoothness_matches_the_float64_hessian():
    """Power iteration on HVPs == the top eigenvalue of the explicit Hessian; mu >= lam (the ridge)."""
    _, data, problem = tiny_classification(n_honest=4)
    loss = honest_loss(problem, jax.tree.map(jnp.asarray, data.shards))
    x = problem.init(jax.random.key(2))
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(x)))
    L = smoothness(loss, x, jax.random.key(1), iters=500)
    np.testing.assert_allclose(L, eig[-1], rtol=1e-6)
    mu = strong_convexity(loss, x, jax.random.key(1), iters=3000, L=L)
    np.testing.assert_allclose(mu, eig[0], rtol=1e-2)
    assert eig[0] >= problem.lam * (1 - 1e-9)
