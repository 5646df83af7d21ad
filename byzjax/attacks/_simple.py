"""Attacks with a closed form: ByzFL's SignFlipping, IPM, ALIE, Mimic, Inf, Gaussian, LabelFlipping, and Fang's."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from byzjax._kernels import column_mean
from byzjax._validation import ConfigError, float_array, int_array, is_concrete
from byzjax.attacks._base import AbstractCopyAttack, AbstractPerWorkerAttack, _honest_std, _require


class NoAttack(AbstractCopyAttack):
    """Byzantine workers send the honest mean (harmless; used when ``f = 0``). Sees: honest vectors."""

    def byzantine_vector(self, view, key):
        return column_mean(view.honest)


class SignFlipping(AbstractCopyAttack):
    """``b = -mean(honest)`` (Allen-Zhu et al., ICLR 2020; ByzFL). Sees: honest vectors."""

    def byzantine_vector(self, view, key):
        return -column_mean(view.honest)


class InnerProductManipulation(AbstractCopyAttack):
    """IPM (Xie et al., UAI 2020; ByzFL): ``b = -tau * mean(honest)``. Sees: honest vectors."""

    tau: jax.Array = eqx.field(converter=float_array, default=2.0)

    def byzantine_vector(self, view, key):
        return -self.tau * column_mean(view.honest)


class ALittleIsEnough(AbstractCopyAttack):
    """ALIE (Baruch et al., NeurIPS 2019; ByzFL): ``b = mean + tau * std`` coordinate-wise (ddof 1).

    Sees: honest vectors. ``ALittleIsEnough.from_baruch(n, f)`` sets tau to the paper's z_max.
    """

    tau: jax.Array = eqx.field(converter=float_array, default=1.5)

    @classmethod
    def from_baruch(cls, n, f) -> "ALittleIsEnough":
        """ALIE with Baruch et al.'s ``z_max`` for ``n`` workers in all, ``f`` of them Byzantine.

        ``s = floor(n/2 + 1) - f`` honest workers must be won over to form a majority, and
        ``z_max = Phi^{-1}((n - s) / n)``. ``n`` and ``f`` may be arrays (a sweep).
        """
        n, f = int_array(n), int_array(f)
        s = n // 2 + 1 - f
        if is_concrete(s):
            nv, fv, sv = np.broadcast_arrays(np.asarray(n), np.asarray(f), np.asarray(s))
            if np.any((fv < 0) | (sv < 1) | (sv >= nv)):
                raise ConfigError(
                    "ALittleIsEnough.from_baruch: needs f >= 0 and 1 <= floor(n/2 + 1) - f < n, "
                    f"got n={nv.tolist()}, f={fv.tolist()}"
                )
        return cls(tau=norm.ppf(float_array(n - s) / float_array(n)))

    def byzantine_vector(self, view, key):
        return column_mean(view.honest) + self.tau * _honest_std(view.honest)


class Mimic(AbstractCopyAttack):
    """Copy honest worker ``epsilon`` (Karimireddy et al., ICLR 2022; ByzFL). Sees: honest vectors."""

    epsilon: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        _require("Mimic", "epsilon", self.epsilon, lambda v: v >= 0, "must be >= 0")

    def check(self, n_honest, n_byz):
        _require("Mimic", "epsilon", self.epsilon, lambda v: v < n_honest, f"must be < n_honest = {n_honest}")

    def byzantine_vector(self, view, key):
        return view.honest[self.epsilon]


class MimicHeuristic(AbstractCopyAttack):
    """Mimic the honest worker that sticks out most along the top principal direction.

    Karimireddy et al. (ICLR 2022), section on the mimic attack: copy ``h_i*`` with ``i*`` the
    honest worker of largest projection on ``z``, the top principal direction of the centred honest
    vectors. Here ``z`` is exact and recomputed every round (``eigh`` of the ``[n_h, n_h]`` Gram
    matrix), and ``i*`` maximises ``|<h_i - mean, z>|``, which does not depend on the sign of
    ``z``; the paper estimates ``z`` by power iteration over warm-up rounds, then fixes ``i*``.
    Sees: honest vectors.
    """

    def target(self, honest: jax.Array) -> jax.Array:
        """Index of the honest worker to copy."""
        centred = honest - column_mean(honest)
        _, vecs = jnp.linalg.eigh(centred @ centred.T)
        return jnp.argmax(jnp.abs(vecs[:, -1]))  # projections on z are proportional to this eigenvector

    def byzantine_vector(self, view, key):
        return view.honest[self.target(view.honest)]


class Inf(AbstractCopyAttack):
    """Every coordinate ``+inf`` (ByzFL). Sees: only the dimension."""

    def byzantine_vector(self, view, key):
        return jnp.full(view.honest.shape[1:], jnp.inf, view.honest.dtype)


class Gaussian(AbstractPerWorkerAttack):
    """Each Byzantine row drawn independently from ``N(mu, sigma^2 I)`` with ``key`` (ByzFL's
    ``Gaussian``; ByzFL sends one draw to all its Byzantine workers). Sees: only the dimension."""

    mu: jax.Array = eqx.field(converter=float_array, default=0.0)
    sigma: jax.Array = eqx.field(converter=float_array, default=1.0)

    def __check_init__(self):
        _require("Gaussian", "sigma", self.sigma, lambda v: v >= 0, "must be >= 0")

    def byzantine_vectors(self, view, n_byz, key, present=None):
        noise = jax.random.normal(key, (n_byz, view.honest.shape[1]), view.honest.dtype)
        return self.mu + self.sigma * noise


class LabelFlipping(AbstractCopyAttack):
    """Honest-looking gradients computed on flipped labels (ByzFL's ``LabelFlipping``): the mean
    over honest workers ``i`` of ``grad L(x; shard_i with labels c - 1 - y)`` (``9 - y`` for 10
    classes), on the data the honest messages were computed on (their mini-batches if any).

    Sees: the query point, the honest shards and the problem (``needs_labels``). Eagerly
    (``attack(vectors)``, a view without data) the vectors are taken to be those flipped-label
    gradients already, as in ByzFL, and their mean is returned.
    """

    needs_labels: ClassVar[bool] = True

    def byzantine_vector(self, view, key):
        flipped = view.gradients(view.problem.flip_labels(view.shards)) if view.has_data else view.honest
        return column_mean(flipped)


class Fang(AbstractPerWorkerAttack):
    """Fang et al. (USENIX Security 2020), full-knowledge attack on trimmed mean and median.

    With ``s = sign(mean(honest))`` (the aggregate should move along ``-s``), every Byzantine row
    puts coordinate k beyond the honest extreme on the side opposite to ``s_k``: beyond the minimum
    ``m_k`` where ``s_k > 0``, beyond the maximum ``M_k`` elsewhere. The value is the extreme times
    or divided by ``u ~ U[1, b]``, whichever moves away from the honest values (``m u`` if
    ``m < 0``, ``m / u`` otherwise), ``u`` drawn per row and coordinate from ``key``. This is the
    paper's rule for model parameters, transcribed to gradients. Sees: honest vectors; it is
    tailored to coordinate-wise rules and needs no parameter of the aggregator.
    """

    b: jax.Array = eqx.field(converter=float_array, default=2.0)

    def __check_init__(self):
        _require("Fang", "b", self.b, lambda v: v >= 1, "must be >= 1")

    def byzantine_vectors(self, view, n_byz, key, present=None):
        honest = view.honest
        below = column_mean(honest) > 0
        edge = jnp.where(below, jnp.min(honest, axis=0), jnp.max(honest, axis=0))
        outward = jnp.where(below, edge < 0, edge > 0)  # multiplying by u >= 1 moves edge away
        u = jax.random.uniform(key, (n_byz, honest.shape[1]), honest.dtype, 1.0, self.b)
        return jnp.where(outward, edge * u, edge / u)
