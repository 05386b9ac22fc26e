"""Seed data: instruction-following (IFT) and judge (EFT) examples, validated with file:line errors.

IFT rows may be TRL conversational (`messages`), `{prompt, response}`, or the original
Self-Instruct seed-task format (`instruction`, `instances` [{input, output}]).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..config.errors import UserError
from ..core.io import read_jsonl, require


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
        task = _seed_task(obj, file, line)
        inst = task.instances[0]
        return Conversation([{"role": "user", "content": task_prompt(task.instruction,
                                                                     inst["input"])}],
                            [{"role": "assistant", "content": inst["output"]}], src)
    if "prompt" in obj or "response" in obj:
        prompt = require(obj, "prompt", str, file=file, line=line)
        response = require(obj, "response", str, file=file, line=line)
        return Conversation([{"role": "user", "content": prompt}],
                            [{"role": "assistant", "content": response}], src)
    raise UserError("unrecognised row: expected 'messages', 'prompt'+'response', or "
                    "'instruction'+'instances'", file=file, line=line, field="messages")


@dataclass
class SeedTask:
    """A task in the Self-Instruct format; instances are {input, output} ('' = no input)."""

    id: str
    instruction: str
    instances: list[dict]
    is_classification: bool
    source: str  # file:line


def _seed_task(obj: dict, file: str, line: int) -> SeedTask:
    instruction = require(obj, "instruction", str, file=file, line=line)
    instances = require(obj, "instances", list, file=file, line=line)
    if not instances:
        raise UserError("needs at least one {input, output} instance", file=file, line=line,
                        field="instances")
    clean = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise UserError("each instance must be an object {input, output}", file=file,
                            line=line, field=f"instances[{i}]")
        output = require(inst, "output", str, file=file, line=line)
        inp = inst.get("input", "")
        if not isinstance(inp, str):
            raise UserError("must be a string ('' when the task needs no input)", file=file,
                            line=line, field=f"instances[{i}].input")
        clean.append({"input": inp.strip(), "output": output.strip()})
    is_cls = obj.get("is_classification", False)
    if not isinstance(is_cls, bool):
        raise UserError("must be true or false", file=file, line=line, field="is_classification")
    tid = obj.get("id", f"{Path(file).stem}-{line}")
    if not isinstance(tid, (str, int)) or isinstance(tid, bool):
        raise UserError("must be a string", file=file, line=line, field="id")
    return SeedTask(str(tid), instruction.strip(), clean, is_cls, f"{file}:{line}")


def load_seed_tasks(path: str | Path) -> list[SeedTask]:
    """Load Self-Instruct seed tasks (`instruction`, `instances`, `is_classification`)."""
    file = str(path)
    tasks, seen = [], set()
    for line, obj in read_jsonl(path):
        task = _seed_task(obj, file, line)
        if task.id in seen:
            raise UserError(f"duplicate id {task.id!r}", file=file, line=line, field="id")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def task_prompt(instruction: str, task_input: str) -> str:
    """The user turn of a Self-Instruct task: the instruction, then its input if it has one."""
    return instruction.strip() + (f"\n\n{task_input.strip()}" if task_input.strip() else "")


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


def select_prompts(rows: list[dict], max_prompts: int, seed: int) -> list[dict]:
    """A seeded subset of `max_prompts` rows in file order (0 or more than available = all)."""
    if max_prompts <= 0 or max_prompts >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_prompts))
    return [rows[i] for i in keep]


def user_prompt(conv: Conversation) -> str:
    """The (last) user message of a conversation: used as a few-shot example and for dedupe."""
    return next(m["content"] for m in reversed(conv.prompt) if m["role"] == "user")
