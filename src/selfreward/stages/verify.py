"""Stage `verify` (one per entry of params `models`): the generation-verification gap of one model.

N answers per IFEval-format prompt sampled from the model as the loop samples its candidates
(responses.n, temperature, top_p; verify.max_new_tokens), each verified by the official IFEval
checkers (the ground truth) and scored by the model's own judge (the loop's judge code, template
and mode). Does its top-scored answer pass more often than a random one (the selection gain)?
A gain whose interval includes 0 means that self-judged pairs cannot teach these skills.

Outputs: answers JSONL (per prompt: the N answers, their judge scores and strict/loose verdicts)
and a metrics JSON (evaluation/verification.py, strict and loose). Sampling and judging are
resumable shards.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import model_fingerprint, shard_key
from ..data.seed import select_prompts
from ..evaluation.ifeval import load_ifeval_prompts, score_response
from ..evaluation.metrics import cap_hits
from ..evaluation.verification import verification_gap
from ..generation.engines import engine_key, open_engine
from ..generation.sampling import sample_responses
from ..judge.pointwise import judge_rows
from ..judge.rubric import judge_template

log = logging.getLogger(__name__)


def run_verify(*, params: Params, model_dir: str, prompts_path: str | None,
               out_path: str | Path, metrics_path: str | Path) -> dict:
    """Sample, check and self-judge N answers per prompt of `prompts_path` (default
    verify.prompts; params verify, responses, judge, engine); write answers and metrics."""
    verify, responses, judge = params.verify, params.responses, params.judge
    prompts_path = prompts_path or verify.prompts
    judged_path = Path(str(out_path) + ".judge")  # where the judging shards live
    with stage_outputs(out_path, metrics=metrics_path,
                       resumable=[out_path, judged_path]) as outputs:
        rows = select_prompts(load_ifeval_prompts(prompts_path), verify.max_prompts,
                              verify.seed)
        items = [{"id": str(row["key"]), "prompt": row["prompt"]} for row in rows]
        model = model_fingerprint(model_dir)
        engine_settings = engine_key(params.engine)
        shard_size = params.engine.shard_size
        with open_engine(model_dir, params.engine, seed=responses.seed) as engine:
            sample_key = shard_key(params={"responses": responses,
                                           "max_new_tokens": verify.max_new_tokens},
                                   inputs=items, model=model, engine=engine_settings)
            sampled, sample_stats = sample_responses(engine, items, responses, shard_size,
                                                     out_path, sample_key,
                                                     max_new_tokens=verify.max_new_tokens)
            judge_key = shard_key(params=judge, templates=[judge_template(judge.template)],
                                  inputs=sampled, model=model, engine=engine_settings)
            judged, judge_stats = judge_rows(engine, sampled, judge, shard_size, judged_path,
                                             judge_key)
            tokens = [engine.count_tokens(text) for row in sampled for text in row["responses"]]
        outputs.record_engine(engine)
        verdicts = [[score_response(row, text) for text in answers["responses"]]
                    for row, answers in zip(rows, sampled)]
        scores = [row["mean"] for row in judged]
        metrics = outputs.metrics
        metrics.update({
            "model": model_dir, "prompts_file": str(prompts_path),
            "answers_per_prompt": responses.n, "temperature": responses.temperature,
            "judge_mode": judge.mode, **cap_hits(tokens, verify.max_new_tokens),
            "mean_answer_tokens": round(sum(tokens) / len(tokens), 2) if tokens else None,
            **{mode: verification_gap([[all(v[mode]) for v in per] for per in verdicts],
                                      scores, verify.seed, verify.bootstrap)
               for mode in ("strict", "loose")},
            "sampling_shards": sample_stats, "judge_shards": judge_stats})
        write_jsonl(out_path, ({"key": row["key"], "prompt": row["prompt"],
                                "instruction_id_list": row["instruction_id_list"],
                                "responses": answers["responses"], "scores": score_row,
                                "strict": [v["strict"] for v in per],
                                "loose": [v["loose"] for v in per]}
                               for row, answers, score_row, per
                               in zip(rows, sampled, scores, verdicts)))
    strict = metrics["strict"]
    log.info("verify %s (%d prompts x %d): pass rate random %s, judge top %s, oracle %s; "
             "selection gain %s %s; checker-separated pairs ordered right %s of %s", model_dir,
             len(rows), responses.n, strict["random"]["mean"], strict["top"]["mean"],
             strict["oracle"]["mean"], strict["selection_gain"]["mean"],
             strict["selection_gain"]["ci"], strict["pairs"]["agree"], strict["pairs"]["n"])
    return metrics
