"""Stage `pairs`: per prompt, highest- vs lowest-scored answer as a DPO preference pair."""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter
from pathlib import Path

from ..config.errors import UserError
from ..config.params import PairsParams, Params
from ..core.io import read_jsonl, require, write_jsonl
from ..core.outputs import stage_outputs
from ..core.shards import item_seed

log = logging.getLogger(__name__)

DROP_REASONS = ("too_few_valid", "tie")


def select_pair(row: dict, params: PairsParams,
                rng: random.Random | None = None) -> tuple[int, int] | str:
    """(chosen index, rejected index) for one judgment row, or the reason it is dropped.

    Among answers with equal top (or equal lowest) scores, `params.tie_break` decides: `random`
    (with `rng`, default seeded by `params.seed`), `shortest` or `longest` (in characters).
    """
    means, responses = row["mean"], row["responses"]
    valid = [(i, m) for i, m in enumerate(means) if m is not None]
    if len(valid) < max(2, params.min_valid):
        return "too_few_valid"
    rng = rng or random.Random(params.seed)

    def break_tie(tied: list[int]) -> int:
        if params.tie_break == "shortest":
            return min(tied, key=lambda i: (len(responses[i]), i))
        if params.tie_break == "longest":
            return max(tied, key=lambda i: (len(responses[i]), -i))
        return tied[0] if len(tied) == 1 else rng.choice(tied)

    top = max(m for _, m in valid)
    low = min(m for _, m in valid)
    if params.length_tolerance > 0:
        near_top = [i for i, m in valid if m >= top - params.length_tolerance]
        chosen = min(near_top, key=lambda i: (len(responses[i]), -means[i]))
    else:
        chosen = break_tie([i for i, m in valid if m == top])
    rejected = break_tie([i for i, m in valid if m == low])
    if means[chosen] - low < params.min_margin or chosen == rejected:
        return "tie"
    return chosen, rejected


def select_pairs(rows: list[dict], params: PairsParams) -> tuple[list[dict], dict]:
    """Preference pairs in TRL's conversational format, plus kept/dropped statistics and the
    mean length (words) of the chosen and the rejected answers."""
    pairs, dropped, broken = [], Counter(), Counter()
    for k, row in enumerate(rows):
        pick = select_pair(row, params, random.Random(item_seed(params.seed, k)))
        if isinstance(pick, str):
            dropped[pick] += 1
            continue
        chosen, rejected = pick
        means = row["mean"]
        broken["chosen"] += params.length_tolerance <= 0 and means.count(means[chosen]) > 1
        broken["rejected"] += means.count(means[rejected]) > 1
        pairs.append({"id": row["id"],
                      "prompt": [{"role": "user", "content": row["prompt"]}],
                      "chosen": [{"role": "assistant", "content": row["responses"][chosen]}],
                      "rejected": [{"role": "assistant",
                                    "content": row["responses"][rejected]}],
                      "score_chosen": means[chosen], "score_rejected": means[rejected]})
    margins = [pair["score_chosen"] - pair["score_rejected"] for pair in pairs]
    chosen_words = [len(pair["chosen"][0]["content"].split()) for pair in pairs]
    rejected_words = [len(pair["rejected"][0]["content"].split()) for pair in pairs]
    stats = {"prompts": len(rows), "pairs": len(pairs),
             **{f"dropped_{k}": dropped.get(k, 0) for k in DROP_REASONS},
             "mean_margin": round(statistics.fmean(margins), 4) if margins else 0.0,
             "chosen_mean_words": round(statistics.fmean(chosen_words), 2)
             if chosen_words else 0.0,
             "rejected_mean_words": round(statistics.fmean(rejected_words), 2)
             if rejected_words else 0.0,
             "tie_break": params.tie_break, "ties_broken_chosen": broken["chosen"],
             "ties_broken_rejected": broken["rejected"]}
    return pairs, stats


def load_judgments(path: str) -> list[dict]:
    """Validate judgments.jsonl: responses strings, as many means as responses, numeric or null."""
    rows = []
    for line, obj in read_jsonl(path):
        require(obj, "id", str, file=path, line=line)
        require(obj, "prompt", str, file=path, line=line)
        responses = require(obj, "responses", list, file=path, line=line)
        mean = require(obj, "mean", list, file=path, line=line)
        for k, text in enumerate(responses):
            if not isinstance(text, str):
                raise UserError(f"response {k} is {type(text).__name__}, expected a string",
                                file=path, line=line, field="responses")
        if len(mean) != len(responses):
            raise UserError(f"{len(mean)} means for {len(responses)} responses", file=path,
                            line=line, field="mean")
        if any(m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)))
               for m in mean):
            raise UserError("means must be numbers or null", file=path, line=line, field="mean")
        rows.append(obj)
    return rows


def run_pairs(*, params: Params, judgments_path: str, out_path: str | Path,
              metrics_path: str | Path) -> dict:
    """judgments.jsonl in; pairs.jsonl and metrics out (params pairs); zero pairs is an error."""
    pairs_params = params.pairs
    with stage_outputs(out_path, metrics=metrics_path) as outputs:
        pairs, stats = select_pairs(load_judgments(judgments_path), pairs_params)
        log.info("pairs: %s", stats)
        if not pairs:
            raise UserError(
                f"no preference pairs from {stats['prompts']} prompts (dropped: "
                f"{stats['dropped_too_few_valid']} with < {max(2, pairs_params.min_valid)} valid scores "
                f"(pairs.min_valid={pairs_params.min_valid}), {stats['dropped_tie']} "
                f"ties / margin < pairs.min_margin={pairs_params.min_margin}). Raise "
                "prompts.count or responses.n, use judge.mode=logprob (continuous scores, fewer "
                "ties) or more judge.samples, or lower pairs.min_margin.", file=judgments_path)
        write_jsonl(out_path, pairs)
        outputs.metrics.update(stats)
    return outputs.metrics
