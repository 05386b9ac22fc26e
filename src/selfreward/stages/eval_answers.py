"""Stage `eval-model`: one model's greedy answers to the held-out prompts and the figures that
belong to that model alone, cached per model as a DVC output:

- its answers and their lengths;
- as a judge: agreement with human scores on the held-out EFT set, and the relevance check on
  its own answers (each prompt's answer vs another prompt's answer);
- its self-scores (its judge on its own answers: the "before" of the next iteration's reward
  gain) and the fixed judge's pointwise rubric scores of its answers (no position to be biased by).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from ..engines import Sampling, open_engine
from ..errors import UserError
from ..evaluation import length_stats, mean_with_ci, relevance_items
from ..io import atomic_dir, read_jsonl, remove_outputs, require, write_json, write_jsonl
from ..params import EvalParams, Params
from ..seed import load_eft, load_prompts, select_prompts
from .eval_judge import eft_agreement, relevance_check
from .fixed_judge import make_pointwise_judge

log = logging.getLogger(__name__)

ANSWERS, EFT_SCORES, RELEVANCE, FIXED_SCORES, SUMMARY = (
    "answers.jsonl", "eft_scores.jsonl", "relevance.jsonl", "fixed_judge_scores.jsonl",
    "summary.json")


def generate_answers(engine, rows: list[dict], eval_params: EvalParams) -> list[dict]:
    """One answer per prompt (greedy when eval.temperature is 0), with its length."""
    chats = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    replies = engine.generate(chats, Sampling(
        n=1, temperature=eval_params.temperature, top_p=eval_params.top_p,
        max_new_tokens=eval_params.max_new_tokens, seed=eval_params.seed))
    return [{"id": row["id"], "prompt": row["prompt"], "answer": texts[0],
             "words": len(texts[0].split()), "tokens": engine.count_tokens(texts[0])}
            for row, texts in zip(rows, replies)]


def run_eval_model(model_dir: str, params: Params, prompts_path: str, eft_path: str | None,
                   out_dir: str | Path, fixed_judge: str | None = None,
                   metrics_path: str | Path | None = None) -> dict:
    """Stage entry: answers, judge agreement, relevance, self-scores and fixed-judge scores of
    one model, in `out_dir` (answers.jsonl, eft_scores.jsonl, relevance.jsonl,
    fixed_judge_scores.jsonl, summary.json)."""
    eval_params, judge_params = params.eval, params.judge
    shard_size = params.engine.shard_size
    rows = select_prompts(load_prompts(prompts_path), eval_params.max_prompts, eval_params.seed)
    examples = load_eft(eft_path) if eft_path else None
    remove_outputs(out_dir, *([metrics_path] if metrics_path else []))
    summary: dict = {"model": model_dir, "prompts": len(rows), "judge_mode": judge_params.mode}
    with atomic_dir(out_dir) as tmp:
        with open_engine(model_dir, params.engine, seed=eval_params.seed) as engine:
            answers = generate_answers(engine, rows, eval_params)
            write_jsonl(tmp / ANSWERS, answers)
            summary["length"] = length_stats([a["words"] for a in answers],
                                             [a["tokens"] for a in answers])
            if examples is not None:
                summary["judge_agreement"], scored = eft_agreement(
                    engine, examples, judge_params, shard_size, tmp / EFT_SCORES,
                    eval_params.seed)
                write_jsonl(tmp / EFT_SCORES, scored)
            items = relevance_items([a["prompt"] for a in answers],
                                    [a["answer"] for a in answers], eval_params.seed)
            relevance, rel_rows = relevance_check(engine, items, judge_params, shard_size,
                                                  tmp / RELEVANCE)
            for row in rel_rows:
                row["id"] = answers[row["index"]]["id"]
                row["other_id"] = answers[row["other"]]["id"]
            write_jsonl(tmp / RELEVANCE, rel_rows)
            summary["relevance"] = relevance
            self_scores = [r["own_score"] for r in rel_rows]
            summary["self_score"] = mean_with_ci(self_scores, eval_params.seed)
        summary["engine"] = engine.stats.as_dict()
        if fixed_judge and Path(fixed_judge).resolve() == Path(model_dir).resolve() \
                and not eval_params.judge_endpoint:
            fixed, info = self_scores, {"kind": "local", "model": fixed_judge}  # same judge
        else:
            judge, info = make_pointwise_judge(params, fixed_judge)
            with contextlib.closing(judge):
                fixed = judge.score([a["prompt"] for a in answers],
                                    [a["answer"] for a in answers], tmp / FIXED_SCORES)
        write_jsonl(tmp / FIXED_SCORES, [{"id": a["id"], "score": s}
                                         for a, s in zip(answers, fixed)])
        summary["fixed_judge"] = {**info, **mean_with_ci(fixed, eval_params.seed)}
        write_json(tmp / SUMMARY, summary)
    if metrics_path:  # headline figures for `dvc metrics` and the report (M0 included)
        write_json(metrics_path, model_section(summary))
    log.info("eval %s: length %s; judge agreement %s; relevance %s; fixed judge %s", model_dir,
             summary["length"], summary.get("judge_agreement"), summary["relevance"],
             summary["fixed_judge"])
    return summary


AGREEMENT_KEYS = ("pairwise_accuracy", "pairwise_accuracy_ci", "pairwise_tie_rate",
                  "best_hit_rate", "exact_match", "spearman", "kendall_tau")
LENGTH_KEYS = ("mean_words", "median_words", "mean_tokens", "median_tokens")


def model_section(summary: dict) -> dict:
    """The headline numbers of one model's eval summary (all counts stay in summary.json)."""
    agreement = summary.get("judge_agreement") or {}
    length = summary.get("length") or {}
    relevance = summary.get("relevance") or {}
    return {"model": summary.get("model"),
            "judge_agreement": {k: agreement.get(k) for k in AGREEMENT_KEYS} if agreement
            else None,
            "score_std": (agreement.get("spread") or {}).get("std"),
            "relevance": {k: relevance.get(k) for k in ("accuracy", "accuracy_ci", "pairs")}
            if relevance else None,
            "self_score": summary.get("self_score"),
            "fixed_judge": summary.get("fixed_judge"),
            "length": {k: length.get(k) for k in LENGTH_KEYS},
            # prompts cut from the left to fit the engine's context (answers and judge turns)
            "truncated_prompts": (summary.get("engine") or {}).get("truncated_prompts")}


def load_eval_dir(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(summary, answers by id) from a directory written by `run_eval_model`."""
    path = Path(path)
    if not (path / SUMMARY).is_file() or not (path / ANSWERS).is_file():
        raise UserError(f"not an eval directory (needs {SUMMARY} and {ANSWERS}); run "
                        "`selfreward eval-model` for this model first", file=str(path))
    summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    answers = {}
    file = str(path / ANSWERS)
    for line, obj in read_jsonl(path / ANSWERS):
        require(obj, "prompt", str, file=file, line=line)
        if not isinstance(obj.get("answer"), str):  # may be empty: a model can say nothing
            raise UserError("expected a string", file=file, line=line, field="answer")
        answers[require(obj, "id", str, file=file, line=line)] = obj
    return summary, answers


def load_scores(path: str | Path, file_name: str, key: str = "score") -> dict[str, float | None]:
    """Per-prompt scores (id -> score) from an eval directory's scores file."""
    file = Path(path) / file_name
    if not file.is_file():
        raise UserError(f"missing {file_name}: rerun `selfreward eval-model` for this model",
                        file=str(path))
    return {str(obj["id"]): obj.get(key) for _, obj in read_jsonl(file)}
