"""A model as judge: agreement with human scores on a grouped EFT set, the relevance check (an
answer to the prompt vs an answer to another prompt), and accuracy on any preference-pair file.

All scoring goes through the loop's own `judge_rows`, so what is measured is the judge the
self-rewarding loop uses (same template, same mode, same engine). `evaluate_judge` is the entry
of `selfreward eval-judge` (a command a person runs, not a DVC stage).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..config.errors import UserError
from ..config.params import JudgeParams, Params
from ..core.io import read_jsonl, read_text, remove_outputs, write_json
from ..data.seed import JudgeExample, load_eft
from ..evaluation.metrics import (
    derangement,
    grouped_accuracy_ci,
    judge_agreement,
    pair_accuracy,
    score_spread,
    wilson_interval,
)
from ..generation.engines import open_engine
from .pointwise import score_with_judge

RELEVANT_SCORE = 3  # EFT answers at least this good stand in as "an answer to the prompt"


def eft_agreement(engine, examples: list[JudgeExample], judge_params: JudgeParams,
                  shard_size: int, shards_for: Path, seed: int = 0) -> tuple[dict, list[dict]]:
    """Agreement with human scores on a grouped EFT set (with a group-bootstrap interval of the
    pairwise accuracy and the spread of the scores); also the per-example scores."""
    by_prompt: dict[tuple[str, str], list[int]] = {}
    for i, ex in enumerate(examples):  # one judge row per (group, prompt): the rubric sees one
        by_prompt.setdefault((ex.group, ex.prompt), []).append(i)
    keys = list(by_prompt)
    means = score_with_judge(engine, [k[1] for k in keys],
                             [[examples[i].response for i in by_prompt[k]] for k in keys],
                             judge_params, shard_size, shards_for)
    model: list[float | None] = [None] * len(examples)
    for k, row in zip(keys, means):
        for i, m in zip(by_prompt[k], row):
            model[i] = m
    human, groups = [ex.score for ex in examples], [ex.group for ex in examples]
    metrics = judge_agreement(model, human, groups)
    metrics["pairwise_accuracy_ci"] = grouped_accuracy_ci(model, human, groups, seed)
    metrics["spread"] = score_spread(model)
    rows = [{"group": ex.group, "source": ex.source, "human": ex.score, "model": m}
            for ex, m in zip(examples, model)]
    return metrics, rows


def relevance_check(engine, items: list[dict], judge_params: JudgeParams, shard_size: int,
                    shards_for: Path) -> tuple[dict, list[dict]]:
    """Score each prompt's own answer and another prompt's answer; accuracy = share of prompts
    whose own answer scores higher (ties count as misses), with its Wilson interval."""
    means = score_with_judge(engine, [it["prompt"] for it in items],
                             [[it["chosen"], it["rejected"]] for it in items], judge_params,
                             shard_size, shards_for)
    metrics = relevance_metrics([(m[0], m[1]) for m in means])
    rows = [{**{k: v for k, v in it.items() if k not in ("chosen", "rejected")},
             "own_score": m[0], "other_score": m[1]} for it, m in zip(items, means)]
    return metrics, rows


def relevance_metrics(scores: list[tuple[float | None, float | None]]) -> dict:
    """Pair accuracy of (own answer, other prompt's answer) scores, with its Wilson interval."""
    acc = pair_accuracy(scores)
    acc["accuracy_ci"] = wilson_interval(acc["agree"], acc["pairs"])
    return acc


def eft_relevance_items(examples: list[JudgeExample], seed: int = 0) -> list[dict]:
    """Relevance items from a grouped EFT file: each good answer (human score >= 3) under its own
    prompt vs a good answer of another group (a seeded derangement of the groups)."""
    groups: dict[str, list[JudgeExample]] = {}
    for ex in examples:
        if ex.score >= RELEVANT_SCORE:
            groups.setdefault(ex.group, []).append(ex)
    names = sorted(groups)
    if len(names) < 2:
        return []
    other = derangement(len(names), seed)
    items = []
    for g, own in enumerate(names):
        others = groups[names[other[g]]]
        for k, ex in enumerate(groups[own]):
            items.append({"prompt": ex.prompt, "chosen": ex.response,
                          "rejected": others[k % len(others)].response, "group": own,
                          "other": names[other[g]]})
    return items


def _text(value, file: str, line: int, key: str, role: str) -> str:
    """A pair field as text: a string, a message {role, content}, or a list of messages."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == role]
        if not texts or not isinstance(texts[-1], str) or not texts[-1].strip():
            raise UserError(f"no non-empty '{role}' message", file=file, line=line, field=key)
        return texts[-1]
    if isinstance(value, str) and value.strip():
        return value
    raise UserError("expected a non-empty string or chat messages", file=file, line=line,
                    field=key)


def load_preference_pairs(path: str | Path) -> list[dict]:
    """`{prompt, chosen, rejected}` rows (plain strings or TRL conversational), validated."""
    file = str(path)
    if Path(path).is_file() and not read_text(path).strip():
        raise UserError("file is empty: expected one {prompt, chosen, rejected} object per line",
                        file=file, line=1)
    out = []
    for line, obj in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                raise UserError("missing required field", file=file, line=line, field=key)
        out.append({"line": line,
                    "prompt": _text(obj["prompt"], file, line, "prompt", "user"),
                    "chosen": _text(obj["chosen"], file, line, "chosen", "assistant"),
                    "rejected": _text(obj["rejected"], file, line, "rejected", "assistant")})
    return out


def pairs_agreement(engine, pairs: list[dict], judge_params: JudgeParams, shard_size: int,
                    shards_for: Path) -> dict:
    """Pairwise accuracy of the judge on chosen/rejected pairs (ties counted separately)."""
    means = score_with_judge(engine, [pair["prompt"] for pair in pairs],
                             [[pair["chosen"], pair["rejected"]] for pair in pairs], judge_params,
                             shard_size, shards_for)
    return relevance_metrics([(m[0], m[1]) for m in means])


def evaluate_judge(*, params: Params, model_dir: str, eft_path: str | None,
                   pairs_path: str | None, out_path: str | None) -> dict:
    """A model's agreement as a judge (params judge, engine) with an EFT file (plus the
    relevance check built from it) and/or a preference-pairs file; written to `out_path` when
    given."""
    if not eft_path and not pairs_path:
        raise UserError("give --eft FILE and/or --pairs FILE")
    examples = load_eft(eft_path) if eft_path else None
    pairs = load_preference_pairs(pairs_path) if pairs_path else None
    if out_path:
        remove_outputs(out_path)
    result: dict = {"model": model_dir, "judge_mode": params.judge.mode}
    shard_size, seed = params.engine.shard_size, params.eval.seed
    with (open_engine(model_dir, params.engine, seed=params.judge.seed) as engine,
          tempfile.TemporaryDirectory(prefix="selfreward-eval-judge-") as tmp):
        if examples is not None:
            result["eft"], _ = eft_agreement(engine, examples, params.judge, shard_size,
                                             Path(tmp) / "eft", seed)
            items = eft_relevance_items(examples, seed)
            if items:
                result["eft_relevance"], _ = relevance_check(
                    engine, items, params.judge, shard_size, Path(tmp) / "relevance")
            result["eft_file"] = eft_path
        if pairs is not None:
            result["pairs"] = pairs_agreement(engine, pairs, params.judge, shard_size,
                                              Path(tmp) / "pairs")
            result["pairs_file"] = pairs_path
    if out_path:
        write_json(out_path, result)
    return result
