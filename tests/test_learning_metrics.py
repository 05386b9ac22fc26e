"""The figures that say whether a run learned, on hand-made data: intervals, reward gain,
answers changed, relevance items, score spread, position-bias detection in the report."""

from __future__ import annotations

import json
import random
import statistics

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.evaluation.metrics import (
    answers_changed,
    bootstrap_ci,
    derangement,
    grouped_accuracy_ci,
    mean_with_ci,
    paired_gain,
    position_bias,
    relevance_items,
    score_spread,
    wilson_interval,
    win_rate_ci,
)
from selfreward.judge.agreement import eft_relevance_items, relevance_metrics


def test_wilson_interval_known_values():
    # Wilson 95 % intervals, computed by hand from the closed form
    assert wilson_interval(0, 10) == [0.0, 0.2775]
    assert wilson_interval(10, 10) == [0.7225, 1.0]
    assert wilson_interval(45, 50) == [0.7864, 0.9565]
    assert wilson_interval(0, 0) is None


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    rng = random.Random(1)
    xs = [rng.gauss(1.0, 1.0) for _ in range(200)]
    lo, hi = bootstrap_ci(xs, seed=3)
    assert lo < statistics.fmean(xs) < hi
    assert [lo, hi] == bootstrap_ci(xs, seed=3)
    # the interval of a mean of 200 N(1, 1) draws is about +-1.96/sqrt(200) = +-0.14 wide
    assert 0.2 < hi - lo < 0.35
    assert bootstrap_ci([2.0] * 5) == [2.0, 2.0] and bootstrap_ci([]) is None


def test_paired_gain_hand_made():
    before = [2.0, 2.0, 3.0, 1.0, None]
    after = [3.0, 3.5, 3.0, 2.0, 4.0]  # the last prompt has no "before": not paired
    g = paired_gain(before, after, seed=0)
    assert g["n"] == 4 and g["gain"] == pytest.approx((1 + 1.5 + 0 + 1) / 4)
    assert g["mean_before"] == 2.0 and g["mean_after"] == pytest.approx(2.875)
    assert g["improved"] == 3 and g["worsened"] == 0
    # every paired difference is >= 0, so every bootstrap mean is too
    assert 0 <= g["ci_low"] <= g["gain"] <= g["ci_high"] <= 1.5
    same = paired_gain([1.0, 2.0], [1.0, 2.0])
    assert same["gain"] == 0 and (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    worse = paired_gain([3.0] * 10, [2.0] * 10)
    assert worse["gain"] == -1 and worse["ci_high"] == -1.0


def test_answers_changed_share():
    before = {"a": "Paris.", "b": "Two.", "c": "Blue", "d": "x"}
    after = {"a": "Paris. ", "b": "Three.", "c": "Green", "e": "y"}  # d/e not shared
    assert answers_changed(before, after) == {"prompts": 3, "changed": 2, "share": 0.6667}
    assert answers_changed({}, {})["share"] is None


def test_derangement_and_relevance_items():
    for n in (2, 3, 10, 54):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
    items = relevance_items(["p0", "p1", "p2"], ["a0", "a1", "a2"], seed=0)
    for it in items:
        i = it["index"]
        assert it["prompt"] == f"p{i}" and it["chosen"] == f"a{i}"
        assert it["rejected"] == f"a{it['other']}" and it["other"] != i
    assert relevance_items(["only"], ["one"]) == []


def test_relevance_metrics_counts_ties_as_misses():
    m = relevance_metrics([(4.0, 0.5), (3.0, 3.0), (1.0, 2.0), (5.0, 0.0)])
    assert (m["agree"], m["tie"], m["disagree"], m["pairs"]) == (2, 1, 1, 4)
    assert m["accuracy"] == 0.5 and m["accuracy_ci"] == wilson_interval(2, 4)


def test_eft_relevance_items_pair_good_answers_across_groups():
    from selfreward.data.seed import JudgeExample

    rows = [JudgeExample(f"Q{g}", f"A{g}{k}", "", s, g, f"f:{i}")
            for i, (g, k, s) in enumerate([("x", 0, 5), ("x", 1, 1), ("y", 0, 4),
                                            ("y", 1, 3), ("z", 0, 0)])]
    items = eft_relevance_items(rows, seed=0)
    # z has no answer scored >= 3: only x and y take part, each against the other
    assert {(it["group"], it["other"]) for it in items} == {("x", "y"), ("y", "x")}
    assert {it["chosen"] for it in items} == {"Ax0", "Ay0", "Ay1"}
    for it in items:
        assert it["prompt"] == f"Q{it['group']}" and it["rejected"].startswith(f"A{it['other']}")


def test_score_spread_and_grouped_ci():
    s = score_spread([3.0, 3.1, 2.9, None])
    assert s["bins_used"] == 1 and s["hist_3"] == 3 and s["std"] == pytest.approx(0.0816, 1e-3)
    human, groups = [5, 3, 1, 4, 2, 0], ["a"] * 3 + ["b"] * 3
    perfect = grouped_accuracy_ci([h / 2 for h in human], human, groups)
    assert perfect == [1.0, 1.0]
    half = grouped_accuracy_ci([1, 2, 3, 3, 2, 1], human, groups)  # a: all wrong, b: all right
    assert half[0] == 0.0 and half[1] == 1.0
    assert mean_with_ci([1.0, None, 3.0])["n"] == 2


def test_win_rate_ci_and_position_bias():
    assert win_rate_ci(["win"] * 8) == [1.0, 1.0]
    lo, hi = win_rate_ci(["win", "tie", "loss", "tie"] * 10)
    assert lo < 0.5 < hi
    assert position_bias(1.0, 32)["biased"] is True
    assert position_bias(0.55, 32)["biased"] is False
    assert position_bias(0.1, 20)["biased"] is True
    assert position_bias(None, 0)["biased"] is None
    # first-slot rate 0.4 looks fine, but the verdict follows the slot in 95 % of the pairs
    assert position_bias(0.4, 100, flip_rate=0.95)["biased"] is True
    assert position_bias(0.4, 100, flip_rate=0.3)["biased"] is False


def _write(root, rel, obj):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_report_flags_position_bias_and_unmoved_checkpoints(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics, "sft.json", {"steps": 10, "update": {
        "changed_share": 0.004, "update_rms": 1e-7,
        "warning": "the saved checkpoint is nearly identical to its input: only 0.40 % of the "
                   "weights changed"}})
    biased = {"n": 8, "win": 0, "tie": 8, "loss": 0, "win_pct": 0.0, "tie_pct": 100.0,
              "loss_pct": 0.0, "win_rate": 0.5, "win_rate_ci": [0.5, 0.5],
              "first_slot_rate": 1.0, "position_bias": {"first_slot_rate": 1.0,
                                                        "ci": [0.8, 1.0], "biased": True}}
    _write(metrics, "iter1/dpo.json", {"update": {"changed_share": 0.9, "warning": None}})
    _write(metrics, "iter1/eval.json", {
        "answers_changed": {"prompts": 8, "changed": 0, "share": 0.0},
        "reward_gain": {"gain": 0.25, "ci_low": 0.05, "ci_high": 0.41, "n": 8},
        "fixed_judge_gain": {"vs_prev": {"gain": -0.1, "ci_low": -0.3, "ci_high": 0.1}},
        "vs_prev": biased, "vs_sft": biased,
        "judge": {"kind": "local", "model": "models/m1", "mode": "logprob"}})
    for k, acc in ((0, 0.65), (1, 0.85)):
        _write(metrics, f"models/m{k}.json", {
            "model": f"models/m{k}",
            "judge_agreement": {"pairwise_accuracy": acc, "pairwise_accuracy_ci": [0.5, 0.9],
                                "spearman": 0.6},
            "relevance": {"accuracy": 0.9, "accuracy_ci": [0.8, 0.95], "pairs": 54},
            "fixed_judge": {"model": "models/m1", "mean": 3.2, "ci_low": 3.0, "ci_high": 3.4},
            "length": {"mean_words": 40.0}})
    out = tmp_path / "reports"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(metrics), "--out", str(out),
                                    "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "## Warnings" in md
    assert "SFT (M0 → M1): the saved checkpoint is nearly identical" in md
    assert "Iteration 1: not one greedy answer changed" in md
    assert "the head-to-head judge is position-biased (first-slot rate 1.000" in md
    assert "1.000 (biased)" in md
    # the at-equal-length column is empty: these metrics carry no length-controlled gain
    assert ("| 1 (M1 → M2) | 90.0 | 0.0 | +0.250 [+0.050, +0.410] | – | -0.100 [-0.300, +0.100] |"
            in md)
    assert "| M0 (`models/m0`) | 65.0 [50.0, 90.0] | 0.600 |" in md
    assert "90.0 [80.0, 95.0]" in md and "3.200 [3.000, 3.400]" in md
