"""The CIFAR-10 setting of the authors' later code (arXiv 2602.03329's authors): cnn_cifar
(2,324,630 parameters), 20 honest workers + 1 Byzantine (ALIE), Dirichlet(5) split, weight decay
0.01, NNM -> TrMean; D-GD (lr 0.1), PIGS (eta 1.0) and AEG, full-batch gradients.

    python experiments/cifar10_cnn.py --data /path/to/cifar-10-batches-py --out results/cifar10_cnn
    python experiments/cifar10_cnn.py --synthetic --quick      # 32x32x3 synthetic images, a smoke run
    python experiments/cifar10_cnn.py --synthetic --quick --n-train 300 --methods DGD   # smaller still

``--data DIR``: the folder of CIFAR-10's python pickles (``data_batch_1..5``, ``test_batch``). Writes
the usual result folder (``metrics.csv``, ``summary.csv``, ``config.json``; one run per method).
A full-batch round on 40,000 CIFAR images is GPU work; on a CPU use ``--quick``. ``--synthetic``
draws ``--n-train`` images (``byzjax.images.synthetic_images``: 80% training, 20% validation) and
a fifth as many test images, CIFAR-shaped (32x32x3, 10 classes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from byzjax.app.config import parse_config
from byzjax.app.runner import execute
from byzjax.data import federated_classification, stack_seeds
from byzjax.images import synthetic_images

METHODS = [{"name": "DGD", "lr": 0.1}, {"name": "PIGS", "eta": 1.0}, {"name": "AEG", "theta": 0.1, "gamma": 1e-3}]


def config(source: str, rounds: int, seeds: int, eval_every: int, quick: bool = False, methods=None) -> dict:
    """The config of the authors' CIFAR-10 setting (``quick``: short PIGS inner solves; ``methods``:
    the names of ``METHODS`` to run, default all)."""
    methods = [dict(m) for m in METHODS if methods is None or m["name"] in methods]
    if quick:
        methods = [m | {"inner_max_iter": 5} if m["name"] == "PIGS" else m for m in methods]
    return {"name": "cifar10-cnn", "seeds": seeds, "rounds": rounds, "eval_every": eval_every,
            "data": {"source": source, "n_honest": 20, "split": "dirichlet", "alpha": 5.0},
            "problem": {"name": "cnn_cifar", "lam": 0.01, "eval_chunk": 500},
            "byzantine": {"f": 1, "attack": "ALIE"},
            "aggregator": {"name": "TrMean", "pre_aggs": ["NNM"]},
            "algorithm": methods}


def synthetic_prepared(cfg, n_train: int):
    """``(dataset, problem, data)`` of ``cfg`` on ``n_train`` synthetic 32x32x3 images (as
    ``byzjax.app.runner.prepare`` builds them, with the number of images chosen)."""
    ds = synthetic_images((32, 32, 3), n_train=n_train, n_test=max(10, n_train // 5), num_classes=10)
    spec = cfg.data
    datas = [federated_classification(ds, spec.n_honest, spec.split, spec.alpha, seed) for seed in cfg.seeds]
    return ds, cfg.problem.build(ds), stack_seeds(datas)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with CIFAR-10's python pickles")
    src.add_argument("--synthetic", action="store_true", help="synthetic 32x32x3 images (a smoke test)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed, short PIGS inner solves")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--methods", nargs="+", choices=[m["name"] for m in METHODS], default=None,
                    help="run only these methods (default: all)")
    ap.add_argument("--n-train", type=int, default=1000, help="synthetic images drawn with --synthetic")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.n_train < 5 * 20:
        ap.error(f"--n-train must be >= 100 (20 workers), got {args.n_train}")
    source = "synthetic" if args.synthetic else f"cifar10:{args.data}"
    rounds = args.rounds or (2 if args.quick else 200)
    cfg = parse_config(config(source, rounds, args.seeds or (1 if args.quick else 3), max(1, rounds // 10),
                              args.quick, args.methods))
    out = Path(args.out or "results/cifar10_cnn")
    prepared = synthetic_prepared(cfg, args.n_train) if args.synthetic else None
    _, _, meta = execute(cfg, out, show_progress=not args.quick, prepared=prepared)
    print(f"compile {meta['compile_s']:.1f} s, run {meta['run_s']:.1f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
