"""Rules that enumerate subsets of size n - f: minimum-diameter averaging (MDA) and SMEA."""

from __future__ import annotations

import functools
import itertools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax._validation import check_count, component_error
from byzjax.aggregators._base import AbstractAggregator, AbstractFRequirement
from byzjax.aggregators._common import _unit_normal, centred_frame, far_sq_dists, nan_to_inf, require_all_present, rows

MAX_SUBSETS = 200_000
"""Most subsets MDA and SMEA will enumerate; past it they raise ``ConfigError``."""


@functools.lru_cache(maxsize=None)
def _subset_masks(n: int, k: int) -> np.ndarray:
    """All size-``k`` subsets of ``range(n)`` as a bool ``[C(n, k), n]`` mask, in itertools order."""
    combos = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int32
    ).reshape(-1, k)
    masks = np.zeros((combos.shape[0], n), dtype=bool)
    np.put_along_axis(masks, combos, True, axis=1)
    return masks


def check_subsets(owner, n: int, f: int) -> None:
    """Refuse enumerations of more than ``MAX_SUBSETS`` subsets of size ``n - f`` (errors name ``owner``'s class)."""
    count = math.comb(n, f)
    if count > MAX_SUBSETS:
        raise component_error(
            owner,
            f"C(n, n-f) = C({n}, {n - f}) = {count} subsets exceeds MAX_SUBSETS={MAX_SUBSETS} "
            f"(allowed: f with C(n, f) <= {MAX_SUBSETS})"
        )


def _best_subset(owner, n: int, f: int, score, chunk: int = 4096) -> jax.Array:
    """Float mask ``[n]`` of the first size-``(n - f)`` subset minimising ``score``.

    ``score(masks [c, n] float) -> [c]`` is evaluated on chunks of the statically
    enumerated subsets under ``lax.map``; ties go to the earliest subset in
    ``itertools.combinations`` order (ByzFL keeps the first strict minimum).
    """
    check_subsets(owner, n, f)
    masks = _subset_masks(n, n - f)
    count = masks.shape[0]
    chunk = min(chunk, count)
    padded = np.concatenate([masks, np.repeat(masks[:1], -count % chunk, axis=0)])
    blocks = jnp.asarray(padded.reshape(-1, chunk, n))
    scores = jax.lax.map(lambda m: nan_to_inf(score(m.astype(jnp.result_type(float)))), blocks)
    return blocks.reshape(-1, n)[jnp.argmin(scores.reshape(-1)[:count])]


class AbstractSubsetRule(AbstractFRequirement, AbstractAggregator):
    """A rule enumerating the subsets of size ``n - f``: ``f`` is a static integer (it fixes the
    enumeration, so it cannot be swept by ``vmap``), checked ``>= 0`` at construction; ``check(n)``
    asks ``2f < n`` and at most ``MAX_SUBSETS`` subsets. Absent rows are not supported (the
    enumeration fixes ``n - f``)."""

    f: int = eqx.field(static=True, default=0)
    supports_absent: ClassVar[bool] = False

    def __check_init__(self):
        check_count(self, "f", self.f, 0)

    def extra_check(self, n):
        check_subsets(self, n, self.f)


class MDA(AbstractSubsetRule):
    """Minimum-diameter averaging (El Mhamdi et al., 2020).

    ``MDA_f(x) = mean_{i in S*} x_i``, ``S* = argmin_{|S| = n-f} max_{i,j in S} ||x_i - x_j||``.
    All ``C(n, f)`` subsets are scored at once from the ``[n, n]`` squared distances
    (chunks of subset masks, O(C(n, f) n^2) after the O(n^2 d) Gram); ties go to
    the first subset in itertools order, as ByzFL. ``f`` is static (it fixes the
    enumeration); needs ``2f < n`` and ``C(n, f) <= MAX_SUBSETS`` (ConfigError
    instead of an hours-long loop).
    """

    def aggregate(self, vectors, state, key, valid=None):
        require_all_present(self, valid)
        n = vectors.shape[0]
        r = rows(vectors)
        y, _, _ = centred_frame(r.x, r.near)  # distances in an exactly rescaled frame: no overflow
        d2 = far_sq_dists(y, r.near)  # a non-finite row is at +inf: subsets holding it score the largest float
        d2 = jnp.minimum(d2, jnp.finfo(d2.dtype).max)
        diameter = lambda m: jnp.max(m[:, :, None] * m[:, None, :] * d2, axis=(1, 2))
        best = _best_subset(self, n, self.f, diameter).astype(vectors.dtype)
        return best @ r.x / (n - self.f), state


class SMEA(AbstractSubsetRule):
    """Smallest maximum eigenvalue averaging (Allouah et al., 2023).

    ``SMEA_f(x) = mean_{i in S*} x_i``, ``S* = argmin_{|S| = n-f} lambda_max(Cov_S)``, with
    ``lambda_max`` estimated, as ByzFL, by ``power_iters`` power steps (ByzFL: 1)
    from a random unit vector ``v = _unit_normal(key, d)``. Every subset is scored
    in the ``n``-dimensional span of the inputs: with ``G`` the Gram matrix of the
    centred inputs, ``p = X v`` and ``a = 1_S (p - mean_S p)``, one step gives
    ``lambda = sqrt(a^T G a)`` = ByzFL's ``||sum_{i in S} (x_i - mu_S) <x_i - mu_S, v>||``;
    the next step uses ``a <- 1_S centred(G a) / lambda``. So the enumeration costs
    O(C(n, f) n^2 power_iters) after O(n^2 d), independent of ``d``. Ties go to the
    first subset in itertools order. ``f`` and ``power_iters`` are static; needs
    ``2f < n`` and ``C(n, f) <= MAX_SUBSETS``.

    Differs from ByzFL: one start vector per call, shared by all subsets (common
    random numbers; ByzFL draws one per subset), so subsets are compared on the
    same probe; with many ``power_iters`` both approach the exact SMEA.
    """

    power_iters: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_count(self, "power_iters", self.power_iters, 1)

    def aggregate(self, vectors, state, key, valid=None):
        require_all_present(self, valid)
        n, d = vectors.shape
        k = n - self.f
        r = rows(vectors)
        x, _, _ = centred_frame(r.x, r.near)  # exactly rescaled, centred on the median: no overflow
        gram = x @ x.T
        p = x @ _unit_normal(key, d, x.dtype)

        def centred(m, y):  # y restricted to the subsets and centred on each, [c, n]
            return m * (y - jnp.sum(m * y, axis=1, keepdims=True) / k)

        def eigenvalue_sq(m):
            def power_step(_, a):
                lam = jnp.sqrt(jnp.maximum(jnp.sum((a @ gram) * a, axis=1, keepdims=True), 0.0))
                return centred(m, a @ gram) / jnp.where(lam > 0, lam, 1.0)

            a = jax.lax.fori_loop(0, self.power_iters - 1, power_step, centred(m, p[None, :]))
            far = jnp.any((m > 0) & ~r.near[None, :], axis=1)  # a subset holding a non-finite row
            return jnp.where(far, jnp.inf, jnp.sum((a @ gram) * a, axis=1))

        best = _best_subset(self, n, self.f, eigenvalue_sq).astype(vectors.dtype)
        return best @ r.x / k, state
