"""Prompt templates (text files under templates/) rendered into chat messages."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

from .errors import UserError

JUDGE_PREFIX = "Score: "  # the assistant prefix the logprob judge scores from
JUDGE_FIELDS = ("prompt", "response")


@cache
def template(name: str) -> str:
    """The text of templates/<name>.txt."""
    return resources.files("selfreward.templates").joinpath(f"{name}.txt").read_text("utf-8")


def fill(text: str, **values: str) -> str:
    """Put each value at its `{name}` in one pass: inserted text is never scanned again, so a
    question containing the text `{response}` stays verbatim."""
    pattern = re.compile("{(" + "|".join(map(re.escape, values)) + ")}")
    return pattern.sub(lambda m: values[m.group(1)], text)


@cache
def judge_template(path: str | None = None) -> str:
    """The judge rubric: the file at `path` (judge.template), or the packaged templates/judge.txt.

    A user's template must contain `{prompt}` and `{response}`.
    """
    if path is None:
        return template("judge")
    file = Path(path)
    if not file.is_file():
        raise UserError("judge template file not found", file=path, field="judge.template")
    text = file.read_text(encoding="utf-8")
    missing = [f"{{{name}}}" for name in JUDGE_FIELDS if f"{{{name}}}" not in text]
    if missing:
        raise UserError(f"the judge template lacks {' and '.join(missing)}", file=path,
                        field="judge.template")
    return text


def judge_messages(prompt: str, response: str, rubric: str | None = None) -> list[dict]:
    """The user turn that asks the model to judge `response` to `prompt` with the 5-point rubric
    (`rubric` = a judge template's text; default the packaged one)."""
    text = fill(rubric if rubric is not None else template("judge"), prompt=prompt.strip(),
                response=response.strip())
    return [{"role": "user", "content": text}]


def judge_answer(justification: str, score: int) -> str:
    """The assistant turn a judge should produce: justification, then `Score: n`."""
    return fill(template("judge_answer"), justification=justification.strip(),
                score=str(score)).strip()


def judge_score_answer(score: int) -> str:
    """The score-first assistant turn: `Score: n`, exactly what the logprob judge reads."""
    return f"{JUDGE_PREFIX}{score}"


def prompt_generation_messages(examples: list[str]) -> list[dict]:
    """Few-shot request for one new user task, Self-Instruct style."""
    shots = "\n".join(f"Task {i}: {ex.strip()}" for i, ex in enumerate(examples, start=1))
    text = fill(template("prompt_generation"), examples=shots, next=str(len(examples) + 1))
    return [{"role": "user", "content": text}]
