"""Stage `meta_judge`: judge-training pairs from the model's own sampled judgments
(Meta-Rewarding; docs/pairs.md). For the responses whose K sampled judgments (judge.mode sample)
disagree most, M_t compares every two judgments of a response with the meta-judge template
(meta_judge.template) in both orders; a Bradley-Terry fit over the order-consistent verdicts
picks the best and the worst judgment: a preference pair that trains the judge. The pairs stage
adds them to the DPO data, capped at pairs.judge_share. Sharded and resumable."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import item_seed, model_fingerprint, run_sharded, shard_key
from ..generation.engines import Sampling, engine_key, open_engine
from ..judge.meta import (
    META_PREFIX,
    best_and_worst,
    combine,
    comparisons,
    disputed,
    meta_messages,
    meta_template,
    parse_meta_winner,
)
from ..judge.pointwise import load_responses
from ..judge.rubric import judge_messages, judge_template

log = logging.getLogger(__name__)


def load_sampled_judgments(path: str) -> list[dict]:
    """judgments.jsonl of judge.mode sample: each row's `scores` and `raw` hold K judgments per
    response (file:line:field errors otherwise)."""
    rows = load_responses(path)
    for line, row in enumerate(rows, 1):
        for field in ("scores", "raw"):
            value = row.get(field)
            if not isinstance(value, list) or len(value) != len(row["responses"]):
                raise UserError(f"needs a list per response (judge.mode sample writes `{field}`"
                                "; logprob judgments have no sampled judgments to compare)",
                                file=path, line=line, field=field)
    return rows


def run_meta_judge(*, params: Params, model_dir: str, judgments_path: str,
                   out_path: str | Path, metrics_path: str | Path) -> dict:
    """judgments.jsonl (sample mode) in; judge-training pairs and metrics (sampled-judgment parse
    rate, order agreement, pairs) out (params meta_judge, judge.template, engine). With
    meta_judge.enabled false: an empty file, no model loaded."""
    meta, engine_params = params.meta_judge, params.engine
    with stage_outputs(out_path, metrics=metrics_path, resumable=[out_path]) as outputs:
        metrics = outputs.metrics
        metrics["enabled"] = meta.enabled
        if not meta.enabled:
            log.info("meta-judge: meta_judge.enabled is false; writing an empty file")
            write_jsonl(out_path, [])
            return metrics
        rows = load_sampled_judgments(judgments_path)
        scores = [s for row in rows for ks in row["scores"] for s in ks]
        metrics["judgment_parse_rate"] = (round(sum(s is not None for s in scores) / len(scores),
                                                4) if scores else 0.0)
        items = disputed(rows, meta.responses)
        text = meta_template(meta.template)
        key = shard_key(params=meta, templates=[text], inputs=items,
                        model=model_fingerprint(model_dir), engine=engine_key(engine_params))

        def meta_shard(chunk: list[dict], index: int) -> list[dict]:
            asks = [(k, a, b) for k, item in enumerate(chunk)
                    for a, b in comparisons(len(item["judgments"]))]
            chats = []
            for k, a, b in asks:
                item = chunk[k]
                for first, second in ((a, b), (b, a)):
                    chats.append(meta_messages(item["prompt"], item["response"],
                                               item["judgments"][first],
                                               item["judgments"][second], text))
            if not chats:
                slots: list[int | None] = []
            elif meta.mode == "logprob":
                slots = [1 if p[1] > p[2] else 2 if p[2] > p[1] else None
                         for p in engine.digit_probs(chats, META_PREFIX)]
            else:
                slots = [parse_meta_winner(t[0]) for t in engine.generate(chats, Sampling(
                    n=1, temperature=0.0, max_new_tokens=meta.max_new_tokens,
                    seed=item_seed(meta.seed, index)))]
            out = [{"id": item["id"], "verdicts": []} for item in chunk]
            for n, (k, a, b) in enumerate(asks):
                out[k]["verdicts"].append([a, b, slots[2 * n], slots[2 * n + 1]])
            return out

        with open_engine(model_dir, engine_params, seed=meta.seed) as engine:
            done, shard_stats = run_sharded(items, out_path, key, engine_params.shard_size,
                                            meta_shard, desc="meta-judge", stats=engine.stats)
        outputs.record_engine(engine)
        rubric = judge_template(params.judge.template)
        pairs, asked, agreed, parsed = [], 0, 0, 0
        for item, row in zip(items, done):
            verdicts = {}
            for a, b, first, second in row["verdicts"]:
                verdicts[(a, b)] = combine(first, second)
                asked += 2
                parsed += (first is not None) + (second is not None)
                agreed += verdicts[(a, b)] is not None
            picked = best_and_worst(len(item["judgments"]), verdicts)
            if picked is None:
                continue
            best, worst, strength = picked
            pairs.append({"id": item["id"],
                          "prompt": judge_messages(item["prompt"], item["response"], rubric),
                          "chosen": [{"role": "assistant", "content": item["judgments"][best]}],
                          "rejected": [{"role": "assistant",
                                        "content": item["judgments"][worst]}],
                          "score_chosen": round(strength[best], 4),
                          "score_rejected": round(strength[worst], 4),
                          "source": "meta_judge", "spread": item["spread"]})
        metrics.update({"responses_disputed": len(items), "meta_judgments": asked,
                        "meta_parse_rate": round(parsed / asked, 4) if asked else 0.0,
                        "order_consistent_rate": round(2 * agreed / asked, 4) if asked else 0.0,
                        "judge_pairs": len(pairs), **shard_stats})
        write_jsonl(out_path, pairs)
    log.info("meta-judge: %s", metrics)
    return metrics
