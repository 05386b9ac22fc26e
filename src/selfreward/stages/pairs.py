"""Stage `pairs`: per prompt, highest- vs lowest-scored answer as a DPO preference pair."""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from pathlib import Path

from ..errors import UserError
from ..io import read_jsonl, remove_outputs, require, write_json, write_jsonl
from ..params import PairsParams

log = logging.getLogger(__name__)

DROP_REASONS = ("too_few_valid", "tie")


def select_pair(row: dict, p: PairsParams) -> tuple[int, int] | str:
    """(chosen index, rejected index) for one judgment row, or the reason it is dropped."""
    valid = [(i, m) for i, m in enumerate(row["mean"]) if m is not None]
    if len(valid) < max(2, p.min_valid):
        return "too_few_valid"
    top = max(m for _, m in valid)
    low_i, low = min(valid, key=lambda x: (x[1], -len(row["responses"][x[0]])))
    if p.length_tolerance > 0:
        near_top = [i for i, m in valid if m >= top - p.length_tolerance]
        chosen = min(near_top, key=lambda i: (len(row["responses"][i]), -row["mean"][i]))
    else:
        chosen = next(i for i, m in valid if m == top)
    if row["mean"][chosen] - low < p.min_margin or chosen == low_i:
        return "tie"
    return chosen, low_i


def select_pairs(rows: list[dict], p: PairsParams) -> tuple[list[dict], dict]:
    """Preference pairs in TRL's conversational format, plus kept/dropped statistics."""
    pairs, dropped = [], Counter()
    for row in rows:
        pick = select_pair(row, p)
        if isinstance(pick, str):
            dropped[pick] += 1
            continue
        c, r = pick
        pairs.append({"id": row["id"],
                      "prompt": [{"role": "user", "content": row["prompt"]}],
                      "chosen": [{"role": "assistant", "content": row["responses"][c]}],
                      "rejected": [{"role": "assistant", "content": row["responses"][r]}],
                      "score_chosen": row["mean"][c], "score_rejected": row["mean"][r]})
    margins = [x["score_chosen"] - x["score_rejected"] for x in pairs]
    clen = [len(x["chosen"][0]["content"].split()) for x in pairs]
    rlen = [len(x["rejected"][0]["content"].split()) for x in pairs]
    stats = {"prompts": len(rows), "pairs": len(pairs),
             **{f"dropped_{k}": dropped.get(k, 0) for k in DROP_REASONS},
             "mean_margin": round(statistics.fmean(margins), 4) if margins else 0.0,
             "chosen_mean_words": round(statistics.fmean(clen), 2) if clen else 0.0,
             "rejected_mean_words": round(statistics.fmean(rlen), 2) if rlen else 0.0}
    return pairs, stats


def load_judgments(path: str) -> list[dict]:
    """Validate judgments.jsonl: responses and mean of equal length, means numeric or null."""
    rows = []
    for line, obj in read_jsonl(path):
        require(obj, "id", str, file=path, line=line)
        require(obj, "prompt", str, file=path, line=line)
        responses = require(obj, "responses", list, file=path, line=line)
        mean = require(obj, "mean", list, file=path, line=line)
        if len(mean) != len(responses):
            raise UserError(f"{len(mean)} means for {len(responses)} responses", file=path,
                            line=line, field="mean")
        if any(m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)))
               for m in mean):
            raise UserError("means must be numbers or null", file=path, line=line, field="mean")
        rows.append(obj)
    return rows


def run_pairs(p: PairsParams, judgments_path: str, out_path: str | Path,
              metrics_path: str | Path) -> dict:
    """Stage entry: judgments.jsonl in, pairs.jsonl + metrics out; zero pairs is an error."""
    remove_outputs(out_path, metrics_path)
    pairs, stats = select_pairs(load_judgments(judgments_path), p)
    log.info("pairs: %s", stats)
    if not pairs:
        raise UserError(
            f"no preference pairs from {stats['prompts']} prompts (dropped: "
            f"{stats['dropped_too_few_valid']} with < 2 valid scores, {stats['dropped_tie']} "
            f"ties / margin < pairs.min_margin={p.min_margin}). Raise prompts.count or "
            "responses.n, use judge.mode=logprob (continuous scores, fewer ties) or more "
            "judge.samples, or lower pairs.min_margin.", file=judgments_path)
    write_jsonl(out_path, pairs)
    write_json(metrics_path, stats)
    return stats
