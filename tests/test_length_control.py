"""The length-controlled gain (issue 19 item 1) on hand-made data: a known intercept and slope
are recovered, and a gain that is all length leaves an intercept near 0."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from selfreward.evaluation.metrics import length_controlled_gain


def synthetic(intercept: float, slope: float, n: int = 200, noise: float = 0.05,
              seed: int = 1) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    dlen = [rng.gauss(8.0, 10.0) for _ in range(n)]  # M_t+1 answers mostly longer
    sd = statistics.pstdev(dlen)
    diffs = [intercept + slope * math.tanh(x / sd) + rng.gauss(0, noise) for x in dlen]
    return diffs, dlen


def test_recovers_a_known_intercept_and_slope():
    diffs, dlen = synthetic(intercept=0.3, slope=0.8)
    fit = length_controlled_gain(diffs, dlen, samples=500)
    assert fit["n"] == 200
    assert fit["intercept"] == pytest.approx(0.3, abs=0.02)
    assert fit["slope"] == pytest.approx(0.8, abs=0.03)
    lo, hi = fit["intercept_ci"]
    assert lo < 0.3 < hi and hi - lo < 0.05
    assert fit["slope_ci"][0] < 0.8 < fit["slope_ci"][1]
    assert fit["raw_gain"] == pytest.approx(statistics.fmean(diffs), abs=1e-4)


def test_a_gain_that_is_all_length_leaves_an_intercept_near_zero():
    diffs, dlen = synthetic(intercept=0.0, slope=0.5, noise=0.1)
    fit = length_controlled_gain(diffs, dlen, samples=500)
    assert fit["raw_gain"] > 0.2  # the raw gain looks like progress...
    assert abs(fit["intercept"]) < 0.03  # ...the gain at equal length is none
    lo, hi = fit["intercept_ci"]
    assert lo < 0 < hi
    assert fit["length_correlation"] > 0.8


def test_hand_computed_fit_and_edge_cases():
    # dlen = [-1, 1, -1, 1]: sd 1, x = tanh(+-1); d = 1 + 2x exactly
    t = math.tanh(1.0)
    fit = length_controlled_gain([1 - 2 * t, 1 + 2 * t, 1 - 2 * t, 1 + 2 * t, None],
                                 [-1, 1, -1, 1, 3], samples=200)
    assert fit["n"] == 4 and fit["intercept"] == pytest.approx(1.0)
    assert fit["slope"] == pytest.approx(2.0)
    same = length_controlled_gain([0.5, 0.7], [4, 4])  # no length variation: slope undefined
    assert same["slope"] is None and same["intercept"] == pytest.approx(0.6)
    assert length_controlled_gain([], [])["intercept"] is None
    with pytest.raises(ValueError):
        length_controlled_gain([1.0], [1.0, 2.0])
