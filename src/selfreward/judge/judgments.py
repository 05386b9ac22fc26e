"""judgments.jsonl, the judge stage's rows, read back and checked (pairs, dpo's CREAM)."""

from __future__ import annotations

from ..config.errors import UserError
from ..core.io import read_jsonl, require


def load_judgments(path: str) -> list[dict]:
    """Validate judgments.jsonl: responses strings, as many means as responses, numeric or null."""
    rows = []
    for line, obj in read_jsonl(path):
        require(obj, "id", str, file=path, line=line)
        require(obj, "prompt", str, file=path, line=line)
        responses = require(obj, "responses", list, file=path, line=line)
        mean = require(obj, "mean", list, file=path, line=line)
        for k, text in enumerate(responses):
            if not isinstance(text, str):
                raise UserError(f"response {k} is {type(text).__name__}, expected a string",
                                file=path, line=line, field="responses")
        if len(mean) != len(responses):
            raise UserError(f"{len(mean)} means for {len(responses)} responses", file=path,
                            line=line, field="mean")
        if any(m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)))
               for m in mean):
            raise UserError("means must be numbers or null", file=path, line=line, field="mean")
        rows.append(obj)
    return rows
