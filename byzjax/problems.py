"""Per-worker losses. A problem maps ``(x, one worker's shard) -> scalar loss``.

Parameters are one flat vector ``x in R^d`` (aggregators work on ``[n, d]``);
per-worker gradients of all workers come from one ``vmap(value_and_grad(loss))``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import ConfigError, check_param, float_array
from byzjax.data import FederatedData, Shards


class AbstractProblem(eqx.Module):
    """A federated objective: local losses, an initial point, evaluation metrics.

    Capabilities (class attributes, checked by the oracle before compiling): ``has_labels``, the
    shards carry class labels (``flip_labels`` works, LabelFlipping can run); ``has_samples``, a
    shard is a set of samples (``minibatch`` works, ``batch_size`` can be set). ``input_layout``
    is the sample layout the problem needs from a data set: ``"flat"`` (``[N, p]`` features, e.g.
    ``byzjax.data.load_dataset``) or ``"image"`` (``[N, H, W, C]``, ``byzjax.images``); the
    application layer loads the data in that layout. ``sample_shape`` is the shape of one
    sample when the problem fixes it (a network's ``(H, W, C)`` input), else ``None`` (the data's).
    ``exact_metrics``: whether ``RobustOracle`` computes full-batch training metrics every round by
    default (``byzjax.oracle``, "Exact or mini-batch metrics").
    """

    has_labels: ClassVar[bool] = False
    has_samples: ClassVar[bool] = False
    input_layout: ClassVar[str] = "flat"
    sample_shape: ClassVar[tuple[int, ...] | None] = None
    exact_metrics: ClassVar[bool] = True  # the oracle's default: full-batch training metrics every round

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Number of parameters d."""

    @abc.abstractmethod
    def init(self, key) -> jax.Array:
        """Initial parameters ``[d]`` drawn from ``key``."""

    @abc.abstractmethod
    def loss(self, x: jax.Array, shard) -> jax.Array:
        """Local loss ``L_i(x)`` of one worker, given its shard."""

    def evaluate(self, x: jax.Array, evaluation: dict) -> dict[str, jax.Array]:
        """Scalar metrics on held-out data (default: none)."""
        return {}

    def exact_mu(self) -> jax.Array | None:
        """The strong-convexity constant of every ``L_i`` (the smallest Hessian eigenvalue, the
        same at every point) when the problem's form gives it exactly, else None (then
        ``byzjax.theory`` estimates it by power iteration, an upper estimate that converges slowly
        when ``mu << L``)."""
        return None

    def strongly_convex(self) -> bool:
        """Whether ``L_H`` is strongly convex for every data set, so that ``L* = min L_H`` is
        attained and ``byzjax.theory.reference_optimum``'s Newton solve converges (then the
        application measures the per-instance theory: ``L*``, L, mu, delta). Default False."""
        return False

    def constant_hessian(self, shards) -> jax.Array | None:
        """The Hessian ``[d, d]`` of ``L_H`` (the mean over the honest ``shards``, leading worker axis)
        when it is the same at every point, else None (then ``byzjax.theory`` measures L and mu by
        power iteration at each point)."""
        return None

    @classmethod
    def from_dataset(cls, dataset, **params) -> "AbstractProblem":
        """The problem shaped by a loaded data set (``byzjax.data.Dataset``), with keyword ``params``
        (what a config's ``[problem]`` section gives); problems a config can name implement it."""
        raise ConfigError(f"{cls.__name__} cannot be built from a data set")

    def flip_labels(self, shards):
        """Shards with labels ``c - 1 - y`` (for LabelFlipping); problems with ``has_labels`` only."""
        raise ConfigError(f"{type(self).__name__} has no labels to flip")

    def minibatch(self, shard, key, batch_size):
        """One worker's shard restricted to a mini-batch drawn with ``key`` (problems with ``has_samples``)."""
        raise ConfigError(f"{type(self).__name__} has no samples to draw mini-batches from")

    def check_batch_size(self, batch_size) -> None:
        """Raise ``ConfigError`` if the (concrete) ``batch_size`` values cannot be drawn by ``minibatch``
        (called by ``RobustOracle.check`` before compiling); default: any positive size is fine."""


def masked_cross_entropy(logits: jax.Array, shard: Shards, x: jax.Array, lam) -> jax.Array:
    """``(1/m) sum_j -log softmax(logits_j)_{y_j} + (lam/2)||x||^2`` over the shard's ``m`` real
    samples (padded samples carry mask 0 and do not count): the local loss of every classifier."""
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, shard.y[:, None], axis=1)[:, 0]
    data_term = jnp.sum(nll * shard.mask) / jnp.maximum(jnp.sum(shard.mask), 1.0)
    return data_term + 0.5 * lam * jnp.sum(x * x)


class LogisticRegression(AbstractProblem):
    """Multinomial logistic regression with bias, arXiv 2602.03329, its experiments.

    ``L_i(theta) = (1/m_i) sum_{j in shard i} -log softmax(W^T a_j + b)_{y_j} + (lam/2)||theta||^2``
    with ``theta = (W, b)`` flattened (d = (p + 1) c = 7850 for MNIST). Padded
    samples carry mask 0 and do not count in ``m_i``.
    """

    has_labels: ClassVar[bool] = True
    has_samples: ClassVar[bool] = True
    num_features: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    lam: jax.Array = eqx.field(converter=float_array, default=1e-3)

    def __check_init__(self):
        check_param(self, "lam", self.lam, lambda v: np.isfinite(v) & (v >= 0), "a finite number >= 0")

    @classmethod
    def from_dataset(cls, dataset, **params):
        """Multinomial logistic regression shaped by the data: ``p`` features, ``c`` classes."""
        return cls(num_features=dataset.num_features, num_classes=dataset.num_classes, **params)

    @property
    def dim(self):
        return (self.num_features + 1) * self.num_classes

    def unpack(self, x):
        p, c = self.num_features, self.num_classes
        return x[: p * c].reshape(p, c), x[p * c :]

    def init(self, key):
        """Uniform(-1/sqrt(p), 1/sqrt(p)) on weights and bias, as ``torch.nn.Linear``."""
        bound = 1.0 / np.sqrt(self.num_features)
        return jax.random.uniform(key, (self.dim,), minval=-bound, maxval=bound, dtype=jnp.result_type(float))

    def logits(self, x, features):
        w, b = self.unpack(x)
        return features @ w + b

    def loss(self, x, shard: Shards):
        return masked_cross_entropy(self.logits(x, shard.x), shard, x, self.lam)

    def exact_mu(self) -> jax.Array:
        """``lam``: the softmax cross-entropy is invariant to adding one vector to every class's
        ``(w_c, b_c)``, so its Hessian is singular along those directions at every point and the
        smallest eigenvalue of the regularised loss is exactly ``lam``."""
        return self.lam

    def strongly_convex(self) -> bool:
        """True when ``lam > 0`` (the regularised cross-entropy is ``lam``-strongly convex)."""
        return float(np.asarray(self.lam)) > 0

    def evaluate(self, x, evaluation):
        return {
            f"{name}_acc": jnp.mean(jnp.argmax(self.logits(x, feats), axis=1) == labels)
            for name, (feats, labels) in evaluation.items()
        }

    def flip_labels(self, shards: Shards):
        return shards._replace(y=self.num_classes - 1 - shards.y)

    def minibatch(self, shard: Shards, key, batch_size):
        """``batch_size`` of the worker's real samples, uniformly without replacement (all of them
        if it has fewer), as a sample mask: the loss is then the mean over the mini-batch. The
        size may be traced (a swept number)."""
        u = jnp.where(shard.mask > 0, jax.random.uniform(key, shard.mask.shape), jnp.inf)
        rank = jnp.zeros(u.shape, jnp.int32).at[jnp.argsort(u)].set(jnp.arange(u.shape[0], dtype=jnp.int32))
        return shard._replace(mask=shard.mask * (rank < batch_size).astype(shard.mask.dtype))


class QuadraticShard(eqx.Module):
    a: jax.Array  # [d, d] symmetric PSD
    b: jax.Array  # [d]


class Quadratic(AbstractProblem):
    """``L_i(x) = 0.5 (x - b_i)^T A_i (x - b_i)``: known optimum, L and mu.

    ``L_H`` has Hessian ``A = mean_i A_i`` and minimiser ``A^{-1} mean_i A_i b_i``;
    see ``make_quadratic`` for data with a prescribed spectrum.
    """

    d: int = eqx.field(static=True)

    @property
    def dim(self):
        return self.d

    def init(self, key):
        return jnp.zeros((self.d,), dtype=jnp.result_type(float))

    def loss(self, x, shard: QuadraticShard):
        r = x - shard.b
        return 0.5 * r @ (shard.a @ r)

    def strongly_convex(self) -> bool:
        """True: ``mean_i A_i`` is positive definite by construction (``make_quadratic``)."""
        return True

    def constant_hessian(self, shards: QuadraticShard) -> jax.Array:
        """``A = mean_i A_i``, the Hessian of ``L_H`` at every point."""
        return jnp.mean(shards.a, axis=0)


def make_quadratic(n_workers: int, d: int, *, mu: float = 1.0, L: float = 10.0, spread: float = 1.0,
                   hessian_spread: float = 0.0, seed: int = 0) -> tuple[Quadratic, FederatedData, dict]:
    """A quadratic federated problem with eigenvalues of ``mean A_i`` in ``[mu, L]``.

    ``A_i = Q diag(s) Q^T + E_i`` with ``mean_i E_i = 0`` (``hessian_spread`` sets
    the size of ``E_i``, kept PSD-safe by construction), ``b_i = spread * N(0, I)``.
    Returns the problem, the data, and ``{"x_star", "L", "mu", "loss_star"}``.
    """
    if not 0 < mu <= L:
        raise ConfigError(f"need 0 < mu <= L, got mu={mu}, L={L}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = np.geomspace(mu, L, d)
    a_mean = (q * spectrum) @ q.T
    perturb = rng.standard_normal((n_workers, d, d))
    perturb = 0.5 * (perturb + perturb.transpose(0, 2, 1))
    perturb -= perturb.mean(axis=0)
    scale = hessian_spread * mu / max(np.abs(np.linalg.eigvalsh(perturb)).max(), 1e-12)
    a = a_mean + scale * perturb
    b = spread * rng.standard_normal((n_workers, d))
    x_star = np.linalg.solve(a_mean, np.einsum("wij,wj->i", a, b) / n_workers)
    losses = [0.5 * (x_star - b[i]) @ a[i] @ (x_star - b[i]) for i in range(n_workers)]
    info = {"x_star": x_star, "L": float(spectrum[-1]), "mu": float(spectrum[0]), "loss_star": float(np.mean(losses))}
    return Quadratic(d=d), FederatedData(QuadraticShard(a, b), {}), info
