"""Prompt templates (text files under templates/) rendered into chat messages."""

from __future__ import annotations

from functools import cache
from importlib import resources

JUDGE_PREFIX = "Score: "  # the assistant prefix the logprob judge scores from


@cache
def template(name: str) -> str:
    """The text of templates/<name>.txt."""
    return resources.files("selfreward.templates").joinpath(f"{name}.txt").read_text("utf-8")


def judge_messages(prompt: str, response: str) -> list[dict]:
    """The user turn that asks the model to judge `response` to `prompt` with the 5-point rubric."""
    text = template("judge").replace("{prompt}", prompt.strip()).replace("{response}",
                                                                          response.strip())
    return [{"role": "user", "content": text}]


def judge_answer(justification: str, score: int) -> str:
    """The assistant turn a judge should produce: justification, then `Score: n`."""
    return (template("judge_answer").replace("{justification}", justification.strip())
            .replace("{score}", str(score)).strip())


def prompt_generation_messages(examples: list[str]) -> list[dict]:
    """Few-shot request for one new user task, Self-Instruct style."""
    shots = "\n".join(f"Task {i}: {ex.strip()}" for i, ex in enumerate(examples, start=1))
    text = (template("prompt_generation").replace("{examples}", shots)
            .replace("{next}", str(len(examples) + 1)))
    return [{"role": "user", "content": text}]
