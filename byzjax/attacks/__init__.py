"""Byzantine attacks: ByzFL's (same names, parameters, defaults) and a few from the literature.

What an attack sees. Every attack here is omniscient about the current round: it receives an
``AttackerView`` with the messages ``honest [n_h, d]`` of all honest workers, the query point
``x``, the honest shards those messages were computed on, the problem (so that it can compute
gradients on data of its choice, as LabelFlipping does on flipped labels) and the server's
aggregation pipeline (which the Optimal_* attacks optimise against). MinMax, MinSum and Fang adapt
to the honest vectors only (the versions of their papers used here need no parameter of the
aggregator). No attack sees earlier rounds (attacks keep no state). Each class's docstring says
what it uses.

Protocol, as the round oracle calls it: ``attack.check(n_honest, n_byz)`` once, before
compilation (``ConfigError`` on a bad setting); then each round, inside jit/vmap,
``attack.byzantine_vectors(view, n_byz, key, present) -> [n_byz, d]``, the one abstract entry
point. The oracle appends these rows after the honest ones, so an attack can never change an
honest row. ``AbstractCopyAttack`` is the base of the attacks that send ``n_byz`` copies of one
vector (they implement ``byzantine_vector(view, key)``); ``AbstractPerWorkerAttack`` the base of
those that draw each row independently (Gaussian, Fang). ``attack(honest_vectors)`` works
eagerly like ByzFL and returns one Byzantine vector, from a view holding the honest vectors only.
Capabilities are class attributes: ``needs_labels`` (LabelFlipping) makes the oracle require a
problem with labels.

Declared f versus actual Byzantine count: the ``f`` an aggregator assumes (``TrMean(f)``) and the
number ``n_byz`` of Byzantine rows the oracle appends are independent, so an experiment can
under- or over-declare f. Adaptive attacks insert ``n_byz`` rows and optimise against the
pipeline with the f it declares.

Absent Byzantine workers: when the oracle runs with a Byzantine count below its ``n_byz`` rows or
with a participation probability, it passes ``present [n_byz]`` (bool), the rows the server will
receive this round. Attacks that optimise against the pipeline evaluate it on those rows only
(the server's view); the others ignore it (absent rows are dropped by the aggregator anyway).

Not done: attacks that keep a state across rounds (e.g. Karimireddy et al.'s
warm-up phase of Mimic); Fang et al.'s attack on Krum; the aggregator-tailored variants of
MinMax/MinSum.
"""

from byzjax.attacks._base import AbstractAttack, AbstractCopyAttack, AbstractPerWorkerAttack, AttackerView
from byzjax.attacks._distance import MinMax, MinSum
from byzjax.attacks._optimal import (
    LineSearchState,
    Optimal_ALittleIsEnough,
    Optimal_InnerProductManipulation,
    positive_line_search,
)
from byzjax.attacks._simple import (
    ALittleIsEnough,
    Fang,
    Gaussian,
    Inf,
    InnerProductManipulation,
    LabelFlipping,
    Mimic,
    MimicHeuristic,
    NoAttack,
    SignFlipping,
)

__all__ = [
    "AttackerView", "AbstractAttack", "AbstractCopyAttack", "AbstractPerWorkerAttack", "NoAttack", "SignFlipping", "InnerProductManipulation",
    "ALittleIsEnough", "Mimic", "MimicHeuristic", "Inf", "Gaussian", "LabelFlipping", "Fang", "MinMax", "MinSum",
    "LineSearchState", "positive_line_search", "Optimal_InnerProductManipulation", "Optimal_ALittleIsEnough",
]
