"""Image data sets kept as images ``[N, H, W, C]``: Fashion-MNIST, CIFAR-10, synthetic patterns.

All return ``byzjax.data.Dataset`` (train/validation/test parts, a seeded ``val_fraction`` of the
training images held out for validation) with ``x`` of shape ``[N, H, W, C]`` float32, normalised.
``federated_images`` splits one among the honest workers as ``Shards`` of images; ``load_source``
reads a config's ``[data] source`` in the layout a problem needs (flat features or images).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from byzjax._validation import ConfigError
from byzjax.data import DEFAULT_DATA_DIR, DataError, Dataset, FederatedData, federated_classification, load_dataset

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


def as_images(dataset: Dataset, shape: tuple[int, int, int]) -> Dataset:
    """``dataset`` with every part's features reshaped to ``[N, *shape]`` (flat features are row-major pixels)."""
    return dataset._replace(**{part: getattr(dataset, part).reshape((-1,) + tuple(shape))
                               for part in ("train_x", "val_x", "test_x")})


def load_fashion_mnist(source: str | os.PathLike = DEFAULT_DATA_DIR, **kwargs) -> Dataset:
    """Fashion-MNIST (or any MNIST-format IDX folder) as images ``[N, 28, 28, 1]``.

    Same loading, normalisation and train/validation split as ``byzjax.data.load_dataset`` (its
    keyword arguments pass through); only the features keep their image shape.
    """
    ds = load_dataset(source, **kwargs)
    side = int(round(np.sqrt(ds.train_x.shape[1])))
    if side * side != ds.train_x.shape[1]:
        raise DataError(f"{source}: images of {ds.train_x.shape[1]} pixels are not square")
    return as_images(ds, (side, side, 1))


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, builtin containers and (protocol 2) bytes: no other globals."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # protocol-2 bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python-pickle batch -> images ``[k, 32, 32, 3]`` uint8 and labels ``[k]`` int32.

    The file (Krizhevsky's "python version") is a pickled dict with ``data`` ``[k, 3072]`` uint8,
    each row 1024 red, then green, then blue values of a 32x32 image in row-major order, and
    ``labels`` (k integers in 0..9). Read with an unpickler that allows only NumPy arrays.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 file not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure is a malformed file
        raise DataError(f"{path} is not a CIFAR-10 python pickle ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be uint8 [k, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape} ({labels.dtype})")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be in 0..9, found {int(labels.min())}..{int(labels.max())}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _channel_stats(images: np.ndarray, normalization) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if normalization == "dataset":
        pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        return tuple(pixels.mean(axis=0).tolist()), tuple(pixels.std(axis=0).tolist())
    try:
        mean, std = (tuple(float(v) for v in part) for part in normalization)
    except (TypeError, ValueError):
        raise ConfigError(f"CIFAR-10 normalization must be 'dataset' or [[means], [stds]] per channel, "
                          f"got {normalization!r}") from None
    if len(mean) != images.shape[-1] or len(std) != images.shape[-1] or min(std) <= 0:
        raise ConfigError(f"CIFAR-10 normalization needs {images.shape[-1]} means and {images.shape[-1]} "
                          f"stds > 0, got {normalization!r}")
    return mean, std


def load_cifar10(folder: str | os.PathLike, *, normalization="dataset", val_fraction: float = 0.2,
                 seed: int = 0) -> Dataset:
    """CIFAR-10 from ``folder`` (``data_batch_1..5`` and ``test_batch``, or a ``cifar-10-batches-py``
    subfolder holding them) as images ``[N, 32, 32, 3]``, ``(pixel / 255 - mean_c) / std_c`` per channel.

    ``normalization="dataset"``: the 50k training images' channel means/stds (about
    (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616)); or ``[[means], [stds]]``. The
    validation set is a seeded random ``val_fraction`` of the training images. ``Dataset.mean`` /
    ``.std`` are then per-channel tuples.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 folder not found: {folder}")
    parts = [read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = read_cifar_batch(folder / CIFAR10_TEST_FILE)
    mean, std = _channel_stats(train_images, normalization)

    def prep(images):
        return ((images.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)).astype(np.float32)

    x = prep(train_images)
    perm = np.random.default_rng(seed).permutation(len(train_labels))
    n_val = int(round(val_fraction * len(train_labels)))
    val, train = perm[:n_val], perm[n_val:]
    return Dataset(x[train], train_labels[train], x[val], train_labels[val], prep(test_images), test_labels,
                   mean, std, "cifar10")


def synthetic_images(shape: tuple[int, int, int] = (28, 28, 1), *, seed: int = 0, n_train: int = 1000,
                     n_test: int = 200, num_classes: int = 10, signal: float = 1.0, cell: int = 4) -> Dataset:
    """A seeded image classification set that a CNN can learn: class ``k``'s images are
    ``signal * P_k + N(0, 1)`` noise per pixel, ``P_k`` a fixed random pattern of ``cell x cell``
    blocks of i.i.d. N(0, 1) values (a smooth, class-specific texture; ``H``, ``W`` multiples of
    ``cell``). 80/20 train/validation like the real data; mean 0, std 1 by construction.
    """
    h, w, c = shape
    if h % cell or w % cell:
        raise ConfigError(f"synthetic_images: height and width must be multiples of cell={cell}, got shape {shape}")
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((num_classes, h // cell, w // cell, c))
    patterns = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)

    def draw(m):
        labels = rng.integers(0, num_classes, size=m).astype(np.int32)
        noise = rng.standard_normal((m, h, w, c))
        return (signal * patterns[labels] + noise).astype(np.float32), labels

    x, y = draw(n_train)
    test_x, test_y = draw(n_test)
    n_val = n_train // 5
    return Dataset(x[n_val:], y[n_val:], x[:n_val], y[:n_val], test_x, test_y, 0.0, 1.0, "synthetic-images")


def federated_images(dataset: Dataset, n_honest: int, split: str, alpha: float | None, seed: int,
                     width: int | None = None) -> FederatedData:
    """``byzjax.data.federated_classification`` on image data: shards ``x [w, m, H, W, C]`` (the
    split and the padding do not depend on the sample shape)."""
    return federated_classification(dataset, n_honest, split, alpha, seed, width)


CIFAR10_PREFIX = "cifar10:"
LAYOUTS = ("flat", "image")


def flatten(dataset: Dataset) -> Dataset:
    """``dataset`` with every part's samples flattened to ``[N, prod(sample_shape)]`` (row-major)."""
    return dataset._replace(**{part: getattr(dataset, part).reshape(len(getattr(dataset, part)), -1)
                               for part in ("train_x", "val_x", "test_x")})


def load_source(source: str | os.PathLike, *, layout: str = "flat", image_shape: tuple[int, int, int] | None = None,
                normalization="dataset", val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The data set named by ``source`` with samples in ``layout``: ``"flat"`` ``[N, p]`` or ``"image"``
    ``[N, H, W, C]``.

    ``source``: ``"cifar10:DIR"`` (``load_cifar10(DIR)``), ``"synthetic"`` (flat: ``load_dataset``'s
    Gaussian mixture; image: ``synthetic_images(image_shape)``, default 28x28x1) or a folder of
    MNIST-format IDX files (``load_dataset`` / ``load_fashion_mnist``).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"load_source: layout must be one of {LAYOUTS}, got {layout!r}")
    source = str(source)
    if source.startswith(CIFAR10_PREFIX):
        folder = source[len(CIFAR10_PREFIX):]
        if not folder:
            raise ConfigError("data source 'cifar10:' needs a folder: cifar10:DIR")
        ds = load_cifar10(folder, normalization=normalization, val_fraction=val_fraction, seed=seed)
        return ds if layout == "image" else flatten(ds)
    if source == "synthetic" and layout == "image":
        return synthetic_images(tuple(image_shape or (28, 28, 1)), seed=seed)
    if layout == "image":
        return load_fashion_mnist(source, normalization=normalization, val_fraction=val_fraction, seed=seed)
    return load_dataset(source, normalization=normalization, val_fraction=val_fraction, seed=seed)
