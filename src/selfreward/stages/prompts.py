"""Stage `prompts`: M_t writes new user prompts from few-shot examples, Self-Instruct filters."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from ..engines import Engine, Sampling, engine_key, open_engine
from ..errors import UserError
from ..filters import INSTRUCTION_REJECTIONS, InstructionFilter
from ..io import remove_outputs, write_json, write_jsonl
from ..params import EngineParams, PromptsParams
from ..seed import load_ift, load_seed_tasks, task_prompt, user_prompt
from ..shards import ShardStore, finish, item_seed, model_fingerprint, shard_key
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


def _shots(rng: random.Random, seed_prompts: list[tuple[str, str]],
           generated: list[tuple[str, str]], params: PromptsParams) -> list[tuple[str, str]]:
    n_gen = min(params.generated_shots, len(generated))
    n_seed = min(len(seed_prompts), params.seed_shots + params.generated_shots - n_gen)
    shots = rng.sample(seed_prompts, n_seed) + rng.sample(generated, n_gen)
    rng.shuffle(shots)
    return shots


def generate_prompts(engine: Engine, params: PromptsParams, seed_prompts: list[tuple[str, str]],
                     round_size: int, output: str | Path, key: str | dict
                     ) -> tuple[list[dict], dict]:
    """Generate rounds of candidates until `params.count` pass the filters or attempts run out.

    Each round is one resumable shard; its few-shot examples and seed depend only on the round
    index and the prompts kept before it, so a resumed run repeats the same decisions.
    """
    instruction_filter = InstructionFilter(params, [text for _, text in seed_prompts])
    store = ShardStore(output, key, layout=round_size)
    kept: list[dict] = []
    reasons: Counter = Counter()
    attempts = candidates = 0
    for round_index in range(-(-params.max_attempts // round_size)):
        if len(kept) >= params.count:
            break
        size = min(round_size, params.max_attempts - attempts)
        rng = random.Random(item_seed(params.seed, round_index))
        generated = [(row["id"], row["prompt"]) for row in kept]
        plans = [_shots(rng, seed_prompts, generated, params) for _ in range(size)]

        replies = store.load(round_index, expected=len(plans))
        if replies is None:
            chats = [prompt_generation_messages([text for _, text in shots]) for shots in plans]
            texts = engine.generate(chats, Sampling(
                n=1, temperature=params.temperature, top_p=params.top_p,
                max_new_tokens=params.max_new_tokens, seed=item_seed(params.seed, round_index)))
            replies = [{"raw": text[0], "shots": [sid for sid, _ in shots]}
                       for text, shots in zip(texts, plans)]
            store.save(round_index, replies)
        for reply in replies:
            attempts += 1
            for prompt in split_candidates(reply["raw"]):
                if len(kept) >= params.count:
                    break
                candidates += 1
                reason = instruction_filter.check(prompt)
                if reason:
                    reasons[reason] += 1
                    continue
                instruction_filter.add(prompt)
                kept.append({"id": f"gen-{len(kept):04d}", "prompt": prompt,
                             "shots": reply["shots"]})
    metrics = {"rounds_resumed": store.resumed, "attempts": attempts, "candidates": candidates,
               "kept": len(kept),
               "keep_rate": round(len(kept) / candidates, 4) if candidates else 0.0,
               **{f"rejected_{k}": reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS}}
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
