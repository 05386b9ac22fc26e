"""Pointwise judging with the additive 5-point rubric: the loop's judge code, shared by every stage
that scores answers (judge, evaluation, seed data).

Modes: `sample` (paper: K sampled judgments, `Score: n` parsed, averaged) and `logprob` (one
forward pass ending in "Score: ", expected value of P(0..5): continuous, never unparseable).
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from ..config.errors import UserError
from ..config.params import JudgeParams
from ..core.io import read_jsonl, require
from ..core.shards import finish, item_seed, run_sharded, shard_key
from ..evaluation.metrics import score_bin, score_spread
from ..generation.engines import Sampling, expected_score
from .rubric import JUDGE_PREFIX, judge_messages, judge_template
from .scores import parse_score


def load_responses(path: str) -> list[dict]:
    """Validate responses.jsonl rows: id, prompt, responses (list of strings)."""
    rows = []
    for line, obj in read_jsonl(path):
        require(obj, "id", str, file=path, line=line)
        require(obj, "prompt", str, file=path, line=line)
        resp = require(obj, "responses", list, file=path, line=line)
        if not all(isinstance(r, str) for r in resp):
            raise UserError("every response must be a string", file=path, line=line,
                            field="responses")
        rows.append(obj)
    return rows


def judge_rows(engine, rows: list[dict], params: JudgeParams, shard_size: int,
               output: str | Path, key: str | dict) -> tuple[list[dict], dict]:
    """Score every response of every row; returns judgment rows (contract in docs/data.md):
    `scores` (K per response, null = unparseable), `parsed` (how many of the K parsed) and
    `mean` (over the parsed ones)."""

    rubric = judge_template(params.template)

    def judge_shard(chunk: list[dict], index: int) -> list[dict]:
        flat = [(i, response) for i, row in enumerate(chunk) for response in row["responses"]]
        chats = [judge_messages(chunk[i]["prompt"], response, rubric) for i, response in flat]
        scores: list[list[float | None]]
        raw: list[list[str]] | None = None
        if params.mode == "logprob":
            probs = engine.digit_probs(chats, JUDGE_PREFIX) if chats else []
            scores = [[round(expected_score(digits), 6)] for digits in probs]
        else:
            raw = engine.generate(chats, Sampling(
                n=params.samples, temperature=params.temperature, top_p=params.top_p,
                max_new_tokens=params.max_new_tokens,
                seed=item_seed(params.seed, index))) if chats else []
            scores = [[parse_score(text) for text in texts] for texts in raw]
        out, pos = [], 0
        for row in chunk:
            n = len(row["responses"])
            row_scores = scores[pos:pos + n]
            valid = [[v for v in samples if v is not None] for samples in row_scores]
            item = {"id": row["id"], "prompt": row["prompt"], "responses": row["responses"],
                    "scores": row_scores, "parsed": [len(v) for v in valid],
                    "mean": [round(statistics.fmean(v), 6) if v else None for v in valid]}
            if raw is not None:
                item["raw"] = raw[pos:pos + n]
            out.append(item)
            pos += n
        return out

    return run_sharded(rows, output, key, shard_size, judge_shard, desc=f"judge ({params.mode})",
                       stats=engine.stats)


def judge_metrics(rows: list[dict]) -> dict:
    """Parse rate (of all judgments, and per response), score histogram (rounded means) and
    mean score."""
    all_scores = [s for row in rows for ks in row["scores"] for s in ks]
    parsed = [s for s in all_scores if s is not None]
    per_response = [(sum(s is not None for s in ks), len(ks)) for row in rows
                    for ks in row["scores"]]
    means = [m for row in rows for m in row["mean"] if m is not None]
    hist = Counter(score_bin(m) for m in means)
    return {"judgments": len(all_scores), "parsed": len(parsed), "spread": score_spread(means),
            "parse_rate": round(len(parsed) / len(all_scores), 4) if all_scores else 0.0,
            "mean_score": round(statistics.fmean(means), 4) if means else None,
            # a mean over fewer parsed samples is a noisier score
            "responses_fully_parsed": sum(1 for n, k in per_response if n == k),
            "responses_partly_parsed": sum(1 for n, k in per_response if 0 < n < k),
            "responses_without_score": sum(1 for n, _ in per_response if n == 0),
            **{f"hist_{d}": hist.get(d, 0) for d in range(6)}}


def score_with_judge(engine, prompts: list[str], responses: list[list[str]],
                     judge_params: JudgeParams, shard_size: int, shards_for: Path,
                     model: str = "") -> list[list[float | None]]:
    """Mean judge score of every response, through the pipeline's own `judge_rows`; resumable
    shards beside `shards_for`, keyed by the judge `model`'s fingerprint among the rest."""
    rows = [{"id": str(i), "prompt": prompt, "responses": answers}
            for i, (prompt, answers) in enumerate(zip(prompts, responses))]
    key = shard_key(params=judge_params, templates=[judge_template(judge_params.template)],
                    inputs=rows, model=model)
    out, _ = judge_rows(engine, rows, judge_params, shard_size, shards_for, key)
    finish(shards_for)
    return [row["mean"] for row in out]
