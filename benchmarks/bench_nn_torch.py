"""The PyTorch side of ``benchmarks/bench_nn.py``: one robust round of cnn_mnist in a ByzFL-style loop.

Run by a Python that has torch (a benchmark-only extra, never a byzjax dependency; e.g. a separate
venv), usually from ``bench_nn.py --torch-python PYTHON``:

    PYTHON benchmarks/bench_nn_torch.py --data shards.npz --rounds 5 --out torch.json

``--data``: an .npz with ``x`` ``[n_honest, batch, 28, 28, 1]`` and ``y`` ``[n_honest, batch]``
(the byzjax run's shards, written by ``bench_nn.py``). A round, as ByzFL's honest clients and
server do it: every honest client in turn runs forward/backward of its batch on the server's
model and flattens its gradient; the Byzantine rows are ALIE's ``mean + tau * std``; then
ByzFL's pre-aggregators and rule in torch: Clipping (``v * min(1, c / ||v||)``), NNM (each row
replaced by the mean of its ``n - f`` nearest rows, itself included), coordinate-wise trimmed
mean (drop the ``f`` largest and ``f`` smallest); the server sets the aggregate as its gradient
and takes an SGD step. Writes ``{"ms_per_round": ..., "cpu_ms_per_round": ..., "torch": version,
"threads": ...}`` (CPU: ``time.process_time`` of this process, all threads).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as tf


class CnnMnist(torch.nn.Module):
    """ByzFL's cnn_mnist: conv 1->20 5x5, max-pool 2, conv 20->50 5x5, max-pool 2, fc 800->500->10, log-softmax."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(1, 20, 5), torch.nn.Conv2d(20, 50, 5)
        self.f1, self.f2 = torch.nn.Linear(800, 500), torch.nn.Linear(500, 10)

    def forward(self, x):
        x = tf.max_pool2d(tf.relu(self.c1(x)), 2, 2)
        x = tf.max_pool2d(tf.relu(self.c2(x)), 2, 2)
        return tf.log_softmax(self.f2(tf.relu(self.f1(x.reshape(-1, 800)))), dim=1)


def robust_aggregate(v: torch.Tensor, f: int, clip: float) -> torch.Tensor:
    """Clipping(clip) -> NNM(f) -> TrMean(f) of the rows of ``v [n, d]``."""
    n = v.shape[0]
    v = v * torch.clamp(clip / v.norm(dim=1, keepdim=True), max=1.0)
    idx = torch.cdist(v, v).argsort(dim=1)[:, : n - f]
    v = v[idx].mean(dim=1)
    return v.sort(dim=0).values[f: n - f].mean(dim=0)


def time_rounds(xs, ys, n_byz: int, tau: float, clip: float, lr: float, rounds: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per round, each the best of two timings of
    ``rounds`` rounds, after one warm-up round."""
    torch.manual_seed(0)
    net = CnnMnist()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    params = list(net.parameters())

    def one_round():
        grads = []
        for i in range(xs.shape[0]):
            net.zero_grad()
            tf.nll_loss(net(xs[i]), ys[i]).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
        g = torch.stack(grads)
        byz = (g.mean(0) + tau * g.std(0)).expand(n_byz, -1)
        agg = robust_aggregate(torch.cat([g, byz]), n_byz, clip)
        offset = 0
        for p in params:
            p.grad = agg[offset: offset + p.numel()].reshape(p.shape).clone()
            offset += p.numel()
        opt.step()

    one_round()
    best, best_cpu = np.inf, np.inf
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            one_round()
        best = min(best, (time.perf_counter() - t0) / rounds)
        best_cpu = min(best_cpu, (time.process_time() - c0) / rounds)
    return best, best_cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help=".npz with x [n_honest, batch, 28, 28, 1] and y [n_honest, batch]")
    ap.add_argument("--f", type=int, default=5)
    ap.add_argument("--tau", type=float, default=1.5)
    ap.add_argument("--clip", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    with np.load(args.data) as npz:
        xs = torch.tensor(npz["x"]).permute(0, 1, 4, 2, 3).float().contiguous()  # NHWC -> NCHW
        ys = torch.tensor(npz["y"]).long()
    seconds, cpu = time_rounds(xs, ys, args.f, args.tau, args.clip, args.lr, args.rounds)
    result = {"ms_per_round": 1e3 * seconds, "cpu_ms_per_round": 1e3 * cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "n_honest": int(xs.shape[0]), "batch": int(xs.shape[1]), "f": args.f, "rounds": args.rounds}
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
