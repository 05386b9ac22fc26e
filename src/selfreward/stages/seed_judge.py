"""Stage `seed_judge`: EFT candidates from an Open Assistant export (first-turn prompts outside the
IFT set with >= 2 ranked replies), K sampled judgments per reply by a judge (by default the
IFT-only SFT of M0, or an OpenAI-compatible endpoint) with the pipeline's judge template.
Sharded and resumable: the expensive part of the seed data."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import JudgeParams, OasstJudgeParams, Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import fingerprint, model_fingerprint
from ..data.oasst import first_turns, prompt_key, read_export
from ..data.oasst_seed import eft_groups
from ..data.seed import load_ift, user_prompt
from ..generation.engines import engine_key, open_engine
from ..judge.endpoint import ChatEndpoint, EndpointEngine
from ..judge.pointwise import judge_metrics, judge_rows
from ..judge.rubric import judge_template

log = logging.getLogger(__name__)


def judge_groups(engine, groups: list[dict], judge_params: JudgeParams, shard_size: int,
                 output: str | Path, key: str) -> tuple[list[dict], dict]:
    """K sampled judgments per reply through the pipeline's `judge_rows` (sharded, resumable);
    each judgment row keeps its group's human ranks and message ids."""
    rows, shard_stats = judge_rows(engine, groups, judge_params, shard_size, output, key)
    for row, group in zip(rows, groups):
        row["ranks"], row["message_ids"] = group["ranks"], group["message_ids"]
    return rows, shard_stats


def _judge_params(judge: OasstJudgeParams, rubric_path: str | None) -> JudgeParams:
    # The EFT rows need the judge's written justification, so judgments are always sampled; the
    # rubric is the pipeline's (judge.template), the one sft later renders these rows through.
    return JudgeParams(mode="sample", template=rubric_path, samples=judge.samples,
                       temperature=judge.temperature, top_p=judge.top_p,
                       max_new_tokens=judge.max_new_tokens, seed=judge.seed)


def run_seed_judge(*, params: Params, exports: Sequence[str], ift_paths: Sequence[str],
                   model_dir: str | None, out_path: str | Path, metrics_path: str | Path) -> dict:
    """Export(s) + IFT file(s) in; K sampled judgments of every EFT candidate group out, with
    the judge template judge.template (params oasst.judge, engine). Sharded and resumable."""
    oasst, engine_params, rubric_path = params.oasst, params.engine, params.judge.template
    with stage_outputs(out_path, metrics=metrics_path, resumable=[out_path]) as outputs:
        rubric = judge_template(rubric_path)  # a bad judge.template fails before the model loads
        ift_prompts = {prompt_key(user_prompt(c)) for path in ift_paths for c in load_ift(path)}
        turns, read_stats = first_turns(read_export(exports), oasst.lang)
        judge_settings = oasst.judge
        groups, group_stats = eft_groups(turns, ift_prompts, judge_settings.min_replies,
                                         judge_settings.max_groups, judge_settings.seed)
        if not groups:
            raise UserError(
                f"no EFT candidate group: {group_stats['prompts_in_ift']} prompts are in the IFT "
                f"set and {group_stats['prompts_too_few_ranked_replies']} have fewer than "
                f"{judge_settings.min_replies} ranked replies (oasst.judge.min_replies); lower "
                "oasst.ift.count to leave prompts for EFT")
        if judge_settings.endpoint:
            endpoint = ChatEndpoint.from_settings(judge_settings.endpoint, judge_settings,
                                                  "oasst.judge.endpoint")
            engine_cm = contextlib.closing(EndpointEngine(endpoint))
            judge = {"kind": "endpoint", "url": endpoint.url,
                     "model": judge_settings.endpoint_model}
            judge_id = judge
        else:
            if not model_dir:
                raise UserError("give --model DIR (the judge checkpoint) or set "
                                "oasst.judge.endpoint")
            engine_cm = open_engine(model_dir, engine_params, seed=judge_settings.seed)
            judge = {"kind": "local", "model": model_dir}
            judge_id = {**judge, "engine": engine_key(engine_params),
                        "fp": model_fingerprint(model_dir)}
        judge_params = _judge_params(judge_settings, rubric_path)
        key = fingerprint(judge_params, judge_id, rubric, groups)
        with engine_cm as engine:
            rows, shard_stats = judge_groups(engine, groups, judge_params,
                                             engine_params.shard_size, out_path, key)
        outputs.record_engine(engine)
        outputs.metrics.update({**read_stats, "ift_file_prompts": len(ift_prompts),
                                **group_stats, "judge": judge, "samples": judge_settings.samples,
                                **judge_metrics(rows), **shard_stats})
        if judge_settings.endpoint:
            outputs.metrics["endpoint_usage"] = dict(endpoint.usage)
        write_jsonl(out_path, rows)
    log.info("seed judge: %d groups, %d replies, parse rate %.3f", len(rows),
             group_stats["replies_judged"], outputs.metrics["parse_rate"])
    return outputs.metrics
