"""Steps written as theory's expressions in a config (``lr = "1/L"``): parsing, errors, resolution."""

import json
import tomllib

import jax
import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.app.config import parse_config
from byzjax.app.steps import StepConstants, StepExpr, parse_step, resolve_grid, resolve_step
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset
from helpers import np_logistic_loss_grad

CONFIG = """
name = "steps"
seeds = 1
rounds = 3
x64 = true
[data]
source = "synthetic"
split = "dirichlet"
alpha = 1.0
n_honest = 4
[problem]
name = "LogisticRegression"
lam = 1e-2
[byzantine]
f = 0
attack = "SignFlipping"
[aggregator]
name = "Average"
[[algorithm]]
name = "DGD"
lr = ["1/L", "0.5/L", 0.01]
[[algorithm]]
name = "PIGS"
eta = "1/delta"
[[algorithm]]
name = "AEG"
theta = "1/L"
gamma = "mu"
"""


def test_parse_step_reads_theorys_expressions():
    cases = {"1/L": (1.0, "L"), " 0.5 / L ": (0.5, "L"), "2e-1/delta": (0.2, "delta"), "1/delta": (1.0, "delta"),
             "mu": (1.0, "mu"), "3*mu": (3.0, "mu"), "L": (1.0, "L"), ".25/L": (0.25, "L")}
    for text, (c, const) in cases.items():
        assert parse_step("algorithm DGD", "lr", text) == StepExpr(c, const), text


@pytest.mark.parametrize("text", ["1/mu", "2*L", "1/G", "-1/L", "0/L", "1//L", "x", "", "1/L + 1", "inf/L"])
def test_parse_step_refuses_anything_else_in_one_line(text):
    with pytest.raises(ConfigError, match=r"algorithm DGD: lr (must be a finite number or a list of them, got .* \(a step may also be written "
                                        r"\"1/L\"|= .* needs a positive)"):
        parse_step("algorithm DGD", "lr", text)


def test_resolve_step_is_c_over_L_or_delta_and_c_times_mu():
    k = StepConstants(L=8.0, mu=0.5, delta=2.0)
    assert resolve_step(StepExpr(1.0, "L"), k) == 1 / 8 and resolve_step(StepExpr(0.5, "delta"), k) == 0.25
    assert resolve_step(StepExpr(3.0, "mu"), k) == 1.5
    with pytest.raises(ConfigError, match=r"step '1/delta': the measured delta = 0.0 is not a positive number"):
        resolve_step(StepExpr(1.0, "delta"), k._replace(delta=0.0))


def test_a_config_keeps_the_expression_until_resolved_and_refuses_to_build_it():
    cfg = parse_config(tomllib.loads(CONFIG))
    assert [r.columns["method"] for r in cfg.runs][:2] == ["D-GD(lr=1/L)", "D-GD(lr=0.5/L)"]
    assert "lr" not in cfg.runs[0].columns and cfg.runs[2].columns["lr"] == 0.01
    json.dumps(cfg.to_dict())  # the expressions are written as their text
    assert cfg.to_dict()["algorithm"][0]["lr"] == ["1/L", "0.5/L", 0.01]
    with pytest.raises(ConfigError, match=r"algorithm DGD: the step expressions .* are resolved from the measured"):
        cfg.runs[0].algorithm.build()
    bad = CONFIG.replace('eta = "1/delta"', 'eta = "1/G"')
    with pytest.raises(ConfigError, match=r"algorithm PIGS: eta must be a finite number or a list of them, got '1/G' \(a step may also"):
        parse_config(tomllib.loads(bad))


def _np_hessian(x, feats, labels, lam, p, c, eps=1e-6):
    """The Hessian of the mean over ``feats``/``labels`` workers of their logistic losses, by central
    differences of the float64 NumPy gradient (exact up to O(eps^2) for this smooth loss)."""
    def grad(z):
        return np.mean([np_logistic_loss_grad(z, f, y, lam, p, c)[1] for f, y in zip(feats, labels)], axis=0)

    h = np.stack([(grad(x + e) - grad(x - e)) / (2 * eps) for e in np.eye(x.size) * eps])
    return 0.5 * (h + h.T)


def test_resolve_grid_uses_L_mu_delta_measured_at_the_initial_point():
    """L, mu = the extreme eigenvalues of the NumPy Hessian of L_H at x0, delta = ||H_H - H_0||_2."""
    cfg = parse_config(tomllib.loads(CONFIG))
    ds = synthetic_dataset(seed=0, n_train=300, n_test=20, num_features=6, num_classes=3, separation=1.0)
    data = stack_seeds([federated_classification(ds, 4, "dirichlet", 1.0, s) for s in cfg.seeds])
    problem = cfg.problem.build(ds)
    out, record = resolve_grid(cfg, problem, data)
    sh = jax.tree.map(lambda a: np.asarray(a[0]), data.shards)
    feats = [sh.x[i][sh.mask[i] > 0].astype(np.float64) for i in range(4)]
    labels = [sh.y[i][sh.mask[i] > 0] for i in range(4)]
    x0 = np.asarray(problem.init(jax.random.fold_in(jax.random.key(cfg.seeds[0]), 0)), np.float64)
    hess = _np_hessian(x0, feats, labels, 1e-2, 6, 3)
    eig = np.linalg.eigvalsh(hess)
    L, mu = eig[-1], eig[0]
    delta = np.linalg.norm(hess - _np_hessian(x0, feats[:1], labels[:1], 1e-2, 6, 3), 2)
    np.testing.assert_allclose([record["L"], record["mu"], record["delta"]], [L, mu, delta], rtol=1e-5)
    assert 0 < mu < L and delta > 0
    L, mu, delta = record["L"], record["mu"], record["delta"]
    lrs = [r.columns["lr"] for r in out.runs if r.columns["method"].startswith("D-GD")]
    np.testing.assert_allclose(lrs, [1 / L, 0.5 / L, 0.01], rtol=1e-12)
    pigs = next(r for r in out.runs if r.columns["method"].startswith("PIGS"))
    aeg = next(r for r in out.runs if r.columns["method"].startswith("AEG"))
    np.testing.assert_allclose([pigs.columns["eta"], aeg.columns["theta"], aeg.columns["gamma"]], [1 / delta, 1 / L, mu],
                               rtol=1e-12)
    assert out.runs[0].columns["method"] == f"D-GD(lr={1 / L:g})"
    for r in out.runs:
        r.algorithm.build()  # numbers now
    assert json.loads(json.dumps(out.to_dict()))["algorithm"][0]["lr"][0] == pytest.approx(1 / L, rel=1e-12)
    assert record["steps"][0]["lr"][0] == ["1/L", pytest.approx(1 / L, rel=1e-12)]
    assert resolve_grid(out, problem, data) == (out, {})  # nothing left to resolve
