"""The evaluation directory of one model (written by stage `eval_model`, read by `evaluate` and
the report): its answers, its scores as a judge and as judged, and its summary."""

from __future__ import annotations

import json
from pathlib import Path

from ..config.errors import UserError
from ..core.io import read_jsonl, require

ANSWERS, EFT_SCORES, RELEVANCE, FIXED_SCORES, SUMMARY = (
    "answers.jsonl", "eft_scores.jsonl", "relevance.jsonl", "fixed_judge_scores.jsonl",
    "summary.json")


AGREEMENT_KEYS = ("pairwise_accuracy", "pairwise_accuracy_ci", "pairwise_tie_rate",
                  "best_hit_rate", "exact_match", "spearman", "kendall_tau")
LENGTH_KEYS = ("mean_words", "median_words", "mean_tokens", "median_tokens", "max_new_tokens",
               "at_cap", "at_cap_share")


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
