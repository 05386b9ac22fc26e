"""Stage `responses`: N candidate answers per prompt from M_t (sharded, resumable)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..config.params import EngineParams, ResponsesParams
from ..core.io import remove_outputs, write_json, write_jsonl
from ..core.shards import finish, item_seed, model_fingerprint, run_sharded, shard_key
from ..data.seed import load_prompts
from ..generation.engines import Sampling, engine_key, open_engine

log = logging.getLogger(__name__)


def sample_responses(engine, rows: list[dict], params: ResponsesParams, shard_size: int,
                     output: str | Path, key: str | dict) -> tuple[list[dict], dict]:
    """`params.n` sampled answers for each `{id, prompt}` row; shard k is seeded with (seed, k)."""

    def sample_shard(chunk: list[dict], k: int) -> list[dict]:
        chats = [[{"role": "user", "content": row["prompt"]}] for row in chunk]
        answers = engine.generate(chats, Sampling(
            n=params.n, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, seed=item_seed(params.seed, k)))
        return [{"id": row["id"], "prompt": row["prompt"], "responses": texts}
                for row, texts in zip(chunk, answers)]

    return run_sharded(rows, output, key, shard_size, sample_shard, desc="responses",
                       stats=engine.stats)


def run_responses(model_dir: str, params: ResponsesParams, engine_params: EngineParams,
                  prompts_path: str, out_path: str | Path, metrics_path: str | Path) -> dict:
    """Stage entry: prompts.jsonl in, responses.jsonl + metrics out."""
    remove_outputs(out_path, metrics_path)
    rows = load_prompts(prompts_path)
    key = shard_key(params=params, inputs=rows, model=model_fingerprint(model_dir),
                    engine=engine_key(engine_params))
    with open_engine(model_dir, engine_params, seed=params.seed) as engine:
        out, shard_stats = sample_responses(engine, rows, params, engine_params.shard_size,
                                            out_path, key)
    lengths = [len(text.split()) for row in out for text in row["responses"]]
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
