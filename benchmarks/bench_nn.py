"""Speed of one robust round of a network: 25 honest + 5 Byzantine workers, batch 32, ALIE,
Clipping -> NNM -> TrMean (issue 11's setting), ``byzjax.run`` under ``jit(vmap)``.

Every honest worker holds ``--shard`` synthetic images (default 32: its full batch IS the batch of
32, so a round is one forward/backward pass of 25 x 32 samples). With ``--shard`` > 32 the workers
send gathered mini-batches of 32 (``batch_capacity``) and the oracle's exact full-batch metrics
(``L_H``, ``grad L_H`` on the whole shards) come on top. Prints ms per round for 1, 8 and 64 (``--runs``)
vmapped runs sharing the data, compile time apart, and the device. A ByzFL-style PyTorch loop
(per-client forward/backward, flatten, the same pipeline in torch: ``bench_nn_torch.py``) is timed
in the same run by ``--torch-python`` (a Python with torch, e.g. a separate venv: torch is a
benchmark-only extra, never a byzjax dependency), or by this Python if it has torch; else skipped.
The date, the device and the machine's load average are printed with the table; besides wall ms/round it
prints the process's CPU ms/round (all threads), less dependent on the load of a shared machine.

    python benchmarks/bench_nn.py [--model cnn_mnist] [--runs 1 8 64] [--rounds 5] [--shard 32] [--repeats 2]
                                  [--honest 25] [--byzantine 5]
                                  [--torch-python /path/to/torchvenv/bin/python] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax.aggregators import TrMean
from byzjax.algorithms import DGD
from byzjax.attacks import ALittleIsEnough
from byzjax.images import federated_images, synthetic_images
from byzjax.models import MODELS
from byzjax.networks import network_problem
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Clipping, Pipeline
from byzjax.simulate import Experiment, run

N_HONEST, F, BATCH, CLIP, TAU = 25, 5, 32, 2.0, 1.5


def timed(fn, *args, repeats=2):
    """(compile seconds, best run seconds, best run CPU seconds of this process) of ``jit(fn)(*args)``,
    compiled ahead of time. The CPU seconds (``time.process_time``, all threads) are the less
    load-dependent number on a shared machine: on an idle one, wall ~= CPU / cores used."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return compile_s, best, best_cpu


def torch_baseline(python: str, shards, rounds: int, f: int = F) -> dict:
    """The ByzFL-style PyTorch loop (``bench_nn_torch.py``) run by ``python`` (a Python with torch) on
    the first ``BATCH`` samples of every honest worker's shard; its JSON result."""
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "shards.npz", Path(tmp) / "torch.json"
        np.savez(data, x=np.asarray(shards.x)[:, :BATCH], y=np.asarray(shards.y)[:, :BATCH])
        cmd = [python, str(here / "bench_nn_torch.py"), "--data", str(data), "--f", str(f), "--tau", str(TAU),
               "--clip", str(CLIP), "--lr", "0.01", "--rounds", str(rounds), "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def default_torch_python() -> str | None:
    """This Python if it has torch, else None."""
    return sys.executable if importlib.util.find_spec("torch") is not None else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn_mnist", choices=sorted(MODELS))
    p.add_argument("--runs", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shard", type=int, default=BATCH, help="samples per honest worker (>= 32)")
    p.add_argument("--honest", type=int, default=N_HONEST, help="honest workers (issue 11's setting: 25)")
    p.add_argument("--byzantine", type=int, default=F, help="Byzantine workers, also NNM's and TrMean's f (5)")
    p.add_argument("--repeats", type=int, default=2, help="timings after the warm-up run; the best counts")
    p.add_argument("--torch-python", default=None,
                   help="a Python with torch for the ByzFL-style baseline (cnn_mnist only; default: this one if "
                        "it has torch, else the baseline is skipped)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    n_honest, f = args.honest, args.byzantine
    if n_honest < 1 or f < 0 or 2 * f >= n_honest + f:
        raise SystemExit(f"need --honest >= 1 and 2 --byzantine < --honest + --byzantine, got {n_honest}, {f}")
    if args.shard < BATCH:
        raise SystemExit(f"--shard must be >= {BATCH}")
    problem = network_problem(args.model, batch_capacity=BATCH if args.shard > BATCH else None)
    shape = problem.input_shape
    n_train = int(np.ceil(n_honest * args.shard / 0.8))
    ds = synthetic_images(shape, seed=0, n_train=n_train, n_test=256, num_classes=10)
    ds = ds._replace(train_x=ds.train_x[: n_honest * args.shard], train_y=ds.train_y[: n_honest * args.shard])
    data = jax.tree.map(jnp.asarray, federated_images(ds, n_honest, "iid", None, 0))
    oracle = RobustOracle(problem, Pipeline([Clipping(CLIP), NNM(f)], TrMean(f)), ALittleIsEnough(tau=TAU),
                          n_honest=n_honest, n_byz=f, batch_size=BATCH if args.shard > BATCH else None)
    exp = Experiment(oracle, DGD(lr=0.01), rounds=args.rounds, eval_every=args.rounds)
    exp.check()
    dev = jax.devices()[0]
    load = os.getloadavg()
    header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": f"{dev.platform} ({dev.device_kind})",
              "cpus": os.cpu_count(), "load_1_5_15": [round(v, 2) for v in load], "jax": jax.__version__,
              "model": args.model, "d": problem.dim}
    print(f"{header['date']}; device: {header['device']}, {jax.local_device_count()} device(s), {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; jax {jax.__version__}; "
          f"{args.model} d = {problem.dim:,}; n = {n_honest}+{f}; {args.shard} samples per worker, batch {BATCH}; "
          f"ALIE tau {TAU}, Clipping({CLIP}) -> NNM -> TrMean; {args.rounds} rounds per timing (+1 evaluation "
          f"pass on 256 test images at each end)", flush=True)
    print(f"{'':10s} {'runs':>5s} {'compile s':>10s} {'ms/round':>10s} {'cpu ms/round':>13s} {'run-rounds/s':>13s}",
          flush=True)
    rows = []
    for runs in args.runs:
        lrs = jnp.full((runs,), 0.01)

        def ours(lrs, data, exp=exp):  # data is an argument, as in byzjax.sweep: a closed-over data set
            def one(lr):                # is a constant that XLA would spend minutes constant-folding
                return run(jax.random.key(0), eqx.tree_at(lambda e: e.algorithm.lr, exp, lr), data).metrics["loss"]

            return jax.vmap(one)(lrs)

        c, t, cpu = timed(ours, lrs, data, repeats=args.repeats)
        rows.append({"impl": "byzjax", "runs": runs, "compile_s": c, "ms_per_round": 1e3 * t / args.rounds,
                     "cpu_ms_per_round": 1e3 * cpu / args.rounds, "run_rounds_per_s": runs * args.rounds / t,
                     "load_1": round(os.getloadavg()[0], 2)})
        print(f"{'byzjax':10s} {runs:5d} {c:10.2f} {1e3 * t / args.rounds:10.1f} {1e3 * cpu / args.rounds:13.1f} "
              f"{runs * args.rounds / t:13.1f}   (load {os.getloadavg()[0]:.1f})", flush=True)
    python = args.torch_python or default_torch_python()
    if args.model != "cnn_mnist":
        print("torch baseline: written for cnn_mnist only")
    elif python is None:
        print("baseline skipped: no torch (give --torch-python PYTHON, a Python with torch, to time the ByzFL-style loop)")
    else:
        res = torch_baseline(python, data.shards, args.rounds, f)
        rows.append({"impl": "torch", "runs": 1, "compile_s": None, "ms_per_round": res["ms_per_round"],
                     "cpu_ms_per_round": res.get("cpu_ms_per_round"), "run_rounds_per_s": 1e3 / res["ms_per_round"],
                     "torch": res["torch"], "threads": res["threads"], "load_1": round(os.getloadavg()[0], 2)})
        print(f"{'torch':10s} {1:5d} {'':>10s} {res['ms_per_round']:10.1f} {res.get('cpu_ms_per_round', np.nan):13.1f} "
              f"{1e3 / res['ms_per_round']:13.1f}   (torch {res['torch']}, {res['threads']} threads; load "
              f"{os.getloadavg()[0]:.1f})")
        for row in rows[:-1]:
            cpu_ratio = res.get("cpu_ms_per_round", np.nan) * row["runs"] / row["cpu_ms_per_round"]
            print(f"byzjax {row['runs']} run(s): {res['ms_per_round'] * row['runs'] / row['ms_per_round']:.1f}x the "
                  f"torch loop's run-rounds per second ({cpu_ratio:.1f}x per CPU second)")
    if args.json:
        Path(args.json).write_text(json.dumps({**header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
