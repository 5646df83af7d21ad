"""Speed of a whole benchmark grid: byzjax's compiled programs against a Python loop over runs.

The grid is the paper's ByzFL config (``tests/data/byzfl_paper_config.json``: 20 honest workers,
f in {1, 5}, iid and Dirichlet(1), D-NAG / D-GD / PIGS, NNM -> TrMean, Optimal IPM and Optimal
ALIE: 64 runs), cut to ``--rounds`` rounds (default 50). Both sides run the same experiments on
the same data, in the same process:

- byzjax: ``runner.execute`` (one ``lax.scan`` per run, runs of one structure vmapped into one
  compiled program);
- loop (the FedJAX pattern): for each run, a Python loop over rounds calling one jitted
  single-round function (``eqx.filter_jit`` of the algorithm's step, so runs of the same
  structure reuse its compilation), with the same evaluations every ``eval_every`` rounds.

Prints run-rounds/s of both and their ratio, with compile time apart (byzjax: its AOT compile
time; loop: the first call of each run minus one round), the device and the load.

    python benchmarks/bench_grid.py [--data synthetic] [--rounds 50]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's byzjax, not an installed one

from byzjax.algorithms import Environment
from byzjax.app.byzfl import load_byzfl
from byzjax.app.config import build_experiment
from byzjax.app.runner import execute, instance_datas, instance_runs, prepare

CONFIG = ROOT / "tests" / "data" / "byzfl_paper_config.json"


@eqx.filter_jit
def _round(experiment, state, oracle_state, shards, key):
    env = Environment(experiment.oracle, shards)
    return experiment.algorithm.step(state, oracle_state, env, key)


@eqx.filter_jit
def _evaluate(experiment, state, evaluation):
    return experiment.problem.evaluate(experiment.algorithm.params(state), evaluation)


def loop_run(experiment, data, key) -> tuple[float, float]:
    """One run as a Python loop over rounds; ``(seconds of the first round, seconds of the rest)``."""
    x0 = experiment.problem.init(jax.random.fold_in(key, 0)) if experiment.x0 is None else experiment.x0
    state, ostate = experiment.algorithm.init(x0), experiment.oracle.init(x0.dtype)
    first = rest = 0.0
    for t in range(experiment.iterations):
        t0 = time.perf_counter()
        if t % experiment.eval_every == 0:
            jax.block_until_ready(_evaluate(experiment, state, data.evaluation))
        state, ostate, metrics = _round(experiment, state, ostate, data.shards, jax.random.fold_in(key, t + 1))
        jax.block_until_ready(metrics)
        if t == 0:
            first = time.perf_counter() - t0
        else:
            rest += time.perf_counter() - t0
    jax.block_until_ready(_evaluate(experiment, state, data.evaluation))
    return first, rest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data source (default: the config's, Fashion-MNIST)")
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)

    cfg, _ = load_byzfl(CONFIG)
    cfg = cfg.override(rounds=args.rounds, source=args.data)
    n_runs = len(cfg.runs) * len(cfg.seeds)
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}, "
          f"load {os.getloadavg()[0]:.2f}; {n_runs} runs x {cfg.rounds} rounds")
    with jax.enable_x64(cfg.x64):
        prepared = prepare(cfg)
        t0 = time.perf_counter()
        _, _, meta = execute(cfg, None, show_progress=False, prepared=prepared)
        wall = time.perf_counter() - t0
        ours_s = meta["run_s"]
        print(f"byzjax: {meta['programs']} programs, compile {meta['compile_s']:.1f} s, run {ours_s:.1f} s "
              f"({n_runs * cfg.rounds / ours_s:.1f} run-rounds/s), wall {wall:.1f} s")

        _, problem, data = prepared
        first_s = rest_s = 0.0
        for members, inst_data in zip(instance_runs(cfg), instance_datas(cfg, data)):
            for i in members:
                spec = cfg.runs[i]
                exp = build_experiment(spec, problem, spec.data.n_honest, cfg.rounds, cfg.eval_every,
                                       x0=cfg.problem.x0)
                for s, seed in enumerate(cfg.seeds):
                    one = jax.tree.map(lambda a, s=s: a[s], inst_data)
                    first, rest = loop_run(exp, one, jax.random.key(seed))
                    first_s += first
                    rest_s += rest
        loop_s = rest_s * cfg.rounds / max(cfg.rounds - 1, 1)  # every round at the steady-state cost
        loop_compile = max(first_s - rest_s / max(cfg.rounds - 1, 1), 0.0)  # first rounds minus one round each
        print(f"loop:   compile ~{loop_compile:.1f} s (first rounds), run {loop_s:.1f} s "
              f"({n_runs * cfg.rounds / loop_s:.1f} run-rounds/s), wall {first_s + rest_s:.1f} s")
        print(f"byzjax / loop: {loop_s / ours_s:.2f}x run-rounds/s (run time); "
              f"{(first_s + rest_s) / wall:.2f}x wall including compilation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
