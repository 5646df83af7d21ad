"""User-given partition ([data] partition) and initial point ([problem] init) files; progress names."""

import io

import numpy as np
import pytest

from byzjax import progress
from byzjax._validation import ConfigError
from byzjax.app.config import load_init, parse_config, read_init
from byzjax.data import load_partition, partitioned_dataset
from byzjax.problems import LogisticRegression

N_TRAIN = 6000  # the synthetic training set (train + validation parts, in draw order)


def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_partition_file_gives_exactly_the_workers_shards(tmp_path):
    rng = np.random.default_rng(0)
    perm = rng.permutation(N_TRAIN)
    workers = np.array_split(perm[:5000], 4)
    path = save(tmp_path / "p.npz", **{f"worker_{i}": w for i, w in enumerate(workers)}, val=perm[5000:5500])
    ds, shards = partitioned_dataset("synthetic", path, 4)
    assert [list(s) for s in shards] == [list(w) for w in workers]
    assert ds.train_x.shape[0] == N_TRAIN and ds.val_x.shape[0] == 500
    np.testing.assert_array_equal(ds.val_x, ds.train_x[perm[5000:5500]])
    # one 2-D array 'workers' (no pickle needed); without 'val' the validation set is what no worker holds
    ds2, shards2 = partitioned_dataset("synthetic", save(tmp_path / "q.npz", workers=np.stack([perm[:100],
                                                                                              perm[100:200]])), 2)
    assert ds2.val_x.shape[0] == N_TRAIN - 200 and list(shards2[1]) == list(perm[100:200])


def test_partition_through_the_config(tmp_path):
    save(tmp_path / "p.npz", worker_0=np.arange(10), worker_1=np.arange(10, 30))
    (tmp_path / "c.toml").write_text('[data]\nsource = "synthetic"\nn_honest = 2\npartition = "p.npz"\n'
                                     '[[algorithm]]\nname = "DGD"\n')
    from byzjax.app.config import load_config
    from byzjax.app.runner import prepare

    cfg = load_config(tmp_path / "c.toml")
    assert cfg.data.partition == str(tmp_path / "p.npz") and cfg.runs[0].columns["split"] == "partition"
    _, _, data = prepare(cfg)
    np.testing.assert_array_equal(data.shards.mask.sum(axis=-1), [[10, 20]])
    with pytest.raises(ConfigError, match="give either partition"):
        parse_config({"data": {"partition": "p.npz", "split": "iid"}, "algorithm": [{"name": "DGD"}]})


@pytest.mark.parametrize("arrays, message", [
    ({"worker_0": np.arange(5)}, "has 1 workers, n_honest = 2"),
    ({"worker_0": np.arange(5), "worker_1": np.array([4, 6])}, "1 images are held more than once .first: index 4"),
    ({"worker_0": np.arange(5), "worker_1": np.array([N_TRAIN])}, f"index {N_TRAIN} is out of range"),
    ({"worker_0": np.arange(5), "worker_1": np.array([-1])}, "index -1 is out of range"),
    ({"worker_0": np.arange(5), "worker_1": np.array([], int)}, r"workers \[1\] have no images"),
    ({"worker_0": np.arange(5), "worker_1": np.array([1.5])}, "must be a 1-D array of integer indices"),
    ({"worker_0": np.arange(5), "worker_2": np.arange(6, 8)}, "must be named worker_0"),
    ({"worker_0": np.arange(5), "worker_1": np.arange(6, 8), "val": np.array([0])}, "held more than once"),
    ({"worker_0": np.arange(5), "worker_1": np.arange(6, 8), "extra": np.arange(2)}, r"unexpected arrays \['extra'\]"),
])
def test_bad_partitions_are_one_line_errors(tmp_path, arrays, message):
    path = save(tmp_path / "p.npz", **arrays)
    with pytest.raises(ConfigError, match=message) as err:
        load_partition(path, 2, N_TRAIN)
    assert "\n" not in str(err.value)


def test_init_file_in_nn_linear_layout_maps_to_the_flat_layout(tmp_path):
    rng = np.random.default_rng(1)
    problem = LogisticRegression(num_features=5, num_classes=3)
    for _ in range(10):
        weight, bias = rng.normal(size=(3, 5)), rng.normal(size=3)
        flat = load_init(save(tmp_path / "w.npz", weight=weight, bias=bias), problem)
        w, b = problem.unpack(flat)  # byzjax's W is [p, c]: logits = a @ W + b = nn.Linear(a)
        a = rng.normal(size=(4, 5))
        np.testing.assert_allclose(a @ np.asarray(w) + np.asarray(b), a @ weight.T + bias, rtol=1e-12)
        np.testing.assert_array_equal(load_init(save(tmp_path / "x.npz", x0=flat), problem), flat)


@pytest.mark.parametrize("arrays, message", [
    ({"x0": np.zeros(7)}, "has 7 values, LogisticRegression needs d = 18"),
    ({"x0": np.zeros((3, 6))}, "must be a 1-D array"),
    ({"weight": np.zeros((3, 5)), "bias": np.zeros(2)}, r"weight must be \[c, p\] and bias \[c\]"),
    ({"weight": np.zeros((5, 3)), "bias": np.zeros(5)}, "has 20 values"),
    ({"x0": np.full(18, np.nan)}, "18 non-finite values"),
    ({"a": np.zeros(18), "b": np.zeros(18)}, "expected one flat array or the arrays weight and bias"),
])
def test_bad_init_files_are_one_line_errors(tmp_path, arrays, message):
    problem = LogisticRegression(num_features=5, num_classes=3)
    with pytest.raises(ConfigError, match=message):
        load_init(save(tmp_path / "i.npz", **arrays), problem)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz file"):
        read_init(tmp_path / "junk.npz")


def test_init_is_carried_in_the_problem_spec_and_checked_at_build(tmp_path):
    from byzjax.data import synthetic_dataset

    save(tmp_path / "i.npz", x0=np.arange(18.0))
    cfg = parse_config({"problem": {"init": str(tmp_path / "i.npz")}, "algorithm": [{"name": "DGD"}]})
    np.testing.assert_array_equal(cfg.problem.x0, np.arange(18.0))
    assert cfg.to_dict()["problem"]["init"] == str(tmp_path / "i.npz")
    cfg.problem.build(synthetic_dataset(n_train=50, n_test=10, num_features=5, num_classes=3))
    with pytest.raises(ConfigError, match="needs d = 7850"):
        cfg.problem.build(synthetic_dataset(n_train=50, n_test=10))


def test_progress_names_each_program_and_counts_i_of_n():
    stream = io.StringIO()
    with progress.grid([("D-GD | ALIE | f=1", 10), ("PIGS | ALIE | f=1", 30)], label="g"):
        for total in (10, 10):
            bar = progress.ProgressBar(total, stream=stream)
            for t in range(total):
                bar.update(t)
    text = stream.getvalue()
    assert "g program 1 of 2: D-GD | ALIE | f=1" in text and "g program 2 of 2: PIGS | ALIE | f=1" in text
    assert "program 3" not in text and "grid ETA" in text


def test_a_run_from_a_config_starts_at_the_given_initial_point(tmp_path):
    """End to end: [problem] init reaches Experiment(x0=...), so every seed's first logged loss is
    the honest loss at that point (NumPy float64 on that seed's shards). The synthetic source at
    ``helpers.SMALL_SYNTHETIC``'s size: the path from the file to the run is what is tested."""
    from byzjax.app.runner import execute, prepare
    from helpers import SMALL_SYNTHETIC, np_logistic_loss_grad, small_synthetic

    p, c = SMALL_SYNTHETIC["num_features"], SMALL_SYNTHETIC["num_classes"]
    x0 = np.random.default_rng(1).normal(size=(p + 1) * c) * 0.01
    save(tmp_path / "i.npz", x0=x0)
    cfg = parse_config({"seeds": 2, "rounds": 2, "eval_every": 1, "data": {"source": "synthetic", "n_honest": 3},
                        "problem": {"init": str(tmp_path / "i.npz"), "lam": 1e-2},
                        "algorithm": [{"name": "DGD", "lr": 0.1}]})
    with small_synthetic():
        prepared = prepare(cfg)
        runs, _, _ = execute(cfg, None, show_progress=False, prepared=prepared)
    assert prepared[0].num_features == p and prepared[0].num_classes == c
    shards = prepared[2].shards
    assert len(runs) == 2
    for _, seed, _, trace in runs:
        s = cfg.seeds.index(seed)
        real = [np.asarray(shards.mask[s, w]) > 0 for w in range(3)]
        losses = [np_logistic_loss_grad(x0, np.asarray(shards.x[s, w])[real[w]], np.asarray(shards.y[s, w])[real[w]],
                                        1e-2, p, c)[0] for w in range(3)]
        np.testing.assert_allclose(trace.metrics["loss"][0], np.mean(losses), rtol=1e-5)
