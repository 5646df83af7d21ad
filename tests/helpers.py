"""Small problems and NumPy float64 references shared by the tests."""

from __future__ import annotations

import numpy as np
from references import np_nnm, np_trmean

from byzjax.data import federated_classification, synthetic_dataset
from byzjax.problems import LogisticRegression

__all__ = ["np_logistic_loss_grad", "np_nnm", "np_trmean", "tiny_classification"]


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

