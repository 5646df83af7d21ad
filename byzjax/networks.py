"""Neural-network classification on one flat parameter vector (ByzFL's models, ``byzjax.models``).

Aggregators and attacks work on ``[n, d]`` rows, so the network's parameters are one flat vector
``x in R^d``: the model's arrays are raveled once (``jax.flatten_util.ravel_pytree`` order, i.e.
``jax.tree.leaves``) and ``x`` is cut back into them by static offsets; the model's non-array part
(layer shapes, strides, ...) is a static field. Shards are ``byzjax.data.Shards`` with images
``x [m, H, W, C]`` (flat ``[m, H W C]`` pixels are accepted too), labels ``y [m]`` and ``mask [m]``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import ConfigError, check_param, concrete_values, float_array
from byzjax.data import Shards
from byzjax import models as _models
from byzjax.models import MODELS, AbstractModel, torch_init
from byzjax.problems import AbstractProblem, masked_cross_entropy


class NetworkClassification(AbstractProblem):
    """Cross-entropy of a network on each worker's samples, parameters one flat vector.

    ``L_i(x) = (1/m_i) sum_{j in shard i} -log softmax(net_x(a_j))_{y_j} + (lam/2) ||x||^2``,
    ``m_i`` the worker's real samples (mask 1; padding does not count), ``net_x`` the model whose
    arrays are the slices of ``x``. ``init(key)`` is PyTorch's default initialisation
    (``byzjax.models.torch_init``) flattened; ``evaluate`` is the accuracy on each evaluation set,
    computed ``eval_chunk`` samples at a time (``lax.map``), so memory stays bounded.

    Cost of an honest round (``byzjax.oracle.RobustOracle``): one forward + backward pass per
    sample the workers use, vmapped over workers, i.e. with ``exact_metrics=True`` (not the default
    of networks: ``exact_metrics = False``, the logged training metrics are the mini-batches') ``n_honest * m``
    samples for the oracle's full-batch ``L_H`` and ``grad L_H`` (``m`` = padded shard size), plus with ``batch_size``
    ``n_honest * min(batch_capacity, m)`` samples for the sent mini-batch gradients
    (``n_honest * m`` when ``batch_capacity`` is None: the mini-batch is then a mask over the whole
    shard); the backward pass keeps every layer's activations of those samples. The gradients
    ``[n_honest, d]`` and the aggregation's ``[n, d]`` rows are the rest.
    """

    has_labels: ClassVar[bool] = True
    has_samples: ClassVar[bool] = True
    input_layout: ClassVar[str] = "image"
    exact_metrics: ClassVar[bool] = False  # the oracle logs mini-batch training metrics (no full pass)
    static: AbstractModel = eqx.field(static=True)  # the model's non-array part (eqx.partition)
    treedef: Any = eqx.field(static=True)  # structure of the model's arrays
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)  # shape of each array, in leaf order
    num_classes: int = eqx.field(static=True)
    eval_chunk: int = eqx.field(static=True)
    batch_capacity: int | None = eqx.field(static=True)
    lam: jax.Array

    def __init__(self, model: AbstractModel, lam=0.0, *, eval_chunk: int = 1000, batch_capacity: int | None = None):
        if not isinstance(model, AbstractModel):
            raise ConfigError(f"NetworkClassification: model must be a byzjax.models model "
                              f"(one of {sorted(MODELS)}), got {type(model).__name__}")
        for name, value in (("eval_chunk", eval_chunk), ("batch_capacity", batch_capacity)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ConfigError(f"NetworkClassification: {name} must be an integer >= 1, got {name}={value!r}")
        params, self.static = eqx.partition(model, eqx.is_array)
        leaves, self.treedef = jax.tree.flatten(params)
        self.shapes = tuple(tuple(leaf.shape) for leaf in leaves)
        self.num_classes = int(jax.eval_shape(model, jnp.zeros(model.input_shape)).shape[-1])
        self.eval_chunk = int(eval_chunk)
        self.batch_capacity = None if batch_capacity is None else int(batch_capacity)
        self.lam = float_array(lam)
        check_param(self, "lam", self.lam, lambda v: v >= 0, ">= 0")

    @property
    def dim(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.static.input_shape

    def model(self, x: jax.Array) -> AbstractModel:
        """The network whose arrays are the consecutive slices of ``x [d]`` (reshaped, in leaf order)."""
        offsets = np.cumsum([0] + [math.prod(s) for s in self.shapes])
        leaves = [x[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], self.shapes)]
        return eqx.combine(jax.tree.unflatten(self.treedef, leaves), self.static)

    def flatten(self, model: AbstractModel) -> jax.Array:
        """Inverse of ``model``: the model's arrays raveled into one vector ``[d]``."""
        leaves = jax.tree.leaves(eqx.filter(model, eqx.is_array))
        return jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])

    def init(self, key) -> jax.Array:
        template = self.model(jnp.zeros((self.dim,), jnp.result_type(float)))
        return self.flatten(torch_init(template, key))

    def _images(self, feats, dtype):
        h, w, c = self.input_shape
        if math.prod(feats.shape[1:]) != h * w * c:
            raise ConfigError(f"NetworkClassification({type(self.static).__name__}): samples of shape "
                              f"{tuple(feats.shape[1:])} do not hold {h}x{w}x{c} pixels")
        return feats.reshape((feats.shape[0], h, w, c)).astype(dtype)

    def logits(self, x, feats) -> jax.Array:
        """Network outputs ``[m, num_classes]`` for samples ``[m, H, W, C]`` (or flat), in ``x``'s dtype."""
        return jax.vmap(self.model(x))(self._images(feats, x.dtype))

    def loss(self, x, shard: Shards):
        return masked_cross_entropy(self.logits(x, shard.x), shard, x, self.lam)

    def evaluate(self, x, evaluation):
        """``{name}_acc`` = fraction of samples whose largest output is the label, ``eval_chunk`` at a time."""
        net = self.model(x)

        def correct(sample):
            feats, label = sample
            return jnp.argmax(net(feats)) == label

        out = {}
        for name, (feats, labels) in evaluation.items():
            images = self._images(feats, x.dtype)
            out[f"{name}_acc"] = jnp.mean(jax.lax.map(correct, (images, labels), batch_size=self.eval_chunk))
        return out

    def flip_labels(self, shards: Shards):
        """ByzFL's label flipping: ``y -> num_classes - 1 - y``."""
        return shards._replace(y=self.num_classes - 1 - shards.y)

    def check_batch_size(self, batch_size) -> None:
        """ConfigError unless every ``batch_size`` fits in ``batch_capacity`` (when one is set)."""
        values = concrete_values(batch_size)
        if self.batch_capacity is not None and values is not None and np.any(values > self.batch_capacity):
            raise ConfigError(f"NetworkClassification: batch_size must be <= batch_capacity={self.batch_capacity}, "
                              f"got batch_size={values.tolist()}")

    def minibatch(self, shard: Shards, key, batch_size):
        """``batch_size`` of the worker's real samples, uniformly without replacement (all of them if
        it has fewer): the real samples with the ``batch_size`` smallest of i.i.d. ``U(0, 1)`` draws
        (padding draws ``+inf``), as ``LogisticRegression.minibatch``. ``batch_size`` may be traced.

        Without ``batch_capacity`` the result is the whole shard with a sample mask (the forward pass
        costs the shard size ``m``). With it, the ``min(batch_capacity, m)`` samples of smallest draw
        are gathered and those ranked ``>= batch_size`` masked: the same samples for the same key, at
        the cost of ``batch_capacity`` samples (needs ``batch_size <= batch_capacity``).
        """
        u = jnp.where(shard.mask > 0, jax.random.uniform(key, shard.mask.shape), jnp.inf)
        order = jnp.argsort(u)
        m = shard.mask.shape[0]
        if self.batch_capacity is None:
            rank = jnp.zeros(m, jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
            return shard._replace(mask=shard.mask * (rank < batch_size).astype(shard.mask.dtype))
        idx = order[: min(self.batch_capacity, m)]
        keep = (jnp.arange(idx.shape[0]) < batch_size).astype(shard.mask.dtype)
        return Shards(shard.x[idx], shard.y[idx], shard.mask[idx] * keep)


def network_problem(name: str, lam=0.0, *, key=None, num_classes: int = 10, eval_chunk: int = 1000,
                    batch_capacity: int | None = None, **model_kwargs) -> NetworkClassification:
    """``NetworkClassification`` of the model registered as ``name`` in ``byzjax.models.MODELS``."""
    if name not in MODELS:
        raise ConfigError(f"unknown network {name!r} (allowed: {', '.join(sorted(MODELS))})")
    model = MODELS[name](key=key, num_classes=num_classes, **model_kwargs)
    return NetworkClassification(model, lam, eval_chunk=eval_chunk, batch_capacity=batch_capacity)


def _model_options(name: str) -> list[inspect.Parameter]:
    """The model class's own constructor options (e.g. ResNet18's ``groups``), keyword-only."""
    params = inspect.signature(getattr(_models, name).__init__).parameters.values()
    return [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params
            if p.name not in ("self", "num_classes", "key")]


def _network_class(name: str) -> type[NetworkClassification]:
    """The ``NetworkClassification`` of model ``name`` as a problem class a config can name: built by
    ``from_dataset(dataset, lam=..., batch_capacity=..., eval_chunk=..., **model options)``."""
    model_cls = getattr(_models, name)
    options = _model_options(name)

    def __init__(self, lam=0.0, *, num_classes: int, eval_chunk: int = 1000, batch_capacity: int | None = None,
                 **model_kwargs):
        unknown = sorted(set(model_kwargs) - {p.name for p in options})
        if unknown:
            raise ConfigError(f"{name}: unknown model option(s) {unknown}; allowed: {[p.name for p in options]}")
        model = MODELS[name](key=jax.random.key(0), num_classes=num_classes, **model_kwargs)
        NetworkClassification.__init__(self, model, lam, eval_chunk=eval_chunk, batch_capacity=batch_capacity)

    base = [p for p in inspect.signature(__init__).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    __init__.__signature__ = inspect.Signature(base + options)

    @classmethod
    def from_dataset(cls, dataset, **params):
        """The network for ``dataset``: its samples must be the model's ``H x W x C`` images
        (``dataset.sample_shape``), its class count sets the output size."""
        h, w, c = model_cls.input_shape
        if tuple(dataset.sample_shape) != (h, w, c):
            got = "x".join(map(str, dataset.sample_shape))
            raise ConfigError(f"{name} needs {h}x{w}x{c} images, the data set {dataset.name!r} has samples of "
                              f"shape {got}")
        return cls(num_classes=dataset.num_classes, **params)

    doc = (f"Problem ``{name}``: ``NetworkClassification`` of ``byzjax.models.{name}`` (input "
           f"{'x'.join(map(str, model_cls.input_shape))} images), for ``[problem] name = \"{name}\"``.")
    return type(name, (NetworkClassification,), {"__init__": __init__, "from_dataset": from_dataset,
                                                 "sample_shape": model_cls.input_shape, "__doc__": doc,
                                                 "__module__": __name__, "__annotations__": {"sample_shape": ClassVar}})


NETWORK_PROBLEMS: dict[str, type[NetworkClassification]] = {name: _network_class(name) for name in MODELS}
"""Model name -> its problem class (``byzjax.registry.PROBLEMS`` holds these)."""
