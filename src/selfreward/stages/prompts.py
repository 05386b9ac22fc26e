"""Stage `prompts`: M_t writes new user prompts from few-shot examples, Self-Instruct filters."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from ..config.errors import UserError
from ..config.params import EngineParams, PromptsParams
from ..core.io import remove_outputs, write_json, write_jsonl
from ..core.shards import finish, model_fingerprint, shard_key
from ..data.filters import INSTRUCTION_REJECTIONS, InstructionFilter
from ..data.seed import load_ift, load_seed_tasks, task_prompt, user_prompt
from ..generation.engines import Engine, engine_key, open_engine
from ..generation.rounds import generate_rounds
from ..templates import fill, template

log = logging.getLogger(__name__)

_LEAD = re.compile(r"^\s*(?:(?:new\s+)?task\s*\d*\s*[:.)-]|\d+\s*[.):-]|[-*#>]+)\s*", re.IGNORECASE)
_CUT = re.compile(r"\n\s*(?:task\s*\d+|answer|response|output|solution|input|example)\s*[:.]",
                  re.IGNORECASE)


_TASK = re.compile(r"(?:^|\n)\s*(?:new\s+)?task\s*\d+\s*[:.)-]", re.IGNORECASE)


def prompt_generation_messages(examples: list[str]) -> list[dict]:
    """Few-shot request for one new user task, Self-Instruct style."""
    shots = "\n".join(f"Task {i}: {ex.strip()}" for i, ex in enumerate(examples, start=1))
    text = fill(template("prompt_generation"), examples=shots, next=str(len(examples) + 1))
    return [{"role": "user", "content": text}]


def split_candidates(raw: str) -> list[str]:
    """Self-Instruct parsing: a reply that lists several "Task n:" items gives one candidate each."""
    parts = [part for part in _TASK.split(raw) if part.strip()]
    return [c for c in (clean_prompt(part) for part in parts or [raw]) if c] or [""]


def clean_prompt(raw: str) -> str:
    """Turn raw model text into one candidate prompt: drop numbering, answers and later tasks."""
    text = _LEAD.sub("", raw.strip(), count=1)
    lines = [ln.strip() for ln in _CUT.split(text)[0].strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0]
    # A task that introduces its input ("...following text:") keeps the next lines.
    if first.endswith(":") and len(lines) > 1:
        first = first + "\n" + "\n".join(lines[1:4])
    return first.strip().strip('"').strip()


def generate_prompts(engine: Engine, params: PromptsParams, seed_prompts: list[tuple[str, str]],
                     round_size: int, output: str | Path, key: str | dict
                     ) -> tuple[list[dict], dict]:
    """Generate rounds of candidates until `params.count` pass the filters or attempts run out
    (stages/rounds.py: each round is one resumable shard)."""
    r = generate_rounds(engine, params, seed_prompts, round_size, output, key,
                        InstructionFilter(params, [text for _, text in seed_prompts]),
                        prompt_generation_messages, split_candidates, "gen-{:04d}")
    kept = [{"id": row["id"], "prompt": row["text"], "shots": row["shots"]} for row in r.kept]
    metrics = {"rounds_resumed": r.resumed, "attempts": r.attempts, "candidates": r.candidates,
               "kept": len(kept),
               "keep_rate": round(len(kept) / r.candidates, 4) if r.candidates else 0.0,
               **{f"rejected_{k}": r.reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS}}
    return kept, metrics


def run_prompts(model_dir: str, params: PromptsParams, engine_params: EngineParams,
                seed_paths: list[str], out_path: str | Path, metrics_path: str | Path) -> dict:
    """Stage entry: seed prompts in, `prompts.jsonl` + metrics out."""
    remove_outputs(out_path, metrics_path)
    seed_prompts = []
    for path in seed_paths:
        for i, conv in enumerate(load_ift(path)):
            seed_prompts.append((f"{Path(path).stem}-{i:04d}", user_prompt(conv)))
    if len(seed_prompts) < params.seed_shots:
        raise UserError(f"only {len(seed_prompts)} seed prompts; prompts.seed_shots is "
                        f"{params.seed_shots}", field="prompts.seed_shots")
    key = shard_key(params=params, templates=[template("prompt_generation")],
                    inputs=seed_prompts, model=model_fingerprint(model_dir),
                    engine=engine_key(engine_params))
    round_size = max(1, min(engine_params.shard_size, params.max_attempts, 2 * params.count))
    with open_engine(model_dir, engine_params, seed=params.seed) as engine:
        kept, metrics = generate_prompts(engine, params, seed_prompts, round_size, out_path, key)
    metrics.update(engine=engine.name, **{f"engine_{k}": v for k, v in
                                          engine.stats.as_dict().items()})
    log.info("prompts: kept %d of %d attempts; rejected %s", metrics["kept"], metrics["attempts"],
             {k: v for k, v in metrics.items() if k.startswith("rejected_") and v})
    if not kept:
        raise UserError(f"no generated prompt passed the filters ({metrics}); raise "
                        "prompts.max_attempts or prompts.max_new_tokens, or relax "
                        "prompts.rouge_threshold / prompts.blacklist", field="prompts")
    write_jsonl(out_path, kept)
    write_json(metrics_path, metrics)
    finish(out_path)
    return metrics


def run_prompts_from_tasks(params: PromptsParams, tasks_path: str | Path | None, iteration: str,
                           out_path: str | Path, metrics_path: str | Path) -> dict:
    """prompts.source=self_instruct: iteration t takes the t-th block of `params.count` tasks.

    The blocks come from one seeded order of the self-instruct tasks, so iterations never share
    a prompt. A task's prompt is its instruction followed by its first instance's input.
    """
    remove_outputs(out_path, metrics_path)
    if not tasks_path:
        raise UserError("prompts.source is self_instruct: pass the self-instruct tasks with "
                        "--self-instruct FILE", field="prompts.source")
    try:
        t = int(iteration)
    except ValueError:
        t = 0
    if t < 1:
        raise UserError(f"must be an integer >= 1 with prompts.source=self_instruct, got "
                        f"{iteration!r}", field="iteration")
    tasks = load_seed_tasks(tasks_path)
    order = list(range(len(tasks)))
    random.Random(params.seed).shuffle(order)
    block = order[(t - 1) * params.count:t * params.count]
    if not block:
        raise UserError(f"{len(tasks)} self-instruct tasks leave none for iteration {t} at "
                        f"prompts.count={params.count}; raise self_instruct.count",
                        file=str(tasks_path),
                        field="prompts.count")
    rows = [{"id": tasks[i].id, "prompt": task_prompt(tasks[i].instruction,
                                                      tasks[i].instances[0]["input"]),
             "shots": []} for i in block]
    metrics = {"source": "self_instruct", "tasks": len(tasks), "iteration": t,
               "kept": len(rows)}
    if len(rows) < params.count:
        log.warning("prompts: only %d self-instruct tasks left for iteration %d (count %d)",
                    len(rows), t, params.count)
    write_jsonl(out_path, rows)
    write_json(metrics_path, metrics)
    return metrics
