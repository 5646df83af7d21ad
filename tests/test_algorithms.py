"""Algorithms against closed forms and NumPy references (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax.aggregators import Average, TrMean
from byzjax.algorithms import AEG, DGD, DNAG, PIGS, Environment
from byzjax.attacks import ALittleIsEnough
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.problems import make_quadratic
from byzjax.simulate import Experiment, run
from helpers import np_logistic_loss_grad, np_nnm, np_trmean, tiny_classification


def quadratic_run(alg, rounds, kappa=100.0, d=20, n=4, seed=0):
    problem, data, info = make_quadratic(n, d, mu=1.0, L=kappa, hessian_spread=0.5, seed=seed)
    oracle = RobustOracle(problem, Average(), None, n_honest=n, n_byz=0)
    trace = run(jax.random.key(0), Experiment(oracle, alg, rounds=rounds, eval_every=rounds), data)
    return trace, info


def relative_gap(trace, info, rounds):
    """``(L_H - L*) / (L_H(x_0) - L*)`` after ``rounds`` communication rounds."""
    gap = np.asarray(trace.metrics["loss"]) - info["loss_star"]
    return gap[np.searchsorted(np.asarray(trace.metrics["comm_rounds"]), rounds)] / gap[0]


def test_gd_and_nesterov_reach_the_closed_form_optimum():
    kappa = 50.0
    gd, info = quadratic_run(DGD(lr=1.0 / kappa), 2000, kappa)
    q = np.sqrt(kappa)
    nag, _ = quadratic_run(DNAG(lr=1.0 / kappa, momentum=(q - 1) / (q + 1)), 400, kappa)
    np.testing.assert_allclose(gd.final_params, info["x_star"], atol=1e-6)
    np.testing.assert_allclose(nag.final_params, info["x_star"], atol=1e-6)
    np.testing.assert_allclose(gd.metrics["loss"][-1], info["loss_star"], rtol=1e-9)


def test_nesterov_needs_fewer_rounds_when_ill_conditioned():
    kappa = 1000.0
    q = np.sqrt(kappa)
    gd, info = quadratic_run(DGD(lr=1.0 / kappa), 3000, kappa)
    nag, _ = quadratic_run(DNAG(lr=1.0 / kappa, momentum=(q - 1) / (q + 1)), 3000, kappa)

    def first_below(trace, eps=1e-6):
        gap = trace.metrics["loss"] - info["loss_star"]
        hit = np.flatnonzero(gap <= eps * (gap[0]))
        return hit[0] if hit.size else np.inf

    assert np.isfinite(first_below(nag)) and first_below(nag) < 0.25 * min(first_below(gd), 3000)
    assert relative_gap(nag, info, 1000) < 1e-2 * relative_gap(gd, info, 1000)  # same budget, far lower


def test_distributed_gd_without_byzantine_equals_centralised_gd():
    ds, data, problem = tiny_classification(n_honest=4, split="iid")
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    trace = run(jax.random.key(1), Experiment(oracle, DGD(lr=0.5), rounds=6, eval_every=3), data)
    x = np.asarray(problem.init(jax.random.fold_in(jax.random.key(1), 0)))
    shards = data.shards
    for t in range(6):
        # L_H = mean of local losses; equal iid shards make it the centralised loss.
        grads = [np_logistic_loss_grad(x, shards.x[i].astype(np.float64), shards.y[i], 1e-2, 12, 3)[1]
                 for i in range(4)]
        x = x - 0.5 * np.mean(grads, axis=0)
    np.testing.assert_allclose(trace.final_params, x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alg", [DGD(lr=0.3), DNAG(lr=0.3, momentum=0.9)])
def test_scanned_run_equals_numpy_loop_under_attack(alg):
    """NNM -> TrMean under ALIE (tau=1.5), 5 rounds, against a NumPy loop."""
    n_h, f, lr = 6, 2, 0.3
    ds, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Pipeline([NNM(f)], TrMean(f)), ALittleIsEnough(tau=1.5), n_honest=n_h, n_byz=f)
    trace = run(jax.random.key(2), Experiment(oracle, alg, rounds=5, eval_every=5), data)
    sh = data.shards
    x = np.asarray(problem.init(jax.random.fold_in(jax.random.key(2), 0)))
    x_prev, losses = x.copy(), []
    for t in range(5):
        out = [np_logistic_loss_grad(x, sh.x[i][sh.mask[i] > 0].astype(np.float64), sh.y[i][sh.mask[i] > 0],
                                     1e-2, 12, 3) for i in range(n_h)]
        g = np.array([o[1] for o in out])
        losses.append(np.mean([o[0] for o in out]))
        b = g.mean(0) + 1.5 * g.std(0, ddof=1)
        v = np.concatenate([g, np.repeat(b[None], f, 0)])
        g_hat = np_trmean(np_nnm(v, f), f)
        if isinstance(alg, DGD):
            x = x - lr * g_hat
        else:  # Sutskever form with parameters y_t (arXiv 2602.03329, section 4)
            x_new = x - lr * g_hat
            x, x_prev = x_new + 0.9 * (x_new - x_prev) if t else x_new + 0.9 * (x_new - x), x_new
    np.testing.assert_allclose(trace.metrics["loss"], losses, rtol=1e-9)
    np.testing.assert_allclose(trace.final_params, x, rtol=1e-8, atol=1e-10)


def test_pigs_inner_solution_satisfies_its_optimality_condition():
    n_h, f = 5, 1
    ds, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Pipeline([NNM(f)], TrMean(f)), ALittleIsEnough(), n_honest=n_h, n_byz=f)
    alg = PIGS(eta=2.0, inner_tol=1e-9, inner_max_iter=500)
    key = jax.random.key(3)
    trace = run(key, Experiment(oracle, alg, rounds=1, eval_every=1), data)
    x0 = problem.init(jax.random.fold_in(key, 0))
    env = Environment(oracle, data.shards)
    out, _ = env.query(x0, oracle.init(x0.dtype), jax.random.fold_in(key, 1))
    x1 = jnp.asarray(trace.final_params)
    grad0 = jax.grad(env.local_loss)
    residual = grad0(x1) + out.g_hat - grad0(x0) + (x1 - x0) / 2.0
    assert float(jnp.linalg.norm(residual)) < 1e-6
    assert trace.metrics["inner_grad_norm"][0] < 1e-6
    assert 1 <= trace.metrics["inner_iters"][0] < 500
    assert float(jnp.linalg.norm(x1 - x0)) > 1e-3  # it moved


def test_pigs_with_eta_to_zero_stays_and_with_exact_oracle_descends():
    """eta -> 0: each step is ``x_{k+1} - x_k = -eta g_hat(x_k) (1 + O(eta L))`` (the prox term
    dominates), so after T rounds the model has moved by ``T eta ||grad L_H(x_0)||`` up to O(eta);
    eta = 1 with the exact oracle: proximal point on L_H, a descent method."""
    ds, data, problem = tiny_classification(n_honest=4)
    oracle = RobustOracle(problem, Average(), None, n_honest=4, n_byz=0)
    key, rounds, eta = jax.random.key(0), 15, 1e-4
    run_jit = jax.jit(run)  # eta is an array leaf: both runs share one program
    x0 = problem.init(jax.random.fold_in(key, 0))
    small = run_jit(key, Experiment(oracle, PIGS(eta=eta, inner_tol=1e-9), rounds=rounds, eval_every=5), data)
    moved = float(jnp.linalg.norm(small.final_params - x0))
    np.testing.assert_allclose(moved, rounds * eta * small.metrics["grad_norm"][0], rtol=1e-2)
    trace = run_jit(key, Experiment(oracle, PIGS(eta=1.0, inner_tol=1e-9), rounds=rounds, eval_every=5), data)
    assert np.all(np.diff(trace.metrics["loss"]) < 0)
    assert float(jnp.linalg.norm(trace.final_params - x0)) > 100 * moved


def np_aeg(x0, grad, theta, gamma, iterations):
    """arXiv 2602.03329, section 4's AEG recursion in float64 NumPy with the oracle ``grad``;
    returns the x_slow iterates and the points queried."""
    tau = min(1.0, np.sqrt(theta * gamma / 2))
    eta_f = min(1 / (2 * gamma), theta / (2 * tau))
    m = gamma * eta_f
    slow, fast, slows, queries = x0.copy(), x0.copy(), [], []
    for _ in range(iterations):
        x_avg = tau * fast + (1 - tau) * slow
        slow = x_avg - theta * grad(x_avg)
        fast = fast + m * (slow - fast) - eta_f * grad(slow)
        slows.append(slow)
        queries += [x_avg, slow]
    return np.array(slows), queries


def test_aeg_equals_numpy_recursion_under_attack():
    """AEG with NNM -> TrMean under ALIE, 4 iterations = 8 rounds, against the NumPy recursion."""
    n_h, f = 6, 2
    ds, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Pipeline([NNM(f)], TrMean(f)), ALittleIsEnough(tau=1.5), n_honest=n_h, n_byz=f)
    alg = AEG(theta=0.5, gamma=0.05)
    trace = run(jax.random.key(4), Experiment(oracle, alg, rounds=8, eval_every=2), data)
    sh = data.shards

    def g_hat(x):
        g = np.array([np_logistic_loss_grad(x, sh.x[i][sh.mask[i] > 0].astype(np.float64), sh.y[i][sh.mask[i] > 0],
                                            1e-2, 12, 3)[1] for i in range(n_h)])
        b = g.mean(0) + 1.5 * g.std(0, ddof=1)
        return np_trmean(np_nnm(np.concatenate([g, np.repeat(b[None], f, 0)]), f), f)

    x0 = np.asarray(problem.init(jax.random.fold_in(jax.random.key(4), 0)))
    slows, _ = np_aeg(x0, g_hat, 0.5, 0.05, 4)
    np.testing.assert_allclose(trace.final_params, slows[-1], rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(trace.metrics["comm_rounds"], [2, 4, 6, 8])  # two rounds per iteration
    losses = [np.mean([np_logistic_loss_grad(x, sh.x[i][sh.mask[i] > 0].astype(np.float64), sh.y[i][sh.mask[i] > 0],
                                             1e-2, 12, 3)[0] for i in range(n_h)]) for x in slows]
    np.testing.assert_allclose(trace.metrics["loss"], losses, rtol=1e-9)  # logged at the new x_slow


def test_aeg_is_accelerated_on_an_ill_conditioned_quadratic():
    """Same communication budget (AEG spends 2 rounds per iteration): AEG with theta = 1/L,
    gamma = mu reaches the optimum, and needs far fewer rounds than D-GD with lr = 1/L."""
    kappa = 1000.0
    gd, info = quadratic_run(DGD(lr=1.0 / kappa), 3000, kappa)
    aeg, _ = quadratic_run(AEG(theta=1.0 / kappa, gamma=1.0), 3000, kappa)
    assert len(aeg.metrics["loss"]) == 1500 and aeg.metrics["comm_rounds"][-1] == 3000
    np.testing.assert_allclose(aeg.final_params, info["x_star"], atol=1e-6)

    assert relative_gap(aeg, info, 1000) < 1e-3 * relative_gap(gd, info, 1000)  # same budget of 1000 rounds


def test_aeg_prox_step_satisfies_its_optimality_condition():
    """prox=True: x_slow solves PIGS's proximal problem at x_avg with step theta."""
    n_h = 4
    ds, data, problem = tiny_classification(n_honest=n_h)
    oracle = RobustOracle(problem, Average(), None, n_honest=n_h, n_byz=0)
    alg = AEG(theta=2.0, gamma=0.05, prox=True, inner_tol=1e-9, inner_max_iter=500)
    key = jax.random.key(5)
    trace = run(key, Experiment(oracle, alg, rounds=2, eval_every=1), data)
    x0 = problem.init(jax.random.fold_in(key, 0))  # x_avg = x0 at the first iteration
    env = Environment(oracle, data.shards)
    out, _ = env.query(x0, oracle.init(x0.dtype), jax.random.fold_in(key, 1))
    x1 = jnp.asarray(trace.final_params)
    grad0 = jax.grad(env.local_loss)
    residual = grad0(x1) + out.g_hat - grad0(x0) + (x1 - x0) / 2.0
    assert float(jnp.linalg.norm(residual)) < 1e-6 and trace.metrics["inner_iters"][0] >= 1
