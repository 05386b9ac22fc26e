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
import re
from collections import Counter
from pathlib import Path

from ..engines import Engine, Sampling
from ..errors import UserError
from ..filters import INSTANCE_DROPS, INSTRUCTION_REJECTIONS, InstructionFilter, filter_instances
from ..io import remove_outputs, write_json, write_jsonl
from ..params import EngineParams, SelfInstructParams
from ..prompting import template
from ..seed import SeedTask, load_seed_tasks, task_prompt
from ..shards import ShardStore, fingerprint, finish, model_fingerprint, run_sharded

log = logging.getLogger(__name__)

CLASSIFY_MAX_NEW_TOKENS = 4  # "Yes" / "No"
# Params that decide what the stage writes (not `enabled`: that only says whether it runs).
_OUTPUT_PARAMS = tuple(f.name for f in dataclasses.fields(SelfInstructParams)
                       if f.name != "enabled")

_NUMBERED = re.compile(r"^[ \t]*\d+[ \t]*[.)][ \t]*", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ENDS_BLANK = re.compile(r"\n[ \t]*\n\s*$")
_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_NEXT_TASK = re.compile(r"\n[ \t]*Task[ \t]*\d*[ \t]*:", re.IGNORECASE)
_EXAMPLE = re.compile(r"^[ \t]*Example[ \t]*\d*[ \t]*[:.]?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(r"^[ \t]*Input[ \t]*:", re.IGNORECASE | re.MULTILINE)
_OUTPUT = re.compile(r"^[ \t]*Output[ \t]*:", re.IGNORECASE | re.MULTILINE)
_LABEL = re.compile(r"^[ \t]*Class[ \t]*label[ \t]*:", re.IGNORECASE | re.MULTILINE)


def generation_messages(instructions: list[str]) -> list[dict]:
    """Step 1: a numbered list of instructions the model is asked to continue."""
    listed = "\n".join(f"{i}. {text.strip()}" for i, text in enumerate(instructions, start=1))
    text = (template("self_instruct_generate").replace("{examples}", listed)
            .replace("{next}", str(len(instructions) + 1)))
    return [{"role": "user", "content": text}]


def classify_messages(instruction: str) -> list[dict]:
    """Step 2: the few-shot question 'is this a classification task?'."""
    text = template("self_instruct_classify").replace("{instruction}", instruction.strip())
    return [{"role": "user", "content": text}]


def instance_messages(instruction: str, is_classification: bool) -> list[dict]:
    """Step 3: output-first for classification tasks, input-first otherwise."""
    name = ("self_instruct_instances_output_first" if is_classification
            else "self_instruct_instances_input_first")
    return [{"role": "user", "content": template(name).replace("{instruction}",
                                                                instruction.strip())}]


def parse_instructions(reply: str) -> list[str]:
    """The numbered items of a reply; text before the first number continues the open item.

    That text is a preamble, not an item, when it ends with ':' or a blank line ("Sure! Here
    are more tasks:"). The list ends at its first blank line (the original's stop sequence).
    """
    text = reply.strip()
    first = _NUMBERED.search(text)
    head, body = (text[:first.start()], text[first.start():]) if first else (text, "")
    if first and (head.rstrip().endswith(":") or _ENDS_BLANK.search(head)):
        head = ""
    if _BLANK_LINE.search(head):
        head, body = _BLANK_LINE.split(head, maxsplit=1)[0], ""
    body = _BLANK_LINE.split(body, maxsplit=1)[0]
    items = [" ".join(part.split()) for part in _NUMBERED.split(body)[1:]]
    return ([" ".join(head.split())] if head.strip() else []) + items


def parse_classification(reply: str) -> bool | None:
    """Yes -> True, No -> False, anything else -> None."""
    m = _ANSWER.match(reply)
    return None if m is None else m.group(1).lower() == "yes"


def _clean(text: str) -> str:
    return text.strip().strip('"').strip()


def parse_instances(reply: str, is_classification: bool) -> list[dict]:
    """{input, output} pairs from a reply, as the original code parses them.

    Output-first: each 'Class label:' line is an output, the text after it (its 'Input:') the
    input; no label, no instance. Input-first: each 'Example n' block is split at 'Output:'; a
    block without one is an output that needs no input. Text after a new 'Task:' is ignored.
    """
    text = _NEXT_TASK.split("\n" + reply, maxsplit=1)[0]
    out = []
    if is_classification:
        for chunk in _LABEL.split(text)[1:]:
            label, _, rest = chunk.strip().partition("\n")
            marked = _INPUT.split(rest, maxsplit=1)
            out.append({"input": _clean(marked[-1]), "output": _clean(label)})
        return out
    for chunk in _EXAMPLE.split(text):
        if not chunk.strip():
            continue
        parts = _OUTPUT.split(chunk, maxsplit=1)
        before, output = parts if len(parts) == 2 else ("", chunk)
        # A second example written without its header: the output ends at its 'Input:'.
        output = _INPUT.split(output, maxsplit=1)[0]
        marked = _INPUT.split(before, maxsplit=1)
        out.append({"input": _clean(marked[-1]), "output": _clean(output)})
    return out


def _shots(rng: random.Random, seeds: list[tuple[str, str]], generated: list[tuple[str, str]],
           p: SelfInstructParams) -> list[tuple[str, str]]:
    n_gen = min(p.generated_shots, len(generated))
    n_seed = min(len(seeds), p.seed_shots + p.generated_shots - n_gen)
    shots = rng.sample(seeds, n_seed) + rng.sample(generated, n_gen)
    rng.shuffle(shots)
    return shots


def generate_instructions(engine: Engine, p: SelfInstructParams, seeds: list[tuple[str, str]],
                          round_size: int, output: str | Path, key: str
                          ) -> tuple[list[dict], dict]:
    """Step 1 (with the instruction filters): rounds of generations until `p.count` are kept.

    A round's shots and seed depend only on its index and what was kept before it, so a
    resumed run repeats the same decisions.
    """
    filt = InstructionFilter(p, [text for _, text in seeds])
    store = ShardStore(output, key)
    kept: list[dict] = []
    reasons: Counter = Counter()
    attempts = candidates = 0
    for r in range(-(-p.max_attempts // round_size)):
        if len(kept) >= p.count:
            break
        size = min(round_size, p.max_attempts - attempts)
        rng = random.Random(p.seed * 100_003 + r)
        generated = [(row["id"], row["instruction"]) for row in kept]
        plans = [_shots(rng, seeds, generated, p) for _ in range(size)]
        raws = store.load(r, expected=len(plans))
        if raws is None:
            chats = [generation_messages([text for _, text in shots]) for shots in plans]
            outs = engine.generate(chats, Sampling(n=1, temperature=p.temperature, top_p=p.top_p,
                                                   max_new_tokens=p.max_new_tokens,
                                                   seed=p.seed * 100_003 + r))
            raws = [{"raw": o[0], "shots": [sid for sid, _ in shots]}
                    for o, shots in zip(outs, plans)]
            store.save(r, raws)
        for raw in raws:
            attempts += 1
            for instruction in parse_instructions(raw["raw"]):
                if len(kept) >= p.count:
                    break
                candidates += 1
                reason = filt.check(instruction)
                if reason:
                    reasons[reason] += 1
                    continue
                filt.add(instruction)
                kept.append({"id": f"si-{len(kept):05d}", "instruction": instruction,
                             "shots": raw["shots"]})
        log.info("self-instruct generation round %d: %d of %d instructions kept after %d calls",
                 r, len(kept), p.count, attempts)
    metrics = {"generation_rounds_resumed": store.resumed, "attempts": attempts,
               "candidates": candidates, "instructions_kept": len(kept),
               **{f"rejected_{k}": reasons.get(k, 0) for k in INSTRUCTION_REJECTIONS}}
    return kept, metrics


def classify_instructions(engine: Engine, p: SelfInstructParams, items: list[dict],
                          output: str | Path, key: str, shard_size: int) -> tuple[list, dict]:
    """Step 2: True/False per item (an unparseable answer counts as not classification)."""
    def work(chunk: list[dict], index: int) -> list[dict]:
        outs = engine.generate([classify_messages(it["instruction"]) for it in chunk],
                               Sampling(n=1, temperature=0.0,
                                        max_new_tokens=CLASSIFY_MAX_NEW_TOKENS,
                                        seed=p.seed * 100_003 + index))
        return [{"id": it["id"], "raw": o[0]} for it, o in zip(chunk, outs)]

    rows, shards = run_sharded(items, output, key, shard_size, work, "self-instruct classify",
                               engine.stats)
    answers = [parse_classification(row["raw"]) for row in rows]
    return [a is True for a in answers], {
        "classification_tasks": sum(a is True for a in answers),
        "classify_unparsed": sum(a is None for a in answers),
        "classify_shards_resumed": shards["shards_resumed"]}


def generate_instances(engine: Engine, p: SelfInstructParams, items: list[dict],
                       output: str | Path, key: str, shard_size: int) -> tuple[list[str], dict]:
    """Step 3: one raw reply per item (items carry `instruction` and `is_classification`)."""
    def work(chunk: list[dict], index: int) -> list[dict]:
        chats = [instance_messages(it["instruction"], it["is_classification"]) for it in chunk]
        outs = engine.generate(chats, Sampling(n=1, temperature=p.instance_temperature,
                                               top_p=p.top_p,
                                               max_new_tokens=p.instance_max_new_tokens,
                                               seed=p.seed * 100_003 + index))
        return [{"id": it["id"], "raw": o[0]} for it, o in zip(chunk, outs)]

    rows, shards = run_sharded(items, output, key, shard_size, work, "self-instruct instances",
                               engine.stats)
    return [row["raw"] for row in rows], {"instance_shards_resumed": shards["shards_resumed"]}


def build_tasks(items: list[dict], raws: list[str], p: SelfInstructParams
                ) -> tuple[list[dict], dict]:
    """Step 4 for instances: parse each reply, filter, keep tasks with at least one instance."""
    rng = random.Random(p.seed)
    drops: Counter = Counter()
    tasks, parsed = [], 0
    for item, raw in zip(items, raws):
        instances = parse_instances(raw, item["is_classification"])
        parsed += len(instances)
        kept = filter_instances(instances, p.max_instances, rng, drops)
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


def self_instruct(engine: Engine, p: SelfInstructParams, seeds: list[SeedTask],
                  out_tasks: str | Path, key: str, shard_size: int) -> tuple[list[dict], dict]:
    """All four steps with one engine; returns the kept tasks and the metrics."""
    seed_pairs = [(t.id, t.instruction) for t in seeds]
    round_size = max(1, min(shard_size, p.max_attempts, 2 * p.count))
    kept, metrics = generate_instructions(engine, p, seed_pairs, round_size, out_tasks, key)
    is_cls, cls_metrics = classify_instructions(engine, p, kept, f"{out_tasks}.classify", key,
                                                shard_size)
    items = [{**item, "is_classification": c} for item, c in zip(kept, is_cls)]
    raws, inst_metrics = generate_instances(engine, p, items, f"{out_tasks}.instances", key,
                                            shard_size)
    tasks, task_metrics = build_tasks(items, raws, p)
    return tasks, {**metrics, **cls_metrics, **inst_metrics, **task_metrics}


def run_self_instruct(model_dir: str, p: SelfInstructParams, ep: EngineParams,
                      seed_paths: list[str], out_tasks: str | Path, out_messages: str | Path,
                      metrics_path: str | Path, if_enabled: bool = False) -> dict:
    """Stage entry: seed tasks in; tasks, messages and metrics out.

    With `if_enabled` (the DVC stage) and `p.enabled` false it writes empty outputs and loads
    no model, so that stages reading them see an unchanged file.
    """
    remove_outputs(out_tasks, out_messages, metrics_path)
    if if_enabled and not p.enabled:
        log.info("self-instruct: self_instruct.enabled is false; writing empty outputs")
        write_jsonl(out_tasks, [])
        write_jsonl(out_messages, [])
        write_json(metrics_path, {"enabled": False})
        return {"enabled": False}
    from ..engines import engine_key, make_engine

    seeds = [task for path in seed_paths for task in load_seed_tasks(path)]
    if len(seeds) < p.seed_shots:
        raise UserError(f"only {len(seeds)} seed tasks; self_instruct.seed_shots is "
                        f"{p.seed_shots}", field="self_instruct.seed_shots")
    settings = {name: getattr(p, name) for name in _OUTPUT_PARAMS}
    key = fingerprint(settings, engine_key(ep), model_fingerprint(model_dir),
                      [dataclasses.astuple(t) for t in seeds])
    engine = make_engine(model_dir, ep, seed=p.seed)
    try:
        tasks, metrics = self_instruct(engine, p, seeds, out_tasks, key, ep.shard_size)
    finally:
        engine.close()
    metrics = {"enabled": True, "seed_tasks": len(seeds), **metrics, "engine": engine.name,
               **{f"engine_{k}": v for k, v in engine.stats.as_dict().items()}}
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
    write_json(metrics_path, {**metrics, "messages": len(messages)})
    for path in (out_tasks, f"{out_tasks}.classify", f"{out_tasks}.instances"):
        finish(path)
    return {**metrics, "messages": len(messages)}
