"""Time byzjax's aggregators against a reference, n = 30 workers, f = 5.

    PYTHONPATH=. python benchmarks/bench_aggregators.py [--quick] [--repeats R] [--batch B]

Prints one table row per (rule, d): the compiled ``byzjax.aggregators.apply``
(compile time printed apart, median of ``repeats`` calls with block_until_ready)
and the reference: ByzFL when importable, otherwise the NumPy implementations
below (ByzFL's algorithms with NumPy arrays; MDA's and SMEA's subset loops are
timed on their first subsets and extrapolated to all C(30, 5) = 142506, marked
``*``). ``ByzFL(issue)`` repeats the torch timings quoted in issue 4 (another
machine). Then times one vmapped batch of aggregations of ``[30, 1e4]``.

NumPy's BLAS is pinned to one thread (set before NumPy loads): next to XLA's
threads on a small machine, multi-threaded OpenBLAS took ~250 ms for the 30 x 1e4
Gram matrix instead of ~0.5 ms.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import itertools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import aggregators as A
from byzjax import preaggregators as P

try:
    import byzfl
except ImportError:
    byzfl = None

N, F = 30, 5
ISSUE_MS = {  # ByzFL (torch, CPU) from issue 4: d = 1e4, d = 1e6
    "TrMean": (3.9, 444), "Median": (4.4, 494), "Krum": (0.54, 243), "GeometricMedian": (0.69, 364),
    "NNM->TrMean": (8.4, 2100), "MDA": (16_000, None), "SMEA": (85_000, None),
}


def np_sq_dists(x):
    sq = np.sum(x * x, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def np_trmean(x, f=F):
    return np.sort(x, axis=0)[f : len(x) - f].mean(axis=0)


def np_krum(x, f=F):
    return x[np.argmin(np.sort(np_sq_dists(x), axis=1)[:, 1 : len(x) - f].mean(axis=1))]


def np_geometric_median(x, nu=0.1, T=3):
    z = np.zeros(x.shape[1], x.dtype)
    for _ in range(T):
        beta = 1.0 / np.maximum(np.linalg.norm(x - z, axis=1), nu)
        z = beta @ x / beta.sum()
    return z


def np_nnm_trmean(x, f=F):
    nearest = np.argpartition(np_sq_dists(x), len(x) - f - 1, axis=1)[:, : len(x) - f]
    return np_trmean(x[nearest].mean(axis=1), f)


def np_mda_loop(x, f=F, limit=None):
    """ByzFL's loop: the diameter of each subset from its pairs of the distance matrix."""
    n, dist = len(x), np.sqrt(np_sq_dists(x))
    best, best_diameter = None, np.inf
    for subset in itertools.islice(itertools.combinations(range(n), n - f), limit):
        rows, cols = zip(*itertools.combinations(subset, 2))
        diameter = np.max(dist[rows, cols])
        if diameter < best_diameter:
            best, best_diameter = subset, diameter
    return x[list(best)].mean(axis=0)


def np_smea_loop(x, f=F, limit=None):
    """ByzFL's loop: one power step per subset from a fresh random start."""
    n, d = x.shape
    rng = np.random.default_rng(0)
    best, best_value = None, np.inf
    for subset in itertools.islice(itertools.combinations(range(n), n - f), limit):
        diffs = x[list(subset)] - x[list(subset)].mean(axis=0)
        v = rng.normal(size=d).astype(x.dtype)
        w = diffs.T @ (diffs @ (v / np.linalg.norm(v)))
        if np.linalg.norm(w) < best_value:
            best, best_value = subset, np.linalg.norm(w)
    return x[list(best)].mean(axis=0)


def reference(name):
    """(callable on x, extrapolation factor) for the rule, or None."""
    if byzfl is not None:
        return {
            "TrMean": (byzfl.TrMean(F), 1), "Median": (byzfl.Median(), 1), "Krum": (byzfl.Krum(F), 1),
            "GeometricMedian": (byzfl.GeometricMedian(), 1),
            "NNM->TrMean": (lambda x: byzfl.TrMean(F)(byzfl.NNM(F)(x)), 1),
            "MDA": (byzfl.MDA(F), 1), "SMEA": (byzfl.SMEA(F), 1),
        }.get(name)
    total = math.comb(N, F)
    return {
        "TrMean": (np_trmean, 1), "Median": (lambda x: np.median(x, axis=0), 1), "Krum": (np_krum, 1),
        "GeometricMedian": (np_geometric_median, 1), "NNM->TrMean": (np_nnm_trmean, 1),
        "MDA": (lambda x: np_mda_loop(x, limit=5000), total / 5000),
        "SMEA": (lambda x: np_smea_loop(x, limit=200), total / 200),
    }.get(name)


RULES = {
    "TrMean": A.TrMean(F), "Median": A.Median(), "Krum": A.Krum(F), "GeometricMedian": A.GeometricMedian(),
    "NNM->TrMean": P.Pipeline((P.NNM(F),), A.TrMean(F)), "MDA": A.MDA(F), "SMEA": A.SMEA(F),
    "MultiKrum": A.MultiKrum(F), "Meamed": A.Meamed(F), "CenteredClipping": A.CenteredClipping(),
    "CAF": A.CAF(F), "Bulyan": A.Bulyan(F), "DnC": A.DnC(F), "SignGuard": A.SignGuard(),
    "ClippedClustering": A.ClippedClustering(), "HuberMean": A.HuberMean(), "FLTrust": A.FLTrust(),
    "SmoothedWeiszfeld": A.SmoothedWeiszfeld(), "Bucketing->Median": P.Pipeline((P.Bucketing(2),), A.Median()),
    "ARC->TrMean": P.Pipeline((P.ARC(F),), A.TrMean(F)),
}
LARGE_D = ("TrMean", "Median", "Krum", "GeometricMedian", "NNM->TrMean")  # also run at the large d


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bench_rule(name, rule, x, key, repeats):
    state = rule.init(x.shape[1], x.dtype)
    t = time.perf_counter()
    compiled = A.apply.lower(rule, x, state, key).compile()
    compile_s = time.perf_counter() - t
    out = compiled(rule, x, state, key)[0]
    ours = median_ms(lambda: compiled(rule, x, state, key), repeats)
    ref = reference(name)
    ref_ms = note = ""
    if ref is not None:
        fn, factor = ref
        xn = np.asarray(x)
        ref_out = fn(xn)
        ref_ms = median_ms(lambda: fn(xn), 1 if factor > 1 else repeats) * factor
        note = "*" if factor > 1 else f"{np.max(np.abs(np.asarray(out) - np.asarray(ref_out))):.1e}"
    return compile_s, ours, ref_ms, note


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d in {1e3, 1e4} and a batch of 100")
    parser.add_argument("--repeats", type=int, default=11, help="timed calls per row (5 at the large d)")
    parser.add_argument("--batch", type=int, default=None, help="vmapped batch size (default 1000, quick 100)")
    args = parser.parse_args()
    dims = (1_000, 10_000) if args.quick else (10_000, 1_000_000)
    batch = args.batch or (100 if args.quick else 1000)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} ({dev}); jax {jax.__version__}; float32; n={N}, f={F}")
    print(f"reference: {'ByzFL' if byzfl is not None else 'NumPy implementations in this file (ByzFL not importable)'}")
    header = f"{'rule':18s} {'n':>3s} {'d':>8s} {'compile s':>9s} {'byzjax ms':>10s} {'ref ms':>10s} {'ratio':>7s} {'ByzFL(issue) ms':>15s}  max|diff| / *"
    print(header)
    print("-" * len(header))
    key = jax.random.key(0)
    for d in dims:
        x = jax.random.normal(jax.random.key(1), (N, d), jnp.float32) + 0.1
        for name, rule in RULES.items():
            if d > 10_000 and name not in LARGE_D:
                continue
            repeats = args.repeats if d <= 10_000 else min(args.repeats, 5)
            compile_s, ours, ref_ms, note = bench_rule(name, rule, x, key, repeats)
            issue = dict(zip((10_000, 1_000_000), ISSUE_MS.get(name, (None, None)))).get(d)
            ratio = f"{ref_ms / ours:7.1f}" if ref_ms else f"{'':7s}"
            ref_txt = f"{ref_ms:10.2f}" if ref_ms else f"{'-':>10s}"
            issue_txt = f"{issue:15g}" if issue else f"{'-':>15s}"
            print(f"{name:18s} {N:3d} {d:8d} {compile_s:9.2f} {ours:10.2f} {ref_txt} {ratio} {issue_txt}  {note}", flush=True)

    d = 10_000
    xs = jax.random.normal(jax.random.key(2), (batch, N, d), jnp.float32)
    for name in ("TrMean", "NNM->TrMean"):
        rule = RULES[name]
        run = jax.jit(jax.vmap(lambda x: rule.aggregate(x, None, key)[0]))
        t = time.perf_counter()
        compiled = run.lower(xs).compile()
        compile_s = time.perf_counter() - t
        ms = median_ms(lambda: compiled(xs), 3)
        print(f"vmapped batch of {batch} x [{N}, {d}] {name}: {ms:.0f} ms ({ms / batch:.2f} ms per aggregation; "
              f"compile {compile_s:.2f} s)" + ("" if batch >= 1000 else f" -- batch reduced from 1000 on {dev.platform}"))


if __name__ == "__main__":
    main()
