"""Measured constants of a problem instance (kept for existing imports).

The functions live in ``byzjax.theory`` with the rest of the paper's theory (reference optimum,
(G, B) fits, proven kappa, bounds and predicted floors); this module re-exports the ones it has
always provided: ``honest_loss``, ``smoothness``, ``strong_convexity`` (arXiv 2602.03329, the reduction to an inexact gradient oracle).
"""

from __future__ import annotations

from byzjax.theory import honest_loss, similarity_delta, smoothness, strong_convexity

__all__ = ["honest_loss", "similarity_delta", "smoothness", "strong_convexity"]
