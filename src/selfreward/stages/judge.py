"""Stage `judge`: M_t scores its own candidates with the additive 5-point rubric.

Modes: `sample` (paper: K sampled judgments, `Score: n` parsed, averaged) and `logprob` (one
forward pass ending in "Score: ", expected value of P(0..5): continuous, never unparseable).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import EngineParams, JudgeParams
from ..core.io import remove_outputs, write_csv, write_json, write_jsonl
from ..core.shards import finish, model_fingerprint, shard_key
from ..generation.engines import engine_key, open_engine
from ..judge.pointwise import judge_metrics, judge_rows, load_responses
from ..judge.rubric import judge_template

log = logging.getLogger(__name__)


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
