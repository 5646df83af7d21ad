"""ByzFL's worst-case hyperparameter selection (byzjax.app.selection) on hand-made summary tables."""

import math

import numpy as np
import pytest

from byzjax._validation import ConfigError
from byzjax.app.results import config_columns
from byzjax.app.selection import best_worst_case, candidates, hyperparameter_columns, selected_rows, setting_columns


def row(agg, f, attack, lr, seed, acc, *, loss=1.0, run=0, split="iid", alpha=""):
    """A summary.csv row as read back (text cells)."""
    return {"run": str(run), "seed": str(seed), "f": str(f), "attack": attack, "aggregator": agg,
            "method": f"D-GD(lr={lr})", "algorithm": "DGD", "split": split, "alpha": alpha, "lam": "0.001",
            "n_honest": "4",
            "lr": str(lr), "l_ref": "0.5", "final_loss": str(loss), "best_val_acc": "" if acc is None else str(acc),
            "diverged": "False", "compile_s": "1.0", "attack_tau": "1.5" if attack == "ALIE" else ""}


def table(spec):
    """``spec``: (aggregator, f, lr) -> {attack: [accuracy per seed]}; rows in spec order."""
    rows = []
    for run, ((agg, f, lr), by_attack) in enumerate(spec.items()):
        for attack, accs in by_attack.items():
            rows += [row(agg, f, attack, lr, s, a, run=run) for s, a in enumerate(accs)]
    return rows


HAND = {
    # A, f=1: lr 0.1 has the better mean (0.7) but the worse worst case (0.6): 0.5 is chosen (worst 0.65)
    ("A", 1, 0.1): {"SignFlipping": [0.8, 0.8], "ALIE": [0.5, 0.7]},
    ("A", 1, 0.5): {"SignFlipping": [0.7, 0.7], "ALIE": [0.6, 0.7]},
    ("A", 0, 0.1): {"none": [0.9, 0.9]},
    ("A", 0, 0.5): {"none": [0.85, 0.85]},
    # B, f=1: lr 0.5 has a nan seed under SignFlipping: never chosen although its other attack is best
    ("B", 1, 0.1): {"SignFlipping": [0.7, 0.7], "ALIE": [0.5, 0.5]},
    ("B", 1, 0.5): {"SignFlipping": [0.9, None], "ALIE": [0.9, 0.9]},
    # B, f=0: a tie: the first in grid order wins, tied = 2
    ("B", 0, 0.5): {"none": [0.8, 0.8]},
    ("B", 0, 0.1): {"none": [0.8, 0.8]},
    # C, f=1: every candidate nan: no choice
    ("C", 1, 0.1): {"SignFlipping": [None, None], "ALIE": [0.5, 0.5]},
    ("C", 1, 0.5): {"SignFlipping": [0.3, 0.3], "ALIE": [None, 0.5]},
    # D, f=1: lr 0.1 was not run against ALIE (incomplete grid): judged nan, not on SignFlipping alone
    ("D", 1, 0.1): {"SignFlipping": [0.95, 0.95]},
    ("D", 1, 0.5): {"SignFlipping": [0.6, 0.6], "ALIE": [0.6, 0.6]},
}


def _by_setting(selections):
    return {(s.setting["aggregator"], s.setting["f"]): s for s in selections}


def test_columns_are_split_into_setting_attack_and_hyperparameters():
    header = list(row("A", 1, "ALIE", 0.1, 0, 0.5)) + ["momentum", "worker_momentum", "aggregator_tau", "stage"]
    assert config_columns(header) == ["f", "attack", "aggregator", "method", "algorithm", "split", "alpha", "lam",
                                      "n_honest", "lr", "attack_tau", "momentum", "worker_momentum", "aggregator_tau",
                                      "stage"]
    assert hyperparameter_columns(header) == ["lam", "lr", "momentum", "worker_momentum"]
    assert setting_columns(header) == ["f", "aggregator", "split", "alpha", "n_honest", "aggregator_tau", "stage",
                                       "algorithm"]


def test_hand_made_table_worst_case_choice_with_nan_ties_and_missing_attacks():
    sel = _by_setting(best_worst_case(table(HAND)))
    assert set(sel) == {(a, str(f)) for a, f, _ in HAND}
    a1 = sel[("A", "1")]
    assert a1.hyper["lr"] == "0.5" and a1.worst == pytest.approx(0.65) and a1.worst_attack == ("ALIE", "1.5")
    assert a1.n_candidates == 2 and a1.tied == 1 and a1.setting["algorithm"] == "DGD"
    assert sel[("A", "0")].hyper["lr"] == "0.1" and sel[("A", "0")].worst == pytest.approx(0.9)
    assert sel[("A", "0")].worst_attack == ("none", "")
    assert sel[("B", "1")].hyper["lr"] == "0.1" and sel[("B", "1")].worst == pytest.approx(0.5)
    assert sel[("B", "0")].hyper["lr"] == "0.5" and sel[("B", "0")].tied == 2
    c1 = sel[("C", "1")]
    assert c1.hyper is None and math.isnan(c1.worst) and c1.worst_attack is None and c1.n_candidates == 2
    assert sel[("D", "1")].hyper["lr"] == "0.5" and sel[("D", "1")].worst == pytest.approx(0.6)
    cands = {(c.setting["aggregator"], c.setting["f"], c.hyper["lr"]): c for c in candidates(table(HAND), "best_val_acc")}
    d = cands[("D", "1", "0.1")]
    assert math.isnan(d.per_attack[("ALIE", "1.5")]) and d.seeds[("ALIE", "1.5")] == 0 and math.isnan(d.worst)
    assert cands[("A", "1", "0.1")].per_attack == {("SignFlipping", ""): pytest.approx(0.8), ("ALIE", "1.5"): pytest.approx(0.6)}
    chosen = selected_rows(table(HAND), best_worst_case(table(HAND)))
    assert {(r["aggregator"], r["f"], r["lr"]) for r in chosen} == {
        ("A", "1", "0.5"), ("A", "0", "0.1"), ("B", "1", "0.1"), ("B", "0", "0.5"), ("D", "1", "0.5")}
    assert len(chosen) == 4 + 2 + 4 + 2 + 4


def test_loss_selection_minimises_the_worst_case_and_an_infinite_loss_is_a_number():
    rows = [row("A", 1, att, lr, s, None, loss=loss) for lr, att, loss in
            [(0.1, "SignFlipping", 2.0), (0.1, "ALIE", 3.0), (0.5, "SignFlipping", 1.0), (0.5, "ALIE", "inf"),
             (0.9, "SignFlipping", 2.5), (0.9, "ALIE", 2.9)] for s in range(2)]
    (s,) = best_worst_case(rows, "final_loss", higher_is_better=False)
    assert s.hyper["lr"] == "0.9" and s.worst == pytest.approx(2.9) and s.worst_attack == ("ALIE", "1.5")
    (acc,) = best_worst_case(rows)  # no accuracy at all: nothing to choose
    assert acc.hyper is None


def test_settings_are_kept_apart_by_data_instance_and_algorithm():
    rows = [row("A", 1, "SignFlipping", lr, 0, acc, split=split, alpha=alpha) for split, alpha, lr, acc in
            [("iid", "", 0.1, 0.9), ("iid", "", 0.5, 0.8), ("dirichlet", "0.1", 0.1, 0.2), ("dirichlet", "0.1", 0.5, 0.3)]]
    rows += [r | {"method": "D-NAG(lr=0.1)", "algorithm": "DNAG", "momentum": "0.9"} for r in rows[:2]]
    sel = {(s.setting["split"], s.setting["algorithm"]): s.hyper["lr"] for s in best_worst_case(rows)}
    assert sel == {("iid", "DGD"): "0.1", ("dirichlet", "DGD"): "0.5", ("iid", "DNAG"): "0.1"}


def test_settings_are_grouped_by_the_algorithm_column_never_by_the_method_label():
    """Two algorithms whose labels start alike (AEG and ProxAEG are both "AEG(...)") are two settings;
    two labels of one algorithm (an alias, "moDSGD(...)" and "D-GD(...)") are one."""
    rows = [row("A", 1, "SignFlipping", lr, 0, acc) for lr, acc in [(0.1, 0.9), (0.5, 0.8)]]
    rows = [r | {"method": f"AEG(theta={r['lr']})", "algorithm": "AEG"} for r in rows] + \
        [r | {"method": f"AEG(prox=True,theta={r['lr']})", "algorithm": "ProxAEG", "best_val_acc": a}
         for r, a in zip(rows, ("0.1", "0.95"))]
    sel = {s.setting["algorithm"]: s.hyper["lr"] for s in best_worst_case(rows)}
    assert sel == {"AEG": "0.1", "ProxAEG": "0.5"}
    alias = [row("A", 1, "SignFlipping", lr, 0, acc) | {"method": m} for lr, acc, m in
             [(0.1, 0.7, "moDSGD(lr=0.1)"), (0.5, 0.8, "D-GD(lr=0.5)")]]
    (s,) = best_worst_case(alias)
    assert s.hyper["lr"] == "0.5" and s.n_candidates == 2


def test_rows_without_the_algorithm_column_are_a_one_line_error():
    rows = [{k: v for k, v in row("A", 1, "ALIE", 0.1, s, 0.5).items() if k != "algorithm"} for s in range(2)]
    for call in (lambda: best_worst_case(rows), lambda: candidates(rows, "best_val_acc"),
                 lambda: selected_rows(rows, [])):
        with pytest.raises(ConfigError, match=r"^selection: 2 of 2 rows have no 'algorithm' column") as err:
            call()
        assert "\n" not in str(err.value)


def test_random_tables_agree_with_a_numpy_reference():
    rng = np.random.default_rng(0)
    levels = np.array([0.2, 0.4, 0.6, 0.8])  # few values: many exact ties
    for _ in range(300):
        n_h, n_a, n_s = rng.integers(1, 5), rng.integers(1, 4), rng.integers(1, 4)
        acc = rng.choice(levels, size=(n_h, n_a, n_s))
        acc[rng.random(acc.shape) < 0.08] = np.nan
        present = rng.random((n_h, n_a)) > 0.1
        attacks = [f"a{j}" for j in range(n_a)]
        rows = [row("A", 1, attacks[j], 0.1 * (h + 1), s, None if np.isnan(acc[h, j, s]) else acc[h, j, s])
                for h in range(n_h) for j in range(n_a) if present[h, j] for s in range(n_s)]
        if not rows:
            continue
        seen = [j for j in range(n_a) if present[:, j].any()]
        hs = [h for h in range(n_h) if present[h].any()]
        means = np.where(present, acc.mean(axis=2), np.nan)[np.ix_(hs, seen)]
        worst = means.min(axis=1)  # a nan (or missing) attack makes the worst case nan
        (sel,) = best_worst_case(rows)
        if np.isnan(worst).all():
            assert sel.hyper is None and math.isnan(sel.worst)
            continue
        best = np.nanmax(worst)
        first = next(i for i, w in enumerate(worst) if w == best)
        assert sel.hyper["lr"] == str(0.1 * (hs[first] + 1)) and sel.worst == pytest.approx(best)
        assert sel.tied == int(np.sum(worst == best)) and sel.n_candidates == len(hs)
