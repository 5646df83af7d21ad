"""ByzFL's other splits (issue 12): ``gamma_similarity`` (ByzFL's gamma_similarity_niid) and ``extreme``
(extreme_niid), in byzjax.data and in a config's [data] section.

References are independent NumPy re-statements of ByzFL's DataDistributor: a gamma fraction of a random
order split iid, the rest sorted by (label, index) and cut into equal consecutive parts."""

import itertools

import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.app.config import parse_config
from byzjax.data import split_indices

CASES = [(n_samples, n_workers, classes) for n_samples in (37, 200, 1001) for n_workers in (1, 3, 7)
         for classes in (2, 10)]


def labels_of(seed, n, classes):
    return np.random.default_rng(seed).integers(0, classes, size=n)


def as_sets(shards):
    return [frozenset(int(i) for i in s) for s in shards]


def check_partition(shards, n, n_workers):
    assert len(shards) == n_workers
    every = np.concatenate(shards)
    assert len(every) == n and len(np.unique(every)) == n  # disjoint and covering


def np_extreme(labels, n_workers):
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))  # (label, index), as ByzFL's sorted(zip(...))
    sizes = [len(labels) // n_workers + (w < len(labels) % n_workers) for w in range(n_workers)]
    cuts = np.cumsum([0] + sizes)
    return [set(order[cuts[w]:cuts[w + 1]]) for w in range(n_workers)]


def test_extreme_is_label_sorted_equal_consecutive_parts():
    for seed, (n, n_workers, classes) in enumerate(CASES):
        labels = labels_of(seed, n, classes)
        shards = split_indices(labels, n_workers, "extreme", None, seed)
        check_partition(shards, n, n_workers)
        assert [set(map(int, s)) for s in shards] == np_extreme(labels, n_workers)
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1
        # consecutive in label order: every label of worker w is <= every label of worker w + 1
        for a, b in itertools.pairwise(shards):
            assert labels[a].max() <= labels[b].min()
        # it does not depend on the seed
        assert as_sets(split_indices(labels, n_workers, "extreme", None, seed + 1)) == as_sets(shards)


def test_gamma_similarity_sizes_composition_and_limits():
    for seed, (n, n_workers, classes) in enumerate(CASES):
        labels = labels_of(seed, n, classes)
        for gamma in (0.0, 0.25, 0.5, 0.9, 1.0):
            shards = split_indices(labels, n_workers, "gamma_similarity", gamma, seed)
            check_partition(shards, n, n_workers)
            sizes = [len(s) for s in shards]
            assert max(sizes) - min(sizes) <= 2, (gamma, sizes)
        # gamma = 0 is the extreme split, gamma = 1 the iid split of the same seed
        assert as_sets(split_indices(labels, n_workers, "gamma_similarity", 0.0, seed)) == \
            as_sets(split_indices(labels, n_workers, "extreme", None, seed))
        assert as_sets(split_indices(labels, n_workers, "gamma_similarity", 1.0, seed)) == \
            as_sets(split_indices(labels, n_workers, "iid", None, seed))


def test_gamma_similarity_matches_an_independent_reference():
    for seed, (n, n_workers, classes) in enumerate(CASES):
        labels = labels_of(seed, n, classes)
        for gamma in (0.3, 0.7):
            perm = np.random.default_rng(seed).permutation(n)  # the split's own first draw
            k = int(n * gamma)
            iid = np.array_split(perm[:k], n_workers)
            rest = perm[k:]
            extreme = [rest[sorted(range(len(rest)), key=lambda j: (labels[rest[j]], rest[j]))][list(p)]
                       for p in np.array_split(np.arange(len(rest)), n_workers)]
            want = [set(map(int, a)) | set(map(int, b)) for a, b in zip(iid, extreme)]
            got = split_indices(labels, n_workers, "gamma_similarity", gamma, seed)
            assert [set(map(int, s)) for s in got] == want


def test_gamma_moves_label_composition_from_iid_to_extreme():
    """Mean total-variation distance between a worker's label histogram and the global one:
    small at gamma = 1, large at gamma = 0, decreasing in gamma (on average over seeds)."""
    n, n_workers, classes = 2000, 10, 10
    gammas = (0.0, 0.33, 0.66, 1.0)
    tv = np.zeros(len(gammas))
    for seed in range(5):
        labels = labels_of(seed, n, classes)
        glob = np.bincount(labels, minlength=classes) / n
        for g, gamma in enumerate(gammas):
            shards = split_indices(labels, n_workers, "gamma_similarity", gamma, seed)
            tv[g] += np.mean([0.5 * np.abs(np.bincount(labels[s], minlength=classes) / len(s) - glob).sum()
                              for s in shards]) / 5
    assert tv[-1] < 0.1 and tv[0] > 0.7
    assert np.all(np.diff(tv) < 0), tv
    # at gamma = 0 each worker sees at most 2 classes (sorted labels, 200 samples per worker, ~200 per class)
    labels = labels_of(0, n, classes)
    assert max(len(np.unique(labels[s])) for s in split_indices(labels, n_workers, "extreme", None, 0)) <= 3


def test_reproducible_from_the_seed():
    labels = labels_of(3, 500, 5)
    for split, param in (("gamma_similarity", 0.5), ("iid", None), ("dirichlet", 1.0)):
        a = split_indices(labels, 6, split, param, 11)
        b = split_indices(labels, 6, split, param, 11)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        c = split_indices(labels, 6, split, param, 12)
        assert as_sets(a) != as_sets(c)


def test_bad_split_values_are_one_line_errors():
    labels = labels_of(0, 50, 3)
    for gamma in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"gamma must be in \[0, 1\], got") as err:
            split_indices(labels, 3, "gamma_similarity", gamma, 0)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="'gamma_similarity' needs gamma"):
        split_indices(labels, 3, "gamma_similarity", None, 0)
    with pytest.raises(ConfigError, match="'extreme' takes no parameter"):
        split_indices(labels, 3, "extreme", 0.5, 0)
    with pytest.raises(ConfigError, match=r"extreme split left workers \[3, 4\] without data \(3 samples"):
        split_indices(labels[:3], 5, "extreme", None, 0)
    with pytest.raises(ConfigError, match="unknown split 'byclass' .*'gamma_similarity', 'extreme'"):
        split_indices(labels, 3, "byclass", None, 0)


BASE = {"rounds": 2, "eval_every": 1, "byzantine": {"f": 1, "attack": "SignFlipping"},
        "aggregator": {"name": "TrMean"}, "algorithm": [{"name": "DGD", "lr": 0.1}]}


def data_config(**data):
    return BASE | {"data": {"source": "synthetic", "n_honest": 4} | data}


def test_config_splits_sweep_each_with_its_own_parameter_and_read_back():
    cfg = parse_config(data_config(split=["iid", "dirichlet", "gamma_similarity", "extreme"], alpha=[0.1, 1.0],
                                   gamma=[0.0, 0.5]))
    inst = [(d.split, d.alpha) for d in cfg.data_instances]
    assert inst == [("iid", None), ("dirichlet", 0.1), ("dirichlet", 1.0), ("gamma_similarity", 0.0),
                    ("gamma_similarity", 0.5), ("extreme", None)]
    assert [(r.columns["split"], r.columns["alpha"]) for r in cfg.runs] == [(s, "" if a is None else a)
                                                                            for s, a in inst]
    resolved = cfg.to_dict()["data"]
    assert resolved["alpha"] == [0.1, 1.0] and resolved["gamma"] == [0.0, 0.5]
    assert parse_config(cfg.to_dict()).data_instances == cfg.data_instances
    one = parse_config(data_config(split="gamma_similarity", gamma=0.25))
    assert one.data.split == "gamma_similarity" and one.data.alpha == 0.25
    assert one.to_dict()["data"]["gamma"] == 0.25 and "alpha" not in one.to_dict()["data"]
    assert parse_config(one.to_dict()).data == one.data


def test_config_split_errors_name_the_key_and_value():
    cases = [({"split": "gamma_similarity"}, r"split 'gamma_similarity' needs gamma = a number in \[0, 1\]"),
             ({"split": "gamma_similarity", "gamma": 1.5}, (r"gamma must be a number in \[0, 1\] or a list of them, "
                                                           r"got 1.5")),
             ({"split": "gamma_similarity", "gamma": [0.5, -1.0]}, r"gamma must be a number in \[0, 1\], got -1.0"),
             ({"split": "dirichlet", "alpha": 1.0, "gamma": 0.5}, (r"gamma is only used with split = "
                                                                  r"'gamma_similarity' \(split is 'dirichlet'\)")),
             ({"split": "extreme", "alpha": 1.0}, "alpha is only used with split = 'dirichlet'"),
             ({"split": "gamma_similarity", "gamma": True}, "gamma must be a number in"),
             ({"split": "sorted"}, "split must be one of 'iid', 'dirichlet', 'gamma_similarity', 'extreme'")]
    for data, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            parse_config(data_config(**data))
        assert "\n" not in str(err.value)


def test_figure_names_carry_each_split_parameter():
    from byzjax.app.plotting import figure_stem

    keys = [(f, split, p, 0.01, "TrMean") for f in (1, 5) for split, p in
            (("iid", ""), ("extreme", ""), ("dirichlet", 0.5), ("dirichlet", 1.0),
             ("gamma_similarity", 0.25), ("gamma_similarity", 0.75))]
    stems = [figure_stem(k) for k in keys]
    assert len(set(stems)) == len(stems)  # no two figures overwrite each other
    assert figure_stem((1, "dirichlet", 1.0, 0.01, "TrMean")) == "f1_dirichlet_alpha1.0"  # the committed names
    assert figure_stem((5, "gamma_similarity", 0.25, 0.01, "TrMean")) == "f5_gamma_similarity_gamma0.25"
