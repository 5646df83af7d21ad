"""Throughput of grids of runs: vmapped runs, a Python loop, the gradient floor, devices, many workers.

The paper's round (arXiv 2602.03329, its experiments): n = 20 honest + 1 Byzantine workers, full-batch
logistic regression, d = 7850 (784 x 10 + 10), Optimal ALIE against NNM -> TrMean. Measured in one
process and printed as Markdown tables (date, device, compile time apart):

1. run-rounds/s of ``R`` vmapped runs in one compiled program (``byzjax.sweep.sweep_function``),
   against a Python loop calling a jitted single round (``R`` runs one after the other), and the
   floor: the same program with the honest gradients and a plain mean only (no attack, Average).
2. scaling over 1, 2, 4 forced CPU devices (subprocesses with
   ``--xla_force_host_platform_device_count``; ``run_grid`` shards the runs over them).
3. ms/round, its growth exponent between successive n, and XLA's peak-memory estimate at
   n = 20 ... 1000 workers (small shards, ALIE with f = n/20) for NNM -> TrMean, Krum and Median:
   the distance rules cost O(n^2 d) (NNM: the Gram distances and the mixing matmul, plus
   O(n^2 log n) ranks), Median O(n log^2 n d) (the bitonic sort).

    python benchmarks/bench_scale.py [--data fashion-mnist|synthetic] [--runs 1 8 64 256] [--rounds 20]
        [--devices 1 2 4] [--workers 20 100 500 1000] [--skip ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from byzjax import devices as dev  # noqa: E402
from byzjax.aggregators import Average, Krum, Median, TrMean  # noqa: E402
from byzjax.algorithms import DGD, Environment  # noqa: E402
from byzjax.attacks import ALittleIsEnough, Optimal_ALittleIsEnough  # noqa: E402
from byzjax.data import federated_classification, load_dataset, stack_seeds, synthetic_dataset  # noqa: E402
from byzjax.oracle import RobustOracle  # noqa: E402
from byzjax.preaggregators import NNM, Pipeline  # noqa: E402
from byzjax.problems import LogisticRegression  # noqa: E402
from byzjax.simulate import Experiment  # noqa: E402
from byzjax.sweep import run_grid, stack_experiments, sweep_function  # noqa: E402

N_HONEST, F = 20, 1


def dataset(source: str):
    if source == "synthetic":
        return synthetic_dataset(seed=0)
    return load_dataset(source)


def paper_oracle(problem, attack: bool) -> RobustOracle:
    if attack:
        return RobustOracle(problem, Pipeline([NNM(F)], TrMean(F)), Optimal_ALittleIsEnough(), n_honest=N_HONEST, n_byz=F)
    return RobustOracle(problem, Average(), None, n_honest=N_HONEST, n_byz=0)


def grid_inputs(oracle, runs: int, rounds: int, data):
    exps = [Experiment(oracle, DGD(lr=0.1 + 1e-4 * i), rounds=rounds, eval_every=rounds) for i in range(runs)]
    arrays, static = eqx.partition(stack_experiments(exps), eqx.is_array)
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    return exps, arrays, static, keys, jax.tree.map(jnp.asarray, stack_seeds([data]))


def time_grid(oracle, runs, rounds, data, repeats=2):
    """(compile s, best run s) of ``runs`` vmapped runs of ``rounds`` rounds in one program."""
    _, arrays, static, keys, datas = grid_inputs(oracle, runs, rounds, data)
    fn = sweep_function(static)
    t0 = time.perf_counter()
    compiled = fn.lower(arrays, keys, datas).compile()
    compile_s = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(arrays, keys, datas))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best, dev.compiled_bytes(compiled)


def time_python_loop(oracle, runs, rounds, data):
    """A jitted single round called from Python: ``runs`` runs one after the other, ``rounds`` calls each."""
    problem = oracle.problem
    alg = DGD(lr=0.1)
    env = Environment(oracle, jax.tree.map(jnp.asarray, data.shards))

    @jax.jit
    def step(state, ostate, key):
        state, ostate, metrics = alg.step(state, ostate, env, key)
        return state, ostate, metrics["loss"]

    x0 = problem.init(jax.random.key(0))
    t0 = time.perf_counter()
    jax.block_until_ready(step(alg.init(x0), oracle.init(x0.dtype), jax.random.key(1)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in range(runs):
        state, ostate = alg.init(x0), oracle.init(x0.dtype)
        key = jax.random.key(r)
        for t in range(rounds):
            state, ostate, loss = step(state, ostate, jax.random.fold_in(key, t + 1))
        jax.block_until_ready(loss)
    return compile_s, time.perf_counter() - t0


def throughput(args, data, problem, rows):
    for runs in args.runs:
        c_a, t_a, _ = time_grid(paper_oracle(problem, True), runs, args.rounds, data)
        c_f, t_f, _ = time_grid(paper_oracle(problem, False), runs, args.rounds, data)
        entry = {"runs": runs, "rounds": args.rounds, "compile_s": c_a, "byzjax_rr_s": runs * args.rounds / t_a,
                 "floor_compile_s": c_f, "floor_rr_s": runs * args.rounds / t_f, "vs_floor": t_a / t_f}
        if "loop" not in args.skip:
            loop_runs = min(runs, args.loop_runs)  # the loop's rate does not depend on the run count
            c_l, t_l = time_python_loop(paper_oracle(problem, True), loop_runs, args.rounds, data)
            entry |= {"loop_compile_s": c_l, "loop_rr_s": loop_runs * args.rounds / t_l}
        rows.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)


CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
sys.argv = ["bench_scale"]
import jax
from benchmarks import bench_scale as b
ds = b.dataset({source!r})
problem = b.LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes, lam=1e-3)
data = b.federated_classification(ds, b.N_HONEST, "iid", None, 0)
exps, _, _, keys, datas = b.grid_inputs(b.paper_oracle(problem, True), {runs}, {rounds}, data)
b.run_grid(exps, keys, datas, show_progress=False)  # warm-up (compiles)
res = b.run_grid(exps, keys, datas, show_progress=False)
print(json.dumps({{"devices": jax.device_count(), "run_s": res.run_s, "compile_s": res.compile_s,
                  "plan": res.plans[0]}}))
"""


def device_scaling(args, rows):
    runs = max(args.runs)
    for k in args.devices:
        env = {key: v for key, v in os.environ.items() if not key.startswith("XLA_")}
        env |= {"XLA_FLAGS": f"--xla_force_host_platform_device_count={k}", "JAX_PLATFORMS": "cpu"}
        code = CHILD.format(root=str(ROOT), source=args.data, runs=runs, rounds=args.rounds)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"devices": k, "runs": runs, "rounds": args.rounds, "compile_s": out["compile_s"],
                     "rr_s": runs * args.rounds / out["run_s"], "mesh": out["plan"]["mesh"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)


def many_workers(args, rows):
    ds = synthetic_dataset(seed=0, n_train=max(args.workers) * args.samples_per_worker + 1000, n_test=200)
    problem = LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes, lam=1e-3)
    for n in args.workers:
        data = federated_classification(ds, n, "iid", None, 0)
        f = max(1, n // 20)
        for name, agg in (("NNM->TrMean", Pipeline([NNM(f)], TrMean(f))), ("Krum", Krum(f)), ("Median", Median())):
            oracle = RobustOracle(problem, agg, ALittleIsEnough(), n_honest=n, n_byz=f)
            c, t, peak = time_grid(oracle, 1, args.worker_rounds, data, repeats=1)
            rows.append({"n_honest": n, "f": f, "rule": name, "compile_s": c, "ms_round": 1e3 * t / args.worker_rounds,
                         "peak_bytes": peak})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)


def markdown(report) -> str:
    lines = [f"# bench_scale, {report['date']}", "",
             f"device: {report['device']}, jax {report['jax']}, d = {report['dim']}, n = {N_HONEST}+{F}, "
             f"data: {report['data']}; {report['note']}", ""]
    if report["throughput"]:
        lines += ["| runs | byzjax run-rounds/s (Opt. ALIE, NNM->TrMean) | compile s | Python loop of a jitted round "
                  "| floor (gradients + mean) | byzjax / floor time |", "|---:|---:|---:|---:|---:|---:|"]
        for r in report["throughput"]:
            loop = f"{r['loop_rr_s']:.0f}" if "loop_rr_s" in r else "-"
            lines.append(f"| {r['runs']} | {r['byzjax_rr_s']:.0f} | {r['compile_s']:.1f} | {loop} | {r['floor_rr_s']:.0f} "
                         f"| {r['vs_floor']:.2f}x |")
        lines.append("")
    if report["devices"]:
        lines += ["| forced CPU devices | mesh (seeds x configs) | runs | run-rounds/s | compile s |",
                  "|---:|---|---:|---:|---:|"]
        for r in report["devices"]:
            lines.append(f"| {r['devices']} | {r['mesh'][0]}x{r['mesh'][1]} | {r['runs']} | {r['rr_s']:.0f} | "
                         f"{r['compile_s']:.1f} |")
        lines.append("")
    if report["workers"]:
        lines += ["| n honest | f | rule | ms/round | growth | peak MiB (XLA) | compile s |",
                  "|---:|---:|---|---:|---:|---:|---:|"]
        previous = {}
        for r in report["workers"]:
            peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
            growth = "-"
            if r["rule"] in previous:  # the exponent a in ms ~ n^a since the previous n for this rule
                n0, t0 = previous[r["rule"]]
                growth = f"n^{np.log(r['ms_round'] / t0) / np.log(r['n_honest'] / n0):.1f}"
            previous[r["rule"]] = (r["n_honest"], r["ms_round"])
            lines.append(f"| {r['n_honest']} | {r['f']} | {r['rule']} | {r['ms_round']:.1f} | {growth} | {peak} "
                         f"| {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' (Debian package), 'synthetic' or an IDX folder")
    p.add_argument("--runs", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--loop-runs", type=int, default=8, help="runs timed in the Python loop (its rate is per run)")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--workers", type=int, nargs="+", default=[20, 100, 500, 1000])
    p.add_argument("--samples-per-worker", type=int, default=8)
    p.add_argument("--worker-rounds", type=int, default=5)
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "loop", "devices", "workers"])
    p.add_argument("--note", default="", help="a remark printed under the title (e.g. 'machine shared with other jobs')")
    p.add_argument("--json", help="also write the report as JSON to this file")
    args = p.parse_args(argv)
    from byzjax.app.config import resolve_source

    args.data = args.data if args.data == "synthetic" else str(resolve_source(args.data))
    ds = dataset(args.data)
    problem = LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes, lam=1e-3)
    data = federated_classification(ds, N_HONEST, "iid", None, 0)
    d0 = jax.devices()[0]
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": f"{d0.platform}:{d0.device_kind}",
              "device_count": jax.device_count(), "jax": jax.__version__, "dim": problem.dim, "data": ds.name,
              "note": args.note, "throughput": [], "devices": [], "workers": []}
    if "throughput" not in args.skip:
        throughput(args, data, problem, report["throughput"])
    if "devices" not in args.skip:
        device_scaling(args, report["devices"])
    if "workers" not in args.skip:
        many_workers(args, report["workers"])
    print(markdown(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
