"""Stage `responses`: N candidate answers per prompt from M_t (sharded, resumable)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import model_fingerprint, shard_key
from ..data.seed import load_prompts
from ..generation.engines import engine_key, open_engine
from ..generation.sampling import sample_responses

log = logging.getLogger(__name__)


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
