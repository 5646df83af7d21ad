"""Small problems and NumPy float64 references shared by the tests."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from references import np_nnm, np_trmean

import byzjax.images
from byzjax.data import federated_classification, synthetic_dataset
from byzjax.problems import LogisticRegression

__all__ = ["np_logistic_loss_grad", "np_nnm", "np_trmean", "small_synthetic", "tiny_classification"]

SMALL_SYNTHETIC = {"n_train": 1500, "n_test": 300, "num_features": 24, "num_classes": 10, "separation": 0.35}
"""The data set ``small_synthetic`` gives for ``source = "synthetic"``: the Gaussian mixture of
``byzjax.data.synthetic_dataset`` (the source's own generator, 10 classes) at a size where a
config's runs and its per-instance theory (``L*``, ``L``, ``mu``, ``delta``: Newton-CG and power
iterations over the whole training set) take a fraction of a second instead of the full source's
6000 x 784 (d = 7850)."""


@contextlib.contextmanager
def small_synthetic():
    """Within: configs with ``source = "synthetic"`` (flat layout) load ``SMALL_SYNTHETIC``; every
    other source, and the image layout, load as they do. For tests of the config, runner and file
    paths, whose assertions do not depend on the data's size; one command a user runs keeps the real
    source end to end (``reproduce short --quick``, tests/test_reproduce.py)."""
    real = byzjax.images.load_source

    def load(source, *, layout="flat", seed=0, **kw):
        if str(source) == "synthetic" and layout == "flat":
            return synthetic_dataset(seed=seed, **SMALL_SYNTHETIC)
        return real(source, layout=layout, seed=seed, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(byzjax.images, "load_source", load)
        yield


def tiny_classification(n_honest=5, split="dirichlet", alpha=1.0, seed=0, p=12, c=3, n_train=400):
    ds = synthetic_dataset(seed=seed, n_train=n_train, n_test=100, num_features=p, num_classes=c, separation=0.5)
    data = federated_classification(ds, n_honest, split, alpha if split in ("dirichlet", "gamma_similarity") else None,
                                    seed)
    return ds, data, LogisticRegression(num_features=p, num_classes=c, lam=1e-2)


def np_logistic_loss_grad(x, feats, labels, lam, p, c):
    """Mean NLL + lam/2 ||x||^2 and its gradient, in float64 NumPy."""
    w, b = x[: p * c].reshape(p, c), x[p * c :]
    z = feats @ w + b
    z = z - z.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    m = len(labels)
    loss = -np.mean(np.log(prob[np.arange(m), labels])) + 0.5 * lam * x @ x
    r = prob.copy()
    r[np.arange(m), labels] -= 1.0
    r /= m
    grad = np.concatenate([(feats.T @ r).ravel(), r.sum(axis=0)]) + lam * x
    return loss, grad

