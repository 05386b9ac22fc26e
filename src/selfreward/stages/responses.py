"""Stage `responses`: N candidate answers per prompt from M_t (sharded, resumable)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..config.params import Params, ResponsesParams
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import item_seed, model_fingerprint, run_sharded, shard_key
from ..data.seed import load_prompts
from ..generation.engines import Sampling, engine_key, open_engine

log = logging.getLogger(__name__)
CONSTRAINT_FIELDS = ("instruction_id_list", "kwargs")


def sample_responses(engine, rows: list[dict], params: ResponsesParams, shard_size: int,
                     output: str | Path, key: str | dict) -> tuple[list[dict], dict]:
    """`params.n` sampled answers for each `{id, prompt}` row; shard k is seeded with (seed, k)."""

    def sample_shard(chunk: list[dict], index: int) -> list[dict]:
        chats = [[{"role": "user", "content": row["prompt"]}] for row in chunk]
        answers = engine.generate(chats, Sampling(
            n=params.n, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, seed=item_seed(params.seed, index)))
        # a constrained prompt keeps its IFEval fields, for the judge's checkers
        return [{"id": row["id"], "prompt": row["prompt"], "responses": texts,
                 **{k: row[k] for k in CONSTRAINT_FIELDS if k in row}}
                for row, texts in zip(chunk, answers)]

    return run_sharded(rows, output, key, shard_size, sample_shard, desc="responses",
                       stats=engine.stats)


def run_responses(*, params: Params, model_dir: str, prompts_path: str, out_path: str | Path,
                  metrics_path: str | Path) -> dict:
    """prompts.jsonl in; responses.jsonl and metrics out (params responses, engine). Sharded
    and resumable."""
    responses, engine_params = params.responses, params.engine
    with stage_outputs(out_path, metrics=metrics_path, resumable=[out_path]) as outputs:
        rows = load_prompts(prompts_path)
        key = shard_key(params=responses, inputs=rows, model=model_fingerprint(model_dir),
                        engine=engine_key(engine_params))
        with open_engine(model_dir, engine_params, seed=responses.seed) as engine:
            out, shard_stats = sample_responses(engine, rows, responses,
                                                engine_params.shard_size, out_path, key)
        lengths = [len(text.split()) for row in out for text in row["responses"]]
        outputs.record_engine(engine)
        outputs.metrics.update({
            "prompts": len(out), "responses": len(lengths),
            "empty_responses": sum(1 for n in lengths if n == 0),
            "mean_words": round(statistics.fmean(lengths), 2) if lengths else 0.0,
            **shard_stats})
        write_jsonl(out_path, out)
    log.info("responses: %s", outputs.metrics)
    return outputs.metrics
