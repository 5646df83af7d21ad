"""Time one Byzantine-vector computation of each attack against NNM -> TrMean.

Setting of the paper's logistic regression: 20 honest workers, d = 7850, f in {1, 5}, float32.
Each attack is bound to ``Pipeline([NNM(f)], TrMean(f))`` with ``n_byz = f`` and timed on one
input and vmapped over a batch of independent inputs; compile time is reported apart. The last
rows compare the Optimal ALIE search with and without the reuse of tau-independent work.

    PYTHONPATH=. python benchmarks/bench_attacks.py [--batch 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import attacks as A
from byzjax.aggregators import TrMean
from byzjax.attacks import AttackerView
from byzjax.preaggregators import NNM, Pipeline

N_HONEST, DIM = 20, 7850


def attack_list(f: int) -> dict[str, A.AbstractAttack]:
    return {
        "SignFlipping": A.SignFlipping(),
        "InnerProductManipulation": A.InnerProductManipulation(),
        "ALittleIsEnough": A.ALittleIsEnough(),
        "ALIE.from_baruch": A.ALittleIsEnough.from_baruch(N_HONEST + f, f),
        "Mimic": A.Mimic(),
        "MimicHeuristic": A.MimicHeuristic(),
        "Inf": A.Inf(),
        "Gaussian": A.Gaussian(),
        "LabelFlipping": A.LabelFlipping(),
        "Fang": A.Fang(),
        "MinMax": A.MinMax(),
        "MinSum": A.MinSum(),
        "Optimal_InnerProductManipulation": A.Optimal_InnerProductManipulation(),
        "Optimal_ALittleIsEnough": A.Optimal_ALittleIsEnough(),
    }


def compiled_with_time(fn, args):
    """``jax.jit(fn)`` compiled for ``args``, and the seconds the compilation took."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def median_ms(compiled_fns, args, reps: int) -> list[float]:
    """Median milliseconds per call of each compiled function; the calls are interleaved so that
    changes in the machine's load hit every function alike."""
    for compiled in compiled_fns:
        jax.block_until_ready(compiled(*args))
    times = [[] for _ in compiled_fns]
    for _ in range(reps):
        for compiled, t in zip(compiled_fns, times):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            t.append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def timed(fn, args, reps: int) -> tuple[float, float]:
    """(compile seconds, median milliseconds per call) of ``jax.jit(fn)(*args)``."""
    compiled, compile_s = compiled_with_time(fn, args)
    return compile_s, median_ms([compiled], args, reps)[0]


def single_and_vmapped(fn):
    """``fn(attack, honest, key)`` and its vmap over a batch of (honest, key)."""
    return fn, lambda a, hs, ks: jax.vmap(lambda h, k: fn(a, h, k))(hs, ks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="independent inputs in the vmapped call")
    parser.add_argument("--reps", type=int, default=5, help="timed calls (median reported)")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, jax {jax.__version__}, {os.cpu_count()} CPU cores")
    print(f"n_honest={N_HONEST}, d={DIM}, float32, pipeline NNM(f) -> TrMean(f), vmap batch {args.batch}\n")

    rng = np.random.default_rng(0)
    mean = rng.normal(size=DIM).astype(np.float32)
    batch = jnp.asarray(mean + rng.normal(size=(args.batch, N_HONEST, DIM)).astype(np.float32))
    honest, key = batch[0], jax.random.key(0)
    keys = jax.random.split(key, args.batch)

    columns = ("compile 1", "ms 1", "compile vmap", "ms vmap", "ms/input")
    header = f"{'attack':34s} {'f':>2s} " + " ".join(f"{c:>12s}" for c in columns)
    print(header)
    print("-" * len(header))
    for f in (1, 5):
        pipe = Pipeline([NNM(f)], TrMean(f))
        for name, attack in attack_list(f).items():
            attack.check(N_HONEST, f)
            one, many = single_and_vmapped(lambda a, h, k, p=pipe: a.byzantine_vectors(AttackerView(h, aggregator=p), f, k))
            c1, t1 = timed(one, (attack, honest, key), args.reps)
            cb, tb = timed(many, (attack, batch, keys), args.reps)
            print(f"{name:34s} {f:2d} {c1:11.2f}s {t1:12.2f} {cb:11.2f}s {tb:12.1f} {tb / args.batch:12.2f}")

    print("\nOptimal_ALittleIsEnough search (tau only), median ms: reusing tau-independent work vs generic")
    for label, pipe_of in (("NNM -> TrMean", lambda f: Pipeline([NNM(f)], TrMean(f))), ("TrMean", TrMean)):
        for f in (1, 5):
            bound, pipe = A.Optimal_ALittleIsEnough(), pipe_of(f)
            cells = []
            for inputs in ((bound, honest, key), (bound, batch, keys)):
                vmapped = inputs[1].ndim == 3
                searches = [lambda a, h, k, r=reuse: a.tau(AttackerView(h, aggregator=pipe), f, k, r) for reuse in (True, False)]
                fns = [single_and_vmapped(search)[vmapped] for search in searches]
                fast, generic = median_ms([compiled_with_time(fn, inputs)[0] for fn in fns], inputs, args.reps)
                cells.append(f"{fast:8.2f} ms vs {generic:8.2f} ms (x{generic / fast:.2f})")
            print(f"  {label:14s} f={f}: single {cells[0]};  vmap {cells[1]}")


if __name__ == "__main__":
    main()
