"""prompts.source=pool: a fixed JSONL file of `{id, prompt}` requests; iteration t takes the t-th
block of `count` prompts of one seeded order, so iterations never share a prompt. The whole pool
must be free of duplicates and of the prompts the loop is trained or evaluated on (IFT, eval,
IFEval): a shared prompt is a UserError (exit 2) naming both files and lines.

Two prompts are the same when their words match or their content words (data/prompt_quality.py)
overlap by Jaccard >= SAME_PROMPT_JACCARD: "Which language has the most native speakers?" and
"What language has the most native speakers?" are one prompt, "What is the difference between a
manager and a leader?" and "... between a virus and a bacterium?" are two (ROUGE-L scores the
second pair 0.80 and the first 0.86, so it cannot tell them apart)."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..core.io import read_jsonl
from .prompt_quality import content_words
from .seed import load_prompts

SAME_PROMPT_JACCARD = 0.6


def normalize(text: str) -> str:
    """Lower case, words only: "What is X?" and "what is x" are the same prompt."""
    return " ".join(re.findall(r"\w+", text.lower()))


def reference_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line, prompt) of a file the pool must not overlap: rows with a `prompt` string (eval,
    IFEval), the user turns of `messages` (IFT) or an `instruction` (Self-Instruct tasks)."""
    out = []
    for line, obj in read_jsonl(path):
        if isinstance(obj.get("prompt"), str):
            out.append((line, obj["prompt"]))
        elif isinstance(obj.get("messages"), list):
            out += [(line, m["content"]) for m in obj["messages"] if isinstance(m, dict)
                    and m.get("role") == "user" and isinstance(m.get("content"), str)]
        elif isinstance(obj.get("instruction"), str):
            out.append((line, obj["instruction"]))
    return out


class PromptIndex:
    """Prompts looked up by words or content-word overlap (module docstring)."""

    def __init__(self) -> None:
        self.exact: dict[str, int] = {}
        self.words: list[set[str]] = []
        self.postings: dict[str, list[int]] = {}

    def add(self, text: str) -> None:
        index = len(self.words)
        self.exact.setdefault(normalize(text), index)
        bag = set(content_words(text))
        self.words.append(bag)
        for word in bag:
            self.postings.setdefault(word, []).append(index)

    def find(self, text: str) -> int | None:
        """The index of a prompt the same as `text`, or None."""
        if normalize(text) in self.exact:
            return self.exact[normalize(text)]
        bag = set(content_words(text))
        shared = Counter(i for word in bag for i in self.postings.get(word, ()))
        for index, common in shared.most_common():
            union = len(bag | self.words[index])
            if union and common / union >= SAME_PROMPT_JACCARD:
                return index
        return None


def load_pool(path: str | Path, exclude: Sequence[str | Path] = ()) -> list[dict]:
    """The pool's rows, checked: no prompt twice, none the same as one in an `exclude` file."""
    file = str(path)
    numbered = read_jsonl(path)
    rows = load_prompts(path)
    index = PromptIndex()
    for (line, _), row in zip(numbered, rows):
        same = index.find(row["prompt"])
        if same is not None:
            raise UserError(f"prompt {row['prompt']!r} is the same as line {numbered[same][0]}'s "
                            f"{rows[same]['prompt']!r}", file=file, line=line, field="prompt")
        index.add(row["prompt"])
    for ref in exclude:
        for ref_line, text in reference_prompts(ref):
            same = index.find(text)
            if same is not None:
                raise UserError(f"pool prompt {rows[same]['prompt']!r} is the same as {ref}:"
                                f"{ref_line}'s {text!r}: the loop must not train on the prompts "
                                "it is seeded or evaluated with", file=file,
                                line=numbered[same][0], field="prompt")
    return rows


def pool_block(rows: list[dict], iteration: int, count: int, seed: int) -> list[dict]:
    """Iteration `iteration` (1-based)'s block of `count` rows of one seeded order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[(iteration - 1) * count:iteration * count]]
