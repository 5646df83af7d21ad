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

from byzjax._validation import check_count, check_f, check_param
from byzjax.aggregators._base import AbstractAggregator, apply
from byzjax.aggregators._clustering import ClippedClustering, NormHistory, SignGuard
from byzjax.aggregators._columns import COLUMN_BLOCK, coordinatewise
from byzjax.aggregators._common import clip_scale, present_rows, require_all_present
from byzjax.aggregators._coordinatewise import Average, Meamed, Median, TrMean
from byzjax.aggregators._filters import CAF, DnC
from byzjax.aggregators._krum import Bulyan, Krum, MoNNA, MultiKrum
from byzjax.aggregators._reweighting import CenteredClipping, FLTrust, GeometricMedian, HuberMean, SmoothedWeiszfeld
from byzjax.aggregators._subsets import MAX_SUBSETS, MDA, SMEA, check_subsets

__all__ = [
    "AbstractAggregator", "apply", "Average", "Median", "TrMean", "Meamed", "GeometricMedian", "SmoothedWeiszfeld",
    "CenteredClipping", "HuberMean", "FLTrust", "Krum", "MultiKrum", "MoNNA", "Bulyan", "MDA", "SMEA", "CAF", "DnC",
    "SignGuard", "ClippedClustering", "NormHistory", "MAX_SUBSETS", "COLUMN_BLOCK", "coordinatewise", "clip_scale",
    "present_rows", "require_all_present", "check_subsets", "check_count", "check_f", "check_param",
]
