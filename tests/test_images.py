"""Image data sets: CIFAR-10 pickles (tiny generated files), Fashion-MNIST as images, synthetic images."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.data import DEFAULT_DATA_DIR, DataError, load_dataset
from byzjax.images import (
    CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, federated_images, load_cifar10, load_fashion_mnist, read_cifar_batch,
    synthetic_images,
)


def write_batch(path, images_chw, labels, *, bytes_keys=True):
    """A CIFAR python-pickle batch: {data: uint8 [k, 3072] (R, G, B planes), labels: list}."""
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    batch = {key("batch_label"): key("test batch"), key("data"): images_chw.reshape(images_chw.shape[0], -1),
             key("labels"): list(map(int, labels)), key("filenames"): [key(f"{i}.png") for i in range(len(labels))]}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path, rng):
    images = {}
    for i, name in enumerate(CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)):
        chw = rng.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 6)
        write_batch(tmp_path / name, chw, labels, bytes_keys=i % 2 == 0)
        images[name] = (chw, labels)
    return tmp_path, images


def test_cifar_batch_layout(cifar_dir):
    folder, images = cifar_dir
    x, y = read_cifar_batch(folder / "data_batch_1")
    chw, labels = images["data_batch_1"]
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 31, 5), (5, 1, 7, 30)]:  # pixel (h, w) of channel c
        assert x[n, h, w, c] == chw[n, c, h, w]
    np.testing.assert_array_equal(y, labels)


def test_load_cifar10_normalises_per_channel_and_splits(cifar_dir):
    folder, images = cifar_dir
    ds = load_cifar10(folder, val_fraction=0.2, seed=3)
    train = np.concatenate([images[n][0] for n in CIFAR10_TRAIN_FILES]).transpose(0, 2, 3, 1) / 255.0
    mean, std = train.reshape(-1, 3).mean(0), train.reshape(-1, 3).std(0)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(ds.std, std, rtol=1e-10)
    assert ds.train_x.shape == (24, 32, 32, 3) and ds.val_x.shape == (6, 32, 32, 3) and ds.test_x.shape == (6, 32, 32, 3)
    assert ds.train_x.dtype == np.float32 and ds.name == "cifar10"
    everything = np.concatenate([ds.train_x, ds.val_x]).astype(np.float64)
    np.testing.assert_allclose(everything.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(everything.reshape(-1, 3).std(0), 1, atol=1e-5)
    test_chw, test_labels = images[CIFAR10_TEST_FILE]
    np.testing.assert_allclose(ds.test_x, (test_chw.transpose(0, 2, 3, 1) / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, test_labels)
    fixed = load_cifar10(folder, normalization=[[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    np.testing.assert_allclose(fixed.test_x, (test_chw.transpose(0, 2, 3, 1) / 255.0 - 0.5) / 0.25, atol=1e-5)
    outer = folder / "outer"  # the archive's own folder name is found too
    shutil.copytree(folder, outer / "cifar-10-batches-py", ignore=shutil.ignore_patterns("outer"))
    np.testing.assert_array_equal(load_cifar10(outer, seed=3).train_y, ds.train_y)


def test_cifar_errors(cifar_dir, tmp_path_factory):
    folder, _ = cifar_dir
    with pytest.raises(DataError, match="CIFAR-10 folder not found: .*nowhere"):
        load_cifar10(folder / "nowhere")
    os.remove(folder / "data_batch_4")
    with pytest.raises(DataError, match="CIFAR-10 file not found: .*data_batch_4"):
        load_cifar10(folder)
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-10])
    with pytest.raises(DataError, match="truncated is not a CIFAR-10 python pickle"):
        read_cifar_batch(bad / "truncated")
    with open(bad / "evil", "wb") as fh:  # a pickle calling os.system must not run
        pickle.dump({"data": os.system}, fh)
    with pytest.raises(DataError, match=r"evil is not a CIFAR-10 python pickle .*forbidden global (posix|os)\.system"):
        read_cifar_batch(bad / "evil")
    write_batch(bad / "shape", np.zeros((2, 3, 16, 16), np.uint8), [0, 1])
    with pytest.raises(DataError, match=r"shape: 'data' must be uint8 \[k, 3072\], got uint8 \(2, 768\)"):
        read_cifar_batch(bad / "shape")
    write_batch(bad / "labels", np.zeros((2, 3, 32, 32), np.uint8), [0, 10])
    with pytest.raises(DataError, match=r"labels: labels must be in 0..9, found 0..10"):
        read_cifar_batch(bad / "labels")
    write_batch(bad / "count", np.zeros((2, 3, 32, 32), np.uint8), [0])
    with pytest.raises(DataError, match=r"count: 2 images but labels of shape \(1,\)"):
        read_cifar_batch(bad / "count")
    with open(bad / "list", "wb") as fh:
        pickle.dump([1, 2], fh)
    with pytest.raises(DataError, match="list: expected a pickled dict, got list"):
        read_cifar_batch(bad / "list")
    write_batch(folder / "data_batch_4", np.zeros((6, 3, 32, 32), np.uint8), np.zeros(6))
    with pytest.raises(ConfigError, match=r"normalization needs 3 means and 3 stds > 0, got \[\[0.5\], \[1.0\]\]"):
        load_cifar10(folder, normalization=[[0.5], [1.0]])
    with pytest.raises(ConfigError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        load_cifar10(folder, val_fraction=1.5)

def test_synthetic_images_shapes_and_learnable_signal():
    for shape in [(28, 28, 1), (32, 32, 3)]:
        ds = synthetic_images(shape, seed=1, n_train=500, n_test=300, num_classes=5, signal=0.5)
        assert ds.train_x.shape == (400,) + shape and ds.val_x.shape == (100,) + shape
        assert ds.test_x.shape == (300,) + shape and ds.train_x.dtype == np.float32
        again = synthetic_images(shape, seed=1, n_train=500, n_test=300, num_classes=5, signal=0.5)
        np.testing.assert_array_equal(again.test_x, ds.test_x)
        # class-dependent: nearest class mean (from the training part) classifies the test part
        means = np.stack([ds.train_x[ds.train_y == k].mean(0) for k in range(5)])
        dist = ((ds.test_x[:, None] - means[None]) ** 2).reshape(300, 5, -1).sum(-1)
        assert np.mean(dist.argmin(1) == ds.test_y) > 0.9
    with pytest.raises(ConfigError, match=r"multiples of cell=4, got shape \(30, 30, 1\)"):
        synthetic_images((30, 30, 1))


def test_federated_images_matches_flat_split():
    ds = synthetic_images((32, 32, 3), seed=0, n_train=200, n_test=50, num_classes=4)
    data = federated_images(ds, 4, "dirichlet", 1.0, seed=2)
    s = data.shards
    assert s.x.shape[0] == 4 and s.x.shape[2:] == (32, 32, 3) and s.y.shape == s.mask.shape == s.x.shape[:2]
    for w in range(4):  # every worker's real images are training images with their labels
        real = s.mask[w] > 0
        flat = ds.train_x.reshape(len(ds.train_x), -1)
        idx = [int(np.flatnonzero((flat == img.reshape(-1)).all(1))[0]) for img in s.x[w][real]]
        np.testing.assert_array_equal(ds.train_y[idx], s.y[w][real])
    assert int(s.mask.sum()) == len(ds.train_y)
    assert data.evaluation["test"][0].shape == (50, 32, 32, 3)


@pytest.mark.skipif(not DEFAULT_DATA_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_as_images():
    ds = load_fashion_mnist()
    flat = load_dataset()
    assert ds.train_x.shape[1:] == (28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(ds.val_x.reshape(len(ds.val_x), -1), flat.val_x)
    np.testing.assert_array_equal(ds.train_y, flat.train_y)


# ---- [problem] name = a network, data in the problem's layout ------------------------------------

def _net_config(name, source, **problem):
    from byzjax.app.config import parse_config

    return parse_config({"name": "t", "seeds": 2, "rounds": 2, "eval_every": 2,
                         "data": {"source": source, "n_honest": 3, "split": "iid"},
                         "problem": {"name": name, **problem}, "workers": {"batch_size": 4},
                         "aggregator": {"name": "Average"}, "algorithm": [{"name": "DGD", "lr": 0.1}]})


def test_config_network_problem_loads_images_in_its_input_shape(cifar_dir):
    from byzjax.app.runner import prepare
    from byzjax.networks import NetworkClassification

    cfg = _net_config("cnn_mnist", "synthetic", lam=0.01, batch_capacity=4)
    assert cfg.to_dict()["problem"] == {"name": "cnn_mnist", "lam": 0.01, "eval_chunk": 1000, "batch_capacity": 4}
    ds, problem, data = prepare(cfg)
    assert isinstance(problem, NetworkClassification) and type(problem).__name__ == "cnn_mnist"
    assert problem.dim == 431080 and np.isclose(float(problem.lam), 0.01) and problem.batch_capacity == 4
    assert ds.sample_shape == (28, 28, 1)
    assert data.shards.x.shape[:2] == (2, 3) and data.shards.x.shape[3:] == (28, 28, 1)
    folder, _ = cifar_dir
    ds, problem, data = prepare(_net_config("cnn_cifar", f"cifar10:{folder}"))
    assert type(problem).__name__ == "cnn_cifar" and data.shards.x.shape[3:] == (32, 32, 3)
    assert ds.normalization[0] == list(ds.mean) and len(ds.normalization[0]) == 3
    ds, problem, _ = prepare(_net_config("LogisticRegression", f"cifar10:{folder}"))
    assert ds.sample_shape == (3072,) and problem.dim == 3073 * 10
    from byzjax import registry

    assert registry.problem_params("ResNet18")["groups"].default == 32  # its model option is a config parameter
    assert "groups" in _net_config("ResNet18", "synthetic", groups=8).to_dict()["problem"]


def test_config_network_errors_are_one_line(cifar_dir):
    from byzjax.app.config import build_experiment
    from byzjax.app.runner import prepare

    folder, _ = cifar_dir
    with pytest.raises(ConfigError, match=r"problem cnn_mnist: cnn_mnist needs 28x28x1 images, the data set 'cifar10' "
                                          r"has samples of shape 32x32x3"):
        prepare(_net_config("cnn_mnist", f"cifar10:{folder}"))
    with pytest.raises(ConfigError, match=r"\[problem\] \(fc_mnist\): unknown key\(s\) \['groups'\]"):
        _net_config("fc_mnist", "synthetic", groups=2)
    with pytest.raises(ConfigError, match=r"\[problem\] \(fc_mnist\): unknown key\(s\) \['num_classes'\]"):
        _net_config("fc_mnist", "synthetic", num_classes=3)
    with pytest.raises(ConfigError, match=r"lam must be a finite number >= 0, got -1"):
        _net_config("fc_mnist", "synthetic", lam=-1)
    with pytest.raises(ConfigError, match=r"CIFAR-10 folder not found"):
        prepare(_net_config("cnn_cifar", f"cifar10:{folder}/nope"))
    with pytest.raises(ConfigError, match=r"needs a folder: cifar10:DIR"):
        prepare(_net_config("cnn_cifar", "cifar10:"))
    cfg = _net_config("fc_mnist", "synthetic", batch_capacity=2)
    _, problem, _ = prepare(cfg)
    with pytest.raises(ConfigError, match=r"batch_size must be <= batch_capacity=2, got batch_size=\[4\]"):
        build_experiment(cfg.runs[0], problem, 3, 2, 2)


def test_per_channel_normalization_in_config(cifar_dir):
    from byzjax.app.config import parse_config
    from byzjax.app.runner import prepare

    folder, _ = cifar_dir
    cfg = _net_config("cnn_cifar", f"cifar10:{folder}")
    raw = cfg.raw | {"data": cfg.raw["data"] | {"normalization": [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]}}
    cfg = parse_config(raw)
    assert cfg.to_dict()["data"]["normalization"] == [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]
    ds, _, _ = prepare(cfg)
    assert ds.normalization == [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]
    with pytest.raises(ConfigError, match=r"normalization must be .*as many means as stds"):
        parse_config(raw | {"data": raw["data"] | {"normalization": [[0.5, 0.4], [0.2]]}})


def test_cifar10_experiment_config_builds_on_synthetic_images():
    """experiments/cifar10_cnn.py's setting: cnn_cifar on 32x32x3 images, 20 + 1 workers, Dirichlet(5),
    weight decay 0.01, D-GD / PIGS / AEG, built (not run: a full-batch cnn_cifar round is GPU work)."""
    import importlib.util
    from pathlib import Path

    from byzjax.app.config import build_experiment, parse_config
    from byzjax.app.runner import prepare

    path = Path(__file__).resolve().parents[1] / "experiments" / "cifar10_cnn.py"
    spec = importlib.util.spec_from_file_location("cifar10_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = parse_config(module.config("synthetic", rounds=2, seeds=1, eval_every=1, quick=True))
    ds, problem, data = prepare(cfg)
    assert type(problem).__name__ == "cnn_cifar" and problem.dim == 2324630 and np.isclose(float(problem.lam), 0.01)
    assert data.shards.x.shape[1:2] == (20,) and data.shards.x.shape[3:] == (32, 32, 3)
    exps = [build_experiment(r, problem, 20, 2, 1) for r in cfg.runs]
    assert [type(e.algorithm).__name__ for e in exps] == ["DGD", "PIGS", "AEG"]
    assert all(e.oracle.n_byz == 1 and e.oracle.n_honest == 20 for e in exps)
    assert cfg.data.split == "dirichlet" and cfg.data.alpha == 5.0
