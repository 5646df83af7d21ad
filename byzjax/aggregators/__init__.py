"""Robust aggregation rules ``[n, d] -> [d]`` (ByzFL names and parameters).

Every rule is an equinox Module. ``rule(vectors)`` works eagerly on NumPy or JAX
arrays like ByzFL's ``rule(vectors)``; inside the compiled loop the oracle calls
``rule.aggregate(vectors, state, key)``, which also threads the state of stateful
rules (``CenteredClipping``, ``ClippedClustering``). The assumed number of
Byzantine workers ``f`` and the real hyperparameters (``nu``, ``tau``, ...) are
stored as arrays so they can be swept by ``vmap`` without recompiling; selections
depend on them only through masks (``byzjax._kernels``). Counts that fix shapes or
loop lengths (``T``, ``idx``, MDA/SMEA's ``f``, ...) are static fields.

Rules told the number ``f`` of Byzantine inputs derive from ``AbstractFRule``, which owns the
field ``f`` (an array leaf, default 0), checks ``f >= 0`` at construction and, in ``check(n)``,
the requirement the rule declares as the ClassVar ``needs`` (``"2f < n"`` by default; Bulyan
``"n >= 4f + 3"``), then the rule's own ``extra_check(n)`` (MoNNA's ``idx < n``, ...). MDA and
SMEA, whose ``f`` is static, derive from ``AbstractSubsetRule`` (same ``needs`` and
``extra_check``, plus the subset limit); the pre-aggregators NNM and ARC from
``byzjax.preaggregators.AbstractFPreAggregator``. Errors name the class (``type(self).__name__``).

ByzFL rules: Average, Median, TrMean, GeometricMedian, Krum, MultiKrum,
CenteredClipping, MDA, MoNNA, Meamed, CAF, SMEA. Beyond ByzFL: SmoothedWeiszfeld,
Bulyan, DnC, SignGuard, ClippedClustering, HuberMean, FLTrust, and AdaptiveClipping (the
authors' "Huber", iterated adaptive centred clipping of their later code). Costs below are for
``n`` vectors of dimension ``d``; each docstring says where the rule departs from
ByzFL (ByzFL commit 69bd1ac).

Absent workers. ``aggregate(vectors, state, key, valid)`` takes an optional bool
mask ``valid [n]`` of the rows actually received this round: absent rows are
ignored whatever they hold (NaN included), exactly as if the rule had been called
on the ``m = sum(valid)`` present rows, with ``m`` traced (one program for every
participation pattern). ``valid=None`` (all present) takes the unmasked path.
MDA and SMEA (whose subset enumeration fixes ``n - f``) do not support it
(``supports_absent = False``).

Non-finite rows. A present row with any NaN or +-Inf coordinate is infinitely far
from every other row. It counts as one of the ``n`` rows (so it uses up one of the
``f`` the rule tolerates) but is never selected, trimmed first and gets weight 0:

- coordinate-wise rules (Median, TrMean, Meamed, Bulyan's last step) rank it above
  every finite value in every coordinate, so ``TrMean(f=1)`` on ``[[0], [1], [2], [inf]]``
  is ``mean(1, 2) = 1.5`` (NumPy's trimmed mean), whatever the sign of the Inf or a NaN;
- distance-based rules (Krum, MultiKrum, MoNNA, Bulyan, MDA, SMEA, DnC, NNM) put it at
  distance +inf from all rows: it is in no neighbourhood and never chosen;
- reweighting and filtering rules (GeometricMedian, SmoothedWeiszfeld, CenteredClipping,
  HuberMean, FLTrust, AdaptiveClipping, CAF) give it weight 0 (CAF: as if its first passes had removed it);
- SignGuard and ClippedClustering leave it out as they leave out absent rows;
- pre-aggregators pass it on as it is (NNM, Clipping, ARC: a non-finite row in, the same
  row out; Bucketing: a bucket holding one is non-finite), never letting it into a
  finite row, so the aggregator after them discards it.

So with at most ``f`` non-finite rows every robust rule returns a finite answer, the
answer on the finite rows where the rule allows it. ``Average`` promises nothing
(``robust = False``): a non-finite row makes it non-finite.

Scale. The rules whose computation squares the inputs (CAF, SMEA, MDA, SmoothedWeiszfeld,
DnC) work in an exactly rescaled frame (centred on the coordinate-wise median, divided by
a power of two bounding the entries), and every selection reads a NaN score as +inf, so
up to ``f`` rows of any finite size (up to the largest float) move the output by an
amount that does not grow with their size (``tests/test_rule_reliability.py``). The other
distance-based rules compute squared distances directly: that holds for rows up to the
oracle's sanitising cap ``sqrt(max_float / (4 (n + 64) d))`` (``byzjax.oracle.sanitise``),
and beyond it an overflowed distance reads as +inf (the row is infinitely far).

Eager calls ``rule(vectors)`` take a real 2-D array with at least one row; anything else
(0 rows, strings, complex numbers, another number of axes) is a one-line ``ConfigError``.
"""

from byzjax._validation import check_count, check_f, check_param
from byzjax.aggregators._adaptive_clipping import AdaptiveClipping
from byzjax.aggregators._base import AbstractAggregator, AbstractFRequirement, AbstractFRule, apply, eager_call
from byzjax.aggregators._clustering import ClippedClustering, NormHistory, SignGuard
from byzjax.aggregators._columns import COLUMN_BLOCK, coordinatewise
from byzjax.aggregators._common import clip_scale, present_rows, require_all_present
from byzjax.aggregators._coordinatewise import Average, Meamed, Median, TrMean
from byzjax.aggregators._filters import CAF, DnC
from byzjax.aggregators._krum import Bulyan, Krum, MoNNA, MultiKrum
from byzjax.aggregators._reweighting import CenteredClipping, FLTrust, GeometricMedian, HuberMean, SmoothedWeiszfeld
from byzjax.aggregators._subsets import MAX_SUBSETS, MDA, SMEA, AbstractSubsetRule, check_subsets

__all__ = [
    "AbstractAggregator", "AbstractFRule", "AbstractFRequirement", "AbstractSubsetRule", "apply", "eager_call",
    "Average", "Median", "TrMean", "Meamed", "GeometricMedian", "SmoothedWeiszfeld",
    "CenteredClipping", "HuberMean", "AdaptiveClipping", "FLTrust", "Krum", "MultiKrum", "MoNNA", "Bulyan", "MDA", "SMEA", "CAF", "DnC",
    "SignGuard", "ClippedClustering", "NormHistory", "MAX_SUBSETS", "COLUMN_BLOCK", "coordinatewise", "clip_scale",
    "present_rows", "require_all_present", "check_subsets", "check_count", "check_f", "check_param",
]
