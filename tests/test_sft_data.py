"""What SFT trains on: EFT rendered as the judge is asked, balanced synthetic judge turns, and
every judge example measured against max_length before training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import JudgeDataParams, SftParams
from selfreward.data.seed import load_eft, load_ift
from selfreward.judge.rubric import JUDGE_PREFIX
from selfreward.training.sft import build_examples
from selfreward.training.sft_data import (
    check_lengths,
    eft_examples,
    example_tokens,
    synthetic_judge_examples,
)

ROOT = Path(__file__).resolve().parents[1]
IFT, EFT = ROOT / "data/seed/ift.jsonl", ROOT / "data/seed/eft_train.jsonl"


def _question(ex) -> str:
    return ex.prompt[0]["content"].split("<question>")[1].split("</question>")[0]


def _response(ex) -> str:
    return ex.prompt[0]["content"].split("<response>")[1].split("</response>")[0]


def test_eft_formats_score_first_and_justification():
    eft = load_eft(EFT)[:3]
    score = eft_examples(eft, "score")
    assert [ex.completion[0]["content"] for ex in score] == [f"{JUDGE_PREFIX}{e.score}"
                                                             for e in eft]
    just = eft_examples(eft, "justification")
    assert all(ex.completion[0]["content"].endswith(f"Score: {e.score}")
               and e.justification.strip()[:20] in ex.completion[0]["content"]
               for ex, e in zip(just, eft))
    assert len(eft_examples(eft, "both")) == 6
    # the judge turn is the judge stage's prompt: the response and question inside the template
    assert _question(score[0]) == eft[0].prompt and _response(score[0]) == eft[0].response


def test_synthetic_judge_examples_are_balanced_twins():
    ift = load_ift(IFT)
    p = JudgeDataParams(mismatched=10, empty=3, truncated=2, matched_score=4, truncated_score=2)
    out = synthetic_judge_examples(ift, p)
    kinds = Counter(ex.kind for ex in out)
    assert kinds == {"matched": 15, "mismatched": 10, "empty": 3, "truncated": 2}
    answers = {c.completion[0]["content"].strip(): c.prompt[0]["content"].strip() for c in ift}
    for pos, neg in zip(out[::2], out[1::2]):  # each negative follows its positive twin
        assert pos.kind == "matched" and pos.completion[0]["content"] == "Score: 4"
        assert answers[_response(pos)] == _question(pos)  # the answer under its own prompt
        if neg.kind == "mismatched":
            assert _response(neg) == _response(pos) and _question(neg) != _question(pos)
            assert neg.completion[0]["content"] == "Score: 0"
        elif neg.kind == "empty":
            assert _question(neg) == _question(pos) and _response(neg) == ""
            assert neg.completion[0]["content"] == "Score: 0"
        else:
            assert _question(neg) == _question(pos)
            assert _response(pos).startswith(_response(neg)) and _response(neg) != _response(pos)
            assert neg.completion[0]["content"] == "Score: 2"
    # seeded: the same examples again
    assert [ex.prompt for ex in synthetic_judge_examples(ift, p)] == [ex.prompt for ex in out]
    assert synthetic_judge_examples(ift, JudgeDataParams()) == []


def test_length_check_counts_and_refuses_cut_judge_examples(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    p = SftParams(judge_data=JudgeDataParams(mismatched=2))
    examples = build_examples(p, [str(IFT)], [str(EFT)])
    lengths = [example_tokens(tok, ex) for ex in examples]
    assert min(lengths) > 20
    longest_judge = max(n for n, ex in zip(lengths, examples) if ex.kind != "ift")
    counts = check_lengths(tok, examples, longest_judge)
    assert counts["eft"]["examples"] == 136 and counts["eft"]["truncated"] == 0
    assert counts["mismatched"]["examples"] == 2 and counts["matched"]["examples"] == 2
    assert counts["eft"]["max_tokens"] <= longest_judge
    with pytest.raises(UserError, match=f"Raise sft.max_length to at least {longest_judge}"):
        check_lengths(tok, examples, longest_judge - 1)


def test_sft_refuses_max_length_that_cuts_scores(tmp_path, tiny_model):
    params = tmp_path / "params.yaml"
    params.write_text("sft: {max_length: 384, max_steps: 1}\n")
    res = CliRunner().invoke(main, ["sft", "--params", str(params), "--model", str(tiny_model),
                                    "--eft", str(EFT), "--out", str(tmp_path / "m1"),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2, res.output
    assert "judge examples are longer than sft.max_length=384" in res.output
    assert "eft_train.jsonl:" in res.output  # names the longest example's file:line
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m.json").exists()


def test_judge_data_params_validated(tmp_path):
    from selfreward.config.params import load_params

    params = tmp_path / "params.yaml"
    params.write_text("sft:\n  judge_data:\n    matched_score: 7\n")
    with pytest.raises(UserError, match=r"params\.yaml:3: field 'sft\.judge_data\.matched_score'"):
        load_params(params)
    params.write_text("sft:\n  train_layers: -1\n")
    with pytest.raises(UserError, match="sft.train_layers"):
        load_params(params)
    params.write_text("sft:\n  eft_format: essay\n")
    with pytest.raises(UserError, match="sft.eft_format"):
        load_params(params)


def test_grouped_order_keeps_groups_together_and_reshuffles_per_epoch():
    from selfreward.training.sft_data import grouped_order

    ift = load_ift(IFT)[:6]
    eft = load_eft(EFT)[:8]  # two EFT groups of four
    p = JudgeDataParams(mismatched=5, empty=2)
    examples = (eft_examples(eft, "score") + synthetic_judge_examples(ift, p))
    order = grouped_order(examples, 2, seed=0)
    assert len(order) == 2 * len(examples)
    first, second = order[:len(examples)], order[len(examples):]
    assert sorted(map(id, first)) == sorted(map(id, examples))  # each epoch: every example once
    assert [ex.group for ex in first] != [ex.group for ex in second]  # reshuffled
    for epoch in (first, second):
        runs = [ex.group for ex in epoch]
        # each group is one contiguous run
        starts = [g for k, g in enumerate(runs) if k == 0 or runs[k - 1] != g]
        assert len(starts) == len(set(runs)) == 2 + 7
    assert grouped_order(examples, 2, seed=0) == order  # seeded
    assert len(grouped_order(examples, 0.5, seed=0)) == round(len(examples) / 2)
