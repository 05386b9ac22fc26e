"""Stage `source_answers`: the answers a pair source other than self_judged needs (docs/pairs.md).

pairs.source `spin`: M_t answers the seed IFT prompts (the seed answer is kept as `reference`);
`anchored`: M1 answers the iteration's prompts and M_t judges them; `teacher`: the teacher
(pairs.teacher) answers them and M_t judges them; `self_judged`: an empty file, no model loaded.
Generation and judging are sharded and resumable.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import item_seed, model_fingerprint, run_sharded, shard_key
from ..data.seed import load_ift, load_prompts, select_prompts
from ..generation.engines import Sampling, engine_key, open_engine
from ..judge.pointwise import judge_metrics, judge_rows
from ..judge.rubric import judge_template

log = logging.getLogger(__name__)


def seed_rows(seed_path: str, max_prompts: int, seed: int) -> tuple[list[dict], int]:
    """`{id, prompt, reference}` of the single-turn seed IFT conversations (a seeded subset of
    `max_prompts`, 0 = all), and how many multi-turn ones were left out."""
    rows, multi = [], 0
    for k, conv in enumerate(load_ift(seed_path)):
        if len(conv.prompt) != 1 or conv.prompt[0]["role"] != "user":
            multi += 1
            continue
        rows.append({"id": f"seed{k}", "prompt": conv.prompt[0]["content"],
                     "reference": conv.completion[0]["content"]})
    return select_prompts(rows, max_prompts, seed), multi


def run_source_answers(*, params: Params, model_dir: str, anchor_dir: str, teacher_dir: str,
                       seed_path: str, prompts_path: str, out_path: str | Path,
                       metrics_path: str | Path) -> dict:
    """Seed IFT or the iteration's prompts in; the source's answers (judgment rows, each with
    `source`) and metrics out (params pairs.source/source_samples/spin_prompts/teacher,
    responses, judge, engine). M_t = `model_dir`, M1 = `anchor_dir`, teacher = `teacher_dir`."""
    pairs, responses, engine_params = params.pairs, params.responses, params.engine
    source = pairs.source
    judge_shards = f"{out_path}.judge"
    with stage_outputs(out_path, metrics=metrics_path,
                       resumable=[out_path, judge_shards]) as outputs:
        outputs.metrics["source"] = source
        if source == "self_judged":
            log.info("source-answers: pairs.source is self_judged; writing an empty file")
            write_jsonl(out_path, [])
            return outputs.metrics
        if source == "spin":
            rows, multi = seed_rows(seed_path, pairs.spin_prompts, pairs.seed)
            writer = model_dir
            outputs.metrics["multi_turn_skipped"] = multi
        else:
            rows = load_prompts(prompts_path)
            writer = anchor_dir if source == "anchored" else teacher_dir
        if not rows:
            raise UserError(f"no prompts for pairs.source {source}",
                            file=seed_path if source == "spin" else prompts_path)
        sampling = {"n": pairs.source_samples, "temperature": responses.temperature,
                    "top_p": responses.top_p, "max_new_tokens": responses.max_new_tokens,
                    "seed": responses.seed}
        key = shard_key(params={"source": source, **sampling}, inputs=rows,
                        model=model_fingerprint(writer), engine=engine_key(engine_params))

        def answer_shard(chunk: list[dict], index: int) -> list[dict]:
            chats = [[{"role": "user", "content": row["prompt"]}] for row in chunk]
            texts = engine.generate(chats, Sampling(
                n=pairs.source_samples, temperature=responses.temperature,
                top_p=responses.top_p, max_new_tokens=responses.max_new_tokens,
                seed=item_seed(responses.seed, index)))
            return [{**row, "responses": answers} for row, answers in zip(chunk, texts)]

        with open_engine(writer, engine_params, seed=responses.seed) as engine:
            out, shard_stats = run_sharded(rows, out_path, key, engine_params.shard_size,
                                           answer_shard, desc=f"answers ({source})",
                                           stats=engine.stats)
        outputs.record_engine(engine)
        if source == "spin":
            out = [{**row, "mean": [None] * len(row["responses"])} for row in out]
        else:  # M_t judges the source's answers as it judges its own (stage judge)
            judge = params.judge
            key = shard_key(params=judge, templates=[judge_template(judge.template)],
                            inputs=out, model=model_fingerprint(model_dir),
                            engine=engine_key(engine_params))
            with open_engine(model_dir, engine_params, seed=judge.seed) as engine:
                judged, _ = judge_rows(engine, out, judge, engine_params.shard_size,
                                       judge_shards, key)
            out = [{**row, **judged_row} for row, judged_row in zip(out, judged)]
            outputs.metrics.update({f"judge_{k}": v for k, v in judge_metrics(judged).items()
                                    if not k.startswith("hist_")})
        words = [len(text.split()) for row in out for text in row["responses"]]
        outputs.metrics.update({
            "prompts": len(out), "answers": len(words),
            "mean_words": round(statistics.fmean(words), 2) if words else 0.0, **shard_stats})
        write_jsonl(out_path, [{**row, "source": source} for row in out])
    log.info("source-answers: %s", outputs.metrics)
    return outputs.metrics
