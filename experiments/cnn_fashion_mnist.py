"""A ByzFL-style comparison on Fashion-MNIST: a network trained by robust D-SGD with worker momentum.

20 honest workers + f in {1, 5} Byzantine ones (one compiled program for both: ``max_f = 5``), iid and
Dirichlet(1) splits, a few pipelines (Average, NNM -> TrMean, NNM -> Median) against SignFlipping and
ALIE; test accuracy curves, mean and min-max band over the seeds, one panel per (split, f).

    python experiments/cnn_fashion_mnist.py --out results/cnn_fashion_mnist           # cnn_mnist, 200 rounds
    python experiments/cnn_fashion_mnist.py --quick                                    # fc_mnist, 30 rounds
    python experiments/cnn_fashion_mnist.py --data synthetic --quick                   # no data set needed

Workers send momenta (beta 0.9) of mini-batch gradients (32 samples), the training metrics are
the mini-batches' (``[metrics] exact = false``), accuracy is taken every ``eval_every`` rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from byzjax.app.config import parse_config
from byzjax.app.runner import execute

PIPELINES = {"Average": {"name": "Average"},
             "NNM+TrMean": {"name": "TrMean", "pre_aggs": ["NNM"]},
             "NNM+Median": {"name": "Median", "pre_aggs": ["NNM"]}}
SPLITS = {"iid": {"split": "iid"}, "dirichlet": {"split": "dirichlet", "alpha": 1.0}}


def configs(model: str, source: str, rounds: int, seeds: int, eval_every: int, pipelines, attacks, lr: float):
    """One config per (split, pipeline): f in {1, 5} and the attacks are swept inside it."""
    for split, split_table in SPLITS.items():
        for label, aggregator in pipelines.items():
            yield split, label, {
                "name": f"{model}-{split}-{label}", "seeds": seeds, "rounds": rounds, "eval_every": eval_every,
                "data": {"source": source, "n_honest": 20, **split_table},
                "problem": {"name": model, "lam": 1e-4, "batch_capacity": 32, "eval_chunk": 500},
                "byzantine": {"f": [1, 5], "max_f": 5, "attack": attacks},
                "workers": {"batch_size": 32, "momentum": 0.9},
                "metrics": {"exact": False},
                "aggregator": aggregator,
                "algorithm": [{"name": "DGD", "lr": lr}],
            }


def plot(curves, out: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s, f) for s, f, _ in curves})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (split, f) in zip(axes[0], panels):
        for (s, ff, label), (rounds, accs) in sorted(curves.items()):
            if (s, ff) != (split, f):
                continue
            accs = np.asarray(accs)
            line, = ax.plot(rounds, accs.mean(0), label=label)
            ax.fill_between(rounds, accs.min(0), accs.max(0), color=line.get_color(), alpha=0.2)
        ax.set_title(f"{split}, f = {f}")
        ax.set_xlabel("communication round")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"test_accuracy.{ext}", dpi=150)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fc_mnist, 30 rounds, 2 seeds, ALIE only, 2 pipelines")
    ap.add_argument("--data", default="fashion-mnist", help="'fashion-mnist', 'synthetic' or an IDX folder")
    ap.add_argument("--model", default=None, help="cnn_mnist (default) or fc_mnist (default with --quick)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    quick = args.quick
    model = args.model or ("fc_mnist" if quick else "cnn_mnist")
    rounds = args.rounds or (30 if quick else 200)
    seeds = args.seeds or (2 if quick else 3)
    pipelines = {k: PIPELINES[k] for k in (("Average", "NNM+TrMean") if quick else PIPELINES)}
    attacks = ["ALIE"] if quick else ["SignFlipping", "ALIE"]
    out = Path(args.out or f"results/{model}_fashion_mnist{'_quick' if quick else ''}")
    curves = {}
    t0 = time.perf_counter()
    for split, label, raw in configs(model, args.data, rounds, seeds, max(1, rounds // 10), pipelines, attacks, 0.1):
        cfg = parse_config(raw)
        runs, _, meta = execute(cfg, out / "runs" / f"{split}-{label}", show_progress=False)
        for _, _, cols, trace in runs:
            key = (split, cols["f"], f"{label} vs {cols['attack']}")
            rounds_axis = np.asarray(trace.eval_iters)
            curves.setdefault(key, (rounds_axis, []))[1].append(np.asarray(trace.eval_metrics["test_acc"]))
        print(f"{split} {label}: compile {meta['compile_s']:.1f} s, run {meta['run_s']:.1f} s", flush=True)
    plot(curves, out / "figures", f"{model} on {args.data}, 20 honest workers, D-SGD + momentum 0.9, batch 32")
    print(f"total {time.perf_counter() - t0:.1f} s; figures in {out / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
