"""ByzFL's models (``byzfl.fed_framework.models``) as equinox Modules, with PyTorch's default init.

A model maps ONE sample to its output ``[num_classes]``: an image ``[H, W, C]`` (or the same
pixels flattened, ``[H * W * C]``); batch it with ``jax.vmap``. The parameters follow PyTorch:
conv weights ``[out, in, kh, kw]``, conv biases ``[out, 1, 1]``, and the feature maps are flattened
in ``(C, H, W)`` order before the first Linear, so a ByzFL state dict maps one to one onto these
leaves. The feature maps themselves are channels-last ``[H, W, C]`` and every convolution is an
im2col product (``conv2d``): the ``kh kw C`` shifted views of the input side by side, times the
weight as a ``[kh kw C, out]`` matrix. Under ``jax.vmap`` over workers (per-worker weight
gradients) or over runs (per-run weights) that product is a batched matrix multiply, where
``lax.conv_general_dilated`` becomes a grouped convolution (``feature_group_count`` = number of
workers or runs), which XLA:CPU runs several times slower.

Outputs are ByzFL's: ``fc_mnist``, ``cnn_mnist`` and ``cnn_cifar`` end with a log-softmax,
``logreg_mnist`` with a sigmoid (as ByzFL's), ``ResNet18`` with logits. The cross-entropy of
``byzjax.networks`` applies ``log_softmax`` to the output, which leaves a log-softmax output
unchanged (``log_softmax`` is idempotent), so the loss is ByzFL's NLL / cross-entropy for all of them.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

relu = jax.nn.relu


def _is_layer(m) -> bool:
    return isinstance(m, (eqx.nn.Linear, eqx.nn.Conv2d))


def _is_norm(m) -> bool:
    return isinstance(m, eqx.nn.GroupNorm)


def fan_in(layer) -> int:
    """``in_features`` of a Linear, ``(in_channels / groups) * kh * kw`` of a Conv2d (PyTorch's fan-in)."""
    return math.prod(layer.weight.shape[1:])


def torch_init(model, key):
    """``model`` with every Linear / Conv2d drawn as PyTorch's ``reset_parameters`` and every
    GroupNorm reset (its arrays may be ``jax.ShapeDtypeStruct``: only shapes and dtypes are used).

    Weight: ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-b, b)`` with ``b = gain sqrt(3 / fan_in)`` and
    ``gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)``, so ``b = 1 / sqrt(fan_in)``; bias:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. GroupNorm: weight 1, bias 0 (PyTorch's too). All the
    uniforms are slices of one ``U(-1, 1)`` draw from ``key`` (in ``jax.tree.leaves`` order) scaled by
    their layer's bound.
    """
    layers = [m for m in jax.tree.leaves(model, is_leaf=_is_layer) if _is_layer(m)]
    arrays = [a for l in layers for a in (l.weight, l.bias) if a is not None]
    bounds = [1.0 / math.sqrt(fan_in(l)) for l in layers for a in (l.weight, l.bias) if a is not None]
    dtype = arrays[0].dtype if arrays else jnp.result_type(float)
    u = jax.random.uniform(key, (sum(a.size for a in arrays),), dtype, -1.0, 1.0)
    offsets = np.cumsum([0] + [a.size for a in arrays])
    values = [(bound * u[i:j]).reshape(a.shape).astype(a.dtype)
              for a, bound, i, j in zip(arrays, bounds, offsets[:-1], offsets[1:])]

    def where_layers(m):
        found = [l for l in jax.tree.leaves(m, is_leaf=_is_layer) if _is_layer(l)]
        return [a for l in found for a in (l.weight, l.bias) if a is not None]

    model = eqx.tree_at(where_layers, model, values)
    norms = [m for m in jax.tree.leaves(model, is_leaf=_is_norm) if _is_norm(m) and m.weight is not None]
    if not norms:
        return model

    def where_norms(m):
        found = [n for n in jax.tree.leaves(m, is_leaf=_is_norm) if _is_norm(n) and n.weight is not None]
        return [n.weight for n in found] + [n.bias for n in found]

    resets = [jnp.ones(n.weight.shape, n.weight.dtype) for n in norms] + [jnp.zeros(n.bias.shape, n.bias.dtype)
                                                                         for n in norms]
    return eqx.tree_at(where_norms, model, resets)


_torch_init_jit = eqx.filter_jit(torch_init)


def conv2d(layer: eqx.nn.Conv2d, x: jax.Array) -> jax.Array:
    """``layer`` (zero padding, groups 1, no dilation) applied to ``x [H, W, C]``, channels last:
    ``out[p, q, o] = b_o + sum_{i, j, c} x_pad[s_h p + i, s_w q + j, c] w[o, c, i, j]``, i.e. PyTorch's
    ``F.conv2d`` (a cross-correlation) in ``[H, W, C]`` layout. Computed as im2col: the ``kh kw``
    shifted (strided) views of the padded input concatenated along channels, ``[Ho Wo, kh kw C]``,
    times the weight transposed to ``[kh kw C, out]``; slices and one matrix product, so it batches
    (vmap over samples, workers or runs) into a batched GEMM and its transpose into pads and adds."""
    w = layer.weight
    out_c, in_c, kh, kw = w.shape
    (pt, pb), (pl, pr) = layer.padding
    sh, sw = layer.stride
    x = jnp.pad(x, ((pt, pb), (pl, pr), (0, 0))) if pt or pb or pl or pr else x
    h, wd, _ = x.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    views = [x[i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw, :] for i in range(kh) for j in range(kw)]
    cols = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)  # [Ho, Wo, kh kw C], (i, j, c) order
    mat = jnp.transpose(w, (2, 3, 1, 0)).reshape(kh * kw * in_c, out_c)
    out = (cols.reshape(ho * wo, kh * kw * in_c) @ mat).reshape(ho, wo, out_c)
    return out if layer.bias is None else out + layer.bias.reshape(out_c)


def group_norm(norm: eqx.nn.GroupNorm, x: jax.Array) -> jax.Array:
    """``norm`` (``eqx.nn.GroupNorm``, PyTorch's ``nn.GroupNorm``) on channels-last ``x [H, W, C]``:
    ``y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c``, mean and (biased) variance over the
    pixels and the ``C / groups`` channels of channel c's group g (Wu & He, 2018)."""
    h, w, c = x.shape
    y = x.reshape(h, w, norm.groups, c // norm.groups)
    mean = jnp.mean(y, axis=(0, 1, 3), keepdims=True)
    var = jnp.maximum(jnp.var(y, axis=(0, 1, 3), keepdims=True), 0.0)
    out = ((y - mean) * jax.lax.rsqrt(var + norm.eps)).reshape(h, w, c)
    return out if norm.weight is None else out * norm.weight + norm.bias


def max_pool2(x):
    """2x2 max-pool with stride 2 on channels-last ``[H, W, C]`` (H, W even), ``F.max_pool2d(x, 2, 2)``."""
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def flatten_chw(x):
    """Channels-last maps ``[H, W, C]`` flattened in PyTorch's ``(C, H, W)`` order (ByzFL's ``view``)."""
    return jnp.transpose(x, (2, 0, 1)).reshape(-1)


class AbstractModel(eqx.Module):
    """One sample ``[H, W, C]`` (or flat) -> output ``[num_classes]``."""

    input_shape: ClassVar[tuple[int, int, int]]  # (H, W, C) of one sample
    output: ClassVar[str]  # what ByzFL's forward returns: "log_softmax", "sigmoid" or "logits"

    @abc.abstractmethod
    def __call__(self, x: jax.Array) -> jax.Array: ...

    def hwc(self, x):
        """A sample as channels-last ``[H, W, C]`` from ``[H, W, C]`` or flat ``[H W C]`` pixels."""
        return x.reshape(self.input_shape)


class logreg_mnist(AbstractModel):
    """ByzFL's ``logreg_mnist``: ``sigmoid(W x + b)``, Linear 784 -> 10 (7,850 parameters)."""

    input_shape: ClassVar = (28, 28, 1)
    output: ClassVar = "sigmoid"
    linear: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, *, key):
        self.linear = eqx.nn.Linear(784, num_classes, key=key)

    def __call__(self, x):
        return jax.nn.sigmoid(self.linear(x.reshape(-1)))


class fc_mnist(AbstractModel):
    """ByzFL's ``fc_mnist``: Linear 784 -> 100, ReLU, Linear 100 -> 10, log-softmax (79,510 parameters)."""

    input_shape: ClassVar = (28, 28, 1)
    output: ClassVar = "log_softmax"
    f1: eqx.nn.Linear
    f2: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, *, key):
        k1, k2 = jax.random.split(key)
        self.f1 = eqx.nn.Linear(784, 100, key=k1)
        self.f2 = eqx.nn.Linear(100, num_classes, key=k2)

    def __call__(self, x):
        return jax.nn.log_softmax(self.f2(relu(self.f1(x.reshape(-1)))))


class cnn_mnist(AbstractModel):
    """ByzFL's ``cnn_mnist`` (431,080 parameters): conv 1->20 5x5, ReLU, max-pool 2, conv 20->50 5x5,
    ReLU, max-pool 2, flatten (50 x 4 x 4 = 800), Linear 800->500, ReLU, Linear 500->10, log-softmax."""

    input_shape: ClassVar = (28, 28, 1)
    output: ClassVar = "log_softmax"
    c1: eqx.nn.Conv2d
    c2: eqx.nn.Conv2d
    f1: eqx.nn.Linear
    f2: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, *, key):
        k = jax.random.split(key, 4)
        self.c1 = eqx.nn.Conv2d(1, 20, 5, key=k[0])
        self.c2 = eqx.nn.Conv2d(20, 50, 5, key=k[1])
        self.f1 = eqx.nn.Linear(800, 500, key=k[2])
        self.f2 = eqx.nn.Linear(500, num_classes, key=k[3])

    def __call__(self, x):
        h = max_pool2(relu(conv2d(self.c1, self.hwc(x))))
        h = max_pool2(relu(conv2d(self.c2, h)))
        return jax.nn.log_softmax(self.f2(relu(self.f1(flatten_chw(h)))))


class cnn_cifar(AbstractModel):
    """ByzFL's ``cnn_cifar`` (the CIFAR-10 model of arXiv 2602.03329's authors, 2,324,630 parameters):
    three blocks conv 5x5 pad 2 (3->20->100->200), ReLU, max-pool 2; flatten (200 x 4 x 4 = 3200);
    Linear 3200->512, ReLU, 512->256, ReLU, 256->10; log-softmax (the authors' version; ByzFL's
    current one returns the logits, which gives the same cross-entropy)."""

    input_shape: ClassVar = (32, 32, 3)
    output: ClassVar = "log_softmax"
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    conv3: eqx.nn.Conv2d
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    fc3: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, *, key):
        k = jax.random.split(key, 6)
        self.conv1 = eqx.nn.Conv2d(3, 20, 5, padding=2, key=k[0])
        self.conv2 = eqx.nn.Conv2d(20, 100, 5, padding=2, key=k[1])
        self.conv3 = eqx.nn.Conv2d(100, 200, 5, padding=2, key=k[2])
        self.fc1 = eqx.nn.Linear(3200, 512, key=k[3])
        self.fc2 = eqx.nn.Linear(512, 256, key=k[4])
        self.fc3 = eqx.nn.Linear(256, num_classes, key=k[5])

    def __call__(self, x):
        h = self.hwc(x)
        for conv in (self.conv1, self.conv2, self.conv3):
            h = max_pool2(relu(conv2d(conv, h)))
        h = relu(self.fc2(relu(self.fc1(flatten_chw(h)))))
        return jax.nn.log_softmax(self.fc3(h))


class BasicBlock(eqx.Module):
    """ResNet basic block: ``relu(n2(c2(relu(n1(c1 x)))) + shortcut(x))``, 3x3 convs without bias;
    the shortcut is a 1x1 strided conv + norm when the shape changes, else the identity; on
    channels-last maps ``[H, W, C]``."""

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    shortcut: tuple[eqx.nn.Conv2d, eqx.nn.GroupNorm] | None

    def __init__(self, in_planes: int, planes: int, stride: int, groups: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, use_bias=False, key=k1)
        self.norm1 = eqx.nn.GroupNorm(groups, planes)
        self.conv2 = eqx.nn.Conv2d(planes, planes, 3, padding=1, use_bias=False, key=k2)
        self.norm2 = eqx.nn.GroupNorm(groups, planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = (eqx.nn.Conv2d(in_planes, planes, 1, stride=stride, use_bias=False, key=k3),
                             eqx.nn.GroupNorm(groups, planes))

    def __call__(self, x):
        out = group_norm(self.norm2, conv2d(self.conv2, relu(group_norm(self.norm1, conv2d(self.conv1, x)))))
        short = x if self.shortcut is None else group_norm(self.shortcut[1], conv2d(self.shortcut[0], x))
        return relu(out + short)


class ResNet18(AbstractModel):
    """ByzFL's ``ResNet18`` for 32x32x3 inputs (11,173,962 parameters), GroupNorm instead of BatchNorm.

    conv 3->64 3x3, norm, ReLU; four stages of two BasicBlocks (64, 128/2, 256/2, 512/2); 4x4
    average pool; Linear 512->10 (logits). Why GroupNorm (Wu & He, 2018; ``groups`` per layer,
    32 by default): batch normalisation's batch statistics do not vmap over workers cleanly
    (its running means are state that every worker would update in the same round) and in
    training mode they couple the samples of a batch; GroupNorm normalises each sample on its own
    (mean/variance over channel groups and pixels), so a worker's gradient depends only on its
    samples and the model is a pure function of the flat parameters. It has BatchNorm's affine
    parameters (weight 1, bias 0 at init), hence the same parameter count.
    """

    input_shape: ClassVar = (32, 32, 3)
    output: ClassVar = "logits"
    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    blocks: tuple[BasicBlock, ...]
    linear: eqx.nn.Linear

    def __init__(self, num_classes: int = 10, groups: int = 32, *, key):
        keys = jax.random.split(key, 10)
        self.conv1 = eqx.nn.Conv2d(3, 64, 3, padding=1, use_bias=False, key=keys[0])
        self.norm1 = eqx.nn.GroupNorm(groups, 64)
        blocks, in_planes = [], 64
        for i, (planes, stride) in enumerate([(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                              (512, 2), (512, 1)]):
            blocks.append(BasicBlock(in_planes, planes, stride, groups, key=keys[1 + i]))
            in_planes = planes
        self.blocks = tuple(blocks)
        self.linear = eqx.nn.Linear(512, num_classes, key=keys[9])

    def __call__(self, x):
        h = relu(group_norm(self.norm1, conv2d(self.conv1, self.hwc(x))))
        for block in self.blocks:
            h = block(h)
        return self.linear(jnp.mean(h, axis=(0, 1)))  # F.avg_pool2d(h, 4) on the final 4x4 maps


def _pytorch_default(cls) -> Callable[..., AbstractModel]:
    def make(*, key=None, num_classes: int = 10, **kwargs) -> AbstractModel:
        key = jax.random.key(0) if key is None else key
        shapes = eqx.filter_eval_shape(cls, num_classes, **kwargs, key=jax.random.key(0))
        return _torch_init_jit(shapes, key)  # one compiled program per model, not one per layer

    make.__name__ = cls.__name__
    make.__doc__ = f"A ``{cls.__name__}`` with PyTorch's default initialisation drawn from ``key``."
    return make


MODELS: dict[str, Callable[..., AbstractModel]] = {
    cls.__name__: _pytorch_default(cls) for cls in (logreg_mnist, fc_mnist, cnn_mnist, cnn_cifar, ResNet18)
}
