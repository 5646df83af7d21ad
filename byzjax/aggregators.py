"""Robust aggregation rules ``[n, d] -> [d]`` (ByzFL names and parameters).

Every rule is an equinox Module. ``rule(vectors)`` works eagerly on NumPy or JAX
arrays like ByzFL's ``rule(vectors)``; inside the compiled loop the oracle calls
``rule.aggregate(vectors, state, key)``, which also threads the state of stateful
rules (``CenteredClipping``, ``ClippedClustering``). The assumed number of
Byzantine workers ``f`` and the real hyperparameters (``nu``, ``tau``, ...) are
stored as arrays so they can be swept by ``vmap`` without recompiling; selections
depend on them only through masks (``byzjax._kernels``). Counts that fix shapes or
loop lengths (``T``, ``idx``, MDA/SMEA's ``f``, ...) are static fields.

ByzFL rules: Average, Median, TrMean, GeometricMedian, Krum, MultiKrum,
CenteredClipping, MDA, MoNNA, Meamed, CAF, SMEA. Beyond ByzFL: SmoothedWeiszfeld,
Bulyan, DnC, SignGuard, ClippedClustering, HuberMean, FLTrust. Costs below are for
``n`` vectors of dimension ``d``; each docstring says where the rule departs from
ByzFL (ByzFL commit 69bd1ac).

Absent workers. ``aggregate(vectors, state, key, valid)`` takes an optional bool
mask ``valid [n]`` of the rows actually received this round: absent rows are
ignored whatever they hold (NaN included), exactly as if the rule had been called
on the ``m = sum(valid)`` present rows, with ``m`` traced (one program for every
participation pattern). ``valid=None`` (all present) takes the unmasked path.
MDA and SMEA (whose subset enumeration fixes ``n - f``) do not support it
(``supports_absent = False``).
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from byzjax import _kernels
from byzjax._validation import ConfigError, as_matrix, concrete_values, float_array, int_array

MAX_SUBSETS = 200_000
"""Most subsets MDA and SMEA will enumerate; past it they raise ``ConfigError``."""


class AbstractAggregator(eqx.Module):
    """An aggregation rule: ``n`` vectors of dimension ``d`` in, one vector out."""

    supports_absent: ClassVar[bool] = True  # accepts a ``valid`` row mask (see the module docstring)

    def check(self, n: int) -> None:
        """Raise ``ConfigError`` if the rule cannot run on ``n`` input vectors."""

    def init(self, d: int, dtype) -> object:
        """State carried across rounds (``None`` for stateless rules)."""
        return None

    @abc.abstractmethod
    def aggregate(self, vectors: jax.Array, state, key, valid=None) -> tuple[jax.Array, object]:
        """Aggregate ``vectors [n, d]`` -> ``([d], new_state)``; pure and jittable.

        ``valid [n]`` (bool, optional): the rows present this round; the others are
        ignored, as if the rule ran on the present rows only. ``None``: all present.
        """

    def __call__(self, vectors, key=None):
        """ByzFL-style eager call on a NumPy or JAX ``[n, d]`` array (one round from ``init``).

        Runs ``apply`` (compiled once per rule structure and input shape); NumPy in
        gives NumPy out.
        """
        was_numpy = isinstance(vectors, np.ndarray)
        vectors = as_matrix(vectors)
        self.check(vectors.shape[0])
        key = jax.random.key(0) if key is None else key
        out, _ = apply(self, vectors, self.init(vectors.shape[1], vectors.dtype), key)
        return np.asarray(out) if was_numpy else out


@jax.jit
def apply(rule: AbstractAggregator, vectors: jax.Array, state, key) -> tuple[jax.Array, object]:
    """``rule.aggregate(vectors, state, key)`` compiled; the rule's arrays are traced
    arguments, so rules differing only in ``f``, ``tau``, ... share one program."""
    return rule.aggregate(vectors, state, key)


_NEEDS = {  # rule requirement -> (holds(f, n), largest allowed f)
    "2f < n": (lambda f, n: 2 * f < n, lambda n: (n - 1) // 2),
    "f < n": (lambda f, n: f < n, lambda n: n - 1),
    "f <= n": (lambda f, n: f <= n, lambda n: n),
    "n >= 4f + 3": (lambda f, n: n >= 4 * f + 3, lambda n: (n - 3) // 4),
}


def check_f(rule: str, f, n: int | None = None, *, need: str = "2f < n") -> None:
    """Validate a (possibly batched) ``f`` for ``rule`` on ``n`` inputs."""
    values = concrete_values(f)
    if values is None:
        return
    if np.any(values < 0):
        raise ConfigError(f"{rule}: f must be >= 0, got f={values.tolist()}")
    if n is None:
        return
    holds, largest = _NEEDS[need]
    if not np.all(holds(values, n)):
        raise ConfigError(
            f"{rule}: needs {need}, got f={values.max()} with n={n} (allowed: 0 <= f <= {largest(n)})"
        )


def check_param(rule: str, name: str, x, holds, allowed: str) -> None:
    """Raise ``ConfigError`` unless every concrete value of ``x`` satisfies ``holds``."""
    values = concrete_values(x)
    if values is not None and not np.all(holds(values)):
        raise ConfigError(f"{rule}: {name} must be {allowed}, got {name}={values.tolist()}")


def check_count(rule: str, name: str, value, minimum: int) -> None:
    """Validate a static integer (iterations, bucket size, index) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{rule}: {name} must be an integer >= {minimum}, got {name}={value!r}")


def clip_scale(norms: jax.Array, threshold) -> jax.Array:
    """``min(1, threshold / norm)``, and 1 where ``norm <= threshold`` (no 0/0)."""
    over = norms > threshold
    return jnp.where(over, threshold / jnp.where(over, norms, 1.0), 1.0)


COLUMN_BLOCK = 512
"""Columns per block of the coordinate-wise rules (a block of 32 sorted rows stays in L2)."""


def _by_column_blocks(fn, vectors, *params):
    d = vectors.shape[1]
    blocks, rest = divmod(d, COLUMN_BLOCK)

    def block(i, out):
        cols = jax.lax.dynamic_slice_in_dim(vectors, i * COLUMN_BLOCK, COLUMN_BLOCK, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(out, fn(cols, *params), i * COLUMN_BLOCK, axis=0)

    out = jax.lax.fori_loop(0, blocks, block, jnp.zeros(d, vectors.dtype))
    return out.at[blocks * COLUMN_BLOCK :].set(fn(vectors[:, blocks * COLUMN_BLOCK :], *params)) if rest else out


def coordinatewise(fn, vectors: jax.Array, *params) -> jax.Array:
    """``fn(cols [n, b], *params) -> [b]`` (column-local) applied to ``vectors [n, d]``.

    On CPU, in blocks of ``COLUMN_BLOCK`` columns in a ``fori_loop``, so that each
    block is sorted in cache (~5x faster than one pass over ``[30, 1e6]``), and a
    vmapped batch is mapped item by item (``custom_vmap``: batching would otherwise
    grow every block by the batch size; ~5x per item at ``[1000, 30, 1e4]``).
    Elsewhere, or below two blocks, ``fn(vectors, *params)`` in one pass. Traced
    values that ``fn`` uses must come in through ``params``. Not differentiable
    (``custom_vmap``) when ``d >= 2 * COLUMN_BLOCK``.
    """
    if vectors.shape[1] < 2 * COLUMN_BLOCK:
        return fn(vectors, *params)

    @jax.custom_batching.custom_vmap
    def blocked(vectors, *params):
        return _by_column_blocks(fn, vectors, *params)

    @blocked.def_vmap
    def _(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a)) for a, b in zip(args, in_batched)]
        return jax.lax.map(lambda a: blocked(*a), tuple(args)), True

    return jax.lax.platform_dependent(vectors, *params, cpu=blocked, default=fn)


def _median(values: jax.Array, valid=None) -> jax.Array:
    """Median of a 1-D array (mean of the two middle values for even length, as NumPy),
    over the entries where ``valid`` holds if given."""
    if valid is None:
        s = jnp.sort(values)
        m = s.shape[0]
        return 0.5 * (s[(m - 1) // 2] + s[m // 2])
    s = jnp.sort(jnp.where(valid, values, jnp.inf))
    m = jnp.sum(valid)
    return 0.5 * (s[(m - 1) // 2] + s[m // 2])


def _row(s: jax.Array, i) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(s, i, keepdims=False)


def _mean_around_median(s: jax.Array, count, drop) -> jax.Array:
    """Coordinate-wise mean of the ``count - drop`` values nearest to the median.

    ``s [n, d]`` is sorted along axis 0 and only its first ``count`` rows count
    (the rest may be +inf); ``drop <= n // 2``. The values kept form a window
    ``[L, L + count - drop)`` of the sorted column; ``L`` is how many of the
    ``drop`` farthest values lie below the median, read off the merge of the two
    ends: ``L = #{i < drop : med - s[i] > s[count - drop + i] - med}`` (a
    monotone predicate). On equal distances the higher value is dropped. O(n d),
    no gathers, ``count`` and ``drop`` may be traced.
    """
    n, d = s.shape
    max_drop = n // 2
    med = 0.5 * (_row(s, (count - 1) // 2) + _row(s, count // 2))
    padded = jnp.concatenate([s, jnp.zeros((max_drop, d), s.dtype)])
    high = jax.lax.dynamic_slice_in_dim(padded, count - drop, max_drop)
    i = jnp.arange(max_drop)[:, None]
    below = jnp.sum((i < drop) & (med - s[:max_drop] > high - med), axis=0)
    r = jnp.arange(n)[:, None]
    keep = (r >= below) & (r < below + count - drop)
    return jnp.sum(jnp.where(keep, s, 0.0), axis=0) / (count - drop).astype(s.dtype)


def _sum_smallest(sq_dists: jax.Array, k) -> jax.Array:
    """Row-wise sum of the ``k`` smallest entries (``k`` may be traced; +inf entries past k ignored)."""
    s = jnp.sort(sq_dists, axis=-1)
    return jnp.sum(jnp.where(jnp.arange(s.shape[-1]) < k, s, 0.0), axis=-1)


def present_rows(vectors: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(vectors with the absent rows zeroed, m = number of present rows)``.

    Zeroing first means an absent row can hold anything (NaN, Inf) without
    reaching a matmul or a norm of the present rows.
    """
    return jnp.where(valid[:, None], vectors, 0.0), jnp.sum(valid).astype(jnp.int32)


def _present_or_all(vectors: jax.Array, valid) -> tuple[jax.Array, int | jax.Array, jax.Array]:
    """``(vectors, m, present)``: ``present_rows`` and the mask, or, without a mask, the vectors,
    ``n`` and an all-true mask (for rules whose masked and unmasked code is one)."""
    if valid is None:
        return vectors, vectors.shape[0], jnp.ones(vectors.shape[0], bool)
    return *present_rows(vectors, valid), valid


def require_all_present(rule: str, valid) -> None:
    """Trace-time guard for rules that cannot ignore absent rows."""
    if valid is not None:
        raise ConfigError(f"{rule}: does not support absent workers (a row mask); its subset enumeration fixes n - f")


def _masked_sq_dists(vectors: jax.Array, valid) -> jax.Array:
    """Pairwise squared distances with +inf to and from absent rows (0 on the diagonal)."""
    d2 = _kernels.pairwise_sq_dists(vectors)
    if valid is None:
        return d2
    pair = valid[:, None] & valid[None, :]
    return jnp.where(pair | jnp.eye(vectors.shape[0], dtype=bool), d2, jnp.inf)


def _masked_mean(mask: jax.Array, vectors: jax.Array) -> jax.Array:
    """Mean of the rows where ``mask`` holds; the zero vector if none does."""
    w = mask.astype(vectors.dtype)
    return w @ vectors / jnp.maximum(jnp.sum(w), 1.0)


class Average(AbstractAggregator):
    """Plain mean ``(1/n) sum_i x_i`` (no robustness; kappa unbounded). Cost O(nd)."""

    def aggregate(self, vectors, state, key, valid=None):
        if valid is None:
            return jnp.mean(vectors, axis=0), state
        x, _ = present_rows(vectors, valid)
        return _masked_mean(valid, x), state


class Median(AbstractAggregator):
    """Coordinate-wise median (Yin et al., 2018). Cost O(n log^2 n d) (``_kernels.sort_rows``).

    For even ``n`` this is the mean of the two middle values (NumPy's convention;
    ByzFL with torch tensors returns the lower middle value instead).
    """

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        if valid is None:

            def middle(cols):
                s = _kernels.sort_rows(cols)
                return 0.5 * (s[(n - 1) // 2] + s[n // 2])

            return coordinatewise(middle, vectors), state

        def middle_of_present(cols, m):
            s = _kernels.sort_rows(cols)
            return 0.5 * (_row(s, (m - 1) // 2) + _row(s, m // 2))

        m = jnp.sum(valid).astype(jnp.int32)
        return coordinatewise(middle_of_present, _kernels.absent_last(vectors, valid), m), state


class TrMean(AbstractAggregator):
    """Coordinate-wise trimmed mean (Yin et al., 2018), PAPER.md section 3.

    ``[TrMean_f(x)]_k = (1/(n-2f)) sum_{j=f+1}^{n-f} [x_{pi(j)}]_k`` where ``pi`` sorts
    coordinate ``k``; ``f = 0`` is the mean. Needs ``2f < n``. kappa = O(f/n) after NNM.
    Cost O(n log^2 n d) (``_kernels.sort_rows``).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("TrMean", self.f)

    def check(self, n):
        check_f("TrMean", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        if valid is None:
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype)
        else:  # absent rows sort last and get weight 0
            w = _kernels.trimmed_weights(n, self.f, vectors.dtype, jnp.sum(valid))
            vectors = _kernels.absent_last(vectors, valid)
        return coordinatewise(lambda cols, w: w @ _kernels.sort_rows(cols), vectors, w), state


def _finite_rows(vectors: jax.Array, valid=None) -> tuple[jax.Array, jax.Array]:
    """``(keep [n] float, vectors)`` with absent rows and rows holding an inf dropped (weight 0, zeroed)."""
    keep = ~jnp.any(jnp.isinf(vectors), axis=1)
    if valid is not None:
        keep = keep & valid
    return keep.astype(vectors.dtype), jnp.where(keep[:, None], vectors, 0.0)


def _weiszfeld_step(vectors, keep, z, nu):
    """One smoothed Weiszfeld step from ``z``; also returns the distances ``||x_i - z||``."""
    dist = jnp.linalg.norm(vectors - z, axis=1)
    beta = keep / jnp.maximum(dist, nu)
    return beta @ vectors / jnp.sum(beta), dist


class GeometricMedian(AbstractAggregator):
    """Smoothed Weiszfeld approximation of the geometric median (ByzFL's rule).

    ``argmin_y sum_i ||y - x_i||`` approached by ``T`` steps from ``z_0 = 0``:
    ``z_{t+1} = sum_i beta_i x_i / sum_i beta_i``, ``beta_i = 1 / max(nu, ||x_i - z_t||)``
    (Weiszfeld, 1937; smoothing as in Pillutla et al., 2022). As ByzFL, rows that
    contain an inf are left out. Cost O(T n d).

    Differs from ByzFL: ``T >= 1`` and ``nu > 0`` are required (ByzFL accepts
    ``T = 0``, returning zeros, and any float ``nu``, dividing by zero at ``nu = 0``).
    Starting from 0, a few steps are not translation equivariant; see
    ``SmoothedWeiszfeld`` for a run to tolerance from the mean.
    """

    nu: jax.Array = eqx.field(converter=float_array, default=0.1)
    T: int = eqx.field(static=True, default=3)

    def __check_init__(self):
        check_param("GeometricMedian", "nu", self.nu, lambda v: v > 0, "> 0")
        check_count("GeometricMedian", "T", self.T, 1)

    def aggregate(self, vectors, state, key, valid=None):
        keep, x = _finite_rows(vectors, valid)
        nu = self.nu.astype(x.dtype)
        step = lambda _, z: _weiszfeld_step(x, keep, z, nu)[0]
        return jax.lax.fori_loop(0, self.T, step, jnp.zeros(x.shape[1], x.dtype)), state


class SmoothedWeiszfeld(AbstractAggregator):
    """Smoothed Weiszfeld run to a tolerance (beyond ByzFL; RFA, Pillutla et al., 2022).

    Same step as ``GeometricMedian`` but started at the mean of the finite rows and
    iterated in a ``while_loop`` until the objective ``F(z) = sum_i ||x_i - z||``
    changes by at most ``tol * F(z)`` between two iterates, or ``max_iter`` steps.
    Translation equivariant up to the tolerance. Cost O(iterations * n d).
    """

    nu: jax.Array = eqx.field(converter=float_array, default=0.1)
    tol: jax.Array = eqx.field(converter=float_array, default=1e-6)
    max_iter: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        check_param("SmoothedWeiszfeld", "nu", self.nu, lambda v: v > 0, "> 0")
        check_param("SmoothedWeiszfeld", "tol", self.tol, lambda v: v >= 0, ">= 0")
        check_count("SmoothedWeiszfeld", "max_iter", self.max_iter, 1)

    def aggregate(self, vectors, state, key, valid=None):
        keep, x = _finite_rows(vectors, valid)
        nu, tol = self.nu.astype(x.dtype), self.tol.astype(x.dtype)

        def body(carry):
            z, previous, _, it = carry
            z_next, dist = _weiszfeld_step(x, keep, z, nu)
            objective = keep @ dist
            done = jnp.abs(previous - objective) <= tol * objective
            return jnp.where(done, z, z_next), objective, done, it + 1

        start = (keep @ x / jnp.sum(keep), jnp.asarray(jnp.inf, x.dtype), jnp.array(False), 0)
        z, *_ = jax.lax.while_loop(lambda c: ~c[2] & (c[3] < self.max_iter), body, start)
        return z, state


def _krum_scores(vectors, f, valid):
    """Krum scores (sum of squared distances to the ``m - f`` nearest present rows, itself
    included) and ``m``; absent rows score +inf."""
    if valid is None:
        m = vectors.shape[0]
        return _sum_smallest(_kernels.pairwise_sq_dists(vectors), m - f), m
    x, m = present_rows(vectors, valid)
    scores = _sum_smallest(_masked_sq_dists(x, valid), m - f)
    return jnp.where(valid, scores, jnp.inf), m


class Krum(AbstractAggregator):
    """Krum (Blanchard et al., 2017): the input with the smallest neighbourhood score.

    ``Krum_f(x) = x_l``, ``l = argmin_i sum_{j in N_i} ||x_i - x_j||^2`` with ``N_i`` the
    ``n - f`` nearest inputs to ``x_i`` (itself included at distance 0, so ByzFL's
    ``n - f - 1`` others). Ties go to the lowest index, as ByzFL's argmin. Needs
    ``2f < n``. Cost O(n^2 d) for the Gram distances plus O(n^2 log n).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("Krum", self.f)

    def check(self, n):
        check_f("Krum", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        scores, _ = _krum_scores(vectors, self.f, valid)
        return vectors[jnp.argmin(scores)], state


class MultiKrum(AbstractAggregator):
    """Multi-Krum (Blanchard et al., 2017): mean of the ``n - f`` inputs with the best Krum scores.

    Scores as ``Krum``; equal scores go to the lower index (ByzFL's argpartition
    breaks ties arbitrarily). Needs ``2f < n``. Cost O(n^2 d + n^3).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("MultiKrum", self.f)

    def check(self, n):
        check_f("MultiKrum", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        scores, m = _krum_scores(vectors, self.f, valid)
        x = vectors if valid is None else present_rows(vectors, valid)[0]
        return _masked_mean(_kernels.k_smallest_mask(scores[None], m - self.f)[0], x), state


def _optional_vector(m):
    return None if m is None else jnp.asarray(m)


class CenteredClipping(AbstractAggregator):
    """Centered clipping (Karimireddy et al., 2021), with its centre carried as state.

    ``v_0 = m``; ``v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) min(1, tau / ||x_i - v_l||)``
    for ``L`` steps; the output ``v_L`` is also the new state, i.e. the next
    round's ``v_0`` (ByzFL: "the value of m used in the next call is the output of
    the previous call"). ``init(d, dtype)`` gives ``m``, or zeros for ``m=None``.
    Cost O(L n d).

    Differs from ByzFL: ByzFL's type check on ``m`` (``not ndarray or not Tensor``)
    rejects every ``m``; here any ``[d]`` array is accepted. Modules are immutable,
    so the eager ``rule(vectors)`` is one round from ``m``; carry the state through
    ``init``/``aggregate`` for the multi-round behaviour.
    """

    m: jax.Array | None = eqx.field(converter=_optional_vector, default=None)
    L: jax.Array = eqx.field(converter=int_array, default=1)
    tau: jax.Array = eqx.field(converter=float_array, default=100.0)

    def __check_init__(self):
        if self.m is not None and self.m.ndim < 1:
            raise ConfigError(f"CenteredClipping: m must be a vector [d], got shape {self.m.shape}")
        check_param("CenteredClipping", "L", self.L, lambda v: v >= 0, ">= 0")
        check_param("CenteredClipping", "tau", self.tau, lambda v: v >= 0, ">= 0")

    def init(self, d, dtype):
        if self.m is None:
            return jnp.zeros(d, dtype)
        if self.m.shape[-1] != d:
            raise ConfigError(f"CenteredClipping: m has {self.m.shape[-1]} coordinates, the vectors have d={d}")
        return self.m.astype(dtype)

    def aggregate(self, vectors, state, key, valid=None):
        tau = self.tau.astype(vectors.dtype)
        weight = None if valid is None else valid.astype(vectors.dtype) / jnp.sum(valid)
        x = vectors if valid is None else present_rows(vectors, valid)[0]

        def step(_, v):
            diff = x - v
            scaled = diff * clip_scale(jnp.linalg.norm(diff, axis=1), tau)[:, None]
            return v + (jnp.mean(scaled, axis=0) if weight is None else weight @ scaled)

        v = jax.lax.fori_loop(0, self.L, step, state)
        return v, v


@functools.lru_cache(maxsize=None)
def _subset_masks(n: int, k: int) -> np.ndarray:
    """All size-``k`` subsets of ``range(n)`` as a bool ``[C(n, k), n]`` mask, in itertools order."""
    combos = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int32
    ).reshape(-1, k)
    masks = np.zeros((combos.shape[0], n), dtype=bool)
    np.put_along_axis(masks, combos, True, axis=1)
    return masks


def check_subsets(rule: str, n: int, f: int) -> None:
    """Refuse enumerations of more than ``MAX_SUBSETS`` subsets of size ``n - f``."""
    count = math.comb(n, f)
    if count > MAX_SUBSETS:
        raise ConfigError(
            f"{rule}: C(n, n-f) = C({n}, {n - f}) = {count} subsets exceeds MAX_SUBSETS={MAX_SUBSETS} "
            f"(allowed: f with C(n, f) <= {MAX_SUBSETS})"
        )


def _best_subset(rule: str, n: int, f: int, score, chunk: int = 4096) -> jax.Array:
    """Float mask ``[n]`` of the first size-``(n - f)`` subset minimising ``score``.

    ``score(masks [c, n] float) -> [c]`` is evaluated on chunks of the statically
    enumerated subsets under ``lax.map``; ties go to the earliest subset in
    ``itertools.combinations`` order (ByzFL keeps the first strict minimum).
    """
    check_subsets(rule, n, f)
    masks = _subset_masks(n, n - f)
    count = masks.shape[0]
    chunk = min(chunk, count)
    padded = np.concatenate([masks, np.repeat(masks[:1], -count % chunk, axis=0)])
    blocks = jnp.asarray(padded.reshape(-1, chunk, n))
    scores = jax.lax.map(lambda m: score(m.astype(jnp.result_type(float))), blocks)
    return blocks.reshape(-1, n)[jnp.argmin(scores.reshape(-1)[:count])]


class MDA(AbstractAggregator):
    """Minimum-diameter averaging (El Mhamdi et al., 2020).

    ``MDA_f(x) = mean_{i in S*} x_i``, ``S* = argmin_{|S| = n-f} max_{i,j in S} ||x_i - x_j||``.
    All ``C(n, f)`` subsets are scored at once from the ``[n, n]`` squared distances
    (chunks of subset masks, O(C(n, f) n^2) after the O(n^2 d) Gram); ties go to
    the first subset in itertools order, as ByzFL. ``f`` is static (it fixes the
    enumeration); needs ``2f < n`` and ``C(n, f) <= MAX_SUBSETS`` (ConfigError
    instead of an hours-long loop).
    """

    f: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        check_count("MDA", "f", self.f, 0)

    def check(self, n):
        check_f("MDA", self.f, n)
        check_subsets("MDA", n, self.f)

    supports_absent: ClassVar[bool] = False

    def aggregate(self, vectors, state, key, valid=None):
        require_all_present("MDA", valid)
        n = vectors.shape[0]
        d2 = _kernels.pairwise_sq_dists(vectors)
        diameter = lambda m: jnp.max(m[:, :, None] * m[:, None, :] * d2, axis=(1, 2))
        best = _best_subset("MDA", n, self.f, diameter).astype(vectors.dtype)
        return best @ vectors / (n - self.f), state


class MoNNA(AbstractAggregator):
    """MoNNA (Farhadkhani et al., 2023): mean of the ``n - f`` nearest inputs to ``x_idx``.

    ``x_idx`` (a trusted worker in peer-to-peer use) is among them. Equal distances
    go to the lower index (ByzFL's argpartition: arbitrary). ``idx`` is static;
    needs ``2f < n`` and ``idx < n``. Cost O(n d + n^2).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)
    idx: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        check_f("MoNNA", self.f)
        check_count("MoNNA", "idx", self.idx, 0)

    def check(self, n):
        check_f("MoNNA", self.f, n)
        if self.idx >= n:
            raise ConfigError(f"MoNNA: needs idx < n, got idx={self.idx} with n={n} (allowed: 0 <= idx <= {n - 1})")

    def aggregate(self, vectors, state, key, valid=None):
        m = vectors.shape[0]
        if valid is not None:  # (row idx must be present: in the oracle it is an honest row)
            vectors, m = present_rows(vectors, valid)
        dist = jnp.sum((vectors - vectors[self.idx]) ** 2, axis=1)
        if valid is not None:
            dist = jnp.where(valid, dist, jnp.inf)
        return _masked_mean(_kernels.k_smallest_mask(dist[None], m - self.f)[0], vectors), state


class Meamed(AbstractAggregator):
    """Mean around median (Xie et al., 2018): per coordinate, the mean of the ``n - f``
    values nearest to the coordinate-wise median.

    Median with NumPy's convention (mean of the two middle values for even ``n``;
    ByzFL-torch takes the lower one). When two values are equally far on both sides
    of the median, the higher one is dropped (ByzFL: argpartition's choice, which
    keeps the lower one in its documented example). Needs ``2f < n``.
    Cost O(n log^2 n d) (``_kernels.sort_rows``) + O(n d).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("Meamed", self.f)

    def check(self, n):
        check_f("Meamed", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        if valid is None:
            n = vectors.shape[0]
            around = lambda cols, f: _mean_around_median(_kernels.sort_rows(cols), n, f)
            return coordinatewise(around, vectors, self.f), state
        m = jnp.sum(valid).astype(jnp.int32)
        around = lambda cols, m, f: _mean_around_median(_kernels.sort_rows(cols), m, f)
        return coordinatewise(around, _kernels.absent_last(vectors, valid), m, self.f), state


def _unit_normal(key, d: int, dtype) -> jax.Array:
    """A uniformly random unit vector in ``R^d`` (a normalised Gaussian)."""
    v = jax.random.normal(key, (d,), dtype)
    return v / jnp.linalg.norm(v)


class CAF(AbstractAggregator):
    """Covariance-bound agnostic filter (Allouah, Guerraoui & Stephan, 2025).

    Weights ``c = 1``; while ``sum c > n - 2f``: ``mu = sum c_i x_i / sum c``; one power
    step on the weighted covariance from a random unit ``v`` gives
    ``w = sum_i c_i (x_i - mu) <x_i - mu, v> / sum c``, ``lambda = ||w||``,
    direction ``u = w / lambda``; ``tau_i = <x_i - mu, u>^2``;
    ``c_i <- c_i (1 - tau_i / max_j tau_j)`` (exactly 0 for the maximiser). Returns
    the ``mu`` with the smallest ``lambda`` seen. The start vector of pass ``t`` is
    ``_unit_normal(jax.random.fold_in(key, t), d)``. Cost O(passes * n d), at most
    ``n`` passes. Needs ``2f < n``.

    Differs from ByzFL: ``max_j tau_j`` runs over rows still carrying weight, so
    every pass zeroes a row and the loop ends within ``n`` passes (in ByzFL a
    zeroed far row keeps setting the scale and the others shrink slowly: up to
    ~100 passes for n = 10 with two far rows); ``f = 0`` and a pass where every
    weighted row sits on ``mu`` end with the best mean so far (ByzFL returns None
    / NaN there).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("CAF", self.f)

    def check(self, n):
        check_f("CAF", self.f, n)

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        dtype = vectors.dtype
        weights, m = jnp.ones(n, dtype), n
        if valid is not None:  # absent rows start (and stay) at weight 0
            vectors, m = present_rows(vectors, valid)
            weights = valid.astype(dtype)

        def body(carry):
            c, best, best_mu, it, _ = carry
            mu = c @ vectors / jnp.sum(c)
            diffs = vectors - mu
            w = (c * (diffs @ _unit_normal(jax.random.fold_in(key, it), d, dtype))) @ diffs / jnp.sum(c)
            lam = jnp.linalg.norm(w)
            better = lam < best
            u = w / jnp.where(lam > 0, lam, 1.0)
            tau = (diffs @ u) ** 2
            tau_max = jnp.max(jnp.where(c > 0, tau, 0.0))
            stuck = tau_max <= 0
            shrunk = jnp.where(tau >= tau_max, 0.0, c * (1.0 - tau / jnp.where(stuck, 1.0, tau_max)))
            c = jnp.where(stuck, c, shrunk)  # the farthest row exactly 0 (XLA may divide via a reciprocal)
            return c, jnp.where(better, lam, best), jnp.where(better, mu, best_mu), it + 1, stuck

        def cond(carry):
            c, *_, stuck = carry
            return ~stuck & (jnp.sum(c) > m - 2 * self.f)

        start = (weights, jnp.asarray(jnp.inf, dtype), weights @ vectors / jnp.sum(weights), 0, jnp.array(False))
        return jax.lax.while_loop(cond, body, start)[2], state


class SMEA(AbstractAggregator):
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

    f: int = eqx.field(static=True, default=0)
    power_iters: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_count("SMEA", "f", self.f, 0)
        check_count("SMEA", "power_iters", self.power_iters, 1)

    def check(self, n):
        check_f("SMEA", self.f, n)
        check_subsets("SMEA", n, self.f)

    supports_absent: ClassVar[bool] = False

    def aggregate(self, vectors, state, key, valid=None):
        require_all_present("SMEA", valid)
        n, d = vectors.shape
        k = n - self.f
        x = vectors - jnp.mean(vectors, axis=0)
        gram = x @ x.T
        p = x @ _unit_normal(key, d, x.dtype)

        def centred(m, y):  # y restricted to the subsets and centred on each, [c, n]
            return m * (y - jnp.sum(m * y, axis=1, keepdims=True) / k)

        def eigenvalue_sq(m):
            def power_step(_, a):
                lam = jnp.sqrt(jnp.maximum(jnp.sum((a @ gram) * a, axis=1, keepdims=True), 0.0))
                return centred(m, a @ gram) / jnp.where(lam > 0, lam, 1.0)

            a = jax.lax.fori_loop(0, self.power_iters - 1, power_step, centred(m, p[None, :]))
            return jnp.sum((a @ gram) * a, axis=1)

        best = _best_subset("SMEA", n, self.f, eigenvalue_sq).astype(vectors.dtype)
        return best @ vectors / k, state


class Bulyan(AbstractAggregator):
    """Bulyan (El Mhamdi, Guerraoui & Rouault, 2018), beyond ByzFL.

    Select ``theta = n - 2f`` inputs by repeated Krum: each time, the remaining input
    with the smallest sum of squared distances to its ``r - f`` nearest remaining
    inputs (``r`` remaining, itself included, as ``Krum``) moves to the selection.
    Then per coordinate, average the ``beta = theta - 2f`` selected values nearest
    to their median. Needs ``n >= 4f + 3``. Cost O(n^2 d) + O(n^3 log n) +
    O(n log^2 n d) for the sort.
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)

    def __check_init__(self):
        check_f("Bulyan", self.f)

    def check(self, n):
        check_f("Bulyan", self.f, n, need="n >= 4f + 3")

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        vectors, m, present = _present_or_all(vectors, valid)  # absent rows are never left to select
        theta = m - 2 * self.f
        d2 = _masked_sq_dists(vectors, valid)

        def select(it, selected):
            left = ~selected & present
            scores = _sum_smallest(jnp.where(left[None, :], d2, jnp.inf), m - it - self.f)
            return selected.at[jnp.argmin(jnp.where(left, scores, jnp.inf))].set(True)

        selected = jax.lax.fori_loop(0, theta, select, jnp.zeros(n, bool))
        around = lambda cols, theta, drop: _mean_around_median(_kernels.sort_rows(cols), theta, drop)
        return coordinatewise(around, jnp.where(selected[:, None], vectors, jnp.inf), theta, 2 * self.f), state


class DnC(AbstractAggregator):
    """Divide-and-conquer (Shejwalkar & Houmansadr, NDSS 2021), as in the Blades benchmark.

    ``num_iters`` times: draw ``b = min(sub_dim, d)`` coordinates without replacement
    (the ``b`` largest of ``d`` uniforms, ``lax.top_k``, one key of
    ``jax.random.split(key, num_iters)`` per round; Blades: ``randperm(d)[:b]``), centre the
    sub-vectors, score ``s_i = <x_i - mu, v>^2`` with ``v`` their top right singular
    vector (computed as ``lambda_1 u_1^2`` from the ``[n, n]`` Gram), keep the
    ``n - floor(filter_frac * f)`` lowest scores (ties: lower index). Output: mean of
    the inputs kept in every round (the zero vector if none is). Cost
    O(num_iters (n^2 b + n^3 + d log b)).
    """

    f: jax.Array = eqx.field(converter=int_array, default=0)
    sub_dim: int = eqx.field(static=True, default=10_000)
    num_iters: int = eqx.field(static=True, default=5)
    filter_frac: jax.Array = eqx.field(converter=float_array, default=1.0)

    def __check_init__(self):
        check_f("DnC", self.f)
        check_count("DnC", "sub_dim", self.sub_dim, 1)
        check_count("DnC", "num_iters", self.num_iters, 1)
        check_param("DnC", "filter_frac", self.filter_frac, lambda v: v >= 0, ">= 0")

    def _kept(self, n):
        return n - jnp.floor(self.filter_frac * self.f).astype(jnp.int32)

    def check(self, n):
        check_param("DnC", f"n - floor(filter_frac * f) (n={n})", self._kept(n), lambda v: v >= 1, ">= 1")

    def aggregate(self, vectors, state, key, valid=None):
        n, d = vectors.shape
        b = min(self.sub_dim, d)
        vectors, m, present = _present_or_all(vectors, valid)
        kept = self._kept(m)

        def good(k):
            sub = vectors if b == d else vectors[:, jax.lax.top_k(jax.random.uniform(k, (d,)), b)[1]]
            sub = jnp.where(present[:, None], sub - _masked_mean(present, sub), 0.0)
            lam, u = jnp.linalg.eigh(sub @ sub.T)
            scores = jnp.where(present, lam[-1] * u[:, -1] ** 2, jnp.inf)
            return _kernels.k_smallest_mask(scores[None], kept)[0]

        benign = jnp.all(jax.vmap(good)(jax.random.split(key, self.num_iters)), axis=0)
        return _masked_mean(benign & present, vectors), state


def _two_means(points: jax.Array, iters: int, present: jax.Array) -> jax.Array:
    """Lloyd's 2-means of the present points from their farthest pair (lowest indices on
    ties); True = second cluster."""
    n = points.shape[0]
    d2 = jnp.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    d2 = jnp.where(present[:, None] & present[None, :], d2, -1.0)
    i, j = jnp.divmod(jnp.argmax(d2), n)
    centres = points[jnp.stack([i, j])]

    def step(_, centres):
        second = jnp.sum((points - centres[1]) ** 2, 1) < jnp.sum((points - centres[0]) ** 2, 1)
        member = (jnp.stack([~second, second]) & present).astype(points.dtype)
        count = jnp.sum(member, axis=1, keepdims=True)
        return jnp.where(count > 0, member @ points / jnp.maximum(count, 1.0), centres)

    centres = jax.lax.fori_loop(0, iters, step, centres)
    return jnp.sum((points - centres[1]) ** 2, 1) < jnp.sum((points - centres[0]) ** 2, 1)


def _majority(second: jax.Array, present: jax.Array) -> jax.Array:
    """Blades' cluster choice: the second cluster iff it holds more than ``m // 2`` of the
    ``m`` present rows; absent rows are in neither."""
    m = jnp.sum(present)
    return present & (second == (jnp.sum(second & present) > m // 2))


class SignGuard(AbstractAggregator):
    """SignGuard (Xu et al., 2021) as in the Blades benchmark, beyond ByzFL.

    ``M`` = median input norm; inputs longer than ``M`` are clipped to ``M``; keep the
    inputs with ``lower * M <= ||x_i|| <= upper * M`` that fall in the majority
    cluster of a 2-means on the sign statistics (fractions of positive, negative
    and zero coordinates); return their mean (the zero vector if none). Cost O(n d).

    Differs from Blades: its sklearn ``KMeans(2, random_state=0)`` is replaced by
    ``kmeans_iters`` Lloyd steps from the farthest pair of points, with the second
    cluster chosen iff it has more than ``n // 2`` members (Blades' rule with
    labels numbered by that initialisation).
    """

    lower: jax.Array = eqx.field(converter=float_array, default=0.1)
    upper: jax.Array = eqx.field(converter=float_array, default=3.0)
    kmeans_iters: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_param("SignGuard", "lower", self.lower, lambda v: v >= 0, ">= 0")
        check_param("SignGuard", "upper", self.upper, lambda v: v >= 1, ">= 1")
        check_count("SignGuard", "kmeans_iters", self.kmeans_iters, 1)

    def aggregate(self, vectors, state, key, valid=None):
        dtype = vectors.dtype
        vectors, _, present = _present_or_all(vectors, valid)
        norms = jnp.linalg.norm(vectors, axis=1)
        m = _median(norms, valid)
        x = vectors * clip_scale(norms, m)[:, None]
        clipped = jnp.minimum(norms, m)
        in_range = (clipped >= self.lower.astype(dtype) * m) & (clipped <= self.upper.astype(dtype) * m)
        signs = jnp.stack([jnp.mean(x > 0, 1), jnp.mean(x < 0, 1), jnp.mean(x == 0, 1)], axis=1).astype(dtype)
        majority = _majority(_two_means(signs, self.kmeans_iters, present), present)
        return _masked_mean(in_range & majority, x), state


class NormHistory(NamedTuple):
    """State of ``ClippedClustering``: a ring buffer of the input norms seen so far."""

    norms: jax.Array  # [history], +inf where not yet written
    count: jax.Array  # number of norms written so far


def _agglomerate_two(dist: jax.Array, m) -> jax.Array:
    """Average-linkage (UPGMA) agglomerative clustering of ``dist [n, n]`` into two clusters.

    Only the ``m`` present rows take part (absent ones at distance +inf from all).
    Merges the closest pair of clusters (lowest indices on ties) ``m - 2`` times,
    the merged cluster's distances being the size-weighted means (Lance-Williams).
    Returns True for the rows outside the cluster of row 0.
    """
    n = dist.shape[0]
    dist = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist)

    def merge(_, carry):
        dist, size, rep = carry
        i, j = jnp.divmod(jnp.argmin(dist), n)
        a, b = jnp.minimum(i, j), jnp.maximum(i, j)
        row = (size[a] * dist[a] + size[b] * dist[b]) / (size[a] + size[b])
        row = row.at[a].set(jnp.inf).at[b].set(jnp.inf)
        dist = dist.at[a].set(row).at[:, a].set(row).at[b].set(jnp.inf).at[:, b].set(jnp.inf)
        return dist, size.at[a].add(size[b]).at[b].set(0.0), jnp.where(rep == b, a, rep)

    start = (dist, jnp.ones(n, dist.dtype), jnp.arange(n))
    merges = max(m - 2, 0) if isinstance(m, int) else jnp.maximum(m - 2, 0)
    return jax.lax.fori_loop(0, merges, merge, start)[2] != 0


class ClippedClustering(AbstractAggregator):
    """Clipped clustering (Li et al., 2023) as in the Blades benchmark, beyond ByzFL.

    Clip every input to ``min(median of all norms seen so far, max_tau)``; cluster
    the clipped inputs in two by average-linkage agglomerative clustering on the
    cosine distance ``1 - cos`` (non-finite -> 2); return the mean
    of the majority cluster (the second cluster iff it has more than ``n // 2``
    members, the first being the one holding row 0). The norm history is the
    state: a ring buffer of the last ``history`` norms (Blades keeps all of them;
    identical until ``history`` norms were seen). Cost O(n^2 d + n^3 + history log history).
    """

    max_tau: jax.Array = eqx.field(converter=float_array, default=1e5)
    history: int = eqx.field(static=True, default=10_000)

    def __check_init__(self):
        check_param("ClippedClustering", "max_tau", self.max_tau, lambda v: v > 0, "> 0")
        check_count("ClippedClustering", "history", self.history, 1)

    def check(self, n):
        if n > self.history:
            raise ConfigError(f"ClippedClustering: needs n <= history, got n={n} with history={self.history}")

    def init(self, d, dtype):
        return NormHistory(jnp.full(self.history, jnp.inf, dtype), jnp.array(0, jnp.int32))

    def aggregate(self, vectors, state, key, valid=None):
        n = vectors.shape[0]
        vectors, m, present = _present_or_all(vectors, valid)  # only present rows' norms enter the history
        norms = jnp.linalg.norm(vectors, axis=1)
        slot = (state.count + jnp.cumsum(present) - 1) % self.history
        buffer = state.norms.at[jnp.where(present, slot, self.history)].set(norms, mode="drop")
        filled = jnp.minimum(state.count + m, self.history)
        s = jnp.sort(buffer)
        median = 0.5 * (_row(s, (filled - 1) // 2) + _row(s, filled // 2))
        x = vectors * clip_scale(norms, jnp.minimum(median, self.max_tau.astype(vectors.dtype)))[:, None]
        unit = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-8)
        dist = jnp.where(jnp.eye(n, dtype=bool), 0.0, 1.0 - unit @ unit.T)
        dist = jnp.where(jnp.isfinite(dist), dist, 2.0)
        dist = jnp.where(present[:, None] & present[None, :], dist, jnp.inf)
        chosen = _majority(_agglomerate_two(dist, m), present)
        return _masked_mean(chosen, x), NormHistory(buffer, state.count + m)


class HuberMean(AbstractAggregator):
    """Huber-type robust mean by iteratively reweighted averaging (beyond ByzFL).

    From the coordinate-wise median ``z_0``, ``T`` steps of
    ``z_{t+1} = sum_i w_i x_i / sum_i w_i`` with Huber weights ``w_i = min(1, delta_t / r_i)``,
    ``r_i = ||x_i - z_t||`` and a scale-free threshold ``delta_t = delta * median_i r_i``
    (the M-estimator of location with Huber's loss on residual norms; Huber, 1964).
    Translation and scale equivariant. Cost O(n log^2 n d + T n d).
    """

    delta: jax.Array = eqx.field(converter=float_array, default=2.0)
    T: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_param("HuberMean", "delta", self.delta, lambda v: v > 0, "> 0")
        check_count("HuberMean", "T", self.T, 1)

    def aggregate(self, vectors, state, key, valid=None):
        z, _ = Median().aggregate(vectors, None, key, valid)
        vectors, _, present = _present_or_all(vectors, valid)
        delta = self.delta.astype(vectors.dtype)

        def step(_, z):
            r = jnp.linalg.norm(vectors - z, axis=1)
            w = present * clip_scale(r, delta * _median(r, valid))
            return w @ vectors / jnp.sum(w)

        return jax.lax.fori_loop(0, self.T, step, z), state


class FLTrust(AbstractAggregator):
    """FLTrust-style trust scoring (Cao et al., NDSS 2021), beyond ByzFL.

    The trusted direction ``g_0`` is the input at row ``trusted`` (static): in
    byzjax the oracle puts the honest rows first, so row 0 is honest worker 0 --
    the worker whose data plays FLTrust's root dataset, as the server in PIGS.
    ``TS_i = relu(cos(x_i, g_0))``; output ``sum_i TS_i (||g_0|| / ||x_i||) x_i / sum_i TS_i``
    (the trusted row takes part with ``TS = 1``); zero inputs get ``TS = 0``, and a
    zero ``g_0`` gives the zero vector. Cost O(n d).
    """

    trusted: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        check_count("FLTrust", "trusted", self.trusted, 0)

    def check(self, n):
        if self.trusted >= n:
            raise ConfigError(f"FLTrust: needs trusted < n, got trusted={self.trusted} with n={n}")

    def aggregate(self, vectors, state, key, valid=None):
        if valid is not None:  # a zero row gets trust 0 (the trusted row must be present)
            vectors, _ = present_rows(vectors, valid)
        norms = jnp.linalg.norm(vectors, axis=1)
        safe = jnp.where(norms > 0, norms, 1.0)
        ref = norms[self.trusted]
        trust = jax.nn.relu(vectors @ vectors[self.trusted] / (safe * jnp.where(ref > 0, ref, 1.0)))
        total = jnp.sum(trust)
        out = (trust * ref / safe) @ vectors / jnp.where(total > 0, total, 1.0)
        return out, state
