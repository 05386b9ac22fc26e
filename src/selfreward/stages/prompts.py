"""Stage `prompts`: M_t writes new user prompts from few-shot examples, Self-Instruct filters."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from ..engines import Engine, Sampling
from ..errors import UserError
from ..filters import INSTRUCTION_REJECTIONS, InstructionFilter
from ..io import remove_outputs, write_json, write_jsonl
from ..params import EngineParams, PromptsParams
from ..prompting import prompt_generation_messages
from ..seed import load_ift, load_seed_tasks, task_prompt, user_prompt
from ..shards import ShardStore, fingerprint, finish, model_fingerprint

log = logging.getLogger(__name__)

_LEAD = re.compile(r"^\s*(?:(?:new\s+)?task\s*\d*\s*[:.)-]|\d+\s*[.):-]|[-*#>]+)\s*", re.IGNORECASE)
_CUT = re.compile(r"\n\s*(?:task\s*\d+|answer|response|output|solution|input|example)\s*[:.]",
                  re.IGNORECASE)


_TASK = re.compile(r"(?:^|\n)\s*(?:new\s+)?task\s*\d+\s*[:.)-]", re.IGNORECASE)


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
           generated: list[tuple[str, str]], p: PromptsParams) -> list[tuple[str, str]]:
    n_gen = min(p.generated_shots, len(generated))
    n_seed = min(len(seed_prompts), p.seed_shots + p.generated_shots - n_gen)
    shots = rng.sample(seed_prompts, n_seed) + rng.sample(generated, n_gen)
    rng.shuffle(shots)
    return shots


def generate_prompts(engine: Engine, p: PromptsParams, seed_prompts: list[tuple[str, str]],
                     round_size: int, output: str | Path, key: str) -> tuple[list[dict], dict]:
    """Generate rounds of candidates until `p.count` pass the filters or attempts run out.

    Each round is one resumable shard; its few-shot examples and seed depend only on the round
    index and the prompts kept before it, so a resumed run repeats the same decisions.
    """
    filt = InstructionFilter(p, [text for _, text in seed_prompts])
    store = ShardStore(output, key)
    kept: list[dict] = []
    reasons: Counter = Counter()
    attempts = candidates = 0
    rounds = -(-p.max_attempts // round_size)
    for r in range(rounds):
        if len(kept) >= p.count:
            break
        size = min(round_size, p.max_attempts - attempts)
        rng = random.Random(p.seed * 100_003 + r)
        gen_pool = [(row["id"], row["prompt"]) for row in kept]
        plans = [_shots(rng, seed_prompts, gen_pool, p) for _ in range(size)]

        raws = store.load(r, expected=len(plans))
        if raws is None:
            chats = [prompt_generation_messages([text for _, text in shots]) for shots in plans]
            outs = engine.generate(chats, Sampling(n=1, temperature=p.temperature, top_p=p.top_p,
                                                   max_new_tokens=p.max_new_tokens,
                                                   seed=p.seed * 100_003 + r))
            raws = [{"raw": o[0], "shots": [sid for sid, _ in shots]}
                    for o, shots in zip(outs, plans)]
            store.save(r, raws)
        for raw in raws:
            attempts += 1
            for prompt in split_candidates(raw["raw"]):
                if len(kept) >= p.count:
                    break
                candidates += 1
                reason = filt.check(prompt)
                if reason:
                    reasons[reason] += 1
                    continue
                filt.add(prompt)
                kept.append({"id": f"gen-{len(kept):04d}", "prompt": prompt,
                             "shots": raw["shots"]})
    metrics = {"rounds_resumed": store.resumed, "attempts": attempts, "candidates": candidates,
               "kept": len(kept),
               "keep_rate": round(len(kept) / candidates, 4) if candidates else 0.0,
               **{f"rejected_{k}": reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS}}
    return kept, metrics


def run_prompts(model_dir: str, p: PromptsParams, ep: EngineParams, seed_paths: list[str],
                out_path: str | Path, metrics_path: str | Path) -> dict:
    """Stage entry: seed prompts in, `prompts.jsonl` + metrics out."""
    from ..engines import engine_key, make_engine

    remove_outputs(out_path, metrics_path)
    seed_prompts = []
    for path in seed_paths:
        for i, conv in enumerate(load_ift(path)):
            seed_prompts.append((f"{Path(path).stem}-{i:04d}", user_prompt(conv)))
    if len(seed_prompts) < p.seed_shots:
        raise UserError(f"only {len(seed_prompts)} seed prompts; prompts.seed_shots is "
                        f"{p.seed_shots}", field="prompts.seed_shots")
    key = fingerprint(p, engine_key(ep), model_fingerprint(model_dir), seed_prompts)
    engine = make_engine(model_dir, ep, seed=p.seed)
    try:
        round_size = max(1, min(ep.shard_size, p.max_attempts, 2 * p.count))
        kept, metrics = generate_prompts(engine, p, seed_prompts, round_size, out_path, key)
    finally:
        engine.close()
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


def run_prompts_from_tasks(p: PromptsParams, tasks_path: str | Path | None, iteration: str,
                           out_path: str | Path, metrics_path: str | Path) -> dict:
    """prompts.source=self_instruct: iteration t takes the t-th block of `p.count` tasks.

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
    random.Random(p.seed).shuffle(order)
    block = order[(t - 1) * p.count:t * p.count]
    if not block:
        raise UserError(f"{len(tasks)} self-instruct tasks leave none for iteration {t} at "
                        f"prompts.count={p.count}; raise self_instruct.count", file=str(tasks_path),
                        field="prompts.count")
    rows = [{"id": tasks[i].id, "prompt": task_prompt(tasks[i].instruction,
                                                      tasks[i].instances[0]["input"]),
             "shots": []} for i in block]
    metrics = {"source": "self_instruct", "tasks": len(tasks), "iteration": t,
               "kept": len(rows)}
    if len(rows) < p.count:
        log.warning("prompts: only %d self-instruct tasks left for iteration %d (count %d)",
                    len(rows), t, p.count)
    write_jsonl(out_path, rows)
    write_json(metrics_path, metrics)
    return metrics
