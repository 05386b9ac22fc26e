"""Stage `self-instruct`: SELF-INSTRUCT (Wang et al., 2022) grows tasks with instances from seeds.

1. instruction generation: the model continues a numbered list of 8 instructions (6 seed +
   2 generated once there are some); every item is a candidate; repeat until `count` are kept;
2. classification identification: a few-shot Yes/No question per kept instruction;
3. instance generation: output-first (label, then input) for classification tasks,
   input-first otherwise; a task may need no input;
4. filters (filters.py, the same code as the `prompts` stage): instructions on the way in,
   instances per task at the end.

Each step's model calls are resumable shards. Outputs: tasks in the Self-Instruct format and
one TRL `messages` row per instance (SFT-ready).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params, SelfInstructParams
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import item_seed, model_fingerprint, run_sharded, shard_key
from ..data.filters import (
    INSTANCE_DROPS,
    INSTRUCTION_REJECTIONS,
    InstructionFilter,
    filter_instances,
)
from ..data.seed import SeedTask, load_seed_tasks, task_prompt
from ..data.self_instruct_text import (
    TEMPLATES,
    classify_messages,
    generation_messages,
    instance_messages,
    parse_classification,
    parse_instances,
    parse_instructions,
)
from ..generation.engines import Engine, Sampling, engine_key, open_engine
from ..generation.rounds import Rounds, generate_rounds
from ..templates import template

log = logging.getLogger(__name__)

CLASSIFY_MAX_NEW_TOKENS = 4  # "Yes" / "No"
# Params that decide what the stage writes (not `enabled`: that only says whether it runs).
_OUTPUT_PARAMS = tuple(name for name in SelfInstructParams.model_fields if name != "enabled")

def generate_instructions(engine: Engine, params: SelfInstructParams, seeds: list[tuple[str, str]],
                          round_size: int, output: str | Path, key: str
                          ) -> tuple[list[dict], dict]:
    """Step 1 (with the instruction filters): rounds of generations until `params.count` are
    kept (stages/rounds.py: each round is one resumable shard)."""

    def progress(round_index: int, rounds: Rounds) -> None:
        log.info("self-instruct generation round %d: %d of %d instructions kept after %d calls",
                 round_index, len(rounds.kept), params.count, rounds.attempts)

    rounds = generate_rounds(engine, params, seeds, round_size, output, key,
                             InstructionFilter(params, [text for _, text in seeds]),
                             generation_messages, parse_instructions, "si-{:05d}",
                             on_round=progress)
    kept = [{"id": row["id"], "instruction": row["text"], "shots": row["shots"]}
            for row in rounds.kept]
    metrics = {"generation_rounds_resumed": rounds.resumed, "attempts": rounds.attempts,
               "candidates": rounds.candidates, "instructions_kept": len(kept),
               **{f"rejected_{k}": rounds.reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS}}
    return kept, metrics


def classify_instructions(engine: Engine, params: SelfInstructParams, items: list[dict],
                          output: str | Path, key: str, shard_size: int) -> tuple[list, dict]:
    """Step 2: True/False per item (an unparseable answer counts as not classification)."""
    def classify_shard(chunk: list[dict], index: int) -> list[dict]:
        outs = engine.generate([classify_messages(it["instruction"]) for it in chunk],
                               Sampling(n=1, temperature=0.0,
                                        max_new_tokens=CLASSIFY_MAX_NEW_TOKENS,
                                        seed=item_seed(params.seed, index)))
        return [{"id": it["id"], "raw": o[0]} for it, o in zip(chunk, outs)]

    rows, shards = run_sharded(items, output, key, shard_size, classify_shard,
                               "self-instruct classify",
                               engine.stats)
    answers = [parse_classification(row["raw"]) for row in rows]
    return [a is True for a in answers], {
        "classification_tasks": sum(a is True for a in answers),
        "classify_unparsed": sum(a is None for a in answers),
        "classify_shards_resumed": shards["shards_resumed"]}


def generate_instances(engine: Engine, params: SelfInstructParams, items: list[dict],
                       output: str | Path, key: str, shard_size: int) -> tuple[list[str], dict]:
    """Step 3: one raw reply per item (items carry `instruction` and `is_classification`)."""
    def instance_shard(chunk: list[dict], index: int) -> list[dict]:
        chats = [instance_messages(it["instruction"], it["is_classification"]) for it in chunk]
        outs = engine.generate(chats, Sampling(n=1, temperature=params.instance_temperature,
                                               top_p=params.top_p,
                                               max_new_tokens=params.instance_max_new_tokens,
                                               seed=item_seed(params.seed, index)))
        return [{"id": it["id"], "raw": o[0]} for it, o in zip(chunk, outs)]

    rows, shards = run_sharded(items, output, key, shard_size, instance_shard,
                               "self-instruct instances",
                               engine.stats)
    return [row["raw"] for row in rows], {"instance_shards_resumed": shards["shards_resumed"]}


def build_tasks(items: list[dict], raws: list[str], params: SelfInstructParams
                ) -> tuple[list[dict], dict]:
    """Step 4 for instances: parse each reply, filter, keep tasks with at least one instance."""
    rng = random.Random(params.seed)
    drops: Counter = Counter()
    tasks, parsed = [], 0
    for item, raw in zip(items, raws):
        instances = parse_instances(raw, item["is_classification"])
        parsed += len(instances)
        kept = filter_instances(instances, params.max_instances, rng, drops)
        if kept:
            tasks.append({"id": item["id"], "instruction": item["instruction"],
                          "instances": kept, "is_classification": item["is_classification"],
                          "shots": item["shots"]})
    metrics = {"instances_parsed": parsed,
               "instances_kept": sum(len(t["instances"]) for t in tasks),
               "tasks_kept": len(tasks),
               **{f"dropped_{k}": drops.get(k, 0) for k in INSTANCE_DROPS}}
    return tasks, metrics


def task_messages(tasks: list[dict]) -> list[dict]:
    """One TRL conversational row per instance: the SFT-ready form of the tasks."""
    return [{"id": f"{task['id']}-{k}",
             "messages": [{"role": "user", "content": task_prompt(task["instruction"],
                                                                  inst["input"])},
                          {"role": "assistant", "content": inst["output"]}]}
            for task in tasks for k, inst in enumerate(task["instances"])]


def self_instruct(engine: Engine, params: SelfInstructParams, seeds: list[SeedTask],
                  out_tasks: str | Path, key: str, shard_size: int) -> tuple[list[dict], dict]:
    """All four steps with one engine; returns the kept tasks and the metrics."""
    seed_pairs = [(t.id, t.instruction) for t in seeds]
    round_size = max(1, min(shard_size, params.max_attempts, 2 * params.count))
    kept, metrics = generate_instructions(engine, params, seed_pairs, round_size, out_tasks, key)
    is_cls, cls_metrics = classify_instructions(engine, params, kept, f"{out_tasks}.classify", key,
                                                shard_size)
    items = [{**item, "is_classification": c} for item, c in zip(kept, is_cls)]
    raws, inst_metrics = generate_instances(engine, params, items, f"{out_tasks}.instances", key,
                                            shard_size)
    tasks, task_metrics = build_tasks(items, raws, params)
    return tasks, {**metrics, **cls_metrics, **inst_metrics, **task_metrics}


def run_self_instruct(*, params: Params, model_dir: str, seed_paths: Sequence[str],
                      out_tasks: str | Path, out_messages: str | Path, metrics_path: str | Path,
                      if_enabled: bool = False) -> dict:
    """Seed tasks in; tasks, messages and metrics out (params self_instruct, engine).

    With `if_enabled` (the DVC stage) and self_instruct.enabled false it writes empty outputs and
    loads no model, so that stages reading them see an unchanged file.
    """
    settings, engine_params = params.self_instruct, params.engine
    shards = [out_tasks, f"{out_tasks}.classify", f"{out_tasks}.instances"]
    with stage_outputs(out_tasks, out_messages, metrics=metrics_path,
                       resumable=shards) as outputs:
        if if_enabled and not settings.enabled:
            log.info("self-instruct: self_instruct.enabled is false; writing empty outputs")
            write_jsonl(out_tasks, [])
            write_jsonl(out_messages, [])
            outputs.metrics["enabled"] = False
            return outputs.metrics
        seeds = [task for path in seed_paths for task in load_seed_tasks(path)]
        if len(seeds) < settings.seed_shots:
            raise UserError(f"only {len(seeds)} seed tasks; self_instruct.seed_shots is "
                            f"{settings.seed_shots}", field="self_instruct.seed_shots")
        key = shard_key(params={name: getattr(settings, name) for name in _OUTPUT_PARAMS},
                        templates=[template(name) for name in TEMPLATES],
                        inputs=[dataclasses.astuple(t) for t in seeds],
                        model=model_fingerprint(model_dir), engine=engine_key(engine_params))
        with open_engine(model_dir, engine_params, seed=settings.seed) as engine:
            tasks, metrics = self_instruct(engine, settings, seeds, out_tasks, key,
                                           engine_params.shard_size)
        outputs.metrics.update({"enabled": True, "seed_tasks": len(seeds), **metrics})
        outputs.record_engine(engine)
        metrics = outputs.metrics
        log.info("self-instruct: kept %d tasks (%d instances) from %d instructions; %s",
                 metrics["tasks_kept"], metrics["instances_kept"], metrics["instructions_kept"],
                 {k: v for k, v in metrics.items()
                  if k.startswith(("rejected_", "dropped_")) and v})
        if not tasks:
            raise UserError(f"no task passed the filters ({metrics}); raise "
                            "self_instruct.max_attempts or the max_new_tokens settings, or relax "
                            "self_instruct.rouge_threshold / self_instruct.blacklist",
                            field="self_instruct")
        messages = task_messages(tasks)
        write_jsonl(out_tasks, tasks)
        write_jsonl(out_messages, messages)
        metrics["messages"] = len(messages)
    return outputs.metrics
