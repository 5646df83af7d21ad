"""``byzjax.app.selection.lowest_auc``: the authors' area-under-the-curve step selection, on hand-made curves."""

import numpy as np
import pytest

from byzjax.app.selection import curve_auc, lowest_auc

T = 50
t = np.arange(T, dtype=float)


def exp_curve(rate, floor=0.1):
    return floor + np.exp(-rate * t)


def test_the_fastest_decreasing_curve_wins_per_method():
    curves = [{"method": "D-GD", "step": lr, "seed": 0, "loss": exp_curve(rate)}
              for lr, rate in ((0.05, 0.01), (0.1, 0.05), (0.2, 0.2), (0.5, 0.1))]
    curves += [{"method": "PIGS", "step": eta, "seed": 0, "loss": exp_curve(rate)}
               for eta, rate in ((1.0, 0.5), (2.0, 0.02))]
    choice = lowest_auc(curves)
    assert set(choice) == {"D-GD", "PIGS"}
    assert choice["D-GD"].step == 0.2 and choice["PIGS"].step == 1.0
    assert choice["D-GD"].auc == pytest.approx(exp_curve(0.2).mean(), rel=1e-14)
    assert sorted(choice["D-GD"].scores) == [0.05, 0.1, 0.2, 0.5]


def test_area_not_final_value_decides():
    """A curve that ends lower but stays high for long loses to one that drops at once."""
    slow = np.where(t < 40, 2.0, 0.01)  # final 0.01, mean 1.602
    fast = np.full(T, 0.2)  # final 0.2, mean 0.2
    choice = lowest_auc([{"method": "m", "step": 1.0, "loss": slow}, {"method": "m", "step": 2.0, "loss": fast}])
    assert choice["m"].step == 2.0
    assert choice["m"].scores[1.0] == pytest.approx(slow.mean())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_curve_with_a_non_finite_value_is_discarded(bad):
    diverging = exp_curve(1.0)  # the best curve until it blows up at the last round
    diverging[-1] = bad
    curves = [{"method": "m", "step": 1.0, "loss": diverging}, {"method": "m", "step": 0.5, "loss": exp_curve(0.1)}]
    choice = lowest_auc(curves)
    assert choice["m"].step == 0.5
    assert choice["m"].scores[1.0] == np.inf and choice["m"].discarded == {0.5: 0, 1.0: 1}
    assert curve_auc(diverging) == np.inf


def test_mean_over_seeds_of_the_finite_curves():
    """Score = mean over seeds of the mean over rounds; a non-finite seed is left out of the mean."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_steps, n_seeds = rng.integers(2, 6), rng.integers(1, 5)
        steps = np.sort(rng.choice(np.arange(1, 50) / 10, n_steps, replace=False))
        losses = rng.uniform(0.0, 3.0, size=(n_steps, n_seeds, T))
        if n_seeds > 1:
            losses[0, 0, rng.integers(T)] = np.nan  # one seed of the first step diverges
        curves = [{"method": "m", "step": s, "seed": k, "loss": losses[i, k]}
                  for i, s in enumerate(steps) for k in range(n_seeds)]
        choice = lowest_auc(curves)["m"]
        expected = {s: np.nanmean(losses[i].mean(axis=1)) if n_seeds > 1 else losses[i].mean()
                    for i, s in enumerate(steps)}
        assert choice.scores == pytest.approx(expected, rel=1e-12)
        assert choice.step == min(expected, key=expected.get)


def test_only_f0_curves_count_and_ties_go_to_the_smaller_step():
    same = exp_curve(0.1)
    curves = [{"method": "m", "step": 2.0, "f": 0, "loss": same}, {"method": "m", "step": 1.0, "f": 0, "loss": same},
              {"method": "m", "step": 3.0, "f": 5, "loss": np.zeros(T)}]  # attacked: ignored
    choice = lowest_auc(curves)["m"]
    assert choice.step == 1.0 and set(choice.scores) == {1.0, 2.0}


def test_every_curve_non_finite_gives_an_infinite_score():
    choice = lowest_auc([{"method": "m", "step": s, "loss": np.full(T, np.nan)} for s in (0.1, 0.2)])["m"]
    assert choice.auc == np.inf and choice.step == 0.1
