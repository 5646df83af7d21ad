"""experiments/attacked_fixed_point.py: its fixed-point search, trajectories and Experiment A's cell.

The fixed point of an attacked quadratic with a constant bias on the mean is known in closed form
(x_att = x* - A^{-1} e); with a robust rule it is not, but at a zero of g_hat the (f, kappa) bound
itself says ||grad L_H(x_fp)||^2 = error^2 <= kappa spread(x_fp) (arXiv 2602.03329, section 2).
"""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from byzjax.aggregators import Average, TrMean
from byzjax.algorithms import DGD, DNAG
from byzjax.attacks import ALittleIsEnough, Gaussian
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.problems import make_quadratic
from byzjax.simulate import Experiment, run
from byzjax.theory import proven_kappa

_spec = importlib.util.spec_from_file_location(
    "attacked_fixed_point", Path(__file__).resolve().parents[1] / "experiments" / "attacked_fixed_point.py")
afp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(afp)


def _quadratic_with_constant_bias(h=6, f=2, d=6, c=0.7):
    problem, data, info = make_quadratic(h, d, mu=0.5, L=4.0, hessian_spread=0.4, spread=1.0, seed=3)
    a_mean = np.asarray(data.shards.a).mean(axis=0)
    x_att = info["x_star"] - np.linalg.solve(a_mean, (f / h) * c * np.ones(d))
    oracle = RobustOracle(problem, Average(), Gaussian(mu=c, sigma=0.0), n_honest=h, n_byz=f)
    return problem, data, info, oracle, x_att, a_mean


def test_search_finds_the_closed_form_fixed_point_and_dgd_contracts_towards_it():
    """Average over h honest rows and f rows equal to c 1: g_hat = (h grad L_H + f c 1) / (h + f) is zero
    at x_att = x* - (f/h) c A^{-1} 1. The search (heavy ball 1/L, (1 - sqrt(mu/L))^2, then 1/L) reaches
    it; D-GD(lr) from 0 has x_t - x_att = (I - lr h/(h+f) A)^t (x_0 - x_att), so its distance to x_att
    falls at least by the factor max |1 - lr h/(h+f) s| over the spectrum s of A per round and strictly
    at every evaluation, and cos(x_t - x*, x_att - x*) rises towards 1."""
    h, f = 6, 2
    problem, data, info, oracle, x_att, a_mean = _quadratic_with_constant_bias(h, f)
    lr, rounds = 0.2, 40
    exp = Experiment(oracle, DGD(lr=lr), rounds=rounds, eval_every=5, x0=np.zeros(6))
    fp = afp.find_fixed_point(exp, data, jax.random.key(0), x_start=np.zeros(6),
                              phases=afp.heavy_ball_phases(info["L"], info["mu"], chunks=3, chunk=100, polish=100))
    np.testing.assert_allclose(fp.x, x_att, atol=1e-9)
    assert fp.residual <= 1e-10 < fp.residuals[0]
    np.testing.assert_allclose(fp.grad_norm, (f / h) * 0.7 * np.sqrt(6), rtol=1e-8)  # ||grad L_H|| = ||e||
    t = afp.trajectory(exp, data, jax.random.key(0))
    d = afp.distances(t, info["x_star"], fp.x)
    spectrum = np.linalg.eigvalsh(a_mean) * h / (h + f)
    rate = np.max(np.abs(1 - lr * spectrum))
    assert np.all(np.diff(d["dist_fp"]) < 0)
    assert d["dist_fp"][-1] <= rate ** rounds * d["dist_fp"][0] * (1 + 1e-9)
    np.testing.assert_allclose(d["dist_fp"], np.linalg.norm(t.params - x_att, axis=1), rtol=1e-8)
    assert np.all(np.diff(d["cos_fp"][1:]) > 0) and d["cos_fp"][-1] > 0.9
    # the trajectory is simulate.run's loop: same final model, same per-round metrics, L_H at the models
    ref = run(jax.random.key(0), exp, data)
    np.testing.assert_allclose(t.params[-1], np.asarray(ref.final_params), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.metrics["loss"], np.asarray(ref.metrics["loss"]), rtol=1e-12)
    a, b = np.asarray(data.shards.a), np.asarray(data.shards.b)
    np_loss = [np.mean([0.5 * (x - b[i]) @ a[i] @ (x - b[i]) for i in range(h)]) for x in t.params]
    np.testing.assert_allclose(t.loss, np_loss, rtol=1e-10)


def test_search_under_nnm_trmean_and_alie_finds_a_zero_that_obeys_the_kappa_bound_and_dnag_heads_there():
    """NNM -> TrMean under ALIE on a heterogeneous quadratic (n = 7, f = 1): the search ends where
    ||g_hat|| is tiny next to its start; there the whole error is -grad L_H, and the (f, kappa)
    bound with the rule's proven kappa holds: ||grad L_H(x_fp)||^2 <= kappa spread(x_fp). D-GD and
    D-NAG from the same start end closer to x_fp than they started, and closer to x_fp than to x*
    relative to the start."""
    h, f, d = 6, 1, 5
    problem, data, info = make_quadratic(h, d, mu=0.5, L=4.0, spread=1.0, hessian_spread=0.5, seed=9)
    rule = Pipeline([NNM(f)], TrMean(f))
    oracle = RobustOracle(problem, rule, ALittleIsEnough(tau=1.5), n_honest=h, n_byz=f)
    x0 = 3 * np.ones(d)
    fp = afp.find_fixed_point(Experiment(oracle, DGD(lr=0.2), rounds=1, x0=x0), data, jax.random.key(0), x_start=x0,
                              phases=afp.heavy_ball_phases(info["L"], info["mu"], chunks=3, chunk=100, polish=100))
    assert fp.residual <= 1e-6 * fp.residuals[0]
    out = afp._query(oracle, data.shards, jax.numpy.asarray(fp.x), jax.random.key(0))
    spread = float(np.mean(np.sum((np.asarray(out.honest_grads) - np.asarray(out.honest_grad)) ** 2, axis=1)))
    kappa = proven_kappa(rule, h + f, f)
    assert fp.grad_norm > 1e-3  # attacked: x_fp is not x*
    assert fp.grad_norm ** 2 <= kappa * spread + 1e-10
    assert np.linalg.norm(fp.x - info["x_star"]) > 1e-3
    for alg in (DGD(lr=0.2), DNAG(lr=0.1, momentum=0.5)):
        t = afp.trajectory(Experiment(oracle, alg, rounds=60, eval_every=10, x0=x0), data, jax.random.key(0))
        dist = afp.distances(t, info["x_star"], fp.x)
        assert dist["dist_fp"][-1] < 1e-3 * dist["dist_fp"][0], type(alg).__name__


def test_experiment_a_cell_is_the_reproduce_setting():
    """The script's cell is Experiment A's f = 5 Dirichlet(1) + Optimal ALIE cell: 20 honest + 5
    Byzantine rows, NNM(5) -> TrMean(5), Optimal ALIE, lambda = 1e-3, the three tuned methods."""
    cell = afp.experiment_a_cell("synthetic", rounds=10, eval_every=5)
    assert list(cell.experiments) == ["D-GD", "D-NAG", "PIGS"]
    for exp in cell.experiments.values():
        o = exp.oracle
        assert (o.n_honest, o.n_byz) == (20, 5)
        assert type(o.aggregator.pre_aggs[0]).__name__ == "NNM" and type(o.aggregator.agg).__name__ == "TrMean"
        assert int(o.aggregator.pre_aggs[0].f) == 5 and int(o.aggregator.agg.f) == 5
        assert type(o.attack).__name__.startswith("Optimal")
        assert float(o.problem.lam) == pytest.approx(1e-3)
    assert float(cell.experiments["D-GD"].algorithm.lr) == pytest.approx(0.03)
    assert float(cell.experiments["D-NAG"].algorithm.momentum) == pytest.approx(0.9)
    assert float(cell.experiments["PIGS"].algorithm.eta) == pytest.approx(1.5)
    assert proven_kappa(cell.experiments["D-GD"].oracle.aggregator, 25, 5) == pytest.approx(22 / 3)
