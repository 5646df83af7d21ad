"""Speed of the paper's round: 20 honest + 1 Byzantine, full batch, NNM -> TrMean, Optimal ALIE.

Times byzjax (``byzjax.run`` under ``jit(vmap)``) against a baseline measured in
the same process: a minimal hand-written JAX round (``jnp.sort`` trimmed mean,
argsort + gather NNM, the line search re-running the whole pipeline for each of
its 20 evaluations). Prints ms per round and run-rounds/s for 1 and 64 vmapped
runs sharing the data, compile time apart, the process CPU time per round (all threads: on
a machine loaded by other jobs it moves much less than the wall time), and the device. The
``byzjax`` imported is this checkout's (the script puts its root first on ``sys.path``, ahead
of an installed copy). The ``masked`` variant is
the attacked round through the absent-worker path (``byz_count`` set, so every rule
gets a row mask; same result): its cost over ``attack`` is the price of the masks.

    python benchmarks/bench_round.py [--data synthetic] [--runs 1 64] [--rounds 20] [--variants attack masked] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's byzjax, not an installed one

import byzjax  # noqa: E402
from byzjax.aggregators import TrMean  # noqa: E402
from byzjax.algorithms import DGD  # noqa: E402
from byzjax.attacks import Optimal_ALittleIsEnough, positive_line_search  # noqa: E402
from byzjax.data import DEFAULT_DATA_DIR, federated_classification, load_dataset  # noqa: E402
from byzjax.oracle import RobustOracle  # noqa: E402
from byzjax.preaggregators import NNM, Pipeline  # noqa: E402
from byzjax.problems import LogisticRegression  # noqa: E402
from byzjax.simulate import Experiment, run  # noqa: E402

N_HONEST, F = 20, 1


def naive_round_fn(problem, shards, f, attack=True):
    """The minimal hand-written round the issue describes (the baseline)."""

    def nnm(v):
        d = jnp.sum((v[:, None] - v[None]) ** 2, axis=-1)
        idx = jnp.argsort(d, axis=1)[:, : v.shape[0] - f]
        return jnp.mean(v[idx], axis=1)

    def trmean(v):
        return jnp.mean(jnp.sort(v, axis=0)[f : v.shape[0] - f], axis=0)

    def step(x, _):
        losses, grads = jax.vmap(jax.value_and_grad(problem.loss), in_axes=(None, 0))(x, shards)
        mean = grads.mean(0)
        std = grads.std(0, ddof=1)
        if attack:
            def objective(tau):
                v = jnp.concatenate([grads, jnp.broadcast_to(mean + tau * std, (f, mean.size))])
                return jnp.linalg.norm(trmean(nnm(v)) - mean)

            tau = positive_line_search(objective, 0.0, 10.0, 0.8, 20).best
            v = jnp.concatenate([grads, jnp.broadcast_to(mean + tau * std, (f, mean.size))])
            g = trmean(nnm(v))
        else:
            g = trmean(nnm(grads))
        return x - 0.1 * g, losses.mean()

    return step


def timed(fn, *args, repeats=2):
    """``(compile s, best wall s, CPU s of that call)`` of ``jit(fn)(*args)`` over ``repeats`` calls after a warm one."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm
    best, cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return compile_s, best, cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--runs", type=int, nargs="+", default=[1, 64])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per program (the best is shown)")
    p.add_argument("--variants", nargs="+", choices=["attack", "no-attack", "masked"], default=["attack", "no-attack"])
    args = p.parse_args(argv)
    ds = load_dataset(args.data)
    data = jax.tree.map(jnp.asarray, federated_classification(ds, N_HONEST, "iid", None, 0))
    problem = LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes, lam=1e-3)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, d = {problem.dim}, "
          f"n = {N_HONEST}+{F}, {args.rounds} rounds per timing, data: {ds.name}, byzjax from {byzjax.__file__}")
    print(f"{'variant':40s} {'runs':>5s} {'compile s':>10s} {'ms/round':>10s} {'cpu ms/round':>13s} "
          f"{'run-rounds/s':>13s} {'speed-up':>9s}")
    for variant in args.variants:
        attack = variant != "no-attack"
        oracle = RobustOracle(problem, Pipeline([NNM(F)], TrMean(F)), Optimal_ALittleIsEnough() if attack else None,
                              n_honest=N_HONEST, n_byz=F if attack else 0, byz_count=F if variant == "masked" else None)
        for runs in args.runs:
            lrs = jnp.full((runs,), 0.1)
            exp = Experiment(oracle, DGD(lr=0.1), rounds=args.rounds, eval_every=args.rounds)

            def ours(lrs, data=data, exp=exp):
                import equinox as eqx

                def one(lr):
                    return run(jax.random.key(0), eqx.tree_at(lambda e: e.algorithm.lr, exp, lr), data).metrics["loss"]

                return jax.vmap(one)(lrs)

            c_ours, t_ours, cpu_ours = timed(ours, lrs, repeats=args.repeats)
            base = None
            if not args.skip_baseline:
                step = naive_round_fn(problem, data.shards, F, attack)

                def naive(lrs, step=step):
                    x0 = jnp.zeros((runs, problem.dim)) + lrs[:, None] * 0
                    return jax.vmap(lambda x: jax.lax.scan(step, x, None, length=args.rounds)[1])(x0)

                c_base, t_base, cpu_base = timed(naive, lrs, repeats=args.repeats)
                base = t_base
            label = {"attack": "NNM->TrMean + Optimal ALIE", "no-attack": "NNM->TrMean, no attack",
                     "masked": "masked NNM->TrMean + Opt. ALIE"}[variant]
            for name, c, t, cpu in (("byzjax " + label, c_ours, t_ours, cpu_ours),) + (
                    (("baseline " + label, c_base, base, cpu_base),) if base is not None else ()):
                ms = 1e3 * t / args.rounds
                speed = f"{base / t:.2f}x" if base is not None and name.startswith("byzjax") else ""
                print(f"{name:40s} {runs:5d} {c:10.2f} {ms:10.2f} {1e3 * cpu / args.rounds:13.2f} "
                      f"{runs * args.rounds / t:13.0f} {speed:>9s}")


if __name__ == "__main__":
    main()
