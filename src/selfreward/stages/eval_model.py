"""Stage `eval_model` (one per entry of params `models`): one model's greedy answers to the
held-out prompts and the figures that belong to that model alone, cached per model as a DVC
output:

- its answers, their lengths and how many hit the eval.max_new_tokens cap;
- as a judge: agreement with human scores on the held-out EFT set, and the relevance check on
  its own answers (each prompt's answer vs another prompt's answer);
- its self-scores (its judge on its own answers: the "before" of the next iteration's reward
  gain) and the fixed judge's pointwise rubric scores of its answers (no position to be biased by).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..config.params import EvalParams, Params
from ..core.io import atomic_dir, write_json, write_jsonl
from ..core.outputs import stage_outputs
from ..data.seed import load_eft, load_prompts, select_prompts
from ..evaluation.eval_dir import (
    ANSWERS,
    EFT_SCORES,
    FIXED_SCORES,
    RELEVANCE,
    SUMMARY,
    model_section,
)
from ..evaluation.metrics import cap_hits, length_stats, mean_with_ci, relevance_items
from ..generation.engines import Sampling, open_engine
from ..judge.agreement import eft_agreement, relevance_check
from ..judge.fixed import make_pointwise_judge

log = logging.getLogger(__name__)


def generate_answers(engine, rows: list[dict], eval_params: EvalParams) -> list[dict]:
    """One answer per prompt (greedy when eval.temperature is 0), with its length."""
    chats = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    replies = engine.generate(chats, Sampling(
        n=1, temperature=eval_params.temperature, top_p=eval_params.top_p,
        max_new_tokens=eval_params.max_new_tokens, seed=eval_params.seed))
    return [{"id": row["id"], "prompt": row["prompt"], "answer": texts[0],
             "words": len(texts[0].split()), "tokens": engine.count_tokens(texts[0])}
            for row, texts in zip(rows, replies)]


def run_eval_model(*, params: Params, model_dir: str, prompts_path: str, eft_path: str | None,
                   out_dir: str | Path, fixed_judge: str | None = None,
                   metrics_path: str | Path | None = None) -> dict:
    """Answers, judge agreement, relevance, self-scores and fixed-judge scores of one model
    (params eval, judge, engine), in `out_dir` (answers.jsonl, eft_scores.jsonl, relevance.jsonl,
    fixed_judge_scores.jsonl, summary.json); its headline figures in `metrics_path`. The fixed
    judge is `fixed_judge` (default eval.judge; unused with eval.judge_endpoint)."""
    eval_params, judge_params = params.eval, params.judge
    fixed_judge = fixed_judge or eval_params.judge
    shard_size = params.engine.shard_size
    with stage_outputs(out_dir, metrics=metrics_path) as outputs:
        rows = select_prompts(load_prompts(prompts_path), eval_params.max_prompts,
                              eval_params.seed)
        examples = load_eft(eft_path) if eft_path else None
        summary: dict = {"model": model_dir, "prompts": len(rows),
                         "judge_mode": judge_params.mode}
        with atomic_dir(out_dir) as tmp:
            with open_engine(model_dir, params.engine, seed=eval_params.seed) as engine:
                answers = generate_answers(engine, rows, eval_params)
                write_jsonl(tmp / ANSWERS, answers)
                summary["length"] = {
                    **length_stats([a["words"] for a in answers], [a["tokens"] for a in answers]),
                    **cap_hits([a["tokens"] for a in answers], eval_params.max_new_tokens)}
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
            # summary.json keeps the counters; the metrics their truncated prompts (eval_dir.py)
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
        # headline figures for `dvc metrics` and the report (M0 included)
        outputs.metrics.update(model_section(summary))
    log.info("eval %s: length %s; judge agreement %s; relevance %s; fixed judge %s", model_dir,
             summary["length"], summary.get("judge_agreement"), summary["relevance"],
             summary["fixed_judge"])
    return summary
