"""Stage `prompts`: M_t (or, with prompts.source=model, the fixed prompts.model) writes new user
prompts from few-shot examples, kept by the Self-Instruct filters and the prompt-quality rules;
or iteration t takes its block of the self-instruct tasks (source self_instruct) or of the
prompts.pool file (source pool). The metrics carry a seeded sample of kept and dropped prompts
for the report."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import EngineParams, Params, PromptsParams
from ..core.io import write_jsonl
from ..core.outputs import StageOutputs, stage_outputs
from ..core.shards import model_fingerprint, shard_key
from ..data.constraints import constrain_prompts, contamination
from ..data.filters import INSTRUCTION_REJECTIONS, InstructionFilter
from ..data.prompt_pool import load_pool, pool_block
from ..data.seed import load_ift, load_seed_tasks, task_prompt, user_prompt
from ..evaluation.ifeval import load_ifeval_prompts
from ..generation.engines import Engine, engine_key, open_engine
from ..generation.rounds import generate_rounds
from ..templates import fill, template

log = logging.getLogger(__name__)

SAMPLE_SIZE = 8  # kept and dropped prompts the report shows per iteration

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
    rounds = generate_rounds(engine, params, seed_prompts, round_size, output, key,
                             InstructionFilter(params, [text for _, text in seed_prompts]),
                             prompt_generation_messages, split_candidates, "gen-{:04d}")
    kept = [{"id": row["id"], "prompt": row["text"], "shots": row["shots"]}
            for row in rounds.kept]
    metrics = {"rounds_resumed": rounds.resumed, "attempts": rounds.attempts,
               "candidates": rounds.candidates, "kept": len(kept),
               "keep_rate": round(len(kept) / rounds.candidates, 4) if rounds.candidates else 0.0,
               **{f"rejected_{k}": rounds.reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS},
               **prompt_sample([row["text"] for row in rounds.kept], rounds.dropped,
                               params.seed)}
    return kept, metrics


def prompt_sample(kept: list[str], dropped: list[dict], seed: int) -> dict:
    """A seeded sample of SAMPLE_SIZE kept prompts and SAMPLE_SIZE dropped ones with their
    reason, in the order they came: `sample_kept` [text], `sample_dropped` [{text, reason}]."""
    rng = random.Random(seed)

    def pick(items: list) -> list:
        return [items[i] for i in sorted(rng.sample(range(len(items)),
                                                    min(SAMPLE_SIZE, len(items))))]
    return {"sample_kept": pick(kept), "sample_dropped": pick(dropped)}


def run_prompts(*, params: Params, model_dir: str, seed_paths: Sequence[str],
                self_instruct_path: str | Path | None, iteration: str, out_path: str | Path,
                metrics_path: str | Path, exclude_paths: Sequence[str] = (),
                ifeval_path: str | Path | None = None) -> dict:
    """`prompts.jsonl` and metrics out (params prompts, engine): generated by M_t (source
    generate) or prompts.model (source model) from few-shot seed prompts, or taken from the
    self-instruct tasks (self_instruct) or from prompts.pool (pool: checked against the seed
    prompts and `exclude_paths`, the evaluation and IFEval prompts); then checked against the
    IFEval prompts of `ifeval_path` (decontamination) and, with prompts.constraints.count > 0,
    given verifiable instructions (docs/constraints.md)."""
    with stage_outputs(out_path, metrics=metrics_path, resumable=[out_path]) as outputs:
        if params.prompts.source == "self_instruct":
            rows = prompts_from_tasks(params.prompts, self_instruct_path, iteration, outputs)
        elif params.prompts.source == "pool":
            rows = prompts_from_pool(params.prompts, [*seed_paths, *exclude_paths], iteration,
                                     outputs)
        else:
            writer = params.prompts.model if params.prompts.source == "model" else model_dir
            rows = generated_prompts(writer, params.prompts, params.engine, seed_paths,
                                     out_path, outputs)
            outputs.metrics["source"] = params.prompts.source
        if ifeval_path:
            outputs.metrics.update(decontamination(rows, ifeval_path))
        rows, constraint_metrics = constrain_prompts(rows, params.prompts.constraints)
        outputs.metrics.update(constraint_metrics)
        write_jsonl(out_path, rows)
    return outputs.metrics


def decontamination(rows: list[dict], ifeval_path: str | Path) -> dict:
    """How many prompts equal or nearly equal (ROUGE-L F1 >= 0.7) an IFEval prompt; a warning
    when any does (the IFEval figures would then measure recall, not instruction following)."""
    ifeval = [row["prompt"] for row in load_ifeval_prompts(ifeval_path)]
    hits = contamination([row["prompt"] for row in rows], ifeval)
    if hits:
        log.warning("prompts: %d of %d prompts equal or nearly equal an IFEval prompt of %s "
                    "(ids %s)", len(hits), len(rows), ifeval_path, [rows[i]["id"] for i in hits])
    return {"ifeval_contaminated": len(hits), "ifeval_prompts_checked": len(ifeval)}


def generated_prompts(model_dir: str, params: PromptsParams, engine_params: EngineParams,
                      seed_paths: Sequence[str], out_path: str | Path,
                      outputs: StageOutputs) -> list[dict]:
    """New prompts written by the model from few-shot seed prompts, filtered; metrics into
    `outputs`. Each round of candidates is a resumable shard of `out_path`."""
    seed_prompts = []
    for path in seed_paths:
        for index, conv in enumerate(load_ift(path)):
            seed_prompts.append((f"{Path(path).stem}-{index:04d}", user_prompt(conv)))
    if len(seed_prompts) < params.seed_shots:
        raise UserError(f"only {len(seed_prompts)} seed prompts; prompts.seed_shots is "
                        f"{params.seed_shots}", field="prompts.seed_shots")
    key = shard_key(params=params, templates=[template("prompt_generation")],
                    inputs=seed_prompts, model=model_fingerprint(model_dir),
                    engine=engine_key(engine_params))
    round_size = max(1, min(engine_params.shard_size, params.max_attempts, 2 * params.count))
    with open_engine(model_dir, engine_params, seed=params.seed) as engine:
        kept, metrics = generate_prompts(engine, params, seed_prompts, round_size, out_path, key)
    outputs.record_engine(engine)
    outputs.metrics.update(metrics)
    log.info("prompts: kept %d of %d attempts; rejected %s", metrics["kept"], metrics["attempts"],
             {k: v for k, v in metrics.items() if k.startswith("rejected_") and v})
    if not kept:
        raise UserError(f"no generated prompt passed the filters ({outputs.metrics}); raise "
                        "prompts.max_attempts or prompts.max_new_tokens, or relax "
                        "prompts.rouge_threshold / prompts.blacklist", field="prompts")
    return kept


def iteration_number(iteration: str, source: str) -> int:
    """Iteration t as an integer >= 1 (the block sources need it)."""
    try:
        number = int(iteration)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"must be an integer >= 1 with prompts.source={source}, got "
                        f"{iteration!r}", field="iteration")
    return number


def prompts_from_pool(params: PromptsParams, exclude_paths: Sequence[str], iteration: str,
                      outputs: StageOutputs) -> list[dict]:
    """prompts.source=pool: iteration t takes the t-th block of `params.count` pool prompts
    (data/prompt_pool.py); the pool may share no prompt with `exclude_paths` (exit 2)."""
    number = iteration_number(iteration, "pool")
    pool = load_pool(params.pool, exclude_paths)
    block = pool_block(pool, number, params.count, params.seed)
    if not block:
        raise UserError(f"{len(pool)} pool prompts leave none for iteration {number} at "
                        f"prompts.count={params.count}; add prompts to the pool",
                        file=params.pool, field="prompts.count")
    if len(block) < params.count:
        log.warning("prompts: only %d pool prompts left for iteration %d (count %d)",
                    len(block), number, params.count)
    rows = [{"id": row["id"], "prompt": row["prompt"], "shots": []} for row in block]
    outputs.metrics.update({"source": "pool", "pool": len(pool), "iteration": number,
                            "kept": len(rows),
                            **prompt_sample([row["prompt"] for row in rows], [], params.seed)})
    return rows


def prompts_from_tasks(params: PromptsParams, tasks_path: str | Path | None, iteration: str,
                       outputs: StageOutputs) -> list[dict]:
    """prompts.source=self_instruct: iteration t takes the t-th block of `params.count` tasks.

    The blocks come from one seeded order of the self-instruct tasks, so iterations never share
    a prompt. A task's prompt is its instruction followed by its first instance's input.
    """
    if not tasks_path:
        raise UserError("prompts.source is self_instruct: pass the self-instruct tasks with "
                        "--self-instruct FILE", field="prompts.source")
    number = iteration_number(iteration, "self_instruct")
    tasks = load_seed_tasks(tasks_path)
    order = list(range(len(tasks)))
    random.Random(params.seed).shuffle(order)
    block = order[(number - 1) * params.count:number * params.count]
    if not block:
        raise UserError(f"{len(tasks)} self-instruct tasks leave none for iteration {number} at "
                        f"prompts.count={params.count}; raise self_instruct.count",
                        file=str(tasks_path), field="prompts.count")
    rows = [{"id": tasks[i].id, "prompt": task_prompt(tasks[i].instruction,
                                                      tasks[i].instances[0]["input"]),
             "shots": []} for i in block]
    outputs.metrics.update({"source": "self_instruct", "tasks": len(tasks), "iteration": number,
                            "kept": len(rows),
                            **prompt_sample([row["prompt"] for row in rows], [], params.seed)})
    if len(rows) < params.count:
        log.warning("prompts: only %d self-instruct tasks left for iteration %d (count %d)",
                    len(rows), number, params.count)
    return rows
