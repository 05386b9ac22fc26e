"""Stage `evaluate` (iteration t): did M_t+1 move, and is it better?

- answers changed: share of held-out prompts whose greedy answer differs, M_t -> M_t+1;
- frozen-judge reward gain: judge M_t's score of M_t+1's answers minus its score of M_t's own
  answers, paired by prompt, with a bootstrap 95 % interval (what DPO optimised for);
- fixed-judge pointwise scores (eval.judge, one answer at a time): M_t+1 minus M_t and M1;
- head-to-head vs M_t and vs M1, judged in both orders by the fixed judge: a verdict that flips
  with the order is a tie; win rates with bootstrap intervals and the judge's position bias;
- next to each score gain, the gain at equal length (intercept of the paired score difference
  regressed on the length term; metrics.length_controlled_gain);
- with the ifeval stage's answers, IFEval of M_t+1 minus M_t and M1 paired by prompt.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import model_fingerprint, run_sharded, shard_key
from ..evaluation.eval_dir import load_eval_dir, model_section
from ..evaluation.ifeval import load_ifeval_answers, paired_difference
from ..evaluation.iteration import (
    comparison_items,
    fixed_judge_gain,
    frozen_judge_gain,
    outcome_summary,
)
from ..evaluation.metrics import answers_changed
from ..generation.engines import engine_key
from ..judge.pairwise import (
    EndpointPairwiseJudge,
    judge_both_orders,
    make_pairwise_judge,
    pairwise_template,
)

log = logging.getLogger(__name__)


def ifeval_paired(params: Params, next_path: str, prev_path: str | None,
                  sft_path: str | None) -> dict:
    """M_t+1's IFEval accuracies minus M_t's (and M1's), paired by prompt (ifeval.bootstrap
    resamples, ifeval.seed)."""
    after = load_ifeval_answers(next_path)
    out = {}
    for name, path in (("vs_prev", prev_path), ("vs_sft", sft_path)):
        if path:
            out[name] = paired_difference(load_ifeval_answers(path), after,
                                          samples=params.ifeval.bootstrap,
                                          seed=params.ifeval.seed)
    return out


def run_evaluate(*, params: Params, iteration: str, model_eval: str, next_eval: str,
                 sft_eval: str, out_path: str | Path, metrics_path: str | Path,
                 judge_dir: str | None = None, frozen_judge: str | None = None,
                 ifeval_prev: str | None = None, ifeval_next: str | None = None,
                 ifeval_sft: str | None = None) -> dict:
    """Iteration t's movement (answers changed, frozen-judge reward gain), the fixed judge's
    pointwise and head-to-head verdicts (params eval, judge, engine), and both models' eval
    summaries. The head-to-head verdicts are resumable shards of `out_path`. With the `ifeval`
    stage's answers of M_t+1 (`ifeval_next`) and M_t / M1, the paired IFEval differences."""
    eval_params = params.eval
    with stage_outputs(out_path, metrics=metrics_path, resumable=[out_path]) as outputs:
        prev_summary, prev = load_eval_dir(model_eval)
        next_summary, nxt = load_eval_dir(next_eval)
        metrics = outputs.metrics
        metrics.update({"iteration": iteration, "prompts": len(nxt),
                        "answers_changed": answers_changed(
                            {i: a["answer"] for i, a in prev.items()},
                            {i: a["answer"] for i, a in nxt.items()})})
        if frozen_judge:
            metrics["reward_gain"] = frozen_judge_gain(frozen_judge, params, model_eval, prev,
                                                       nxt, Path(str(out_path) + ".gain"))
        opponents = {"prev": prev}
        sft_is_prev = Path(sft_eval).resolve() == Path(model_eval).resolve()
        if not sft_is_prev:
            opponents["sft"] = load_eval_dir(sft_eval)[1]
        gains = {"vs_prev": fixed_judge_gain(next_eval, model_eval, eval_params.seed, nxt, prev)}
        gains["vs_sft"] = (gains["vs_prev"] if sft_is_prev
                           else fixed_judge_gain(next_eval, sft_eval, eval_params.seed, nxt,
                                                 opponents["sft"]))
        metrics["fixed_judge_gain"] = gains
        if ifeval_next:
            metrics["ifeval_paired"] = ifeval_paired(params, ifeval_next, ifeval_prev,
                                                     ifeval_sft)
        items = [item for name, answers in opponents.items()
                 for item in comparison_items(name, nxt, answers)]
        text = pairwise_template(eval_params.pairwise_template)
        with contextlib.ExitStack() as stack:
            judge, judge_info = make_pairwise_judge(params, judge_dir, stack)
            local = judge_info["kind"] == "local"
            key = shard_key(params=eval_params, templates=[text], inputs=items,
                            model=model_fingerprint(judge_info["model"]) if local else "",
                            engine={**judge_info, **(engine_key(params.engine) if local else {})})
            records, shard_stats = run_sharded(
                items, out_path, key, params.engine.shard_size,
                lambda chunk, _index: judge_both_orders(judge, chunk, text),
                desc="head-to-head (both orders)")
        vs = {name: outcome_summary([r for r in records if r["opponent"] == name],
                                    eval_params.seed)
              for name in opponents}
        vs.setdefault("sft", vs["prev"])  # iteration 1: M_t is M1
        metrics.update({"judge": judge_info, "vs_prev": vs["prev"], "vs_sft": vs["sft"],
                        "next": model_section(next_summary), "prev": model_section(prev_summary)})
        log.info("head-to-head shards: %s", shard_stats)
        if isinstance(judge, EndpointPairwiseJudge):
            metrics["endpoint_usage"] = dict(judge.endpoint.usage)
        write_jsonl(out_path, records)
    log.info("iteration %s: answers changed %s, reward gain %s; vs M_t %s; vs M1 %s", iteration,
             metrics["answers_changed"], metrics.get("reward_gain"), vs["prev"], vs["sft"])
    return metrics
