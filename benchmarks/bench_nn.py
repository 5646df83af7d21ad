"""Speed of one robust round of a network: 25 honest + 5 Byzantine workers, batch 32, ALIE,
Clipping -> NNM -> TrMean (issue 11's setting), ``byzjax.run`` under ``jit(vmap)``.

Every honest worker holds ``--shard`` synthetic images (default 32: its full batch IS the batch of
32, so a round is one forward/backward pass of 25 x 32 samples). With ``--shard`` > 32 the workers
send gathered mini-batches of 32 (``batch_capacity``) and the oracle's exact full-batch metrics
(``L_H``, ``grad L_H`` on the whole shards) come on top. Prints ms per round for 1 and 8 (``--runs``)
vmapped runs sharing the data, compile time apart, and the device. A ByzFL-style PyTorch loop
(per-client forward/backward, flatten, the same pipeline in torch) is timed in the same run when
``torch`` is importable (a benchmark-only extra, never a byzjax dependency); else it is skipped.

    python benchmarks/bench_nn.py [--model cnn_mnist] [--runs 1 8] [--rounds 5] [--shard 32]
"""

from __future__ import annotations

import argparse
import time

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
    """(compile seconds, best run seconds) of ``jit(fn)(*args)``, compiled ahead of time."""
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


def torch_baseline(model_name, shards, rounds):
    """Seconds per round of a ByzFL-style loop: one torch model, each client's forward/backward in
    turn, gradients flattened and stacked, ALIE, then clipping, NNM and trimmed mean in torch."""
    import torch
    import torch.nn.functional as tf

    torch.manual_seed(0)
    if model_name != "cnn_mnist":
        raise SystemExit("the torch baseline is written for cnn_mnist")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 20, 5), torch.nn.Conv2d(20, 50, 5)
            self.f1, self.f2 = torch.nn.Linear(800, 500), torch.nn.Linear(500, 10)

        def forward(self, x):
            x = tf.max_pool2d(tf.relu(self.c1(x)), 2, 2)
            x = tf.max_pool2d(tf.relu(self.c2(x)), 2, 2)
            return tf.log_softmax(self.f2(tf.relu(self.f1(x.reshape(-1, 800)))), dim=1)

    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    xs = torch.tensor(np.asarray(shards.x)).permute(0, 1, 4, 2, 3).float()[:, :BATCH]
    ys = torch.tensor(np.asarray(shards.y)).long()[:, :BATCH]
    n, f = N_HONEST + F, F

    def one_round():
        grads = []
        for i in range(N_HONEST):
            net.zero_grad()
            tf.nll_loss(net(xs[i]), ys[i]).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
        g = torch.stack(grads)
        byz = (g.mean(0) + TAU * g.std(0)).expand(F, -1)
        v = torch.cat([g, byz])
        v = v * torch.clamp(CLIP / v.norm(dim=1, keepdim=True), max=1.0)
        idx = torch.cdist(v, v).argsort(dim=1)[:, : n - f]
        v = v[idx].mean(dim=1)
        agg = v.sort(dim=0).values[f : n - f].mean(dim=0)
        offset = 0
        for p in net.parameters():
            p.grad = agg[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()
        opt.step()

    one_round()
    t0 = time.perf_counter()
    for _ in range(rounds):
        one_round()
    return (time.perf_counter() - t0) / rounds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn_mnist", choices=sorted(MODELS))
    p.add_argument("--runs", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shard", type=int, default=BATCH, help="samples per honest worker (>= 32)")
    args = p.parse_args(argv)
    if args.shard < BATCH:
        raise SystemExit(f"--shard must be >= {BATCH}")
    problem = network_problem(args.model, batch_capacity=BATCH if args.shard > BATCH else None)
    shape = problem.input_shape
    n_train = int(np.ceil(N_HONEST * args.shard / 0.8))
    ds = synthetic_images(shape, seed=0, n_train=n_train, n_test=256, num_classes=10)
    ds = ds._replace(train_x=ds.train_x[: N_HONEST * args.shard], train_y=ds.train_y[: N_HONEST * args.shard])
    data = jax.tree.map(jnp.asarray, federated_images(ds, N_HONEST, "iid", None, 0))
    oracle = RobustOracle(problem, Pipeline([Clipping(CLIP), NNM(F)], TrMean(F)), ALittleIsEnough(tau=TAU),
                          n_honest=N_HONEST, n_byz=F, batch_size=BATCH if args.shard > BATCH else None)
    exp = Experiment(oracle, DGD(lr=0.01), rounds=args.rounds, eval_every=args.rounds)
    exp.check()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} ({dev.device_kind}), {jax.local_device_count()} device(s), jax {jax.__version__}; "
          f"{args.model} d = {problem.dim:,}; n = {N_HONEST}+{F}; {args.shard} samples per worker, batch {BATCH}; "
          f"ALIE tau {TAU}, Clipping({CLIP}) -> NNM -> TrMean; {args.rounds} rounds per timing (+1 evaluation "
          f"pass on 256 test images at each end)")
    print(f"{'':10s} {'runs':>5s} {'compile s':>10s} {'ms/round':>10s} {'run-rounds/s':>13s}")
    for runs in args.runs:
        lrs = jnp.full((runs,), 0.01)

        def ours(lrs, exp=exp):
            def one(lr):
                return run(jax.random.key(0), eqx.tree_at(lambda e: e.algorithm.lr, exp, lr), data).metrics["loss"]

            return jax.vmap(one)(lrs)

        c, t = timed(ours, lrs)
        print(f"{'byzjax':10s} {runs:5d} {c:10.2f} {1e3 * t / args.rounds:10.1f} {runs * args.rounds / t:13.1f}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("baseline skipped: torch is not installed (pip install torch to time the ByzFL-style loop)")
        return
    t = torch_baseline(args.model, data.shards, args.rounds)
    print(f"{'torch':10s} {1:5d} {'':>10s} {1e3 * t:10.1f} {1 / t:13.1f}")


if __name__ == "__main__":
    main()
