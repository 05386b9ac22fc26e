"""Seed-data loaders: every supported format, the shipped files, and file:line:field errors."""

import json
from pathlib import Path

import pytest

from selfreward.config.errors import UserError
from selfreward.data.seed import load_eft, load_ift, load_prompts
from selfreward.judge.rubric import judge_messages, judge_template
from selfreward.training.sft_data import judge_answer

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "data" / "seed"


def test_shipped_seed_data_meets_the_contract():
    ift = load_ift(SEED / "ift.jsonl")
    train, held = load_eft(SEED / "eft_train.jsonl"), load_eft(SEED / "eft_eval.jsonl")
    evals = load_prompts(SEED / "eval_prompts.jsonl")
    assert len(ift) >= 80 and len(train) >= 80 and len(held) >= 30 and len(evals) >= 40
    for data in (train, held):
        assert {e.score for e in data} == set(range(6))
        groups = {}
        for e in data:
            groups.setdefault(e.group, []).append(e.score)
        assert all(len(s) >= 3 and len(set(s)) >= 2 for s in groups.values())
    prompts = [{m["content"].lower() for c in ift for m in c.prompt},
               {e.prompt.lower() for e in train}, {e.prompt.lower() for e in held},
               {r["prompt"].lower() for r in evals}]
    for i in range(len(prompts)):
        for j in range(i + 1, len(prompts)):
            assert not prompts[i] & prompts[j], (i, j)


def test_self_instruct_seed_tasks_load(official_seed_tasks):
    convs = load_ift(official_seed_tasks)
    assert len(convs) == 175
    with_input = next(c for c in convs if "Night : Day" in c.prompt[0]["content"])
    assert with_input.prompt[0]["content"].startswith("What is the relation")
    assert with_input.completion[0]["role"] == "assistant"


def test_all_ift_formats(write_jsonl):
    path = write_jsonl("mixed.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"prompt": "2+2?", "response": "4"},
        {"instruction": "Sort", "instances": [{"input": "b a", "output": "a b"}],
         "is_classification": False},
    ])
    convs = load_ift(path)
    assert [c.prompt[-1]["content"] for c in convs] == ["Hi", "2+2?", "Sort\n\nb a"]
    assert convs[0].prompt[0]["role"] == "system"
    assert [c.completion[0]["content"] for c in convs] == ["Hello", "4", "a b"]


def test_eft_renders_through_the_judge_template(tmp_path):
    from selfreward.training.sft_data import eft_examples

    ex = load_eft(SEED / "eft_train.jsonl")[0]
    conv = eft_examples([ex], "justification")[0]
    assert conv.prompt == judge_messages(ex.prompt, ex.response)
    assert ex.response.strip() in conv.prompt[0]["content"]
    assert conv.completion[0]["content"].endswith(f"Score: {ex.score}")
    assert judge_answer("Fine.", 3) == "Fine.\nScore: 3"
    # a user's rubric file (judge.template) renders the same way, filled in one pass
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate it.\nQ: {prompt}\nA: {response}\n")
    msgs = judge_messages("Why {response}?", "Because.", judge_template(str(rubric)))
    assert msgs[0]["content"] == "Rate it.\nQ: Why {response}?\nA: Because.\n"
    (tmp_path / "bad.txt").write_text("no placeholders")
    with pytest.raises(UserError, match="lacks {prompt} and {response}"):
        judge_template(str(tmp_path / "bad.txt"))
    with pytest.raises(UserError, match="judge.template"):
        judge_template(str(tmp_path / "missing.txt"))


GOOD_EFT = {"prompt": "p", "response": "r", "justification": "j", "score": 3}


@pytest.mark.parametrize("rows, raw, line, field, words", [
    ([GOOD_EFT] * 6, ['{"prompt": "p", "response": '], 7, None, "invalid JSON"),
    ([GOOD_EFT, {k: v for k, v in GOOD_EFT.items() if k != "justification"}], [], 2,
     "justification", "missing"),
    ([{**GOOD_EFT, "score": 9}], [], 1, "score", "0-5"),
    ([{**GOOD_EFT, "score": "4"}], [], 1, "score", "expected int"),
    ([{**GOOD_EFT, "response": "  "}], [], 1, "response", "non-empty"),
    ([], [], None, None, "empty"),
])
def test_bad_eft_rows(write_jsonl, rows, raw, line, field, words):
    path = write_jsonl("eft.jsonl", rows, raw)
    with pytest.raises(UserError) as err:
        load_eft(path)
    msg = err.value.format_message()
    where = f"{path}:{line}" if line else f"{path}:"
    assert msg.startswith(where) and words in msg
    if field:
        assert f"field '{field}'" in msg


def test_bad_ift_rows(write_jsonl):
    path = write_jsonl("ift.jsonl", [{"messages": [{"role": "user", "content": "x"},
                                                   {"role": "bot", "content": "y"}]}])
    with pytest.raises(UserError, match=r"ift.jsonl:1: field 'messages\[1\].role'"):
        load_ift(path)
    path = write_jsonl("ift2.jsonl", [{"text": "what"}])
    with pytest.raises(UserError, match="unrecognised row"):
        load_ift(path)


def test_duplicate_prompt_ids(write_jsonl):
    path = write_jsonl("p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    with pytest.raises(UserError, match=r"p.jsonl:2: field 'id': duplicate"):
        load_prompts(path)
    assert json.loads(path.read_text().splitlines()[0])["id"] == "a"
