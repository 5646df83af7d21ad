import gzip
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax.data import (DataError, load_dataset, load_idx_folder, pad_shards, read_idx, split_dirichlet,
                         split_indices, stack_seeds, federated_classification, synthetic_dataset, FederatedData,
                         Shards)
from byzjax._validation import ConfigError
from helpers import np_logistic_loss_grad, tiny_classification


def write_idx(path, array, gz=True, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_folder(tmp_path, n_train=50, n_test=20, labels_max=9, gz=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", rng.integers(0, labels_max + 1, n_train), gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n_test), gz)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_and_normalisation(tmp_path, gz):
    folder = make_folder(tmp_path, gz=gz)
    arrays = load_idx_folder(folder)
    assert arrays["train_images"].shape == (50, 28, 28) and arrays["test_labels"].shape == (20,)
    ds = load_dataset(folder, val_fraction=0.2)
    assert ds.train_x.shape == (40, 784) and ds.val_x.shape == (10, 784) and ds.test_x.shape == (20, 784)
    pixels = arrays["train_images"].astype(np.float64) / 255
    np.testing.assert_allclose([ds.mean, ds.std], [pixels.mean(), pixels.std()])
    both = np.concatenate([ds.train_x, ds.val_x])
    np.testing.assert_allclose([both.mean(), both.std()], [0.0, 1.0], atol=1e-4)
    assert load_dataset(folder, normalization="mnist").mean == 0.1307


def test_loader_errors_name_the_file(tmp_path):
    folder = make_folder(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # truncated body
    with pytest.raises(DataError, match="train-images.*announces"):
        load_idx_folder(folder)
    path.write_bytes(b"\x12\x34\x08\x03" + raw[4:])
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images"):
        read_idx(path)


def test_loader_errors_labels_and_missing(tmp_path):
    with pytest.raises(DataError, match="labels must be in 0..9"):
        load_idx_folder(make_folder(tmp_path, labels_max=12))
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-images"):
        load_idx_folder(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset(tmp_path / "nope")
    make_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((7, 28, 28)))
    with pytest.raises(DataError, match="7 images but labels"):
        load_idx_folder(tmp_path)


def test_dirichlet_split_is_a_partition_with_unequal_shards():
    labels = np.random.default_rng(1).integers(0, 10, 3000)
    shards = split_indices(labels, 20, "dirichlet", 1.0, seed=3)
    allidx = np.concatenate(shards)
    assert len(allidx) == len(labels) and len(np.unique(allidx)) == len(labels)
    sizes = [len(s) for s in shards]
    assert max(sizes) > 1.5 * min(sizes)
    iid = split_indices(labels, 20, "iid", None, seed=3)
    assert {len(s) for s in iid} == {150}
    again = split_indices(labels, 20, "dirichlet", 1.0, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))


def test_dirichlet_follows_per_class_cumsum_cuts():
    labels = np.repeat(np.arange(3), [100, 50, 30])
    rng = np.random.default_rng(7)
    shards = split_dirichlet(labels, 4, 0.5, np.random.default_rng(7))
    for k, n_k in zip(range(3), (100, 50, 30)):
        idx = rng.permutation(np.flatnonzero(labels == k))
        p = rng.dirichlet(0.5 * np.ones(4))
        sizes = np.diff(np.concatenate([[0], np.floor(np.cumsum(p) * n_k).astype(int)[:-1], [n_k]]))
        got = [np.sum(labels[s] == k) for s in shards]
        np.testing.assert_array_equal(got, sizes)


def test_padded_worker_losses_equal_unpadded_numpy():
    ds, data, problem = tiny_classification()
    shards = split_indices(ds.train_y, 5, "dirichlet", 1.0, 0)
    assert len({len(s) for s in shards}) > 1
    x = np.random.default_rng(2).normal(size=problem.dim)
    losses, grads = jax.vmap(jax.value_and_grad(problem.loss), in_axes=(None, 0))(jnp.asarray(x), data.shards)
    for i, s in enumerate(shards):
        ref_loss, ref_grad = np_logistic_loss_grad(x, ds.train_x[s].astype(np.float64), ds.train_y[s], 1e-2, 12, 3)
        np.testing.assert_allclose(losses[i], ref_loss, rtol=1e-5)
        np.testing.assert_allclose(grads[i], ref_grad, rtol=1e-4, atol=1e-6)


def test_stack_seeds_pads_to_common_width():
    ds = synthetic_dataset(n_train=300, num_features=5, num_classes=3)
    datas = [federated_classification(ds, 4, "dirichlet", 0.5, s) for s in range(3)]
    stacked = stack_seeds(datas)
    m = max(d.shards.x.shape[1] for d in datas)
    assert stacked.shards.x.shape == (3, 4, m, 5)
    np.testing.assert_array_equal(stacked.shards.mask.sum(axis=(1, 2)), [len(ds.train_y)] * 3)


def test_split_errors():
    with pytest.raises(ConfigError, match="unknown split"):
        split_indices(np.zeros(10, int), 2, "byclass", None, 0)
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        split_indices(np.zeros(10, int), 2, "dirichlet", 0.0, 0)
    with pytest.raises(ConfigError, match="without data"):
        split_indices(np.zeros(3, int), 5, "iid", None, 0)


def test_test_images_of_another_size_are_a_one_line_error(tmp_path):
    make_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((20, 27, 27)))
    with pytest.raises(DataError, match="test images are 27x27 but training images are 28x28"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("val_fraction", [1.5, 0, True, "0.2"])
def test_val_fraction_is_checked_for_every_source(val_fraction):
    with pytest.raises(ConfigError, match="val_fraction must be a number in"):
        load_dataset("synthetic", val_fraction=val_fraction)


def test_pad_and_stack_any_sample_shape_equal_the_flat_ones_reshaped():
    """Image features [N, H, W, C] pad and stack exactly as their flat pixels, reshaped."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 4))))
        n = int(rng.integers(20, 60))
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        y = rng.integers(0, 3, size=n).astype(np.int32)
        flat = x.reshape(n, -1)
        datas, flats = [], []
        for seed in range(3):
            shards = split_indices(y, 4, "dirichlet", 1.0, seed + 10 * trial)
            xs, ys, mask = pad_shards(x, y, shards)
            fx, fy, fmask = pad_shards(flat, y, shards)
            assert xs.shape == fx.shape[:2] + shape
            np.testing.assert_array_equal(xs.reshape(fx.shape), fx)
            np.testing.assert_array_equal(ys, fy)
            np.testing.assert_array_equal(mask, fmask)
            datas.append(FederatedData(Shards(xs, ys, mask), {}))
            flats.append(FederatedData(Shards(fx, fy, fmask), {}))
        stacked, stacked_flat = stack_seeds(datas), stack_seeds(flats)
        assert stacked.shards.x.shape == stacked_flat.shards.x.shape[:3] + shape
        np.testing.assert_array_equal(stacked.shards.x.reshape(stacked_flat.shards.x.shape), stacked_flat.shards.x)
        np.testing.assert_array_equal(stacked.shards.mask, stacked_flat.shards.mask)
    with pytest.raises(ConfigError, match="width=2 is smaller than the largest shard"):
        pad_shards(x, y, [np.arange(5)], width=2)


def test_dataset_of_images_counts_pixels_and_reports_per_channel_normalization():
    ds = synthetic_dataset(n_train=100, num_features=48, num_classes=3)
    images = ds._replace(train_x=ds.train_x.reshape(-1, 4, 4, 3), val_x=ds.val_x.reshape(-1, 4, 4, 3),
                         test_x=ds.test_x.reshape(-1, 4, 4, 3), mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    assert images.sample_shape == (4, 4, 3) and images.num_features == 48 == ds.num_features
    assert images.normalization == [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]] and ds.normalization == [0.0, 1.0]
    data = federated_classification(images, 3, "iid", None, 0)
    assert data.shards.x.shape[2:] == (4, 4, 3) and int(data.shards.mask.sum()) == len(ds.train_y)
