"""Data: IDX loading (MNIST / Fashion-MNIST), a synthetic stand-in, and worker splits.

arXiv 2602.03329, its experiments: the 60k training images are split 80/20 into train/validation,
normalised, flattened to 784 features, then the training part is divided among the
honest workers iid or by per-class Dirichlet proportions (or as ByzFL's ``gamma_similarity_niid``
and ``extreme_niid``). Unequal shards are padded
to the largest one with a sample mask, so every worker's loss stays its true mean
over its own samples and all workers still vectorise as one batch axis.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from byzjax._validation import ConfigError

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_STATS = (0.1307, 0.3081)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataError(ConfigError):
    """Missing, truncated or corrupt data files."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a uint8 array, checking its header.

    Format (LeCun's MNIST page): 2 zero bytes, a type byte (0x08 = uint8), a
    dimension count, then one big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX type byte 0x{raw[2]:02x} is not uint8 (0x08)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = int(np.prod(shape))
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(f"{path}: header announces {expected} bytes of data for shape {shape}, file has {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"missing {stem}[.gz] in {folder} (expected the four MNIST-format IDX files)")


def load_idx_folder(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load the four MNIST-format IDX files of ``folder`` and validate them."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = " (install it with: apt-get install -y dataset-fashion-mnist)" if folder == DEFAULT_DATA_DIR else ""
        raise DataError(f"data folder not found: {folder}{hint}")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in IDX_FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3:
            raise DataError(f"{folder}: {part} images must be [N, rows, cols], got shape {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{folder}: {part} has {images.shape[0]} images but labels of shape {labels.shape}")
        if labels.size and labels.max() > 9:
            raise DataError(f"{folder}: {part} labels must be in 0..9, found {int(labels.max())}")
    train_shape, test_shape = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_shape != test_shape:
        raise DataError(f"{folder}: test images are {test_shape[0]}x{test_shape[1]} but training images are "
                        f"{train_shape[0]}x{train_shape[1]}; both parts must have the same image size")
    return arrays


class Dataset(NamedTuple):
    """Normalised features and integer labels of the three parts.

    Features are ``[N, *sample_shape]``: flat ``[N, p]`` (``load_dataset``) or images
    ``[N, H, W, C]`` (``byzjax.images``). ``mean`` / ``std`` are the normalisation constants: one
    number each, or one per channel (tuples, e.g. CIFAR-10's).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    name: str

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: ``(p,)`` for flat features, ``(H, W, C)`` for images."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_features(self) -> int:
        """Values per sample, ``prod(sample_shape)`` (784 for a 28x28x1 image or its flat pixels)."""
        return int(np.prod(self.sample_shape))

    @property
    def normalization(self) -> list:
        """``[mean, std]`` as JSON-ready values (lists for per-channel constants)."""
        return [list(v) if isinstance(v, (tuple, list)) else v for v in (self.mean, self.std)]

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1


def _normalisation(images: np.ndarray, normalization) -> tuple[float, float]:
    if normalization == "dataset":
        pixels = images.astype(np.float64) / 255.0
        return float(pixels.mean()), float(pixels.std())
    if normalization == "mnist":
        return MNIST_STATS
    try:
        mean, std = (float(v) for v in normalization)
    except (TypeError, ValueError):
        raise ConfigError(f"normalization must be 'dataset', 'mnist' or [mean, std], got {normalization!r}") from None
    if std <= 0:
        raise ConfigError(f"normalization std must be > 0, got {std}")
    return mean, std


def load_dataset(
    source: str | os.PathLike = DEFAULT_DATA_DIR,
    *,
    normalization="dataset",
    val_fraction: float = 0.2,
    seed: int = 0,
    synthetic_size: tuple[int, int] = (6000, 1000),
) -> Dataset:
    """Load MNIST-format data (or ``"synthetic"``), normalise, split train/validation.

    ``normalization="dataset"`` uses the training pixels' own mean/std (for MNIST
    these are the paper's 0.1307/0.3081; for Fashion-MNIST 0.2860/0.3530);
    ``"mnist"`` forces MNIST's constants, as the authors' code does on any data.
    The validation set is a seeded random ``val_fraction`` of the 60k training images.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if str(source) == "synthetic":
        return synthetic_dataset(seed=seed, n_train=synthetic_size[0], n_test=synthetic_size[1])
    arrays = load_idx_folder(source)
    mean, std = _normalisation(arrays["train_images"], normalization)

    def prep(images):
        return ((images.reshape(images.shape[0], -1).astype(np.float32) / 255.0) - mean) / std

    x, y = prep(arrays["train_images"]), arrays["train_labels"].astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = perm[:n_val], perm[n_val:]
    return Dataset(
        x[train], y[train], x[val], y[val],
        prep(arrays["test_images"]), arrays["test_labels"].astype(np.int32),
        mean, std, Path(source).name,
    )


def synthetic_dataset(seed: int = 0, n_train: int = 6000, n_test: int = 1000, num_features: int = 784,
                      num_classes: int = 10, separation: float = 0.06) -> Dataset:
    """A seeded Gaussian-mixture classification problem shaped like MNIST.

    Class ``k`` has mean ``separation * u_k`` (``u_k`` a random unit-variance vector)
    and identity covariance; 80/20 train/validation like the real data.
    """
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((num_classes, num_features))

    def draw(m):
        labels = rng.integers(0, num_classes, size=m).astype(np.int32)
        return (centres[labels] + rng.standard_normal((m, num_features))).astype(np.float32), labels

    x, y = draw(n_train)
    test_x, test_y = draw(n_test)
    n_val = n_train // 5
    return Dataset(x[n_val:], y[n_val:], x[:n_val], y[:n_val], test_x, test_y, 0.0, 1.0, "synthetic")


def split_iid(labels: np.ndarray, n_workers: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and cut into ``n_workers`` (almost) equal parts."""
    return np.array_split(rng.permutation(len(labels)), n_workers)


def split_dirichlet(labels: np.ndarray, n_workers: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class k: ``p_k ~ Dir(alpha 1)``, cut class k's shuffled indices at ``floor(cumsum(p_k) N_k)``.

    As the authors' code (arXiv 2602.03329, its experiments); shard sizes are unequal.
    """
    if alpha <= 0:
        raise ConfigError(f"Dirichlet alpha must be > 0, got {alpha}")
    shards = [[] for _ in range(n_workers)]
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        p = rng.dirichlet(alpha * np.ones(n_workers))
        cuts = np.floor(np.cumsum(p) * len(idx)).astype(int)[:-1]
        for w, part in enumerate(np.split(idx, cuts)):
            shards[w].append(part)
    return [np.sort(np.concatenate(s)) for s in shards]


def split_extreme(labels: np.ndarray, n_workers: int) -> list[np.ndarray]:
    """Sort the indices by label (ties by index) and cut them into ``n_workers`` (almost) equal
    consecutive parts: ``extreme_niid`` of ByzFL's ``DataDistributor`` (github.com/LPD-EPFL/byzfl).

    Deterministic: worker ``i`` holds positions ``[i N / n, (i + 1) N / n)`` of the label-sorted
    order (``np.array_split``), so most workers see one or two classes.
    """
    return np.array_split(np.argsort(labels, kind="stable"), n_workers)


def split_gamma_similarity(labels: np.ndarray, n_workers: int, gamma: float,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """ByzFL's ``gamma_similarity_niid``: a random ``floor(gamma N)`` of the samples split iid, the
    rest as ``split_extreme``; worker ``i`` gets the ``i``-th part of both (ByzFL's ``DataDistributor``).

    ``gamma = 1`` is ``split_iid`` (the same index sets for the same ``rng``), ``gamma = 0`` is
    ``split_extreme``; shard sizes differ by at most 2.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"split 'gamma_similarity': gamma must be in [0, 1], got {gamma}")
    perm = rng.permutation(len(labels))
    k = int(len(labels) * gamma)
    iid = np.array_split(perm[:k], n_workers)
    rest = perm[k:]
    sorted_rest = rest[np.lexsort((rest, labels[rest]))]  # by label, ties by index (as ByzFL)
    extreme = np.array_split(sorted_rest, n_workers)
    return [np.sort(np.concatenate([a, b])).astype(np.int64) for a, b in zip(iid, extreme)]


SPLITS = ("iid", "dirichlet", "gamma_similarity", "extreme")
"""The split names; ``dirichlet`` takes ``alpha > 0``, ``gamma_similarity`` takes ``gamma`` in [0, 1]."""


def split_indices(labels, n_workers: int, split: str, alpha: float | None, seed: int) -> list[np.ndarray]:
    """Worker shards (index arrays into the training set) for ``split`` in ``SPLITS``.

    ``alpha`` is the split's parameter: Dirichlet's concentration for ``dirichlet``, ByzFL's
    ``gamma`` (the iid fraction) for ``gamma_similarity`` (one number per split, as ByzFL's
    ``distribution_parameter``); ``extreme`` takes none, ``iid`` ignores it (callers may pass one
    ``alpha`` for every split, as byzjax always allowed).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if n_workers < 1:
        raise ConfigError(f"n_honest must be >= 1, got {n_workers}")
    if split == "extreme" and alpha is not None:
        raise ConfigError(f"split {split!r} takes no parameter, got {alpha!r}")
    if split == "iid":
        shards = split_iid(labels, n_workers, rng)
    elif split == "extreme":
        shards = split_extreme(labels, n_workers)
    elif split == "dirichlet":
        if alpha is None:
            raise ConfigError("split 'dirichlet' needs alpha")
        shards = split_dirichlet(labels, n_workers, alpha, rng)
    elif split == "gamma_similarity":
        if alpha is None:
            raise ConfigError("split 'gamma_similarity' needs gamma (a number in [0, 1])")
        shards = split_gamma_similarity(labels, n_workers, alpha, rng)
    else:
        raise ConfigError(f"unknown split {split!r} (allowed: {', '.join(repr(s) for s in SPLITS)})")
    empty = [i for i, s in enumerate(shards) if len(s) == 0]
    if empty:
        hint = (f"alpha too small for n_honest={n_workers}?" if split == "dirichlet"
                else f"{len(labels)} samples for n_honest={n_workers}")
        raise ConfigError(f"{split} split left workers {empty} without data ({hint})")
    return shards


def pad_shards(x: np.ndarray, y: np.ndarray, shards: list[np.ndarray], width: int | None = None):
    """Stack shards into ``[w, m, *s]`` features (``s = x.shape[1:]``, flat ``(p,)`` or an image
    ``(H, W, C)``), ``[w, m]`` labels and a ``[w, m]`` mask.

    ``m`` is the largest shard (or ``width``); padded samples are zeros with mask 0.
    """
    m = max(len(s) for s in shards) if width is None else width
    if m < max(len(s) for s in shards):
        raise ConfigError(f"pad_shards: width={m} is smaller than the largest shard ({max(len(s) for s in shards)})")
    w = len(shards)
    xs = np.zeros((w, m) + tuple(x.shape[1:]), dtype=x.dtype)
    ys = np.zeros((w, m), dtype=np.int32)
    mask = np.zeros((w, m), dtype=x.dtype)
    for i, s in enumerate(shards):
        xs[i, : len(s)], ys[i, : len(s)], mask[i, : len(s)] = x[s], y[s], 1.0
    return xs, ys, mask


class Shards(NamedTuple):
    """Per-worker classification data, leading axis = honest worker."""

    x: np.ndarray  # [w, m, *sample_shape]: [w, m, p] or images [w, m, H, W, C]
    y: np.ndarray  # [w, m]
    mask: np.ndarray  # [w, m], 1 for real samples, 0 for padding


class FederatedData(NamedTuple):
    """What a run needs from the data: honest shards and held-out evaluation sets.

    ``shards`` is any pytree whose leaves have the honest-worker axis first (the
    problem's ``loss`` takes one worker's slice); ``evaluation`` maps a name
    (``"val"``, ``"test"``) to whatever the problem's ``evaluate`` takes.
    """

    shards: object
    evaluation: dict


def federated_classification(dataset: Dataset, n_honest: int, split: str, alpha: float | None,
                             seed: int, width: int | None = None, shards: list[np.ndarray] | None = None
                             ) -> FederatedData:
    """Split ``dataset``'s training part among ``n_honest`` workers (padded shards, features of any
    sample shape: flat or images); ``shards`` (index arrays into the training part, e.g. from
    ``load_partition``) replaces the split."""
    if shards is None:
        shards = split_indices(dataset.train_y, n_honest, split, alpha, seed)
    elif len(shards) != n_honest:
        raise ConfigError(f"partition has {len(shards)} workers, n_honest = {n_honest}")
    x, y, mask = pad_shards(dataset.train_x, dataset.train_y, shards, width)
    return FederatedData(
        Shards(x, y, mask),
        {"val": (dataset.val_x, dataset.val_y), "test": (dataset.test_x, dataset.test_y)},
    )


def stack_seeds(datas: list[FederatedData]) -> FederatedData:
    """Stack per-seed data along a new leading axis, padding shards to a common width (the
    sample axis ``1`` of every ``Shards`` leaf; features of any sample shape)."""
    import jax

    shards = [d.shards for d in datas]
    if isinstance(shards[0], Shards):
        m = max(s.x.shape[1] for s in shards)

        def pad(s: Shards) -> Shards:
            extra = m - s.x.shape[1]
            return Shards(
                np.pad(s.x, ((0, 0), (0, extra)) + ((0, 0),) * (s.x.ndim - 2)),
                np.pad(s.y, ((0, 0), (0, extra))),
                np.pad(s.mask, ((0, 0), (0, extra))),
            )

        datas = [d._replace(shards=pad(d.shards)) for d in datas]
    return jax.tree.map(lambda *xs: np.stack(xs), *datas)


# ----------------------------------------------------------------------------------------------
# A user-given partition ([data] partition = "FILE.npz").


class Partition(NamedTuple):
    """Index arrays into the full training set (the training file's images, in file order)."""

    workers: list[np.ndarray]  # one per honest worker
    val: np.ndarray | None  # the validation images (None: not given)


def _index_array(where: str, arr, n_train: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ConfigError(f"{where}: must be a 1-D array of integer indices, got dtype {arr.dtype} shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_train):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ConfigError(f"{where}: index {bad} is out of range (the training set has {n_train} images: 0..{n_train - 1})")
    return arr


def load_partition(path: str | os.PathLike, n_honest: int, n_train: int) -> Partition:
    """Read and check a partition file: ``worker_0 ... worker_{n-1}`` (or one object array
    ``workers`` of index arrays), plus optional ``val``, indices into the ``n_train`` training images.

    Every worker needs at least one image; no image may be held twice (by two workers, by a
    worker and the validation set, or twice by one worker).
    """
    where = f"[data] partition {path}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "workers"}
            obj = None
            if "workers" in npz.files:
                try:
                    obj = npz["workers"]  # a 2-D integer array [n, m] (equal shards) needs no pickle
                except ValueError:  # an object array of index arrays: pickled, read on request only
                    obj = "pickled"
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"{where}: not a readable .npz file ({' '.join(str(err).split())})") from None
    if obj is not None:
        if isinstance(obj, str):  # numpy object arrays are pickles: only use partition files you trust
            with np.load(path, allow_pickle=True) as npz:
                obj = npz["workers"]
        if obj.ndim not in (1, 2):
            raise ConfigError(f"{where}: 'workers' must be an object array of index arrays or a 2-D array")
        workers = [np.asarray(w) for w in obj]
        extra = sorted(k for k in arrays if k != "val")
    else:
        keys = sorted((k for k in arrays if k.startswith("worker_")), key=lambda k: (len(k), k))
        expected = [f"worker_{i}" for i in range(len(keys))]
        if keys != expected or not keys:
            raise ConfigError(f"{where}: worker arrays must be named worker_0 ... worker_{{n-1}} (or one array "
                              f"'workers'), found {sorted(arrays)}")
        workers = [arrays[k] for k in keys]
        extra = sorted(k for k in arrays if k != "val" and not k.startswith("worker_"))
    if extra:
        raise ConfigError(f"{where}: unexpected arrays {extra} (allowed: worker_0 ... worker_{{n-1}} or workers, val)")
    if len(workers) != n_honest:
        raise ConfigError(f"{where}: has {len(workers)} workers, n_honest = {n_honest}")
    workers = [_index_array(f"{where}: worker {i}", w, n_train) for i, w in enumerate(workers)]
    empty = [i for i, w in enumerate(workers) if w.size == 0]
    if empty:
        raise ConfigError(f"{where}: workers {empty} have no images")
    val = _index_array(f"{where}: val", arrays["val"], n_train) if "val" in arrays else None
    every = np.concatenate(workers + ([] if val is None else [val]))
    counts = np.bincount(every, minlength=n_train)
    if counts.max() > 1:
        dup = np.flatnonzero(counts > 1)
        raise ConfigError(f"{where}: {dup.size} images are held more than once (first: index {int(dup[0])})")
    return Partition(workers, val)


def partitioned_dataset(source: str | os.PathLike, partition_path, n_honest: int, *, normalization="dataset",
                        synthetic_size: tuple[int, int] = (6000, 1000)) -> tuple[Dataset, list[np.ndarray]]:
    """The data set with a user-given partition: ``(dataset, shards)``.

    The dataset's training part is the WHOLE training set in file order (so the partition's
    indices index it directly), the validation part is ``val`` if given, else the training images
    no worker holds; the test part is the test files.
    """
    if str(source) == "synthetic":
        syn = synthetic_dataset(n_train=synthetic_size[0], n_test=synthetic_size[1])
        x, y = np.concatenate([syn.val_x, syn.train_x]), np.concatenate([syn.val_y, syn.train_y])
        test_x, test_y, mean, std, name = syn.test_x, syn.test_y, syn.mean, syn.std, syn.name
    else:
        arrays = load_idx_folder(source)
        mean, std = _normalisation(arrays["train_images"], normalization)

        def prep(images):
            return ((images.reshape(images.shape[0], -1).astype(np.float32) / 255.0) - mean) / std

        x, y = prep(arrays["train_images"]), arrays["train_labels"].astype(np.int32)
        test_x, test_y, name = prep(arrays["test_images"]), arrays["test_labels"].astype(np.int32), Path(source).name
    part = load_partition(partition_path, n_honest, len(y))
    val = part.val
    if val is None:
        held = np.zeros(len(y), bool)
        held[np.concatenate(part.workers)] = True
        val = np.flatnonzero(~held)
        if val.size == 0:
            raise ConfigError(f"[data] partition {partition_path}: the workers hold every training image and no "
                              "'val' indices are given: add a 'val' array (the validation images)")
    return Dataset(x, y, x[val], y[val], test_x, test_y, mean, std, name), part.workers
