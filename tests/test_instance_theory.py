"""Per-instance theory (``runner.instance_theory``): L, mu and delta at x0 and x*, L*, the predicted
rounds of summary.csv, and the on-disk cache that spares a rerun the float64 solve."""

import json
import math
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import byzjax.theory
from byzjax.app import runner
from byzjax.app.config import parse_config
from byzjax.app.results import InstanceTheory
from byzjax.data import FederatedData
from byzjax.problems import make_quadratic

CONFIG = """
seeds = 1
[data]
source = "synthetic"
n_honest = 5
[problem]
name = "LogisticRegression"
[byzantine]
f = 0
[aggregator]
name = "Average"
[[algorithm]]
name = "DGD"
"""


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(runner, "_INSTANCE_CACHE", {})


def quadratic_instance(seed):
    """A 5-worker quadratic with prescribed spectrum [1, 10] and Hessian heterogeneity, stacked for one seed."""
    problem, data, info = make_quadratic(5, 6, mu=1.0, L=10.0, hessian_spread=0.8, seed=seed)
    stacked = FederatedData(jax.tree.map(lambda a: jnp.asarray(a)[None], data.shards), {})
    return problem, stacked, data, info


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_constants_are_the_closed_forms(fresh, seed):
    cfg = parse_config(tomllib.loads(CONFIG))
    problem, stacked, data, info = quadratic_instance(seed)
    keys = jax.vmap(jax.random.key)(jnp.asarray([0]))
    (inst,) = runner.instance_theory(cfg, problem, stacked, keys, np.zeros(6)).values()
    a = np.asarray(data.shards.a, np.float64)
    eig = np.linalg.eigvalsh(a.mean(axis=0))
    delta = np.abs(np.linalg.eigvalsh(a.mean(axis=0) - a[0])).max()
    assert inst.l_star == pytest.approx(info["loss_star"], rel=1e-10)
    for L in (inst.L_x0, inst.L_star):  # a quadratic's Hessian is the same everywhere
        assert L == pytest.approx(eig[-1], rel=1e-6)
    for mu in (inst.mu_x0, inst.mu_star):
        assert mu == pytest.approx(eig[0], rel=1e-4)
    assert inst.delta == pytest.approx(delta, rel=1e-4)


def test_columns_are_the_predicted_rounds_of_the_constants():
    inst = InstanceTheory(mu_x0=2.0, l_star=0.1, L_x0=3.0, L_star=4.0, mu_star=1.0, delta=0.5)
    assert (inst.L, inst.mu) == (4.0, 1.0)  # the larger L, the smaller mu of the two points
    cols = inst.columns(0.5)
    assert cols["pred_rounds_dgd"] == pytest.approx(4.0 / (0.5 * 1.0))
    assert cols["pred_rounds_dnag"] == pytest.approx(2.0)
    assert cols["pred_rounds_aeg"] == pytest.approx(4.0)
    assert cols["pred_rounds_pigs"] == pytest.approx(1.0)  # delta < mu: one round's worth (max(delta, mu) / mu)
    assert cols["pred_rounds_prox_aeg"] == pytest.approx(2.0)
    assert (cols["L_x0"], cols["mu_x0"], cols["L_star"], cols["mu_star"], cols["delta"]) == (3.0, 2.0, 4.0, 1.0, 0.5)
    assert all(math.isinf(v) for k, v in inst.columns(1.0).items() if k.startswith("pred_rounds"))  # kappa B^2 >= 1


def test_the_disk_cache_spares_the_solve_and_a_damaged_file_is_measured_again(fresh, tmp_path, monkeypatch):
    cfg = parse_config(tomllib.loads(CONFIG))
    problem, stacked, _, _ = quadratic_instance(0)
    keys = jax.vmap(jax.random.key)(jnp.asarray([0]))
    first = runner.instance_theory(cfg, problem, stacked, keys, np.zeros(6), cache_dir=tmp_path)
    (path,) = tmp_path.glob("instance-*.json")
    assert json.loads(path.read_text()) == pytest.approx(next(iter(first.values()))._asdict())

    def no_solve(*args, **kwargs):
        raise AssertionError("solved again despite the cache")

    monkeypatch.setattr(runner, "_INSTANCE_CACHE", {})
    monkeypatch.setattr(byzjax.theory, "reference_optimum", no_solve)
    assert runner.instance_theory(cfg, problem, stacked, keys, np.zeros(6), cache_dir=tmp_path) == first
    # another instance (another x0) is another file
    with pytest.raises(AssertionError, match="solved again"):
        runner.instance_theory(cfg, problem, stacked, keys, np.ones(6), cache_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(runner, "_INSTANCE_CACHE", {})
    path.write_text('{"mu_x0": 1.0, "l_st')  # a truncated file: measured again and rewritten
    again = runner.instance_theory(cfg, problem, stacked, keys, np.zeros(6), cache_dir=tmp_path)
    assert again == first and json.loads(path.read_text()) == pytest.approx(first[next(iter(first))]._asdict())
