"""Every registered algorithm crossed with every test problem (optimistix style): with Average and
no attack it reaches the optimum (closed form for the quadratics, a float64 Newton solve for the
logistic problem), equals a NumPy transcription of its recursion for the first iterations, and
counts its communication rounds. A registered algorithm without a case here makes a test fail."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import registry
from byzjax.aggregators import Average
from byzjax.algorithms import AEG, DGD, DNAG, PIGS, FedAvg
from byzjax.oracle import RobustOracle
from byzjax.problems import LogisticRegression, make_quadratic
from byzjax.simulate import Experiment, run
from helpers import np_logistic_loss_grad, tiny_classification

N, ROUNDS, CHECKED = 4, 1500, 6  # workers, communication budget, iterations compared with NumPy
P, C, LAM = 4, 3, 0.1  # the logistic problem: features, classes, ridge


class NumpyProblem:
    """Per-worker gradients and the prox step ``argmin_z L_0(z) + <c, z> + ||z - x||^2 / (2 eta)``
    in float64 NumPy, plus the optimum and the constants ``L`` and ``mu`` of ``L_H``."""

    def __init__(self, kind):
        self.kind = kind
        if kind.startswith("quadratic"):
            kappa = float(kind.split("-")[1])
            self.problem, self.data, info = make_quadratic(N, 5, mu=1.0, L=kappa, hessian_spread=0.5, seed=1)
            self.a, self.b = np.asarray(self.data.shards.a), np.asarray(self.data.shards.b)
            self.x_star, self.L, self.mu = info["x_star"], info["L"], info["mu"]
            self.x0 = np.random.default_rng(2).normal(size=5) + self.x_star
            return
        _, self.data, _ = tiny_classification(n_honest=N, p=P, c=C, n_train=200)
        self.problem = LogisticRegression(num_features=P, num_classes=C, lam=LAM)
        sh = self.data.shards
        self.shards = [(np.asarray(sh.x[i])[sh.mask[i] > 0].astype(np.float64), np.asarray(sh.y[i])[sh.mask[i] > 0])
                       for i in range(N)]
        self.x0 = np.zeros(self.problem.dim)
        hessian = jax.hessian(self.loss_jax)
        x = self.x0.copy()
        for _ in range(30):  # Newton on L_H (float64): the reference optimum
            x = x - np.linalg.solve(np.asarray(hessian(x)), self.grads(x).mean(0))
        assert np.linalg.norm(self.grads(x).mean(0)) < 1e-13
        self.x_star = x
        eig = np.linalg.eigvalsh(np.asarray(hessian(self.x0)))  # the Hessian is largest near 0 here
        self.L, self.mu = 1.5 * eig[-1], LAM

    def loss_jax(self, x):
        return jnp.mean(jnp.stack([self.problem.loss(x, jax.tree.map(lambda a: jnp.asarray(a[i]), self.data.shards))
                                   for i in range(N)]))

    def grads(self, x):
        if self.kind.startswith("quadratic"):
            return np.einsum("wij,wj->wi", self.a, x[None] - self.b)
        return np.array([np_logistic_loss_grad(x, f, y, LAM, P, C)[1] for f, y in self.shards])

    def loss(self, x):
        if self.kind.startswith("quadratic"):
            r = x[None] - self.b
            return np.mean(0.5 * np.einsum("wi,wij,wj->w", r, self.a, r))
        return np.mean([np_logistic_loss_grad(x, f, y, LAM, P, C)[0] for f, y in self.shards])

    def prox(self, x, c, eta):
        if self.kind.startswith("quadratic"):  # (A_0 + I / eta) z = A_0 b_0 - c + x / eta
            return np.linalg.solve(self.a[0] + np.eye(len(x)) / eta, self.a[0] @ self.b[0] - c + x / eta)
        z, step = x.copy(), 1.0 / (self.L * N + 1.0 / eta)  # gradient descent on a strongly convex objective
        for _ in range(5000):
            g = np_logistic_loss_grad(z, *self.shards[0], LAM, P, C)[1] + c + (z - x) / eta
            if np.linalg.norm(g) < 1e-13:
                break
            z = z - step * g
        return z


def np_dgd(alg, prob, iterations):
    """``x <- x - lr g``; logged at the query point."""
    x, logged = prob.x0.copy(), []
    for _ in range(iterations):
        logged.append(x.copy())
        x = x - float(alg.lr) * prob.grads(x).mean(0)
    return logged


def np_dnag(alg, prob, iterations):
    """PyTorch SGD with nesterov=True: ``v <- g + m v``, ``x <- x - lr (g + m v)``; logged at x."""
    lr, m = float(alg.lr), float(alg.momentum)
    x, v, logged = prob.x0.copy(), np.zeros_like(prob.x0), []
    for _ in range(iterations):
        logged.append(x.copy())
        g = prob.grads(x).mean(0)
        v = g + m * v
        x = x - lr * (g + m * v)
    return logged


def np_pigs(alg, prob, iterations):
    """``x <- prox_eta(x, g_hat - grad L_0(x))``; logged at the query point."""
    x, logged = prob.x0.copy(), []
    for _ in range(iterations):
        logged.append(x.copy())
        g = prob.grads(x)
        x = prob.prox(x, g.mean(0) - g[0], float(alg.eta))
    return logged


def np_aeg(alg, prob, iterations):
    """arXiv 2602.03329, section 4 (AEG); logged at the new x_slow."""
    theta, gamma = float(alg.theta), float(alg.gamma)
    tau = min(1.0, np.sqrt(theta * gamma / 2))
    eta_f = min(1 / (2 * gamma), theta / (2 * tau))
    slow, fast, logged = prob.x0.copy(), prob.x0.copy(), []
    for _ in range(iterations):
        x_avg = tau * fast + (1 - tau) * slow
        g = prob.grads(x_avg)
        slow = prob.prox(x_avg, g.mean(0) - g[0], theta) if alg.prox else x_avg - theta * g.mean(0)
        fast = fast + gamma * eta_f * (slow - fast) - eta_f * prob.grads(slow).mean(0)
        logged.append(slow.copy())
    return logged


def nesterov(L, mu):
    q = np.sqrt(L / mu)
    return DNAG(lr=1.0 / L, momentum=(q - 1) / (q + 1))


CASES = {  # name -> [(algorithm from (L, mu), NumPy recursion)], the registered name first
    "DGD": [(lambda L, mu: DGD(lr=1.0 / L), np_dgd)],
    "DNAG": [(nesterov, np_dnag)],
    "FedAvg": [(lambda L, mu: FedAvg(lr=1.0 / L), np_dgd)],  # one local step, plain SGD server: D-GD
    "PIGS": [(lambda L, mu: PIGS(eta=1.0 / mu, inner_tol=1e-11), np_pigs)],
    "AEG": [(lambda L, mu: AEG(theta=1.0 / L, gamma=mu), np_aeg),
            (lambda L, mu: AEG(theta=1.0 / mu, gamma=mu / 4, prox=True, inner_tol=1e-11), np_aeg)],
}
PROBLEMS = ["quadratic-10", "quadratic-100", "logistic"]
PARAMS = [(name, i, kind) for name in sorted(CASES) for i in range(len(CASES[name])) for kind in PROBLEMS]

_problems = {}
_run = jax.jit(run)  # one program per (algorithm structure, problem structure)


def problem_of(kind) -> NumpyProblem:
    if kind not in _problems:
        _problems[kind] = NumpyProblem(kind)
    return _problems[kind]


def test_every_registered_algorithm_has_a_case():
    assert set(CASES) == set(registry.registry("algorithm"))


@pytest.mark.parametrize("name, variant, kind", PARAMS, ids=[f"{n}{'-prox' * i}-{k}" for n, i, k in PARAMS])
def test_algorithm_reaches_the_optimum_equals_numpy_and_counts_rounds(name, variant, kind):
    prob = problem_of(kind)
    make, numpy_recursion = CASES[name][variant]
    alg = make(prob.L, prob.mu)
    oracle = RobustOracle(prob.problem, Average(), None, n_honest=N, n_byz=0)
    trace = _run(jax.random.key(0), Experiment(oracle, alg, rounds=ROUNDS, eval_every=ROUNDS, x0=prob.x0), prob.data)
    per_step = alg.rounds_per_step
    np.testing.assert_array_equal(trace.metrics["comm_rounds"], per_step * np.arange(1, ROUNDS // per_step + 1))
    scale = np.linalg.norm(prob.x_star) + 1.0
    assert np.linalg.norm(trace.final_params - prob.x_star) < 1e-6 * scale
    logged = numpy_recursion(alg, prob, CHECKED)
    np.testing.assert_allclose(trace.metrics["loss"][:CHECKED], [prob.loss(x) for x in logged], rtol=1e-9)
    np.testing.assert_allclose(trace.metrics["grad_norm"][:CHECKED],
                               [np.linalg.norm(prob.grads(x).mean(0)) for x in logged], rtol=1e-7, atol=1e-12)
