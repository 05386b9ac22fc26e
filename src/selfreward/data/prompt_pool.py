"""prompts.source=pool: a fixed JSONL file of `{id, prompt}` requests; iteration t takes the t-th
block of `count` prompts of one seeded order, so iterations never share a prompt. The whole pool
must be free of duplicates and of the prompts the loop is trained or evaluated on (IFT, eval,
IFEval): a shared prompt is a UserError (exit 2) naming both files and lines."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..core.io import read_jsonl
from .seed import load_prompts


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


def load_pool(path: str | Path, exclude: Sequence[str | Path] = ()) -> list[dict]:
    """The pool's rows, checked: no prompt twice, none in an `exclude` file."""
    file = str(path)
    rows = load_prompts(path)
    lines = {row["id"]: line for line, row in
             zip((line for line, _ in read_jsonl(path)), rows)}
    seen: dict[str, str] = {}
    for row in rows:
        key = normalize(row["prompt"])
        if key in seen:
            raise UserError(f"prompt {row['prompt']!r} is also id {seen[key]!r} of the pool",
                            file=file, line=lines[row["id"]], field="prompt")
        seen[key] = row["id"]
    for ref in exclude:
        for ref_line, text in reference_prompts(ref):
            pid = seen.get(normalize(text))
            if pid is not None:
                raise UserError(f"pool prompt {text!r} is also at {ref}:{ref_line}: the loop "
                                "must not train on the prompts it is evaluated or seeded with",
                                file=file, line=lines[pid], field="prompt")
    return rows


def pool_block(rows: list[dict], iteration: int, count: int, seed: int) -> list[dict]:
    """Iteration `iteration` (1-based)'s block of `count` rows of one seeded order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[(iteration - 1) * count:iteration * count]]
