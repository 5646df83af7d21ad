"""The attacked fixed point of Experiment A's Dirichlet(1) + Optimal ALIE cell, and who heads there.

Experiment A of arXiv 2602.03329 (its experiments; ``byzjax reproduce short``): Fashion-MNIST,
20 honest workers plus f = 5 Byzantine, a Dirichlet(1) split, logistic regression with
lambda = 1e-3, NNM -> TrMean with the true f, Optimal ALIE, D-GD and D-NAG (lr 0.03, momentum 0.9)
and PIGS (eta 1.5), the steps Experiment A chose at f = 0. A robust aggregate under attack is an
inexact gradient ``g_hat(x) = grad L_H(x) + e(x)`` (arXiv 2602.03329, the reduction to an inexact
gradient oracle), so every method whose iterates converge ends at a zero ``x_fp`` of ``g_hat``, where
``grad L_H(x_fp) = -e(x_fp)``, not at ``x* = argmin L_H``. This script

1. finds ``x_fp`` by iterating the cell's own oracle (``theory.attacked_fixed_point``: heavy-ball
   steps, then plain D-GD steps, in chunks until ``||g_hat||`` stops decreasing) and reports
   ``||g_hat(x_fp)||``, ``||grad L_H(x_fp)||`` and its gap ``L_H(x_fp) - L*`` (``x*`` and ``L*``
   from ``theory.reference_optimum``);
2. runs D-GD, D-NAG and PIGS for ``--rounds`` rounds and records per evaluation ``L_H - L*``,
   ``||x_t - x*||``, ``||x_t - x_fp||`` and ``cos(x_t - x*, x_fp - x*)``;
3. prints the theory of the cell: the measured ``kappa_hat``, the (G, B) fit of the runs' rounds,
   the rule's proven kappa, ``kappa B^2``, the predicted D-GD floor, L, mu and delta.

    python experiments/attacked_fixed_point.py --data fashion-mnist --out results/attacked_fixed_point
    python experiments/attacked_fixed_point.py --data synthetic --rounds 100 --fp-iters 1000   # a first try

Writes ``OUT/attacked_fixed_point.csv`` (one row per method and evaluation), ``OUT/summary.json``
(the fixed point, the theory numbers, the lowest and final gaps) and the figure
(``--figure``, default ``figures/attacked_fixed_point.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import theory
from byzjax.algorithms import Environment

# Experiment A's steps on Fashion-MNIST (chosen at f = 0 without attack by `byzjax reproduce short`).
STEPS = {"D-GD": {"name": "DGD", "lr": 0.03}, "D-NAG": {"name": "DNAG", "lr": 0.03, "momentum": 0.9},
         "PIGS": {"name": "PIGS", "eta": 1.5}}


class Cell(NamedTuple):
    """One attacked cell: its problem, one seed's data, and one ``Experiment`` per method."""

    problem: object
    data: object  # FederatedData of the seed
    experiments: dict  # method label -> Experiment
    key: jax.Array  # the seed's key (jax.random.key(seed), as the runner)
    lam: float  # the L2 weight lambda (a lower bound on mu)


def experiment_a_cell(source: str = "fashion-mnist", *, f: int = 5, alpha: float = 1.0, lam: float = 1e-3,
                      attack: str = "Optimal_ALittleIsEnough", rounds: int = 500, eval_every: int = 5,
                      seed: int = 0, x64: bool = False, steps: dict | None = None) -> Cell:
    """Experiment A's cell (f, Dirichlet(alpha), lambda, attack) built with the reproduce module's grid
    (``byzjax.app.reproduce._raw``: 20 honest workers, NNM -> TrMean with the true f) and the
    config path (``parse_config``, ``runner.prepare``, ``build_experiment``), so the setting is the
    one ``byzjax reproduce short`` runs; ``source`` as ``[data] source`` (``"synthetic"``: the
    Gaussian-mixture stand-in)."""
    from byzjax.app.config import build_experiment, parse_config
    from byzjax.app.reproduce import _raw
    from byzjax.app.runner import prepare

    steps = STEPS if steps is None else steps
    raw = _raw("attacked_fixed_point", split="dirichlet", alpha=alpha, lam=lam, rounds=rounds, seeds=[seed],
               fs=[f], attacks=[attack], algorithms=list(steps.values()),
               aggregator={"name": "TrMean", "pre_aggs": ["NNM"]}, eval_every=eval_every, x64=x64, max_batch=None)
    raw["data"]["source"] = source
    cfg = parse_config(raw)
    with jax.enable_x64(x64):
        _, problem, data = prepare(cfg)
        one = jax.tree.map(lambda a: a[0], data)
        experiments = {}
        for label, spec in zip(steps, cfg.runs):
            experiments[label] = build_experiment(spec, problem, cfg.data_instances[0].n_honest, rounds, eval_every)
    return Cell(problem, one, experiments, jax.random.key(seed), lam)


# ---------------------------------------------------------------------------------------------
# The fixed point


class FixedPoint(NamedTuple):
    x: np.ndarray  # [d]
    residual: float  # ||g_hat(x)||
    grad_norm: float  # ||grad L_H(x)||
    loss: float  # L_H(x)
    residuals: np.ndarray  # ||g_hat|| at every query of every phase
    phases: list  # (step, momentum, iterations, last residual) per chunk run


def heavy_ball_phases(L: float, mu: float, *, chunks: int = 4, chunk: int = 500, polish: int = 100) -> tuple:
    """The search's phases ``(step, momentum, max_chunks, chunk)`` from the measured ``L`` and ``mu``:
    heavy ball with step ``1/L`` and momentum ``(1 - sqrt(mu/L))^2`` (contraction ``1 - sqrt(mu/L)``
    per iteration on a quadratic, Polyak 1964), then one chunk of ``polish`` plain gradient steps
    ``1/L`` that damps what oscillates."""
    return ((1.0 / L, (1.0 - math.sqrt(mu / L)) ** 2, chunks, chunk), (1.0 / L, 0.0, 1, polish))


def find_fixed_point(experiment, data, key, *, phases, x_start=None, improvement: float = 0.9) -> FixedPoint:
    """A zero of the attacked oracle ``g_hat`` of ``experiment`` (``theory.attacked_fixed_point``).

    For each ``(step, momentum, max_chunks, chunk)`` of ``phases`` in turn: chunks of ``chunk``
    iterations ``y = x + momentum (x - x_prev)``, ``x <- y - step g_hat(y)``, each from the last
    point of the previous one, until a chunk's last ``||g_hat||`` is not below ``improvement``
    times the previous chunk's, or ``max_chunks`` chunks (one compiled scan per chunk length).
    ``||g_hat||``, ``||grad L_H||`` and ``L_H`` at the returned point come from one more query.
    """
    x = x_start
    residuals, log = [], []
    for step, momentum, max_chunks, chunk in phases:
        last = math.inf
        for _ in range(max_chunks):
            fp = theory.attacked_fixed_point(experiment, data, key, step=step, momentum=momentum, iters=chunk,
                                             x_start=x)
            x = fp.x
            residuals.append(fp.residuals)
            log.append((step, momentum, chunk, fp.residual))
            print(f"  fixed point: step {step:.4g}, momentum {momentum:.4g}, {chunk} iterations: "
                  f"||g_hat|| = {fp.residual:.3e}, L_H = {fp.loss:.6g}", flush=True)
            if not fp.residual < improvement * last:
                break
            last = fp.residual
    x = jnp.asarray(x, jnp.result_type(float))
    out = _query(experiment.oracle, data.shards, x, key)
    return FixedPoint(np.asarray(x, np.float64), float(jnp.linalg.norm(out.g_hat)),
                      float(jnp.linalg.norm(out.honest_grad)), float(out.honest_loss), np.concatenate(residuals), log)


@eqx.filter_jit
def _query(oracle, shards, x, key):
    out, _ = oracle(x, shards, oracle.init(x.dtype), key)
    return out


# ---------------------------------------------------------------------------------------------
# The trajectories


class Trajectory(NamedTuple):
    rounds: np.ndarray  # [E] iteration index of each evaluation (0 .. iterations)
    loss: np.ndarray  # [E] L_H(x_t)
    params: np.ndarray  # [E, d] the model x_t at each evaluation
    metrics: dict  # name -> [T] the per-round metrics (error, spread, grad_norm, kappa_hat, ...)


@eqx.filter_jit
def _trajectory(experiment, data, key):
    """``simulate.run``'s loop (same keys ``fold_in(key, t + 1)``, same initial point) that also
    keeps the model ``x_t`` and ``L_H(x_t)`` every ``eval_every`` iterations and at the end."""
    problem, alg = experiment.problem, experiment.algorithm
    k = experiment.eval_every
    n_blocks = experiment.iterations // k
    x0 = problem.init(jax.random.fold_in(key, 0)) if experiment.x0 is None else experiment.x0
    env = Environment(experiment.oracle, data.shards)
    loss_h = theory.honest_loss(problem, data.shards)

    def measure(state):
        x = alg.params(state)
        return loss_h(x), x

    def iteration(carry, t):
        state, ostate = carry
        state, ostate, metrics = alg.step(state, ostate, env, jax.random.fold_in(key, t + 1))
        return (state, ostate), metrics

    def block(carry, start):
        values = measure(carry[0])
        carry, metrics = jax.lax.scan(iteration, carry, start + jnp.arange(k))
        return carry, (values, metrics)

    carry = (alg.init(x0), experiment.oracle.init(x0.dtype))
    carry, ((loss, xs), metrics) = jax.lax.scan(block, carry, k * jnp.arange(n_blocks))
    last_loss, last_x = measure(carry[0])
    return (jnp.append(loss, last_loss), jnp.concatenate([xs, last_x[None]]),
            jax.tree.map(lambda m: m.reshape((-1,) + m.shape[2:]), metrics))


def trajectory(experiment, data, key) -> Trajectory:
    """The run of ``experiment`` (its ``iterations`` a multiple of ``eval_every``) with its model and
    ``L_H`` at every evaluation, on the host in float64."""
    if experiment.iterations % experiment.eval_every:
        raise ValueError(f"trajectory: rounds ({experiment.iterations}) must be a multiple of eval_every "
                         f"({experiment.eval_every})")
    loss, xs, metrics = _trajectory(experiment, data, key)
    rounds = np.arange(0, experiment.iterations + 1, experiment.eval_every)
    as64 = (lambda a: np.asarray(a, np.float64))
    return Trajectory(rounds, as64(loss), as64(xs), {k: as64(v) for k, v in metrics.items()})


def distances(t: Trajectory, x_star, x_fp) -> dict[str, np.ndarray]:
    """Per evaluation: ``||x_t - x*||``, ``||x_t - x_fp||`` and ``cos(x_t - x*, x_fp - x*)`` (nan where
    ``x_t = x*``)."""
    x_star, x_fp = np.asarray(x_star, np.float64), np.asarray(x_fp, np.float64)
    v = t.params - x_star
    drift = x_fp - x_star
    ds = np.linalg.norm(v, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (v @ drift) / (ds * np.linalg.norm(drift))
    return {"dist_star": ds, "dist_fp": np.linalg.norm(t.params - x_fp, axis=1), "cos_fp": cos}


# ---------------------------------------------------------------------------------------------
# The cell's theory


def constants_at(cell: Cell, x, iters: int = 200) -> dict:
    """``L``, ``mu`` and PIGS's ``delta = ||hessian(L_H - L_0)||`` at ``x`` (``theory.constants_at``:
    power iteration on Hessian-vector products; mu = lambda exactly for this softmax loss)."""
    x = jnp.asarray(x, jnp.result_type(float))
    L, mu, delta = theory.constants_at(cell.problem, cell.data.shards, x, jax.random.fold_in(cell.key, 7), iters)
    return {"L": float(L), "mu": float(mu), "delta": float(delta)}


def cell_theory(metrics: dict, kappa: float | None, mu: float) -> dict:
    """The theory module's numbers for the cell from the runs' per-round ``metrics`` (their rounds
    concatenated): ``kappa_hat`` (median, max), the (G, B) fit of all rounds with the rule's proven
    ``kappa`` (``theory.trace_theory``: ``G^2``, ``B^2``, ``kappa B^2``, the predicted D-GD floor
    ``kappa G^2 / (2 mu (1 - kappa B^2))``)."""
    fit = theory.trace_theory(metrics, kappa, mu)
    kh = metrics["kappa_hat"][np.isfinite(metrics["kappa_hat"])]
    return {"kappa_proven": kappa, "kappa_hat_median": float(np.median(kh)), "kappa_hat_max": float(np.max(kh)),
            "G2": fit["G2"], "B2": fit["B2"], "G2_at_B0": fit["G2_b0"], "kappa_b2": fit["kappa_b2"],
            "kappa_b2_lt_1": fit["kappa_b2_lt_1"], "floor_dgd": fit["floor_dgd"], "mu_used": mu}


# ---------------------------------------------------------------------------------------------
# Outputs


def write_csv(path: Path, trajectories: dict, dists: dict, loss_star: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "round", "loss", "gap_star", "dist_star", "dist_fp", "cos_fp"])
        for method, t in trajectories.items():
            d = dists[method]
            for i in range(len(t.rounds)):
                values = (t.loss[i], t.loss[i] - loss_star, d["dist_star"][i], d["dist_fp"][i], d["cos_fp"][i])
                w.writerow([method, int(t.rounds[i]), *(repr(float(v)) for v in values)])


def plot(path: Path, trajectories: dict, dists: dict, loss_star: float, fp_gap: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    for method, t in trajectories.items():
        d = dists[method]
        axes[0].plot(t.rounds, np.maximum(t.loss - loss_star, 1e-12), label=method)
        ref0 = dists[next(iter(dists))]["dist_fp"][0]  # ||x_0 - x_fp|| (every run starts at x_0)
        style = {"marker": "o", "ls": "none"} if np.sum(np.isfinite(d["dist_fp"])) < 2 else {}
        axes[1].plot(t.rounds, d["dist_fp"] / ref0, label=method + (" (end of Experiment A's run)" if style else ""),
                     **style)
        axes[2].plot(t.rounds[1:], d["cos_fp"][1:], label=method, **style)
    axes[0].axhline(fp_gap, color="k", ls="--", lw=1, label=f"L_H(x_fp) - L* = {fp_gap:.3g}")
    axes[0].set(yscale="log", xlabel="communication round", ylabel="L_H(x_t) - L*", title="gap to the exact optimum")
    axes[1].set(yscale="log", xlabel="communication round", ylabel="||x_t - x_fp|| / ||x_0 - x_fp||",
                title="distance to the attacked fixed point x_fp")
    axes[2].axhline(1.0, color="k", ls=":", lw=1)
    axes[2].set(xlabel="communication round", ylabel="cos(x_t - x*, x_fp - x*)",
                title="direction of x_t - x* against x_fp - x*", ylim=(-1.05, 1.05))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def lowest(t: Trajectory, loss_star: float) -> tuple[float, int]:
    gaps = t.loss - loss_star
    i = int(np.nanargmin(gaps))
    return float(gaps[i]), int(t.rounds[i])


# ---------------------------------------------------------------------------------------------
# The script: two parts that can run apart (in two processes) and a report that joins them


def _x0(cell: Cell):
    dgd = cell.experiments["D-GD"]
    return cell.problem.init(jax.random.fold_in(cell.key, 0)) if dgd.x0 is None else dgd.x0


def warm_start(spec: str | None):
    """``None``, the final model of a stored ``reproduce`` stage, ``STEM:METHOD`` (e.g.
    ``results/paper_short/stages/reference-dirichlet-64c5c333e797:PIGS(eta=1.5)``), or the point
    ``x_fp`` of a previous search's ``fixed_point.npz``."""
    if not spec:
        return None
    if spec.endswith(".npz"):  # a previous search's OUT/fixed_point.npz: continue from its point
        with np.load(spec) as z:
            return np.asarray(z["x_fp"], np.float64)
    from byzjax.app.reproduce import load_stage

    stem, _, method = spec.rpartition(":")
    runs, _, _ = load_stage(Path(stem))
    for _, _, cols, trace in runs:
        if cols["method"] == method:
            return np.asarray(trace.final_params, np.float64)
    raise SystemExit(f"--warm-start: no run {method!r} in {stem}")


def part_reference(cell: Cell, out: Path, iters: int, tol: float, start=None) -> None:
    """``x*`` and ``L*`` (``reference_optimum`` from ``start``, default the runs' ``x0``), and L, mu,
    delta at ``x0`` and ``x*``; written to ``OUT/reference.npz`` and ``OUT/reference.json``."""
    t0 = time.perf_counter()
    x0 = _x0(cell)
    ref = theory.reference_optimum(cell.problem, cell.data.shards, x0 if start is None else start, tol=tol)
    print(f"L* = {ref.loss_star:.10g} (||grad L_H(x*)|| = {ref.grad_norm:.2e}, converged {ref.converged}, "
          f"{ref.newton_iters} Newton iterations, {ref.cg_iters} Hessian-vector products, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "reference.npz", x_star=np.asarray(ref.x_star, np.float64))
    info = {"loss_star": ref.loss_star, "grad_norm_star": ref.grad_norm, "converged": ref.converged, "tol": tol,
            "newton_iters": ref.newton_iters, "cg_iters": ref.cg_iters,
            "warm_start": start is not None, "seconds": time.perf_counter() - t0}
    (out / "reference.json").write_text(json.dumps(info, indent=2, default=float))
    constants = {"x0": constants_at(cell, x0, iters), "x_star": constants_at(cell, ref.x_star, iters)}
    for name, c in constants.items():
        print(f"  at {name}: L = {c['L']:.4g}, mu = {c['mu']:.4g}, delta = {c['delta']:.4g}", flush=True)
    (out / "reference.json").write_text(json.dumps(info | {"constants": constants}, indent=2, default=float))


def part_fixed_point(cell: Cell, out: Path, fp_chunks: int, fp_chunk: int, iters: int, L: float | None,
                     start=None) -> None:
    """``x_fp`` from ``start`` (default the runs' ``x0``; heavy ball with ``L`` given or measured at
    ``x0`` and ``mu = lambda``); written to ``OUT/fixed_point.npz`` and ``OUT/fixed_point.json``."""
    x0 = _x0(cell)
    if L is None:
        L = float(theory.smoothness(theory.honest_loss(cell.problem, cell.data.shards), x0,
                                    jax.random.fold_in(cell.key, 7), iters))
    mu = float(cell.problem.exact_mu())  # lambda: the softmax Hessian is singular along shared class shifts
    t1 = time.perf_counter()
    fp = find_fixed_point(cell.experiments["D-GD"], cell.data, cell.key, x_start=x0 if start is None else start,
                          phases=heavy_ball_phases(L, mu, chunks=fp_chunks, chunk=fp_chunk))
    info = {"L": L, "mu": mu, "started_from_x0": start is None, "residual": fp.residual, "residual_at_x0": float(fp.residuals[0]),
            "grad_norm": fp.grad_norm, "loss": fp.loss, "iterations": len(fp.residuals), "chunks": fp.phases,
            "seconds": time.perf_counter() - t1}
    print(f"x_fp: ||g_hat|| = {fp.residual:.3e} (at x0 {info['residual_at_x0']:.3e}), ||grad L_H|| = "
          f"{fp.grad_norm:.4g}, L_H = {fp.loss:.6g} ({info['seconds']:.0f} s, {info['iterations']} iterations)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "fixed_point.npz", x_fp=fp.x, residuals=fp.residuals)
    (out / "fixed_point.json").write_text(json.dumps(info, indent=2, default=float))


def part_runs(cell: Cell, out: Path) -> None:
    """The methods' trajectories, written to ``OUT/runs.npz`` (and the proven kappa to ``OUT/runs.json``)."""
    arrays, info = {}, {}
    oracle = cell.experiments["D-GD"].oracle
    info["kappa_proven"] = theory.proven_kappa(oracle.aggregator, oracle.n, oracle.n_byz)
    info["n"], info["f"] = oracle.n, oracle.n_byz
    for method, exp in cell.experiments.items():
        t0 = time.perf_counter()
        t = trajectory(exp, cell.data, cell.key)
        arrays |= {f"{method}/rounds": t.rounds, f"{method}/loss": t.loss, f"{method}/params": t.params}
        arrays |= {f"{method}/m/{k}": v for k, v in t.metrics.items()}
        info[method] = time.perf_counter() - t0
        print(f"{method}: {len(t.rounds)} evaluations, final L_H = {t.loss[-1]:.6g} ({info[method]:.0f} s)", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "runs.npz", **arrays)
        (out / "runs.json").write_text(json.dumps(info, indent=2))


def load_runs(out: Path) -> dict:
    with np.load(out / "runs.npz") as z:
        methods = sorted({k.split("/")[0] for k in z.files}, key=list(STEPS).index)
        return {m: Trajectory(z[f"{m}/rounds"], z[f"{m}/loss"], z[f"{m}/params"],
                              {k.split("/")[-1]: z[k] for k in z.files if k.startswith(f"{m}/m/")}) for m in methods}


def stage_trajectories(spec: str | None, methods, rounds: np.ndarray, dim: int) -> dict:
    """Trajectories of ``methods`` read from a stored ``reproduce`` stage (``STEM``: Experiment A's
    own runs of the cell): ``L_H`` at the evaluation rounds from the per-round metric ``loss`` (the
    model's loss for D-GD and PIGS; D-NAG's is at its look-ahead point), the model only at the end
    (``final_params``; nan rows before)."""
    if not spec:
        return {}
    from byzjax.app.reproduce import load_stage, with_kappa_hat

    runs, _, _ = load_stage(Path(spec))
    found = {}
    for _, _, cols, trace in runs:
        trace = with_kappa_hat(trace)
        label = cols["method"].split("(")[0]
        if label in methods:
            per_round = np.asarray(trace.metrics["loss"], np.float64)
            loss = np.array([per_round[r] if r < len(per_round) else np.nan for r in rounds])
            params = np.full((len(rounds), dim), np.nan)
            params[-1] = np.asarray(trace.final_params, np.float64)
            found[label] = Trajectory(rounds, loss, params, {k: np.asarray(v, np.float64) for k, v in trace.metrics.items()})
    return found


def report(out: Path, figure: str | None, data_name: str, stage: str | None = None) -> dict:
    """Joins the parts: the CSV, ``summary.json`` and the figure; methods of ``STEPS`` missing from
    ``OUT/runs.npz`` are read from the stored stage ``stage`` (``stage_trajectories``)."""
    fp_info = json.loads((out / "fixed_point.json").read_text())
    ref_info = json.loads((out / "reference.json").read_text())
    runs_info = json.loads((out / "runs.json").read_text())
    with np.load(out / "fixed_point.npz") as z:
        x_fp = z["x_fp"]
    with np.load(out / "reference.npz") as z:
        x_star = z["x_star"]
    trajectories = load_runs(out)
    first = next(iter(trajectories.values()))
    missing = [m for m in STEPS if m not in trajectories]
    trajectories |= stage_trajectories(stage, missing, first.rounds, first.params.shape[1])
    trajectories = {m: trajectories[m] for m in STEPS if m in trajectories}
    loss_star = ref_info["loss_star"]
    fp_info |= {"gap_star": fp_info["loss"] - loss_star, "dist_star": float(np.linalg.norm(x_fp - x_star)),
                "norm_x_star": float(np.linalg.norm(x_star))}
    print(f"x_fp: ||g_hat|| = {fp_info['residual']:.3e} (at x0 {fp_info['residual_at_x0']:.3e}), ||grad L_H|| = "
          f"{fp_info['grad_norm']:.4g}, L_H - L* = {fp_info['gap_star']:.4g}, ||x_fp - x*|| = {fp_info['dist_star']:.4g}, "
          f"||x*|| = {fp_info['norm_x_star']:.4g}")
    dists = {m: distances(t, x_star, x_fp) for m, t in trajectories.items()}
    metrics = {k: np.concatenate([t.metrics[k] for t in trajectories.values()])
               for k in ("spread", "grad_norm", "kappa_hat", "error")}
    th = cell_theory(metrics, runs_info["kappa_proven"], fp_info["mu"])
    # the same fit with the measured kappa (the largest kappa_hat of the rounds) instead of the proven one
    th_measured = cell_theory(metrics, None, fp_info["mu"])
    th |= {"measured_kappa_" + k: v for k, v in th_measured.items()
           if k in ("G2", "B2", "kappa_b2", "floor_dgd")} | {"constants": ref_info.get("constants")}
    methods = {}
    for m, t in trajectories.items():
        d = dists[m]
        low, at = lowest(t, loss_star)
        finite = np.isfinite(t.loss)
        methods[m] = {"lowest_gap": low, "lowest_round": at, "final_gap": float(t.loss[finite][-1] - loss_star),
                      "final_gap_round": int(t.rounds[finite][-1]),
                      "dist_fp_start": float(d["dist_fp"][0]), "dist_fp_min": float(np.nanmin(d["dist_fp"])),
                      "dist_fp_final": float(d["dist_fp"][-1]), "dist_star_final": float(d["dist_star"][-1]),
                      "cos_round_5": float(d["cos_fp"][1]), "cos_final": float(d["cos_fp"][-1]),
                      "dist_fp_monotone_share": float(np.mean(np.diff(d["dist_fp"]) <= 0))}
        if not np.isfinite(d["dist_fp"][0]):  # a stage's run: only its final model is known
            x0 = first.params[0]
            methods[m]["dist_fp_start"] = float(np.linalg.norm(x0 - x_fp))
        print(f"{m}: lowest gap {low:.4g} (round {at}), final gap {methods[m]['final_gap']:.4g}, ||x - x_fp|| "
              f"{methods[m]['dist_fp_start']:.4g} -> {d['dist_fp'][-1]:.4g}, cos {d['cos_fp'][1]:.3f} -> "
              f"{d['cos_fp'][-1]:.3f}, ||x - x*|| -> {d['dist_star'][-1]:.4g}")
    print("theory: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                                 for k, v in th.items() if k != "constants"))
    write_csv(out / "attacked_fixed_point.csv", trajectories, dists, loss_star)
    summary = {"data": data_name, "steps": STEPS, "reference": ref_info, "fixed_point": fp_info, "methods": methods,
               "theory": th,
               "run_seconds": runs_info}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if figure:
        title = (f"{data_name}, Dirichlet(1), 20 honest + 5 Byzantine, NNM -> TrMean, Optimal ALIE, lambda = 1e-3: "
                 f"x_fp with ||g_hat(x_fp)|| = {fp_info['residual']:.1e}, ||grad L_H(x_fp)|| = {fp_info['grad_norm']:.3g}")
        plot(Path(figure), trajectories, dists, loss_star, fp_info["gap_star"], title)
    return summary


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist | synthetic | a folder of MNIST-format files")
    p.add_argument("--rounds", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--part", choices=["all", "reference", "fixed-point", "runs", "report"], default="all",
                   help="reference, fixed-point and runs can run in three processes; report joins them")
    p.add_argument("--stage", default=None, help="report: a stored reproduce stage STEM of the cell, whose runs "
                   "stand in for the methods missing from OUT/runs.npz")
    p.add_argument("--ref-tol", type=float, default=1e-10, help="||grad L_H|| of the reference solve")
    p.add_argument("--warm-start", default=None, help="STAGE_STEM:METHOD, the reference solve's start")
    p.add_argument("--fp-start", default=None, help="STAGE_STEM:METHOD, the fixed-point search's start "
                   "(default: the runs' x0)")
    p.add_argument("--L", type=float, default=None, help="the fixed-point search's L (default: measured at x0)")
    p.add_argument("--fp-chunks", type=int, default=4, help="most heavy-ball chunks of the fixed-point search")
    p.add_argument("--fp-chunk", type=int, default=500, help="iterations per chunk")
    p.add_argument("--power-iters", type=int, default=100, help="power iterations for L, mu, delta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="float64 (Experiment A ran float32)")
    p.add_argument("--out", default="results/attacked_fixed_point")
    p.add_argument("--figure", default="figures/attacked_fixed_point.png")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.part != "report":
        with jax.enable_x64(args.x64):
            cell = experiment_a_cell(args.data, rounds=args.rounds, eval_every=args.eval_every, seed=args.seed,
                                     x64=args.x64)
            if args.part in ("all", "reference"):
                part_reference(cell, out, args.power_iters, args.ref_tol, warm_start(args.warm_start))
            if args.part in ("all", "fixed-point"):
                part_fixed_point(cell, out, args.fp_chunks, args.fp_chunk, args.power_iters, args.L,
                                 warm_start(args.fp_start))
            if args.part in ("all", "runs"):
                part_runs(cell, out)
    if args.part in ("all", "report"):
        return report(out, args.figure, args.data, args.stage)
    return None


if __name__ == "__main__":
    main()
