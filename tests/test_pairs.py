"""Pair selection: best vs worst, ties, too few valid scores, length control, zero pairs."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.params import PairsParams
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
])
def test_select_pair(means, expected):
    assert select_pair(row(means), PairsParams(min_margin=0.1)) == expected


TIED = row([3.0, 1.0, 3.0, 1.0], ["a", "bb bb", "ccc ccc ccc", "d"])


@pytest.mark.parametrize("rule, expected", [("shortest", (0, 3)), ("longest", (2, 1))])
def test_tie_break_by_length(rule, expected):
    assert select_pair(TIED, PairsParams(tie_break=rule)) == expected


def test_tie_break_default_is_seeded_random_not_a_length_rule():
    """Before, the longest of the equally low answers was always the rejected one."""
    params = PairsParams()
    assert params.tie_break == "random"
    picks = {seed: select_pair(TIED, PairsParams(seed=seed)) for seed in range(40)}
    assert {p[0] for p in picks.values()} == {0, 2} and {p[1] for p in picks.values()} == {1, 3}
    assert picks == {seed: select_pair(TIED, PairsParams(seed=seed)) for seed in range(40)}
    # select_pairs seeds each row from pairs.seed and its position: reruns pick the same.
    rows = [TIED] * 30
    first, _ = select_pairs(rows, params)
    assert first == select_pairs(rows, params)[0]
    assert len({p["rejected"][0]["content"] for p in first}) == 2
    _, stats = select_pairs(rows, params)
    assert stats["ties_broken_chosen"] == stats["ties_broken_rejected"] == 30
    assert stats["tie_break"] == "random"


def test_tie_break_is_documented():
    root = Path(__file__).resolve().parents[1]
    assert re.search(r"^  tie_break: random +# .*shortest.*longest", (root / "params.yaml")
                     .read_text(), re.MULTILINE)
    docs = "".join(p.read_text() for p in [root / "README.md", *(root / "docs").glob("*.md")])
    assert "pairs.tie_break" in docs and "pairs.seed" in docs


def test_length_control_prefers_the_shortest_near_the_top():
    r = row([4.9, 5.0, 2.0, 4.0], ["medium length", "a much much longer answer", "bad", "ok"])
    assert select_pair(r, PairsParams(min_margin=0.1)) == (1, 2)
    # rho 0.1: chosen window [4.7, 5] = {0, 1}, rejected window [2, 2.3] = {2}
    assert select_pair(r, PairsParams(min_margin=0.1, length_rho=0.1)) == (0, 2)
    # rho 0.5: both windows meet at 3.5: chosen from {0, 1, 3}, rejected from {2}
    assert select_pair(r, PairsParams(min_margin=0.1, length_rho=0.5)) == (3, 2)


# S_max 5, S_min 1; lengths 40, 10, 5, 8, 30 characters
SPREAD = row([5.0, 4.6, 3.0, 1.0, 1.5], ["a" * 40, "b" * 10, "c" * 5, "d" * 8, "e" * 30])


@pytest.mark.parametrize("means, texts, rho, expected", [
    # rho 0: today's max/min
    (SPREAD["mean"], SPREAD["responses"], 0.0, (0, 3)),
    # rho 0.1: chosen in [0.9*5 + 0.1*1, 5] = [4.6, 5] (4.6 sits on the bound): the shorter, 1;
    # rejected in [1, 1.4]: 3 alone (1.5 is out)
    (SPREAD["mean"], SPREAD["responses"], 0.1, (1, 3)),
    # rho 0.5: chosen in [3, 5] -> shortest is 2 (5 chars); rejected in [1, 3] -> longest is 4
    (SPREAD["mean"], SPREAD["responses"], 0.5, (2, 4)),
    # equal lengths and equal scores in a window: the first answer
    ([4.0, 4.0, 1.0, 1.0], ["abcd", "wxyz", "aa", "bb"], 0.1, (0, 2)),
    # equal lengths, different scores: the higher chosen, the lower rejected
    ([4.8, 5.0, 1.2, 1.0], ["aaaa", "bbbb", "cc", "dd"], 0.1, (1, 3)),
    # all scores equal: no pair at any rho
    ([3.0, 3.0, 3.0], ["a", "bb", "ccc"], 0.5, "tie"),
    # rho 0.5: the middle answer is both the shortest on top and the longest below: no pair
    ([5.0, 3.0, 1.0], ["aaaa", "bbb", "cc"], 0.5, "tie"),
    # a window pick that leaves less than min_margin between chosen and rejected
    ([1.15, 1.08, 1.0], ["long answer", "x", "yy"], 0.5, "tie"),
])
def test_length_control_by_hand(means, texts, rho, expected):
    assert select_pair(row(means, texts), PairsParams(min_margin=0.1, length_rho=rho)) == expected


def test_length_control_counts_the_picks_it_changed():
    counts = {}
    for rho in (0.0, 0.1, 0.5):
        _, stats = select_pairs([SPREAD, SPREAD], PairsParams(length_rho=rho))
        counts[rho] = (stats["length_changed_chosen"], stats["length_changed_rejected"])
        assert stats["length_rho"] == rho and stats["pairs"] == 2
    assert counts == {0.0: (0, 0), 0.1: (2, 0), 0.5: (2, 2)}


def test_length_rho_is_bounded_and_replaces_length_tolerance():
    with pytest.raises(ValueError, match="length_rho"):
        PairsParams(length_rho=0.6)
    with pytest.raises(ValueError, match="length_tolerance"):
        PairsParams(length_tolerance=0.2)


def test_select_pairs_trl_format_and_stats():
    rows = [row([3.0, 1.0]), row([2.0, 2.0]), row([None, None])]
    pairs, stats = select_pairs(rows, PairsParams())
    assert stats == {"source": "self_judged", "prompts": 3, "pairs": 1,
                     "dropped_too_few_valid": 1, "dropped_tie": 1, "dropped_no_source_answer": 0,
                     "dropped_identical": 0, "mean_margin": 2.0, "chosen_mean_words": 2.0,
                     "rejected_mean_words": 2.0, "length_rho": 0.0, "length_changed_chosen": 0,
                     "length_changed_rejected": 0, "tie_break": "random",
                     "ties_broken_chosen": 0, "ties_broken_rejected": 0}
    p = pairs[0]
    assert p["prompt"] == [{"role": "user", "content": "q"}]
    assert p["chosen"] == [{"role": "assistant", "content": "answer 0"}]
    assert p["rejected"] == [{"role": "assistant", "content": "answer 1"}]
    assert (p["score_chosen"], p["score_rejected"]) == (3.0, 1.0)
    assert p["source"] == "self_judged"


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
    assert "1 with < 2 valid scores (pairs.min_valid=2), 1 ties" in res.output
    assert "judge.mode=logprob" in res.output
    assert not out.exists() and not (tmp_path / "m.json").exists()


# Pair sources other than self_judged: the source_answers stage's rows joined by id.
def judged(row_id, means, texts, source=None, **extra):
    out = {"id": row_id, "prompt": f"prompt {row_id}", "responses": texts, "mean": means, **extra}
    return {**out, "source": source} if source else out


def test_spin_pairs_from_seed_data():
    """chosen = the seed answer, rejected = each of M_t's answers; no scores; an answer equal
    to the seed answer makes no pair."""
    source_rows = [
        judged("seed0", [None], ["my answer"], "spin", reference="The seed answer."),
        judged("seed1", [None, None], [" Same. ", "Other."], "spin", reference="Same."),
    ]
    pairs, stats = select_pairs([], PairsParams(source="spin"), source_rows)
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("seed0", "The seed answer.", "my answer"), ("seed1", "Same.", "Other.")]
    assert all(p["source"] == "spin" and p["score_chosen"] is None for p in pairs)
    assert pairs[0]["prompt"] == [{"role": "user", "content": "prompt seed0"}]
    assert (stats["prompts"], stats["pairs"], stats["dropped_identical"]) == (2, 2, 1)


def test_anchored_pairs_take_the_current_best_and_the_anchor_worst():
    current = [judged("a", [4.0, 2.5], ["cur best, a long one", "cur short"]),
               judged("b", [3.0, 3.0], ["b1", "b2"]),
               judged("c", [5.0, 1.0], ["c1", "c2"])]
    anchor = [judged("a", [3.0, 1.0, 2.0], ["m1 x", "m1 worst", "m1 y"], "anchored"),
              judged("b", [2.95], ["m1 b"], "anchored")]  # margin 0.05: dropped
    pairs, stats = select_pairs(current, PairsParams(source="anchored"), anchor)
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"],
             p["score_chosen"], p["score_rejected"]) for p in pairs] == [
        ("a", "cur best, a long one", "m1 worst", 4.0, 1.0)]
    assert (stats["dropped_tie"], stats["dropped_no_source_answer"]) == (1, 1)
    assert pairs[0]["source"] == "anchored"
    # with rho, the window of each side is taken in its own pool: chosen from M_t's answers
    # in [0.5*4 + 0.5*1, 4] = [2.5, 4] (the shorter, "cur short"), rejected from M1's in
    # [1, 2.5] (the longest, "m1 worst")
    pairs, _ = select_pairs(current[:1], PairsParams(source="anchored", length_rho=0.5),
                            anchor[:1])
    assert (pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]) == (
        "cur short", "m1 worst")


@pytest.mark.parametrize("margin, kept", [(0.5, ["a", "b"]), (1.0, ["a", "b"]), (1.5, ["a"]), (3.6, [])])
def test_teacher_pairs_keep_only_a_margin_above_min_margin(margin, kept):
    """chosen = the teacher's best answer, rejected = the student's lowest-scored one, kept
    when the judge's margin >= pairs.min_margin."""
    student = [judged("a", [3.0, 1.0], ["s good", "s bad"]),
               judged("b", [2.0, 4.0], ["s low", "s high"])]
    teacher = [judged("a", [4.5, 3.0], ["t best", "t other"], "teacher"),  # margin 3.5
               judged("b", [3.0], ["t only"], "teacher")]  # margin 1.0
    pairs, stats = select_pairs(student, PairsParams(source="teacher", min_margin=margin),
                                teacher)
    assert [p["id"] for p in pairs] == kept
    expected = {"a": ("t best", "s bad", 4.5, 1.0), "b": ("t only", "s low", 3.0, 2.0)}
    for p in pairs:
        assert (p["chosen"][0]["content"], p["rejected"][0]["content"], p["score_chosen"],
                p["score_rejected"]) == expected[p["id"]]
        assert p["source"] == "teacher"
    assert stats["dropped_tie"] == 2 - len(kept)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pairs_command_reads_two_answer_files(tmp_path):
    """The command joins judgments.jsonl and the source_answers file (anchored) and records the
    source of each pair; a file written for another source is refused with its line."""
    judgments = _write(tmp_path / "j.jsonl", [judged("a", [4.0, 2.0], ["cur 1", "cur 2"])])
    anchor = _write(tmp_path / "s.jsonl",
                    [judged("a", [1.0, 3.0], ["m1 worst", "m1 other"], "anchored")])
    (tmp_path / "params.yaml").write_text("pairs:\n  source: anchored\n")
    out = tmp_path / "pairs.jsonl"
    args = ["pairs", "--params", str(tmp_path / "params.yaml"), "--judgments", judgments,
            "--source-answers", anchor, "--out", str(out), "--metrics", str(tmp_path / "m.json")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    [pair] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"], pair["source"]) == (
        "cur 1", "m1 worst", "anchored")
    assert json.loads((tmp_path / "m.json").read_text())["source"] == "anchored"
    (tmp_path / "params.yaml").write_text("pairs:\n  source: teacher\n")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and f"{anchor}:1" in res.output and "source" in res.output
    assert "'anchored', not 'teacher'" in res.output and not out.exists()


def test_each_pairs_param_reruns_only_the_stages_that_read_it():
    """dvc.yaml: the source params rerun source_answers@t and pairs@t; the selection params
    (rho, margin, ties) rerun pairs@t only; every pairs param is documented in docs/pairs.md."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    answers = set(stages["source_answers"]["do"]["params"])
    assert stages["pairs"]["do"]["params"] == ["pairs"]
    assert {"pairs.source", "pairs.source_samples", "pairs.spin_prompts",
            "pairs.teacher"} <= answers
    assert not answers & {"pairs", "pairs.length_rho", "pairs.min_margin", "pairs.tie_break",
                          "pairs.min_valid"}
    assert "data/iter${key}/source_answers.jsonl" in stages["pairs"]["do"]["deps"]
    docs = (root / "docs" / "pairs.md").read_text()
    assert all(f"pairs.{name}" in docs for name in PairsParams.model_fields)
    assert "length_tolerance" not in (root / "params.yaml").read_text()
