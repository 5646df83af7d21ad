"""A ByzFL-style comparison on Fashion-MNIST: a network trained by robust D-SGD with worker momentum.

20 honest workers + f in {1, 5} Byzantine ones (one compiled program for both: ``max_f = 5``), iid and
Dirichlet(1) splits, a few pipelines (Average, NNM -> TrMean, NNM -> Median) against SignFlipping and
ALIE; test accuracy curves, mean and min-max band over the seeds, one panel per (split, f).

    python experiments/cnn_fashion_mnist.py --out results/cnn_fashion_mnist           # cnn_mnist, 200 rounds
    python experiments/cnn_fashion_mnist.py --quick                                    # fc_mnist, 30 rounds
    python experiments/cnn_fashion_mnist.py --data synthetic --quick                   # no data set needed
    python experiments/cnn_fashion_mnist.py --rounds 30 --seeds 2 --test-size 2000     # a cheaper cnn_mnist run

Workers send momenta (beta 0.9) of mini-batch gradients (32 samples), the training metrics are
the mini-batches' (``[metrics] exact = false``), accuracy is taken every ``--eval-every`` rounds
(default rounds / 10) on the test set, or on a fixed random ``--test-size`` of its images (and
``--val-size`` of the validation images), since evaluating 10,000 + 12,000 images per run costs
more than many training rounds on a CPU. The configs run one after the other, (split, pipeline) in
``ORDER``; the figure and ``summary.csv`` (final test accuracy per curve: mean, min, max over the
seeds) are rewritten after each, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from byzjax.app.config import parse_config
from byzjax.app.runner import execute, prepare

PIPELINES = {"Average": {"name": "Average"},
             "NNM+TrMean": {"name": "TrMean", "pre_aggs": ["NNM"]},
             "NNM+Median": {"name": "Median", "pre_aggs": ["NNM"]}}
SPLITS = {"iid": {"split": "iid"}, "dirichlet": {"split": "dirichlet", "alpha": 1.0}}
# The order the configs run in: the robust pipeline and its unprotected baseline on both splits first.
ORDER = [("iid", "NNM+TrMean"), ("iid", "Average"), ("dirichlet", "NNM+TrMean"), ("dirichlet", "Average"),
         ("iid", "NNM+Median"), ("dirichlet", "NNM+Median")]


def configs(model: str, source: str, rounds: int, seeds: int, eval_every: int, pipelines, attacks, lr: float):
    """One config per (split, pipeline), in ``ORDER``: f in {1, 5} and the attacks are swept inside it."""
    for split, label in ORDER:
        if label in pipelines:
            split_table, aggregator = SPLITS[split], pipelines[label]
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


def subset_evaluation(prepared, sizes: dict, seed: int = 0):
    """``prepared`` (dataset, problem, data) with each evaluation set ``name`` cut to a fixed random
    ``sizes[name]`` of its samples (the same for every seed and config; ``None``: all of them)."""
    ds, problem, data = prepared
    rng = np.random.default_rng(seed)
    evaluation = {}
    for name, (x, y) in data.evaluation.items():
        size = sizes.get(name)
        if size is None or size >= y.shape[-1]:
            evaluation[name] = (x, y)
            continue
        keep = np.sort(rng.permutation(y.shape[-1])[:size])
        evaluation[name] = (x[:, keep], y[:, keep])  # [seeds, samples, ...]
    return ds, problem, data._replace(evaluation=evaluation)


def write_summary(curves, path: Path):
    """One row per curve: final test accuracy over the seeds (mean, min, max) and its round."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "f", "pipeline", "attack", "round", "seeds", "test_acc_mean", "test_acc_min",
                    "test_acc_max"])
        for (split, f, label), (rounds, accs) in sorted(curves.items()):
            final = np.asarray(accs)[:, -1]
            pipeline, attack = label.split(" vs ")
            w.writerow([split, f, pipeline, attack, int(rounds[-1]), len(final), f"{final.mean():.4f}",
                        f"{final.min():.4f}", f"{final.max():.4f}"])


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
    ap.add_argument("--eval-every", type=int, default=None, help="rounds between evaluations (default rounds / 10)")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on a fixed random subset of the test set")
    ap.add_argument("--val-size", type=int, default=None, help="the same for the validation set")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    quick = args.quick
    model = args.model or ("fc_mnist" if quick else "cnn_mnist")
    rounds = args.rounds or (30 if quick else 200)
    seeds = args.seeds or (2 if quick else 3)
    pipelines = {k: PIPELINES[k] for k in (("Average", "NNM+TrMean") if quick else PIPELINES)}
    attacks = ["ALIE"] if quick else ["SignFlipping", "ALIE"]
    out = Path(args.out or f"results/{model}_fashion_mnist{'_quick' if quick else ''}")
    eval_every = args.eval_every or max(1, rounds // 10)
    sizes = {"test": args.test_size, "val": args.val_size}
    title = f"{model} on {args.data}, 20 honest workers, D-SGD + momentum 0.9, batch 32"
    if args.test_size is not None:
        title += f", {args.test_size} test images"
    curves = {}
    t0 = time.perf_counter()
    for split, label, raw in configs(model, args.data, rounds, seeds, eval_every, pipelines, attacks, 0.1):
        cfg = parse_config(raw)
        prepared = subset_evaluation(prepare(cfg), sizes)
        runs, _, meta = execute(cfg, out / "runs" / f"{split}-{label}", show_progress=False, prepared=prepared)
        for _, _, cols, trace in runs:
            key = (split, cols["f"], f"{label} vs {cols['attack']}")
            rounds_axis = np.asarray(trace.eval_iters)
            curves.setdefault(key, (rounds_axis, []))[1].append(np.asarray(trace.eval_metrics["test_acc"]))
        print(f"{split} {label}: compile {meta['compile_s']:.1f} s, run {meta['run_s']:.1f} s "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        plot(curves, out / "figures", title)
        write_summary(curves, out / "summary.csv")
    print(f"total {time.perf_counter() - t0:.1f} s; figures in {out / 'figures'}, table {out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
