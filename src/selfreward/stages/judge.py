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

from ..engines import Sampling, engine_key, expected_score, make_engine
from ..errors import UserError
from ..evaluation import score_spread
from ..io import read_jsonl, remove_outputs, require, write_csv, write_json, write_jsonl
from ..params import EngineParams, JudgeParams
from ..prompting import JUDGE_PREFIX, judge_messages, judge_template
from ..shards import fingerprint, finish, model_fingerprint, run_sharded

log = logging.getLogger(__name__)

_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)(?!\d)", re.IGNORECASE)


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


def judge_rows(engine, rows: list[dict], p: JudgeParams, shard_size: int, output: str | Path,
               key: str) -> tuple[list[dict], dict]:
    """Score every response of every row; returns judgment rows (contract in architecture.md)."""

    rubric = judge_template(p.template)

    def work(chunk: list[dict], k: int) -> list[dict]:
        flat = [(i, r) for i, row in enumerate(chunk) for r in row["responses"]]
        chats = [judge_messages(chunk[i]["prompt"], r, rubric) for i, r in flat]
        scores: list[list[float | None]]
        raw: list[list[str]] | None = None
        if p.mode == "logprob":
            probs = engine.digit_probs(chats, JUDGE_PREFIX) if chats else []
            scores = [[round(expected_score(pr), 6)] for pr in probs]
        else:
            outs = engine.generate(chats, Sampling(n=p.samples, temperature=p.temperature,
                                                   top_p=p.top_p, max_new_tokens=p.max_new_tokens,
                                                   seed=p.seed * 100_003 + k)) if chats else []
            scores = [[parse_score(t) for t in o] for o in outs]
            raw = outs
        out, pos = [], 0
        for row in chunk:
            n = len(row["responses"])
            s = scores[pos:pos + n]
            means = [round(statistics.fmean(v), 6) if (v := [x for x in ks if x is not None])
                     else None for ks in s]
            item = {"id": row["id"], "prompt": row["prompt"], "responses": row["responses"],
                    "scores": s, "mean": means}
            if raw is not None:
                item["raw"] = raw[pos:pos + n]
            out.append(item)
            pos += n
        return out

    return run_sharded(rows, output, key, shard_size, work, desc=f"judge ({p.mode})",
                       stats=engine.stats)


def judge_metrics(rows: list[dict]) -> dict:
    """Parse rate, score histogram (rounded means) and mean score."""
    all_scores = [s for row in rows for ks in row["scores"] for s in ks]
    parsed = [s for s in all_scores if s is not None]
    means = [m for row in rows for m in row["mean"] if m is not None]
    hist = Counter(round(m) for m in means)
    return {"judgments": len(all_scores), "parsed": len(parsed), "spread": score_spread(means),
            "parse_rate": round(len(parsed) / len(all_scores), 4) if all_scores else 0.0,
            "mean_score": round(statistics.fmean(means), 4) if means else None,
            "responses_without_score": sum(1 for row in rows for m in row["mean"] if m is None),
            **{f"hist_{d}": hist.get(d, 0) for d in range(6)}}


def run_judge(model_dir: str, p: JudgeParams, ep: EngineParams, responses_path: str,
              out_path: str | Path, metrics_path: str | Path,
              hist_path: str | Path | None = None) -> dict:
    """Stage entry: responses.jsonl in, judgments.jsonl + metrics (+ histogram plot) out."""
    remove_outputs(out_path, metrics_path, *( [hist_path] if hist_path else []))
    rows = load_responses(responses_path)
    key = fingerprint(p, judge_template(p.template), engine_key(ep), model_fingerprint(model_dir),
                      rows)
    engine = make_engine(model_dir, ep, seed=p.seed)
    try:
        out, shard_stats = judge_rows(engine, rows, p, ep.shard_size, out_path, key)
    finally:
        engine.close()
    metrics = {"mode": p.mode, **judge_metrics(out), "engine": engine.name, **shard_stats,
               **{f"engine_{k}": v for k, v in engine.stats.as_dict().items()}}
    write_jsonl(out_path, out)
    if hist_path:
        write_csv(hist_path, ["score", "count"], ([d, metrics[f"hist_{d}"]] for d in range(6)))
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("judge: parse rate %.3f, mean score %s", metrics["parse_rate"], metrics["mean_score"])
    return metrics
