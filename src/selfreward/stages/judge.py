"""Stage `judge`: M_t scores its own candidates with the additive 5-point rubric.

Modes: `sample` (paper: K sampled judgments, `Score: n` parsed, averaged) and `logprob` (one
forward pass ending in "Score: ", expected value of P(0..5): continuous, never unparseable).
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from pathlib import Path

from ..engines import Sampling, engine_key, expected_score, open_engine
from ..errors import UserError
from ..evaluation import score_spread
from ..io import read_jsonl, remove_outputs, require, write_csv, write_json, write_jsonl
from ..params import EngineParams, JudgeParams
from ..prompting import JUDGE_PREFIX, judge_messages, judge_template
from ..shards import finish, item_seed, model_fingerprint, run_sharded, shard_key

log = logging.getLogger(__name__)

# \b: "Underscore: 2" holds no score.
_SCORE = re.compile(r"\bscore\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)(?!\d)", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The last `Score: n` in a judgment, if it lies in 0..5; otherwise None (unparseable)."""
    matches = _SCORE.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if 0 <= value <= 5 else None


def strip_score(text: str) -> str:
    """A judgment without the last `Score: n` that parse_score reads: its justification."""
    found = list(_SCORE.finditer(text))
    if not found:
        return text.strip()
    return (text[:found[-1].start()] + text[found[-1].end():]).strip()


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
    """Score every response of every row; returns judgment rows (contract in the README):
    `scores` (K per response, null = unparseable), `parsed` (how many of the K parsed) and
    `mean` (over the parsed ones)."""

    rubric = judge_template(params.template)

    def judge_shard(chunk: list[dict], k: int) -> list[dict]:
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
                seed=item_seed(params.seed, k))) if chats else []
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
    hist = Counter(round(m) for m in means)
    return {"judgments": len(all_scores), "parsed": len(parsed), "spread": score_spread(means),
            "parse_rate": round(len(parsed) / len(all_scores), 4) if all_scores else 0.0,
            "mean_score": round(statistics.fmean(means), 4) if means else None,
            # a mean over fewer parsed samples is a noisier score
            "responses_fully_parsed": sum(1 for n, k in per_response if n == k),
            "responses_partly_parsed": sum(1 for n, k in per_response if 0 < n < k),
            "responses_without_score": sum(1 for n, _ in per_response if n == 0),
            **{f"hist_{d}": hist.get(d, 0) for d in range(6)}}


def run_judge(model_dir: str, params: JudgeParams, engine_params: EngineParams,
              responses_path: str, out_path: str | Path, metrics_path: str | Path,
              hist_path: str | Path | None = None) -> dict:
    """Stage entry: responses.jsonl in, judgments.jsonl + metrics (+ histogram plot) out."""
    remove_outputs(out_path, metrics_path, *([hist_path] if hist_path else []))
    rows = load_responses(responses_path)
    key = shard_key(params=params, templates=[judge_template(params.template)], inputs=rows,
                    model=model_fingerprint(model_dir), engine=engine_key(engine_params))
    with open_engine(model_dir, engine_params, seed=params.seed) as engine:
        out, shard_stats = judge_rows(engine, rows, params, engine_params.shard_size, out_path,
                                      key)
    metrics = {"mode": params.mode, **judge_metrics(out), "engine": engine.name, **shard_stats,
               **{f"engine_{k}": v for k, v in engine.stats.as_dict().items()}}
    write_jsonl(out_path, out)
    if hist_path:
        write_csv(hist_path, ["score", "count"], ([d, metrics[f"hist_{d}"]] for d in range(6)))
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("judge: parse rate %.3f, mean score %s", metrics["parse_rate"], metrics["mean_score"])
    return metrics
