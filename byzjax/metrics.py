"""The per-round metrics a run records, in one table.

Every name an algorithm's ``step`` returns must be listed in ``ROUND_METRICS`` (tested for every
registered algorithm); ``metrics.csv`` gets one column per name a run produced, and the plots
treat every listed name as a measurement, never as a configuration label. ``comm_rounds`` is the
communication-round counter of the trace, written as ``comm_round``. Evaluation metrics
(``EVAL_METRICS``) are what ``problem.evaluate`` returns on the held-out sets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUND_METRICS = {
    "loss": "L_H(x) at the query point, the honest workers' mean loss",
    "grad_norm": "||grad L_H(x)||",
    "error": "||g_hat(x) - grad L_H(x)||, the oracle error (arXiv 2602.03329, the reduction to an inexact gradient oracle)",
    "spread": "(1/|H|) sum_i ||grad L_i(x) - grad L_H(x)||^2, the left side of the (G, B) heterogeneity bound",
    "kappa_hat": "error^2 / spread, the round's empirical (f, kappa) ratio on the actual honest set (nan when "
                 "spread = 0); the oracle-error bound error^2 <= kappa (G^2 + B^2 grad_norm^2) of arXiv 2602.03329, "
                 "section 2 is checked per run (byzjax.theory), as (G, B) need every round",
    "byz_sent": "Byzantine rows the server received this round (only when workers may be absent)",
    "inner_iters": "iterations of the server's inner L-BFGS solve (PIGS, prox-AEG)",
    "inner_grad_norm": "gradient norm at the end of the inner solve (PIGS, prox-AEG)",
    "inner_capped": "1 when the inner solve stopped at its iteration cap (an inexact proximal step), else 0",
}
"""Name -> meaning of every per-round metric."""

EVAL_METRICS = {
    "val_acc": "accuracy on the validation split",
    "test_acc": "accuracy on the test split",
}
"""Name -> meaning of every evaluation metric (taken every ``eval_every`` rounds)."""

COUNTER = "comm_rounds"
"""The trace's communication-round counter (rounds used after each iteration)."""


def round_metrics(out) -> dict[str, jax.Array]:
    """The oracle's per-round quantities at the query point (``out``: an ``OracleOutput``).

    ``spread = (1/|H|) sum_i ||grad L_i - grad L_H||^2`` and ``kappa_hat = error^2 / spread``
    (nan when ``spread = 0``): scalars from what the oracle returns, no extra communication.
    """
    spread = jnp.mean(jnp.sum((out.honest_grads - out.honest_grad) ** 2, axis=1))
    error = out.error
    metrics = {
        "loss": out.honest_loss,
        "grad_norm": jnp.linalg.norm(out.honest_grad),
        "error": error,
        "spread": spread,
        "kappa_hat": jnp.where(spread > 0, error**2 / jnp.where(spread > 0, spread, 1.0), jnp.nan),
    }
    if out.byz_sent is not None:  # only when Byzantine workers may be absent
        metrics["byz_sent"] = out.byz_sent
    return metrics
