"""Speed of the paper's round: 20 honest + 1 Byzantine, full batch, NNM -> TrMean, Optimal ALIE.

Times byzjax (``byzjax.run`` under ``jit(vmap)``) against a baseline measured in
the same process: a minimal hand-written JAX round (``jnp.sort`` trimmed mean,
argsort + gather NNM, the line search re-running the whole pipeline for each of
its 20 evaluations). Prints ms per round and run-rounds/s for 1 and 64 vmapped
runs sharing the data, compile time apart, and the device. The ``masked`` variant is
the attacked round through the absent-worker path (``byz_count`` set, so every rule
gets a row mask; same result): its cost over ``attack`` is the price of the masks.

    python benchmarks/bench_round.py [--data synthetic] [--runs 1 64] [--rounds 20] [--variants attack masked]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from byzjax.aggregators import TrMean
from byzjax.algorithms import DGD
from byzjax.attacks import Optimal_ALittleIsEnough, positive_line_search
from byzjax.data import DEFAULT_DATA_DIR, federated_classification, load_dataset
from byzjax.oracle import RobustOracle
from byzjax.preaggregators import NNM, Pipeline
from byzjax.problems import LogisticRegression
from byzjax.simulate import Experiment, run

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
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--runs", type=int, nargs="+", default=[1, 64])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--variants", nargs="+", choices=["attack", "no-attack", "masked"], default=["attack", "no-attack"])
    args = p.parse_args(argv)
    ds = load_dataset(args.data)
    data = jax.tree.map(jnp.asarray, federated_classification(ds, N_HONEST, "iid", None, 0))
    problem = LogisticRegression(num_features=ds.num_features, num_classes=ds.num_classes, lam=1e-3)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, d = {problem.dim}, "
          f"n = {N_HONEST}+{F}, {args.rounds} rounds per timing, data: {ds.name}")
    print(f"{'variant':40s} {'runs':>5s} {'compile s':>10s} {'ms/round':>10s} {'run-rounds/s':>13s} {'speed-up':>9s}")
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

            c_ours, t_ours = timed(ours, lrs)
            base = None
            if not args.skip_baseline:
                step = naive_round_fn(problem, data.shards, F, attack)

                def naive(lrs, step=step):
                    x0 = jnp.zeros((runs, problem.dim)) + lrs[:, None] * 0
                    return jax.vmap(lambda x: jax.lax.scan(step, x, None, length=args.rounds)[1])(x0)

                c_base, t_base = timed(naive, lrs)
                base = t_base
            label = {"attack": "NNM->TrMean + Optimal ALIE", "no-attack": "NNM->TrMean, no attack",
                     "masked": "masked NNM->TrMean + Opt. ALIE"}[variant]
            for name, c, t in (("byzjax " + label, c_ours, t_ours),) + (
                    (("baseline " + label, c_base, base),) if base is not None else ()):
                ms = 1e3 * t / args.rounds
                speed = f"{base / t:.2f}x" if base is not None and name.startswith("byzjax") else ""
                print(f"{name:40s} {runs:5d} {c:10.2f} {ms:10.2f} {runs * args.rounds / t:13.0f} {speed:>9s}")


if __name__ == "__main__":
    main()
