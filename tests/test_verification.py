"""The verification gap (issue 19 item 2): metrics on hand-made checker verdicts and judge
scores, and the `verify` stage end to end on a tiny random model with the official checkers."""

from __future__ import annotations

import pytest

from selfreward.evaluation.verification import prompt_rates, verification_gap

# 4 prompts x 4 answers: checker verdicts (True = passes)
PASSED = [[True, False, False, False], [True, True, False, False], [False] * 4,
          [True, False, True, True]]


def test_a_judge_that_ranks_by_the_checker_selects_the_oracle():
    scores = [[float(p) + 0.1 * j for j, p in enumerate(row)] for row in PASSED]
    gap = verification_gap(PASSED, scores, samples=500)
    random_rate = (0.25 + 0.5 + 0 + 0.75) / 4
    oracle = 3 / 4
    assert gap["random"]["mean"] == pytest.approx(random_rate)
    assert gap["oracle"]["mean"] == pytest.approx(oracle)
    assert gap["top"]["mean"] == pytest.approx(oracle)
    assert gap["lowest"]["mean"] == pytest.approx(0.0)
    assert gap["selection_gain"]["mean"] == pytest.approx(oracle - random_rate)
    # separated pairs: 3 + 4 + 0 + 3, all ordered right
    assert gap["pairs"]["n"] == 10 and gap["pairs"]["agree"] == 10
    assert gap["pairs"]["accuracy"] == 1.0
    assert gap["prompts_separated"] == 3
    lo, hi = gap["selection_gain"]["ci"]
    assert lo <= gap["selection_gain"]["mean"] <= hi and lo >= 0


def test_a_constant_judge_gains_nothing():
    gap = verification_gap(PASSED, [[2.0] * 4 for _ in PASSED], samples=500)
    assert gap["selection_gain"]["mean"] == pytest.approx(0.0)
    assert gap["selection_gain"]["ci"] == [0.0, 0.0]
    assert gap["selection_gain_includes_zero"] is True
    assert gap["top"]["mean"] == gap["random"]["mean"] == gap["lowest"]["mean"]
    assert gap["pairs"]["tie"] == 10 and gap["pairs"]["accuracy"] == 0.0


def test_an_inverted_judge_picks_the_failures():
    scores = [[-float(p) for p in row] for row in PASSED]
    gap = verification_gap(PASSED, scores, samples=200)
    assert gap["top"]["mean"] == pytest.approx(0.0)  # only prompt 4's failure is top-scored
    assert gap["selection_gain"]["mean"] < 0
    assert gap["pairs"]["disagree"] == 10


def test_ties_and_unscored_answers():
    # top score tied between a pass and a fail: half a pass; an unscored answer is never picked
    rates = prompt_rates([True, False, True], [3.0, 3.0, None])
    assert rates == {"random": pytest.approx(2 / 3), "top": 0.5, "lowest": 0.5, "oracle": 1.0,
                     "selection_gain": pytest.approx(0.5 - 2 / 3)}
    assert prompt_rates([True, False], [None, None])["top"] == 0.5
    with pytest.raises(ValueError):
        prompt_rates([True], [1.0, 2.0])
