"""Prompt-quality rules (data/prompt_quality.py): each rule on constructed hits and near misses,
the filter chain and params wiring, and precision/recall on the hand-labelled set."""

import json
from pathlib import Path

import pytest

from selfreward.config import params as params_module
from selfreward.config.params import PromptsParams, SelfInstructParams
from selfreward.data.filters import INSTRUCTION_REJECTIONS, InstructionFilter
from selfreward.data.prompt_quality import QUALITY_RULES, content_words, quality_reason

LABELS = Path(__file__).parent / "data" / "prompt_labels.jsonl"


@pytest.mark.parametrize("text, rule, hit", [
    # template_leak: the few-shot template shows through
    ("Task 2: - Task 3: - Task 4: - Task 5:", "template_leak", True),
    ("In this task, you are given a sentence and must find the verb.", "template_leak", True),
    ("Here is a new task: write about dogs.", "template_leak", True),
    ("Question: Answer:", "template_leak", True),
    ("1. 2. 3.", "template_leak", True),
    ("- * -", "template_leak", True),
    ("Write a task list for moving house.", "template_leak", False),   # 'task' as a word
    ("Answer: why do cats purr?", "template_leak", False),             # a label with content
    ("List 3 ways to save water.", "template_leak", False),            # a number with content
    # self_talk: the model about itself
    ("I am a different kind of assistant.", "self_talk", True),
    ("I'm a web-based chatbot.", "self_talk", True),
    ("As an AI language model, I cannot help.", "self_talk", True),
    ("I'm sorry, I don't understand.", "self_talk", True),
    ("I am a teacher. Suggest a game for my class.", "self_talk", False),
    ("I am building a chatbot. Which library should I use?", "self_talk", False),
    ("How can I apologise to my sister?", "self_talk", False),       # refusal words mid-sentence
    ("What should I do if I cannot sleep?", "self_talk", False),
    # missing_material: refers to material it does not contain
    ("Summarize this passage in one sentence.", "missing_material", True),
    ("Rewrite the text below to be formal.", "missing_material", True),
    ("Reply to this email politely.", "missing_material", True),
    ("Identify the errors in the code above.", "missing_material", True),
    ("Summarize the following:", "missing_material", True),
    ("Based on the given text, what is the author's opinion?", "missing_material", True),
    ("Rewrite this sentence in the passive voice: \"The cat chased the mouse.\"",
     "missing_material", False),                                        # quoted material
    ("Fix the grammar in the following sentence: me and him goes to school.",
     "missing_material", False),                                        # material after a colon
    ("Write an email to my landlord about the heating.", "missing_material", False),
    ("Write a short poem about the sea.", "missing_material", False),
    # few_content_words
    ("A poem.", "few_content_words", True),
    ("What is it?", "few_content_words", True),
    ("What is compound interest?", "few_content_words", False),
    ("What is 15 percent of 240?", "few_content_words", False),        # numbers count
    # not_request: neither a question nor an instruction
    ("The difference between a job and a job is a job.", "not_request", True),
    ("no more than 30 words", "not_request", True),
    ("Cooking is a fun hobby.", "not_request", True),
    ("Healthy food and regular exercise.", "not_request", True),
    ("Why is the sky blue?", "not_request", False),                    # interrogative
    ("Explain recursion to a child.", "not_request", False),           # imperative
    ("Please describe the water cycle.", "not_request", False),        # please + imperative
    ("How to change a bicycle tyre", "not_request", False),            # request phrase
    ("Tips for saving money on groceries", "not_request", False),
    ("I want to start running. Where should I begin", "not_request", False),  # 2nd sentence
    ("Your favourite colour is blue?", "not_request", False),          # ends with '?'
])
def test_each_rule_hits_and_near_misses(text, rule, hit):
    assert (quality_reason(text, [rule]) == rule) is hit


def test_rules_apply_in_order_and_only_when_enabled():
    text = "Task 3: I am an assistant."
    assert quality_reason(text) == "template_leak"
    assert quality_reason(text, ["self_talk", "not_request"]) == "self_talk"
    assert quality_reason(text, []) is None


def test_min_content_words_is_the_threshold():
    assert content_words("What is compound interest?") == ["compound", "interest"]
    assert quality_reason("What is compound interest?", ["few_content_words"], 3) \
        == "few_content_words"
    assert quality_reason("What is compound interest?", ["few_content_words"], 2) is None


def test_filter_runs_the_quality_rules_after_the_self_instruct_ones():
    f = InstructionFilter(PromptsParams(), ["write a poem about the sea"])
    assert f.check("Summarize this passage in one sentence.") == "missing_material"
    assert f.check("Task 2: - Task 3: - Task 4:") == "template_leak"
    assert f.check("Draw this picture of a dog.") == "blacklist"  # Self-Instruct first
    # self_instruct's default leaves missing_material out: its instances carry the input
    g = InstructionFilter(SelfInstructParams(), [])
    assert g.check("Summarize this passage in one sentence.") is None
    assert "missing_material" not in SelfInstructParams().quality
    assert set(QUALITY_RULES) <= set(INSTRUCTION_REJECTIONS)


def test_params_literal_lists_the_rules_in_their_order():
    assert params_module.QUALITY_RULES == QUALITY_RULES
    assert PromptsParams().quality == list(QUALITY_RULES)
    with pytest.raises(Exception, match="quality"):
        PromptsParams(quality=["vibes"])


def _labelled():
    return [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]


def test_labelled_set_is_large_and_mixed():
    rows = _labelled()
    assert len(rows) >= 150
    assert all(isinstance(r["prompt"], str) and isinstance(r["answerable"], bool) for r in rows)
    answerable = sum(r["answerable"] for r in rows)
    assert 0.3 < answerable / len(rows) < 0.7


def test_precision_and_recall_on_the_labelled_set():
    """Issue 20's targets: kept prompts >= 90 % answerable, >= 70 % of answerable ones kept.
    The figures (docs/prompts.md) are printed with -s."""
    rows = _labelled()
    kept = [r for r in rows if quality_reason(r["prompt"]) is None]
    true_kept = sum(r["answerable"] for r in kept)
    precision = true_kept / len(kept)
    recall = true_kept / sum(r["answerable"] for r in rows)
    print(f"labelled set: n={len(rows)} kept={len(kept)} precision={precision:.3f} "
          f"recall={recall:.3f}")
    assert precision >= 0.9 and recall >= 0.7
