"""IFEval: the official checkers' verdicts on hand-made answers, aggregates against a hand
computation, the team's prompts against the checker registry, input errors, offline NLTK data, and
the stage on a tiny model with a scripted engine.

What is independent and what is not: the stage scores answers with lm-eval's own IFEval code
(`lm_eval.tasks.ifeval.utils`), so `test_verdicts_are_lm_evals_own` compares lm-eval with itself
through our wrapper. It is a wiring test (the right function, the right fields, strict and loose
not swapped) and cannot catch a wrong checker. The independent checks are the hand-made answers
of VERDICTS, each written to obey or to break its instruction, with the verdict decided by hand,
and the aggregates recomputed by hand in `test_aggregate_matches_hand_computation`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import ScriptedEngine

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.evaluation.ifeval import (
    aggregate,
    bootstrap_intervals,
    check_instruction,
    checkers,
    load_ifeval_prompts,
    official_rows,
    score_response,
)

ROOT = Path(__file__).resolve().parents[1]
TEAM_PROMPTS = ROOT / "data" / "seed" / "ifeval_prompts.jsonl"
OFFICIAL = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"


def row(instruction_id: str, kwargs: dict | None = None, prompt: str = "Do the task.",
        key: int = 1) -> dict:
    return {"key": key, "prompt": prompt, "instruction_id_list": [instruction_id],
            "kwargs": [kwargs or {}]}


# (instruction id, kwargs, answer, strict verdict, loose verdict): what IFEval's definitions give
VERDICTS = [
    ("punctuation:no_comma", {}, "No commas in this answer.", True, True),
    ("punctuation:no_comma", {}, "Well, here is a comma.", False, False),
    ("startend:quotation", {}, '"The whole answer is quoted."', True, True),
    ("startend:quotation", {}, 'Sure!\n"The answer after a first line."', False, True),
    ("change_case:english_lowercase", {}, "all lowercase here.", True, True),
    ("change_case:english_lowercase", {}, "Not all lowercase.", False, False),
    ("change_case:english_capital", {}, "ALL CAPITALS HERE.", True, True),
    ("detectable_format:title", {}, "<<Moonrise>>\nThe moon rose.", True, True),
    ("detectable_format:title", {}, "Moonrise\nThe moon rose.", False, False),
    ("detectable_format:json_format", {}, '{"fruit": "apple", "colour": "red"}', True, True),
    ("detectable_format:json_format", {}, "```json\n{\"fruit\": \"apple\"}\n```", True, True),
    ("detectable_format:json_format", {}, "fruit: apple", False, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one", False, False),
    ("keywords:existence", {"keywords": ["moon"]}, "The moon is bright.", True, True),
    ("keywords:existence", {"keywords": ["moon"]}, "The sun is bright.", False, False),
    ("keywords:forbidden_words", {"forbidden_words": ["sour"]}, "It tastes sharp.", True, True),
    ("keywords:forbidden_words", {"forbidden_words": ["sour"]}, "It is sour.", False, False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "Three words only.", True, True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "This answer has six words.", False, False),  # 5 words: not less than 5
    # punkt knows "Mr." is an abbreviation: 2 sentences, not 3 (a naive split would say 3)
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Mr. Smith arrived late. He sat down.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Mr. Smith arrived late. He sat down.", False, False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "THIS is VERY good.", True, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is very good.", False, False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\nP.S. Bye.", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello. Bye.", False, False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "A leap year has 366 days. Any other questions?", True, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Any other questions? A leap year has 366 days.", False, False),
    ("language:response_language", {"language": "fr"},
     "Le printemps est ma saison préférée parce que les fleurs reviennent.", True, True),
    ("language:response_language", {"language": "fr"},
     "Spring is my favourite season because the flowers come back.", False, False),
    ("detectable_format:constrained_response", {}, "My answer is yes.", True, True),
    ("combination:two_responses", {}, "Bean There\n******\nDaily Grind", True, True),
    ("combination:two_responses", {}, "Bean There\n******\nBean There", False, False),
]


@pytest.mark.parametrize("instruction_id,kwargs,answer,strict,loose", VERDICTS)
def test_official_checker_verdicts(instruction_id, kwargs, answer, strict, loose):
    assert check_instruction(instruction_id, kwargs) is None
    verdict = score_response(row(instruction_id, kwargs), answer)
    assert verdict == {"strict": [strict], "loose": [loose]}


def test_verdicts_are_lm_evals_own():
    """Wiring, not an independent check: score_response returns exactly what lm-eval's
    process_results computes (lm-eval compared with itself; VERDICTS is the independent check)."""
    utils, registry = checkers()
    assert utils.__name__ == "lm_eval.tasks.ifeval.utils" and len(registry) == 25
    doc = row("startend:quotation")
    lm = utils.process_results(doc, ['Sure!\n"quoted"'])
    ours = score_response(doc, 'Sure!\n"quoted"')
    assert ours["strict"] == lm["inst_level_strict_acc"] and ours["loose"] == lm[
        "inst_level_loose_acc"]


def test_empty_answer_follows_nothing():
    assert score_response(row("punctuation:no_comma"), "") == {"strict": [False],
                                                                "loose": [False]}


def test_repeat_prompt():
    request = "Write a haiku about winter."
    r = row("combination:repeat_prompt", {"prompt_to_repeat": request},
            prompt="First repeat the request below word for word.\n\n" + request)
    assert score_response(r, request + "\nSnow falls on the hill.")["strict"] == [True]
    assert score_response(r, "Snow falls on the hill.")["strict"] == [False]


def test_aggregate_matches_hand_computation():
    rows = [
        {"key": 1, "prompt": "a", "instruction_id_list": ["startend:quotation",
                                                          "punctuation:no_comma"],
         "kwargs": [{}, {}]},
        {"key": 2, "prompt": "b", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{}]},
        {"key": 3, "prompt": "c", "instruction_id_list": ["detectable_format:title",
                                                          "startend:quotation",
                                                          "keywords:existence"],
         "kwargs": [{}, {}, {"keywords": ["moon"]}]},
    ]
    answers = [
        'Sure\n"no commas here"',  # quotation: strict no, loose yes; no comma: yes
        "all lower.",  # yes
        'Moon\n"the moon"',  # title: no; quotation: strict no, loose yes; keyword: yes
    ]
    verdicts = [score_response(r, a) for r, a in zip(rows, answers)]
    assert verdicts == [{"strict": [False, True], "loose": [True, True]},
                        {"strict": [True], "loose": [True]},
                        {"strict": [False, False, True], "loose": [False, True, True]}]
    m = aggregate(rows, verdicts, samples=200, seed=0)
    # by hand: prompts fully followed: strict {2} -> 1/3, loose {1, 2} -> 2/3;
    # instructions followed: strict 1 + 1 + 1 of 6, loose 2 + 1 + 2 of 6
    assert m["prompts"] == 3 and m["instructions"] == 6
    assert m["prompt_level_strict"]["accuracy"] == round(1 / 3, 4)
    assert m["prompt_level_loose"]["accuracy"] == round(2 / 3, 4)
    assert m["instruction_level_strict"]["accuracy"] == 0.5
    assert m["instruction_level_loose"]["accuracy"] == round(5 / 6, 4)
    assert m["per_instruction"]["startend:quotation"] == {"n": 2, "strict": 0.0, "loose": 1.0}
    assert m["per_instruction"]["detectable_format:title"] == {"n": 1, "strict": 0.0,
                                                               "loose": 0.0}
    for name in ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict",
                 "instruction_level_loose"):
        lo, hi = m[name]["ci95"]
        assert 0.0 <= lo <= m[name]["accuracy"] <= hi <= 1.0
    assert aggregate(rows, verdicts, samples=200, seed=0) == m  # seeded


def test_bootstrap_interval_narrows_with_more_prompts():
    def verdicts(n):  # half the prompts followed
        return [{"strict": [k % 2 == 0], "loose": [True]} for k in range(n)]

    small = bootstrap_intervals(verdicts(20), 500, 0)["prompt_level_strict"]
    large = bootstrap_intervals(verdicts(400), 500, 0)["prompt_level_strict"]
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 2
    assert bootstrap_intervals(verdicts(5), 500, 0)["prompt_level_loose"] == [1.0, 1.0]
    assert bootstrap_intervals(verdicts(5), 0, 0) == {}


# -- the prompt files ------------------------------------------------------------------------------
def test_team_prompts_load_and_pass_the_checker_registry():
    rows = load_ifeval_prompts(TEAM_PROMPTS)
    assert len(rows) >= 95
    _, registry = checkers()
    used = {i for r in rows for i in r["instruction_id_list"]}
    assert used == set(registry)  # every one of the 25 instruction types
    for r in rows:
        for instruction_id, kwargs in zip(r["instruction_id_list"], r["kwargs"]):
            assert check_instruction(instruction_id, kwargs) is None, (r["key"], instruction_id)


def test_team_prompts_are_not_the_official_ones():
    if not OFFICIAL.is_file():
        pytest.skip(f"official IFEval file not present at {OFFICIAL}")
    official = {r["prompt"] for r in load_ifeval_prompts(OFFICIAL)}
    assert not official & {r["prompt"] for r in load_ifeval_prompts(TEAM_PROMPTS)}


def test_official_prompts_load():
    if not OFFICIAL.is_file():
        pytest.skip(f"official IFEval file not present at {OFFICIAL}")
    rows = load_ifeval_prompts(OFFICIAL)
    assert len(rows) == 541 and sum(len(r["instruction_id_list"]) for r in rows) == 834


@pytest.mark.parametrize("obj,field,message", [
    ({"key": 1, "prompt": "p", "instruction_id_list": ["nope:x"], "kwargs": [{}]}, "kwargs[0]",
     "unknown instruction id"),
    ({"key": 1, "prompt": "p", "instruction_id_list": ["keywords:existence"], "kwargs": [{}]},
     "kwargs[0]", "needs ['keywords']"),
    ({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
      "kwargs": [{"num_words": 3}]}, "kwargs[0]", "unexpected ['num_words']"),
    ({"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"],
      "kwargs": [{"num_words": 3, "relation": "about"}]}, "kwargs[0]", "rejects"),
    ({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []},
     "kwargs", "0 kwargs objects for 1 instructions"),
    ({"key": "1", "prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
      "kwargs": [{}]}, "key", "expected int"),
    ({"key": 1, "prompt": "p", "instruction_id_list": [], "kwargs": []},
     "instruction_id_list", "non-empty"),
])
def test_bad_prompt_rows(write_jsonl, obj, field, message):
    good = row("punctuation:no_comma", key=7)
    path = write_jsonl("bad.jsonl", [good, obj])
    with pytest.raises(UserError) as exc:
        load_ifeval_prompts(path)
    assert exc.value.exit_code == 2 and exc.value.line == 2 and exc.value.field == field
    assert message in str(exc.value.message)


def test_duplicate_key_and_missing_file(write_jsonl, tmp_path):
    path = write_jsonl("dup.jsonl", [row("punctuation:no_comma"), row("punctuation:no_comma")])
    with pytest.raises(UserError, match="duplicate key 1"):
        load_ifeval_prompts(path)
    with pytest.raises(UserError) as exc:
        load_ifeval_prompts(tmp_path / "input_data.jsonl")
    assert "selfreward ifeval-data" in exc.value.message and "google/IFEval" in exc.value.message
    assert exc.value.field == "ifeval.prompts"


def test_official_rows_drop_the_arrow_nulls():
    hub_row = {"key": 1000, "prompt": "Write.", "instruction_id_list": [
        "punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{"num_words": None, "relation": None, "keywords": None},
                   {"num_words": 300, "relation": "at least", "keywords": None}]}
    assert official_rows([hub_row]) == [{
        "key": 1000, "prompt": "Write.", "instruction_id_list": hub_row["instruction_id_list"],
        "kwargs": [{}, {"num_words": 300, "relation": "at least"}]}]


def test_checkers_never_download(tmp_path):
    """In a fresh process where nltk.download raises and NLTK_DATA is empty, the sentence
    checker still counts sentences (the punkt data comes from the installed wheel)."""
    code = (
        "import nltk\n"
        "def refuse(*a, **k): raise SystemExit('nltk.download called')\n"
        "nltk.download = refuse\n"
        "from selfreward.evaluation.ifeval import score_response\n"
        "r = {'key': 1, 'prompt': 'p', 'instruction_id_list': "
        "['length_constraints:number_sentences', 'change_case:capital_word_frequency'], "
        "'kwargs': [{'num_sentences': 2, 'relation': 'at least'}, "
        "{'capital_frequency': 1, 'capital_relation': 'at least'}]}\n"
        "print(score_response(r, 'Dr. Who came. He LEFT.')['strict'])\n")
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[True, True]"


# -- the stage -------------------------------------------------------------------------------------
def _answer(prompt: str, k: int, seed: int) -> str:
    return "all lowercase, with a comma." if "lowercase" in prompt else '"Quoted answer."'


def test_stage_with_scripted_engine(tiny_model, tmp_path, write_jsonl, monkeypatch):
    rows = [row("startend:quotation", key=1, prompt="Wrap it in quotes."),
            row("change_case:english_lowercase", key=2, prompt="Answer in lowercase."),
            {"key": 3, "prompt": "Answer in lowercase, no commas.",
             "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
             "kwargs": [{}, {}]}]
    prompts = write_jsonl("ifeval.jsonl", rows)
    engine = ScriptedEngine(_answer)
    monkeypatch.setattr("selfreward.generation.engines.make_engine", lambda *a, **k: engine)
    params = tmp_path / "params.yaml"
    params.write_text("ifeval: {max_new_tokens: 8, bootstrap: 100}\n")
    answers, metrics = tmp_path / "out" / "m0.jsonl", tmp_path / "metrics" / "m0.json"
    res = CliRunner().invoke(main, ["ifeval", "--params", str(params), "--model",
                                    str(tiny_model), "--prompts", str(prompts), "--answers",
                                    str(answers), "--metrics", str(metrics)])
    assert res.exit_code == 0, res.output
    (n, sampling), = engine.calls
    assert n == 3 and sampling.temperature == 0.0 and sampling.max_new_tokens == 8
    out = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [o["strict"] for o in out] == [[True], [True], [True, False]]
    m = json.loads(metrics.read_text())
    assert m["prompt_level_strict"]["accuracy"] == round(2 / 3, 4)
    assert m["instruction_level_strict"]["accuracy"] == 0.75
    assert m["prompts"] == 3 and m["model"] == str(tiny_model)
    assert m["per_instruction"]["punctuation:no_comma"] == {"n": 1, "strict": 0.0, "loose": 0.0}


def test_stage_bad_input_exits_2_without_outputs(tiny_model, tmp_path, write_jsonl):
    prompts = write_jsonl("bad.jsonl", [row("keywords:existence")])  # keywords missing
    answers, metrics = tmp_path / "m0.jsonl", tmp_path / "m0.json"
    params = tmp_path / "p.yaml"
    params.write_text("ifeval: {max_new_tokens: 8}\n")
    res = CliRunner().invoke(main, ["ifeval", "--params", str(params), "--model",
                                    str(tiny_model), "--prompts", str(prompts), "--answers",
                                    str(answers), "--metrics", str(metrics)])
    assert res.exit_code == 2 and "bad.jsonl:1: field 'kwargs[0]'" in res.output
    assert not metrics.exists() and not answers.exists()


def _verdicts(strict: list[bool], loose: list[bool] | None = None) -> dict:
    return {"strict": strict, "loose": loose if loose is not None else strict}


def test_paired_difference_matches_hand_computation():
    from selfreward.evaluation.ifeval import paired_difference

    before = {1: _verdicts([True, True]), 2: _verdicts([False]), 3: _verdicts([True, False])}
    after = {1: _verdicts([True, False]), 2: _verdicts([True]), 3: _verdicts([True, True]),
             9: _verdicts([True])}  # answered by one model only: left out
    diff = paired_difference(before, after, samples=2000, seed=0)
    assert diff["prompts"] == 3
    strict = diff["prompt_level_strict"]
    assert (strict["before"], strict["after"], strict["diff"]) == (0.3333, 0.6667, 0.3333)
    inst = diff["instruction_level_strict"]
    assert (inst["before"], inst["after"], inst["diff"]) == (0.6, 0.8, 0.2)
    # two prompts, per-prompt differences +1 and 0: the resampled mean is 0, 1/2 or 1 (1/4, 1/2,
    # 1/4), so the 95 % percentile interval is [0, 1]
    two = paired_difference({1: _verdicts([False]), 2: _verdicts([True])},
                            {1: _verdicts([True]), 2: _verdicts([True])}, samples=2000)
    assert two["prompt_level_strict"]["diff"] == 0.5
    assert two["prompt_level_strict"]["ci95"] == [0.0, 1.0]


def test_paired_interval_sees_what_overlapping_intervals_miss():
    from selfreward.evaluation.ifeval import paired_difference

    before = {k: _verdicts([k < 20]) for k in range(40)}
    after = {k: _verdicts([k < 25]) for k in range(40)}  # the same 20 pass, 5 more
    diff = paired_difference(before, after, samples=1000)["prompt_level_strict"]
    assert diff["diff"] == 0.125 and diff["ci95"][0] > 0
    per_model = bootstrap_intervals(list(before.values()), 1000, 0)["prompt_level_strict"]
    assert per_model[1] > 0.625  # M_t's own interval covers M_t+1's accuracy


def test_paired_difference_and_answers_bad_input(write_jsonl):
    from selfreward.evaluation.ifeval import load_ifeval_answers, paired_difference

    with pytest.raises(UserError, match="share no prompt"):
        paired_difference({1: _verdicts([True])}, {2: _verdicts([True])})
    with pytest.raises(UserError, match="instructions"):
        paired_difference({1: _verdicts([True])}, {1: _verdicts([True, True])})
    good = write_jsonl("a.jsonl", [{"key": 3, "strict": [True], "loose": [True]}])
    assert load_ifeval_answers(good) == {3: _verdicts([True])}
    bad = write_jsonl("b.jsonl", [{"key": 3, "strict": [True], "loose": ["yes"]}])
    with pytest.raises(UserError) as info:
        load_ifeval_answers(bad)
    assert "b.jsonl" in str(info.value) and "loose" in str(info.value)
