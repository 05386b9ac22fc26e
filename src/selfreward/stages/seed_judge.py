"""Stage `seed_judge`: EFT candidates from an Open Assistant export (first-turn prompts outside the
IFT set with >= 2 ranked replies), K sampled judgments per reply by a judge (by default the
IFT-only SFT of M0, or an OpenAI-compatible endpoint) with the pipeline's judge template.
Sharded and resumable: the expensive part of the seed data."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..config.errors import UserError
from ..config.params import EngineParams, JudgeParams, OasstJudgeParams, OasstParams
from ..core.io import remove_outputs, write_json, write_jsonl
from ..core.shards import fingerprint, finish, model_fingerprint
from ..data.oasst import first_turns, prompt_key, read_export
from ..data.oasst_seed import eft_groups
from ..data.seed import load_ift, user_prompt
from ..generation.engines import engine_key, open_engine
from ..judge.endpoint import ChatEndpoint, EndpointEngine
from ..judge.pointwise import judge_metrics, judge_rows
from ..judge.rubric import judge_template

log = logging.getLogger(__name__)


def judge_groups(engine, groups: list[dict], jp: JudgeParams, shard_size: int,
                 output: str | Path, key: str) -> tuple[list[dict], dict]:
    """K sampled judgments per reply through the pipeline's `judge_rows` (sharded, resumable);
    each judgment row keeps its group's human ranks and message ids."""
    rows, shard_stats = judge_rows(engine, groups, jp, shard_size, output, key)
    for row, group in zip(rows, groups):
        row["ranks"], row["message_ids"] = group["ranks"], group["message_ids"]
    return rows, shard_stats


def _judge_params(p: OasstJudgeParams, rubric_path: str | None) -> JudgeParams:
    # The EFT rows need the judge's written justification, so judgments are always sampled; the
    # rubric is the pipeline's (judge.template), the one sft later renders these rows through.
    return JudgeParams(mode="sample", template=rubric_path, samples=p.samples,
                       temperature=p.temperature, top_p=p.top_p,
                       max_new_tokens=p.max_new_tokens, seed=p.seed)


def run_seed_judge(p: OasstParams, ep: EngineParams, export: list[str], ift_paths: list[str],
                   model_dir: str | None, out_path: str | Path, metrics_path: str | Path,
                   rubric_path: str | None = None) -> dict:
    """Stage entry: export + IFT file(s) in; judgments of every EFT candidate group out, with
    the judge template at `rubric_path` (judge.template; None = the packaged one)."""
    remove_outputs(out_path, metrics_path)
    rubric = judge_template(rubric_path)  # a bad judge.template fails before the model loads
    ift_prompts = {prompt_key(user_prompt(c)) for path in ift_paths for c in load_ift(path)}
    turns, read_stats = first_turns(read_export(export), p.lang)
    jp = p.judge
    groups, group_stats = eft_groups(turns, ift_prompts, jp.min_replies, jp.max_groups, jp.seed)
    if not groups:
        raise UserError(f"no EFT candidate group: {group_stats['prompts_in_ift']} prompts are in "
                        f"the IFT set and {group_stats['prompts_too_few_ranked_replies']} have "
                        f"fewer than {jp.min_replies} ranked replies (oasst.judge.min_replies); "
                        "lower oasst.ift.count to leave prompts for EFT")
    if jp.endpoint:
        endpoint = ChatEndpoint.from_settings(jp.endpoint, jp, "oasst.judge.endpoint")
        engine_cm = contextlib.closing(EndpointEngine(endpoint))
        judge = {"kind": "endpoint", "url": endpoint.url, "model": jp.endpoint_model}
        judge_id = judge
    else:
        if not model_dir:
            raise UserError("give --model DIR (the judge checkpoint) or set oasst.judge.endpoint")
        engine_cm = open_engine(model_dir, ep, seed=jp.seed)
        judge = {"kind": "local", "model": model_dir}
        judge_id = {**judge, "engine": engine_key(ep), "fp": model_fingerprint(model_dir)}
    judge_p = _judge_params(jp, rubric_path)
    key = fingerprint(judge_p, judge_id, rubric, groups)
    with engine_cm as engine:
        rows, shard_stats = judge_groups(engine, groups, judge_p, ep.shard_size, out_path, key)
    metrics = {**read_stats, "ift_file_prompts": len(ift_prompts), **group_stats,
               "judge": judge, "engine": engine.name, "samples": jp.samples,
               **judge_metrics(rows), **shard_stats,
               **{f"engine_{k}": v for k, v in engine.stats.as_dict().items()}}
    if jp.endpoint:
        metrics["endpoint_usage"] = dict(endpoint.usage)
    write_jsonl(out_path, rows)
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("seed judge: %d groups, %d replies, parse rate %.3f", len(rows),
             group_stats["replies_judged"], metrics["parse_rate"])
    return metrics
