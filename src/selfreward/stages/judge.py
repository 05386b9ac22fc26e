"""Stage `judge`: M_t scores its own candidates with the additive 5-point rubric.

Modes: `sample` (paper: K sampled judgments, `Score: n` parsed, averaged) and `logprob` (one
forward pass ending in "Score: ", expected value of P(0..5): continuous, never unparseable).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import write_csv, write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import model_fingerprint, shard_key
from ..generation.engines import engine_key, open_engine
from ..judge.pointwise import judge_metrics, judge_rows, load_responses
from ..judge.rubric import judge_template
from ..judge.verifiers import add_checks

log = logging.getLogger(__name__)


def run_judge(*, params: Params, model_dir: str, responses_path: str, out_path: str | Path,
              metrics_path: str | Path, hist_path: str | Path | None = None) -> dict:
    """responses.jsonl in; judgments.jsonl, metrics (parse rate, histogram, mean score) and the
    histogram plot CSV out (params judge, engine). Sharded and resumable."""
    judge, engine_params = params.judge, params.engine
    with stage_outputs(out_path, hist_path, metrics=metrics_path,
                       resumable=[out_path]) as outputs:
        rows = load_responses(responses_path)
        key = shard_key(params=judge, templates=[judge_template(judge.template)], inputs=rows,
                        model=model_fingerprint(model_dir), engine=engine_key(engine_params))
        with open_engine(model_dir, engine_params, seed=judge.seed) as engine:
            out, shard_stats = judge_rows(engine, rows, judge, engine_params.shard_size,
                                          out_path, key)
        outputs.record_engine(engine)
        metrics = outputs.metrics
        out, check_stats = add_checks(out, rows)  # constrained prompts: IFEval's checkers
        metrics.update({"mode": judge.mode, **judge_metrics(out), **shard_stats, **check_stats})
        write_jsonl(out_path, out)
        if hist_path:
            write_csv(hist_path, ["score", "count"], ([d, metrics[f"hist_{d}"]] for d in range(6)))
    log.info("judge: parse rate %.3f, mean score %s", metrics["parse_rate"], metrics["mean_score"])
    return metrics
