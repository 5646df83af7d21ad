"""Speed of a whole benchmark grid: byzjax's compiled programs against a Python loop over runs.

The grid is the paper's ByzFL config (``tests/data/byzfl_paper_config.json``: 20 honest workers,
f in {1, 5}, iid and Dirichlet(1), D-NAG / D-GD / PIGS, NNM -> TrMean, Optimal IPM and Optimal
ALIE: 64 runs), cut to ``--rounds`` rounds (default 50). Both sides run the same experiments on
the same data, in the same process:

- byzjax: the runner's programs (``byzjax.app.runner``: per data instance, the runs of one static
  structure vmapped into one compiled program, ``byzjax.sweep.run_grid``);
- loop (the FedJAX pattern): for each run, a Python loop over rounds calling one jitted
  single-round function (``eqx.filter_jit`` of the algorithm's step, so runs of the same
  structure reuse its compilation), with the same evaluations every ``eval_every`` rounds. Each
  run is built as a user would write it alone: ``n_byz = f`` Byzantine rows (no absent-worker
  masks) and its own algorithm (``RunSpec.max_f`` and the shared algorithm forms are byzjax's
  grouping, not the loop's).

Prints, per byzjax program, its runs, byzjax's compile and run time and the loop's time for the
same runs (ms per run-round both, and their ratio), then the totals: run-rounds/s of both and
their ratio, with compile time apart (byzjax: its AOT compile time; loop: the first call of each
run minus one round), the device and the load. ``--list`` prints the programs and exits;
``--programs 0,2`` measures those programs only; ``--side byzjax`` (or ``loop``) one side only;
``--separate`` builds byzjax's runs without the f merge (``config.program_runs``).

    python benchmarks/bench_grid.py [--data synthetic] [--rounds 50] [--programs 0,2] [--list]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's byzjax, not an installed one

from byzjax.algorithms import Environment  # noqa: E402
from byzjax.app.byzfl import load_byzfl  # noqa: E402
from byzjax.app.config import build_experiment, program_runs  # noqa: E402
from byzjax.app.runner import instance_datas, instance_runs, prepare, program_names  # noqa: E402
from byzjax.app.steps import resolve_grid  # noqa: E402
from byzjax.sweep import group_by_structure, run_grid  # noqa: E402

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


def loop_experiment(spec, problem, cfg):
    """The experiment of one run as a user would build it alone (the loop's side)."""
    alone = dataclasses.replace(spec, max_f=None)
    return build_experiment(alone, problem, spec.data.n_honest, cfg.rounds, cfg.eval_every, x0=cfg.problem.x0)


def grid_programs(cfg, experiments) -> list[tuple[int, list[int], str]]:
    """``(data instance, run ids, name)`` per program, in the runner's order (per data instance,
    ``group_by_structure`` of its runs' experiments; ``runner.program_names``)."""
    out = []
    for k, runs_of in enumerate(instance_runs(cfg)):
        exps = [experiments[i] for i in runs_of]
        names = program_names([cfg.runs[i].columns for i in runs_of], exps, None, len(cfg.seeds))
        for members, (name, _) in zip(group_by_structure(exps), names):
            out.append((k, [runs_of[j] for j in members], name))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data source (default: the config's, Fashion-MNIST)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--programs", default=None, help="comma-separated program indices to measure (default: all)")
    ap.add_argument("--side", choices=("both", "byzjax", "loop"), default="both")
    ap.add_argument("--list", action="store_true", help="print the programs and exit")
    ap.add_argument("--separate", action="store_true",
                    help="byzjax without the f merge (each f its own program, no absent-worker masks)")
    args = ap.parse_args(argv)

    cfg, _ = load_byzfl(CONFIG)
    cfg = cfg.override(rounds=args.rounds, source=args.data)
    with jax.enable_x64(cfg.x64):
        _, problem, data = prepare(cfg)
        datas = instance_datas(cfg, data)
        cfg, _ = resolve_grid(cfg, problem, datas[0])
        experiments = [build_experiment(s, problem, s.data.n_honest, cfg.rounds, cfg.eval_every, x0=cfg.problem.x0)
                       for s in (cfg.runs if args.separate else program_runs(cfg))]
        programs = grid_programs(cfg, experiments)
        chosen = range(len(programs)) if args.programs is None else [int(p) for p in args.programs.split(",")]
        n_runs = sum(len(programs[p][1]) for p in chosen) * len(cfg.seeds)
        print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}, "
              f"load {os.getloadavg()[0]:.2f}; {len(programs)} programs, {len(cfg.runs) * len(cfg.seeds)} runs; "
              f"measuring {len(chosen)} programs, {n_runs} runs x {cfg.rounds} rounds")
        if args.list:
            for p, (k, members, name) in enumerate(programs):
                print(f"program {p:2d}: instance {k}, {len(members)} runs: {name}")
            return 0
        keys = jax.vmap(jax.random.key)(jnp.asarray(cfg.seeds))
        totals = {"ours_c": 0.0, "ours_r": 0.0, "loop_first": 0.0, "loop_rest": 0.0}
        print("program | runs | byzjax compile s | byzjax ms/run-round | loop ms/run-round | byzjax/loop | name")
        for p in chosen:
            k, members, name = programs[p]
            run_rounds = len(members) * len(cfg.seeds) * cfg.rounds
            ours = loop = float("nan")
            compile_s = float("nan")
            if args.side != "loop":
                res = run_grid([experiments[i] for i in members], keys, datas[k], show_progress=False)
                totals["ours_c"] += res.compile_s
                totals["ours_r"] += res.run_s
                compile_s, ours = res.compile_s, 1e3 * res.run_s / run_rounds
            if args.side != "byzjax":
                first_s = rest_s = 0.0
                for i in members:
                    exp = loop_experiment(cfg.runs[i], problem, cfg)
                    for s, seed in enumerate(cfg.seeds):
                        one = jax.tree.map(lambda a, s=s: jnp.asarray(a[s]), datas[k])  # on the device once
                        first, rest = loop_run(exp, one, jax.random.key(seed))
                        first_s += first
                        rest_s += rest
                totals["loop_first"] += first_s
                totals["loop_rest"] += rest_s
                loop = 1e3 * rest_s / max(len(members) * len(cfg.seeds) * (cfg.rounds - 1), 1)
            print(f"{p:7d} | {len(members):4d} | {compile_s:16.1f} | {ours:19.2f} | {loop:17.2f} | "
                  f"{loop / ours:11.2f} | {name}", flush=True)
        total_rr = n_runs * cfg.rounds
        ours_s = totals["ours_r"]
        loop_s = totals["loop_rest"] * cfg.rounds / max(cfg.rounds - 1, 1)  # every round at the steady-state cost
        per_round = totals["loop_rest"] / max(cfg.rounds - 1, 1) / max(n_runs, 1)
        loop_compile = max(totals["loop_first"] - n_runs * per_round, 0.0)  # first rounds minus one round each
        if args.side != "loop":
            print(f"byzjax: compile {totals['ours_c']:.1f} s, run {ours_s:.1f} s ({total_rr / ours_s:.2f} run-rounds/s)")
        if args.side != "byzjax":
            print(f"loop:   compile ~{loop_compile:.1f} s (first rounds), run {loop_s:.1f} s "
                  f"({total_rr / loop_s:.2f} run-rounds/s)")
        if args.side == "both":
            print(f"byzjax / loop: {loop_s / ours_s:.2f}x run-rounds/s (run time); "
                  f"{(totals['loop_first'] + totals['loop_rest']) / (totals['ours_c'] + ours_s):.2f}x "
                  f"including compilation; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
