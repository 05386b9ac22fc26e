"""Self-Instruct filters (data/filters.py), each rule on a hand-made case that runs everywhere
(the official-seed-task test in test_self_instruct.py is an extra where ../shared is present)."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest

from selfreward.data.filters import INSTANCE_DROPS, InstructionFilter, filter_instances


def _inst(inp: str, out: str) -> dict:
    return {"input": inp, "output": out}


def _filter(instances: list[dict], max_instances: int = 5, seed: int = 0):
    drops: Counter = Counter()
    kept = filter_instances(instances, max_instances, random.Random(seed), drops)
    assert set(drops) <= set(INSTANCE_DROPS)
    return kept, drops


def test_one_input_with_two_outputs_drops_the_whole_task():
    kept, drops = _filter([_inst("2 + 2", "4"), _inst("3 + 3", "6"), _inst("2 + 2", "5")])
    assert kept == [] and drops == {"task_conflicting_outputs": 1}


def test_input_less_instances_with_different_outputs_are_no_conflict():
    kept, drops = _filter([_inst("", "A poem."), _inst("", "Another poem.")])
    assert kept == [_inst("", "A poem."), _inst("", "Another poem.")] and not drops


def test_duplicates_keep_the_first():
    kept, drops = _filter([_inst("a", "b"), _inst("c", "d"), _inst("a", "b"), _inst("a", "b")])
    assert kept == [_inst("a", "b"), _inst("c", "d")] and drops == {"instance_duplicate": 2}


@pytest.mark.parametrize("bad, reason", [
    (_inst("Translate this:", "Bonjour"), "instance_ends_with_colon"),
    (_inst("Hello", "The answer is:"), "instance_ends_with_colon"),
    (_inst("same text", "same text"), "instance_input_equals_output"),
    (_inst("an input", ""), "instance_empty_output"),
])
def test_each_instance_rule_drops_only_its_instance(bad, reason):
    good = [_inst("one", "uno"), _inst("two", "dos")]
    kept, drops = _filter([good[0], bad, good[1]])
    assert kept == good and drops == {reason: 1}


def test_a_task_left_without_instances_is_dropped():
    kept, drops = _filter([_inst("x", ""), _inst("same", "same")])
    assert kept == [] and drops == {"instance_empty_output": 1,
                                    "instance_input_equals_output": 1, "task_no_instances": 1}


def test_the_per_task_cap_keeps_a_seeded_sample_in_order():
    instances = [_inst(f"item {i}", f"answer {i}") for i in range(8)]
    kept, drops = _filter(instances, max_instances=3, seed=7)
    assert len(kept) == 3 and drops == {"instance_over_limit": 5}
    assert kept == sorted(kept, key=instances.index)  # a subset, in the task's order
    assert kept == _filter(instances, max_instances=3, seed=7)[0]  # the same seed, the same pick
    picks = {tuple(i["input"] for i in _filter(instances, 3, seed=s)[0]) for s in range(10)}
    assert len(picks) > 1  # a sample, not the first three
    assert _filter(instances, max_instances=8) == (instances, Counter())


def test_instruction_rules_on_hand_made_cases():
    settings = SimpleNamespace(rouge_threshold=0.7, min_words=3, max_words=10,
                               blacklist=["image", "go to", "map"],
                               quality=[], min_content_words=0)  # quality: test_prompt_quality
    f = InstructionFilter(settings, ["Write a short poem about the sea."])
    cases = {"": "empty", "Sort it.": "too_short", " ".join(["word"] * 11): "too_long",
             '"Quoted" tasks are rejected here.': "bad_start",
             "Écrivez un poème sur la mer.": "bad_start",
             "Describe the image of a cat.": "blacklist",
             "Please go to the shop for me.": "blacklist",
             "write a short POEM about the sea": "duplicate",
             "Write a short poem about the sea please.": "near_duplicate",
             "Explain mapping between two sets.": None}  # 'map' words only match whole
    assert {text: f.check(text) for text in cases} == cases
    f.add("Explain mapping between two sets.")
    assert f.check("Explain mapping between two sets.") == "duplicate"
