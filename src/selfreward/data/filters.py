"""Self-Instruct filters, shared by the `prompts` and `self-instruct` stages.

Instructions: length in words, start with punctuation or a non-ASCII character, keyword
blacklist, exact duplicate, ROUGE-L F1 >= threshold against the pool (seed + kept); then the
prompt-quality rules named in `quality` (data/prompt_quality.py: is it a request at all?).
Instances: input == output, empty output, text ending in ':', duplicates; a task whose identical
inputs got different outputs is dropped; at most `max_instances` per task.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Protocol

from .prompt_quality import QUALITY_RULES, quality_reason
from .rouge import RougeLPool, rouge_tokens

INSTRUCTION_REJECTIONS = ("empty", "too_short", "too_long", "bad_start", "blacklist", "duplicate",
                          "near_duplicate", *QUALITY_RULES)
INSTANCE_DROPS = ("instance_input_equals_output", "instance_empty_output",
                  "instance_ends_with_colon", "instance_duplicate", "instance_over_limit",
                  "task_conflicting_outputs", "task_no_instances")


class FilterSettings(Protocol):
    """The params both stages carry for the instruction filters."""

    rouge_threshold: float
    min_words: int
    max_words: int
    blacklist: list[str]
    quality: list[str]
    min_content_words: int


class InstructionFilter:
    """Filters against a growing pool; `check` returns a reject reason or None."""

    def __init__(self, settings: FilterSettings, pool: list[str]) -> None:
        self.settings = settings
        self.rouge = RougeLPool(settings.rouge_threshold, pool)
        self.exact = {" ".join(rouge_tokens(x)) for x in pool}
        self.blacklist = [" ".join(rouge_tokens(b)) for b in settings.blacklist]

    def check(self, text: str) -> str | None:
        if not text.strip():
            return "empty"
        tokens = rouge_tokens(text)
        if len(tokens) < self.settings.min_words:
            return "too_short"
        if len(tokens) > self.settings.max_words:
            return "too_long"
        first = text.lstrip()[0]
        if not first.isascii() or not first.isalnum():
            return "bad_start"
        joined = " ".join(tokens)
        padded = f" {joined} "
        # Whole words only: 'map' rejects "a map of" but not "mapping".
        if any(b and f" {b} " in padded for b in self.blacklist):
            return "blacklist"
        if joined in self.exact:
            return "duplicate"
        if self.rouge.first_match(text) is not None:
            return "near_duplicate"
        return quality_reason(text, self.settings.quality, self.settings.min_content_words)

    def add(self, text: str) -> None:
        self.rouge.add(text)
        self.exact.add(" ".join(rouge_tokens(text)))


def filter_instances(instances: list[dict], max_instances: int, rng: random.Random,
                     drops: Counter) -> list[dict]:
    """The instances of one task that pass, [] when the task is dropped; reasons go to `drops`.

    Instances are {input, output} with stripped strings; an empty input means none is needed.
    """
    outputs_by_input: dict[str, set[str]] = {}
    for inst in instances:
        if inst["input"]:
            outputs_by_input.setdefault(inst["input"], set()).add(inst["output"])
    if any(len(outs) > 1 for outs in outputs_by_input.values()):
        drops["task_conflicting_outputs"] += 1
        return []
    kept: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst["input"], inst["output"]
        if (inp, out) in seen:
            reason = "instance_duplicate"
        elif not out:
            reason = "instance_empty_output"
        elif inp == out:
            reason = "instance_input_equals_output"
        elif inp.endswith(":") or out.endswith(":"):
            reason = "instance_ends_with_colon"
        else:
            reason = None
        seen.add((inp, out))
        if reason:
            drops[reason] += 1
        else:
            kept.append({"input": inp, "output": out})
    if len(kept) > max_instances:
        drops["instance_over_limit"] += len(kept) - max_instances
        picked = sorted(rng.sample(range(len(kept)), max_instances))
        kept = [kept[i] for i in picked]
    if not kept:
        drops["task_no_instances"] += 1
    return kept
