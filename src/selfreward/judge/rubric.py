"""The judge's prompt: the rubric template (judge.template) rendered into chat messages, and the
score-first assistant turn the logprob judge reads."""

from __future__ import annotations

from ..templates import fill, user_template

JUDGE_PREFIX = "Score: "  # the assistant prefix the logprob judge scores from
JUDGE_FIELDS = ("prompt", "response")


def judge_template(path: str | None = None) -> str:
    """The judge rubric: the file at `path` (judge.template), or the packaged templates/judge.txt.

    A user's template must contain `{prompt}` and `{response}`.
    """
    return user_template(path, "judge", JUDGE_FIELDS, "judge.template")


def judge_messages(prompt: str, response: str, rubric: str | None = None) -> list[dict]:
    """The user turn that asks the model to judge `response` to `prompt` with the 5-point rubric
    (`rubric` = a judge template's text; default the packaged one)."""
    text = fill(rubric if rubric is not None else judge_template(), prompt=prompt.strip(),
                response=response.strip())
    return [{"role": "user", "content": text}]


def judge_score_answer(score: int) -> str:
    """The score-first assistant turn: `Score: n`, exactly what the logprob judge reads."""
    return f"{JUDGE_PREFIX}{score}"
