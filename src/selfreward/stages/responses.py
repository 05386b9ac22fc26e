"""Stage `responses`: N candidate answers per prompt from M_t (sharded, resumable)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..engines import Sampling, engine_key, make_engine
from ..io import remove_outputs, write_json, write_jsonl
from ..params import EngineParams, ResponsesParams
from ..seed import load_prompts
from ..shards import fingerprint, finish, model_fingerprint, run_sharded

log = logging.getLogger(__name__)


def sample_responses(engine, rows: list[dict], p: ResponsesParams, shard_size: int,
                     output: str | Path, key: str) -> tuple[list[dict], dict]:
    """`p.n` sampled answers for each `{id, prompt}` row; shard k is seeded with (seed, k)."""

    def work(chunk: list[dict], k: int) -> list[dict]:
        chats = [[{"role": "user", "content": r["prompt"]}] for r in chunk]
        outs = engine.generate(chats, Sampling(n=p.n, temperature=p.temperature, top_p=p.top_p,
                                               max_new_tokens=p.max_new_tokens,
                                               seed=p.seed * 100_003 + k))
        return [{"id": r["id"], "prompt": r["prompt"], "responses": o}
                for r, o in zip(chunk, outs)]

    return run_sharded(rows, output, key, shard_size, work, desc="responses",
                       stats=engine.stats)


def run_responses(model_dir: str, p: ResponsesParams, ep: EngineParams, prompts_path: str,
                  out_path: str | Path, metrics_path: str | Path) -> dict:
    """Stage entry: prompts.jsonl in, responses.jsonl + metrics out."""
    remove_outputs(out_path, metrics_path)
    rows = load_prompts(prompts_path)
    key = fingerprint(p, engine_key(ep), model_fingerprint(model_dir), rows)
    engine = make_engine(model_dir, ep, seed=p.seed)
    try:
        out, shard_stats = sample_responses(engine, rows, p, ep.shard_size, out_path, key)
    finally:
        engine.close()
    lengths = [len(r.split()) for row in out for r in row["responses"]]
    metrics = {"prompts": len(out), "responses": len(lengths),
               "empty_responses": sum(1 for n in lengths if n == 0),
               "mean_words": round(statistics.fmean(lengths), 2) if lengths else 0.0,
               "engine": engine.name, **shard_stats,
               **{f"engine_{k}": v for k, v in engine.stats.as_dict().items()}}
    write_jsonl(out_path, out)
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("responses: %s", metrics)
    return metrics
