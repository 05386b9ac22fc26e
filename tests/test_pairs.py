"""Pair selection: best vs worst, ties, too few valid scores, length control, zero pairs."""

import json

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.params import PairsParams
from selfreward.stages.pairs import select_pair, select_pairs


def row(means, responses=None):
    responses = responses or [f"answer {i}" for i in range(len(means))]
    return {"id": "x", "prompt": "q", "responses": responses, "mean": means}


@pytest.mark.parametrize("means, expected", [
    ([3.0, 1.0, 5.0, 2.0], (2, 1)),
    ([4.0, 4.0, 4.0, 4.0], "tie"),
    ([4.0, 4.05, 4.0, 4.0], "tie"),  # margin 0.05 < min_margin 0.1
    ([None, 3.0, None, None], "too_few_valid"),
    ([None, 3.0, None, 1.0], (1, 3)),
    ([5.0, 1.0, 5.0, 1.0], (0, 1)),  # first of equal tops
])
def test_select_pair(means, expected):
    assert select_pair(row(means), PairsParams(min_margin=0.1)) == expected


def test_length_control_prefers_the_shortest_near_the_top():
    r = row([4.9, 5.0, 2.0, 4.0], ["medium length", "a much much longer answer", "bad", "ok"])
    assert select_pair(r, PairsParams(min_margin=0.1)) == (1, 2)
    assert select_pair(r, PairsParams(min_margin=0.1, length_tolerance=0.2)) == (0, 2)
    assert select_pair(r, PairsParams(min_margin=0.1, length_tolerance=1.5)) == (3, 2)


def test_select_pairs_trl_format_and_stats():
    rows = [row([3.0, 1.0]), row([2.0, 2.0]), row([None, None])]
    pairs, stats = select_pairs(rows, PairsParams())
    assert stats == {"prompts": 3, "pairs": 1, "dropped_too_few_valid": 1, "dropped_tie": 1,
                     "mean_margin": 2.0, "chosen_mean_words": 2.0, "rejected_mean_words": 2.0}
    p = pairs[0]
    assert p["prompt"] == [{"role": "user", "content": "q"}]
    assert p["chosen"] == [{"role": "assistant", "content": "answer 0"}]
    assert p["rejected"] == [{"role": "assistant", "content": "answer 1"}]
    assert (p["score_chosen"], p["score_rejected"]) == (3.0, 1.0)


def test_zero_pairs_fails_with_counts_and_advice(tmp_path):
    judgments = tmp_path / "j.jsonl"
    judgments.write_text("\n".join(json.dumps(r) for r in [row([2.0, 2.0]), row([None, 1.0])]))
    (tmp_path / "params.yaml").write_text("pairs:\n  min_margin: 0.1\n")
    out = tmp_path / "pairs.jsonl"
    res = CliRunner().invoke(main, ["pairs", "--params", str(tmp_path / "params.yaml"),
                                    "--judgments", str(judgments), "--out", str(out),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2
    assert "no preference pairs from 2 prompts" in res.output
    assert "1 with < 2 valid scores, 1 ties" in res.output and "judge.mode=logprob" in res.output
    assert not out.exists() and not (tmp_path / "m.json").exists()
