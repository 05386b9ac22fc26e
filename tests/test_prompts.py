"""Prompt generation: cleaning raw model text, Self-Instruct filters, the generation loop."""

import itertools

import pytest
from fakes import ScriptedEngine

from selfreward.config.params import PromptsParams
from selfreward.data.filters import InstructionFilter
from selfreward.data.rouge import rouge_l_f1
from selfreward.data.rouge import rouge_tokens as words
from selfreward.stages.prompts import clean_prompt, generate_prompts, split_candidates


@pytest.mark.parametrize("raw, expected", [
    ("Task 9: Write a haiku about rain.", "Write a haiku about rain."),
    ("9. Explain how tides work.\nAnswer: The moon...", "Explain how tides work."),
    ("  Describe a good breakfast.\nTask 10: Another one", "Describe a good breakfast."),
    ('"List three uses of vinegar."', "List three uses of vinegar."),
    ("Summarize the following text:\nCats sleep a lot.\nOutput: cats", 
     "Summarize the following text:\nCats sleep a lot."),
    ("- Give me a pun about bread.", "Give me a pun about bread."),
    ("", ""),
])
def test_clean_prompt(raw, expected):
    assert clean_prompt(raw) == expected


def test_split_candidates_takes_every_listed_task():
    raw = ("Task 1: Explain tides to a child.\nTask 2: Write a haiku about rain.\n"
           "Answer: drops fall\nTask 3: List three uses of vinegar.")
    assert split_candidates(raw) == ["Explain tides to a child.", "Write a haiku about rain.",
                                     "List three uses of vinegar."]
    assert split_candidates("Describe a good breakfast.") == ["Describe a good breakfast."]
    assert split_candidates("   ") == [""]


def test_rouge_l_f1_hand_computed():
    a, b = words("the cat sat on the mat"), words("the cat lay on a mat")
    # LCS = the cat on mat (4); P = 4/6, R = 4/6
    assert rouge_l_f1(a, b) == pytest.approx(4 / 6)
    assert rouge_l_f1(a, a) == 1.0 and rouge_l_f1(a, []) == 0.0


@pytest.mark.parametrize("prompt, reason", [
    ("", "empty"),
    ("Hi there", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("...what is love", "bad_start"),
    ("Échangez deux mots ici", "bad_start"),
    ("Draw a cat sitting on a mat", "blacklist"),
    ("Please go to the store for me", "blacklist"),
    ("Write a poem about the sea.", "duplicate"),
    ("Write a short poem about the sea.", "near_duplicate"),
    ("Explain why the sky looks blue at noon.", None),
    ("Describe the mapping between keys and values.", None),  # 'map' is a word, not a prefix
])
def test_filter_reasons(prompt, reason):
    f = InstructionFilter(PromptsParams(), ["write a poem about the sea"])
    assert f.check(prompt) == reason


TASKS = ["Explain how volcanoes form to a ten year old.",
         "Draft a polite email asking a landlord to fix the heating.",
         "Which chess opening suits an aggressive beginner, and why?",
         "Give me a simple recipe for sourdough bread.",
         "Summarise the main stages of human sleep cycles.",
         "Compare monocrystalline and polycrystalline solar panels.",
         "Write a limerick about a forgetful parrot."]


def _counter_engine():
    counter = itertools.count()

    def reply(text, k, seed):
        i = next(counter)
        if i % 3 == 2:  # every third attempt repeats the first task: a duplicate
            return "Task 9: " + TASKS[0]
        return f"Task 9: {TASKS[(i - i // 3) % len(TASKS)]}\nAnswer: sure"
    return ScriptedEngine(reply)


def test_generation_loop_keeps_count_and_counts_reasons(tmp_path):
    p = PromptsParams(count=5, max_attempts=30, seed_shots=2, generated_shots=1)
    seeds = [(f"s{i}", f"Seed task number {i} about topic {i}") for i in range(6)]
    engine = _counter_engine()
    kept, metrics = generate_prompts(engine, p, seeds, round_size=4,
                                     output=tmp_path / "prompts.jsonl", key="k")
    assert len(kept) == 5 and metrics["kept"] == 5
    assert [k["id"] for k in kept] == [f"gen-{i:04d}" for i in range(5)]
    assert all(not k["prompt"].startswith("Task") and "Answer" not in k["prompt"] for k in kept)
    assert metrics["rejected_near_duplicate"] + metrics["rejected_duplicate"] >= 1
    assert metrics["attempts"] == 8  # two rounds of 4 were enough
    # Later rounds show generated prompts as shots (2 generated slots filled from the pool).
    assert all(len(k["shots"]) == 3 for k in kept)
    assert any(s.startswith("gen-") for k in kept[3:] for s in k["shots"])


def test_generation_stops_at_max_attempts(tmp_path):
    p = PromptsParams(count=50, max_attempts=6, seed_shots=2, generated_shots=0)
    engine = ScriptedEngine(lambda text, k, seed: "Draw it")
    kept, metrics = generate_prompts(engine, p, [("s", "Seed one two")] * 3, round_size=4,
                                     output=tmp_path / "p.jsonl", key="k")
    assert kept == [] and metrics["attempts"] == 6 and metrics["rejected_too_short"] == 6
