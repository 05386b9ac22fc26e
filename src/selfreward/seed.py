"""Seed data: instruction-following (IFT) and judge (EFT) examples, validated with file:line errors.

IFT rows may be TRL conversational (`messages`), `{prompt, response}`, or the original
Self-Instruct seed-task format (`instruction`, `instances` [{input, output}]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .io import read_jsonl, require


@dataclass
class Conversation:
    prompt: list[dict]  # messages up to (not including) the assistant answer
    completion: list[dict]  # [{"role": "assistant", ...}]
    source: str  # file:line, for messages


@dataclass
class JudgeExample:
    prompt: str
    response: str
    justification: str
    score: int
    group: str
    source: str


def _ift_row(obj: dict, file: str, line: int) -> Conversation:
    src = f"{file}:{line}"
    if "messages" in obj:
        msgs = require(obj, "messages", list, file=file, line=line)
        if len(msgs) < 2:
            raise UserError("needs at least a user and an assistant message", file=file,
                            line=line, field="messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise UserError("each message must be an object", file=file, line=line,
                                field=f"messages[{i}]")
            role = require(m, "role", str, file=file, line=line)
            require(m, "content", str, file=file, line=line)
            if role not in ("system", "user", "assistant"):
                raise UserError(f"unknown role {role!r}", file=file, line=line,
                                field=f"messages[{i}].role")
        if msgs[-1]["role"] != "assistant":
            raise UserError("the last message must be the assistant's answer", file=file,
                            line=line, field="messages")
        clean = [{"role": m["role"], "content": m["content"]} for m in msgs]
        return Conversation(clean[:-1], clean[-1:], src)
    if "instruction" in obj:  # Self-Instruct seed task
        instruction = require(obj, "instruction", str, file=file, line=line)
        instances = require(obj, "instances", list, file=file, line=line)
        if not instances or not isinstance(instances[0], dict):
            raise UserError("needs at least one {input, output} instance", file=file, line=line,
                            field="instances")
        inst = instances[0]
        output = require(inst, "output", str, file=file, line=line)
        inp = inst.get("input") or ""
        user = instruction.strip() + (f"\n\n{inp.strip()}" if str(inp).strip() else "")
        return Conversation([{"role": "user", "content": user}],
                            [{"role": "assistant", "content": output}], src)
    if "prompt" in obj or "response" in obj:
        prompt = require(obj, "prompt", str, file=file, line=line)
        response = require(obj, "response", str, file=file, line=line)
        return Conversation([{"role": "user", "content": prompt}],
                            [{"role": "assistant", "content": response}], src)
    raise UserError("unrecognised row: expected 'messages', 'prompt'+'response', or "
                    "'instruction'+'instances'", file=file, line=line, field="messages")


def load_ift(path: str | Path) -> list[Conversation]:
    """Load instruction-following examples from any supported format."""
    file = str(path)
    return [_ift_row(obj, file, line) for line, obj in read_jsonl(path)]


def load_eft(path: str | Path) -> list[JudgeExample]:
    """Load judge examples: prompt, response, justification, score 0-5, optional group."""
    file = str(path)
    out = []
    for line, obj in read_jsonl(path):
        prompt = require(obj, "prompt", str, file=file, line=line)
        response = require(obj, "response", str, file=file, line=line)
        justification = require(obj, "justification", str, file=file, line=line)
        score = require(obj, "score", int, file=file, line=line)
        if not 0 <= score <= 5:
            raise UserError(f"score must be an integer 0-5, got {score}", file=file, line=line,
                            field="score")
        group = obj.get("group", prompt)
        if not isinstance(group, (str, int)):
            raise UserError("must be a string", file=file, line=line, field="group")
        out.append(JudgeExample(prompt, response, justification, score, str(group),
                                f"{file}:{line}"))
    return out


def load_prompts(path: str | Path) -> list[dict]:
    """Load `{id, prompt}` rows (generated prompts or held-out eval prompts)."""
    file = str(path)
    rows, seen = [], set()
    for line, obj in read_jsonl(path):
        pid = obj.get("id", f"line{line}")
        if not isinstance(pid, (str, int)):
            raise UserError("must be a string", file=file, line=line, field="id")
        prompt = require(obj, "prompt", str, file=file, line=line)
        if str(pid) in seen:
            raise UserError(f"duplicate id {pid!r}", file=file, line=line, field="id")
        seen.add(str(pid))
        rows.append({**obj, "id": str(pid), "prompt": prompt})
    return rows


def user_prompt(conv: Conversation) -> str:
    """The (last) user message of a conversation: used as a few-shot example and for dedupe."""
    return next(m["content"] for m in reversed(conv.prompt) if m["role"] == "user")
