"""Stage `pairs`: a chosen and a rejected answer per prompt as a DPO preference pair.

The source (pairs.source, docs/pairs.md): `self_judged` (M_t's best vs worst answer by its own
judge), `spin` (the seed IFT answer vs M_t's), `anchored` (M_t's best vs M1's worst) and
`teacher` (the teacher's best vs M_t's worst); the last three read the source_answers stage.
Length control rho (pairs.length_rho) picks within a window at each end of the score range.
"""

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
from ..judge.judgments import load_judgments
from ..judge.verifiers import load_checks, pair_metrics, selection_rows

log = logging.getLogger(__name__)

DROP_REASONS = ("too_few_valid", "tie", "no_source_answer", "identical")
_EPS = 1e-9  # (1 - rho) * S_max + rho * S_min is computed in floats


def pick(chosen_means: list, chosen_texts: list[str], rejected_means: list,
         rejected_texts: list[str], params: PairsParams, rng: random.Random,
         same_pool: bool) -> tuple[int, int] | str:
    """(chosen index, rejected index) from a chosen and a rejected pool, or why there is none.

    With S_max the top score of the chosen pool and S_min the lowest of the rejected pool, and
    rho = `params.length_rho`: chosen = the shortest answer scoring in [(1-rho) S_max + rho S_min,
    S_max], rejected = the longest scoring in [S_min, (1-rho) S_min + rho S_max] (characters;
    equal lengths: the better-placed score, then the first). rho = 0 is plain max/min, where
    `params.tie_break` decides among equal scores. A pair needs chosen - rejected >=
    `params.min_margin`.
    """
    chosen_valid = [(i, m) for i, m in enumerate(chosen_means) if m is not None]
    rejected_valid = [(i, m) for i, m in enumerate(rejected_means) if m is not None]
    if (len(chosen_valid) < max(2, params.min_valid) if same_pool
            else not chosen_valid or not rejected_valid):
        return "too_few_valid"
    s_max = max(m for _, m in chosen_valid)
    s_min = min(m for _, m in rejected_valid)
    rho = params.length_rho
    if rho == 0:
        def break_tie(tied: list[int], texts: list[str]) -> int:
            if params.tie_break == "shortest":
                return min(tied, key=lambda i: (len(texts[i]), i))
            if params.tie_break == "longest":
                return max(tied, key=lambda i: (len(texts[i]), -i))
            return tied[0] if len(tied) == 1 else rng.choice(tied)

        chosen = break_tie([i for i, m in chosen_valid if m == s_max], chosen_texts)
        rejected = break_tie([i for i, m in rejected_valid if m == s_min], rejected_texts)
    else:
        floor = (1 - rho) * s_max + rho * s_min
        ceiling = (1 - rho) * s_min + rho * s_max
        chosen = min((i for i, m in chosen_valid if m >= floor - _EPS),
                     key=lambda i: (len(chosen_texts[i]), -chosen_means[i], i))
        rejected = min((i for i, m in rejected_valid if m <= ceiling + _EPS),
                       key=lambda i: (-len(rejected_texts[i]), rejected_means[i], i))
    if (same_pool and chosen == rejected
            or chosen_means[chosen] - rejected_means[rejected] < params.min_margin):
        return "tie"
    return chosen, rejected


def select_pair(row: dict, params: PairsParams,
                rng: random.Random | None = None) -> tuple[int, int] | str:
    """(chosen index, rejected index) among one judgment row's answers (source self_judged), or
    the reason it is dropped; `rng` (default seeded by `params.seed`) breaks random ties."""
    means, responses = row["mean"], row["responses"]
    return pick(means, responses, means, responses, params,
                rng or random.Random(params.seed), same_pool=True)


def pair_row(row_id: str, prompt: str, chosen: str, rejected: str, score_chosen: float | None,
             score_rejected: float | None, source: str) -> dict:
    """One pair in TRL's conversational preference format, with its scores and source."""
    return {"id": row_id, "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "score_chosen": score_chosen, "score_rejected": score_rejected, "source": source}


def spin_pairs(source_rows: list[dict]) -> tuple[list[dict], Counter]:
    """SPIN: chosen = the seed answer (`reference`), rejected = each of M_t's answers to the
    same prompt; no judge, so no scores. An answer equal to the reference makes no pair."""
    pairs, dropped = [], Counter()
    for row in source_rows:
        for answer in row["responses"]:
            if answer.strip() == row["reference"].strip():
                dropped["identical"] += 1
                continue
            pairs.append(pair_row(row["id"], row["prompt"], row["reference"], answer, None, None,
                                  "spin"))
    return pairs, dropped


def select_pairs(rows: list[dict], params: PairsParams,
                 source_rows: list[dict] | None = None) -> tuple[list[dict], dict]:
    """Preference pairs of `params.source` in TRL's conversational format, plus kept/dropped
    statistics, how many picks length control moved off the top/lowest score, and the mean
    length (words) of the chosen and the rejected answers. `rows` are M_t's judged answers;
    `source_rows` the source_answers stage's rows (spin, anchored, teacher)."""
    source = params.source
    if source != "self_judged" and source_rows is None:
        raise ValueError(f"pairs.source {source} needs the source_answers rows")
    pairs, dropped, counts = [], Counter(), Counter()
    if source == "spin":
        pairs, dropped = spin_pairs(source_rows or [])
    by_id = {row["id"]: row for row in source_rows or []}
    for k, row in enumerate(rows if source != "spin" else []):
        rng = random.Random(item_seed(params.seed, k))
        pools = [(row["mean"], row["responses"])] * 2
        if source != "self_judged":
            other = by_id.get(row["id"])
            if other is None or not other["responses"]:
                dropped["no_source_answer"] += 1
                continue
            pools[0 if source == "teacher" else 1] = (other["mean"], other["responses"])
        (c_means, c_texts), (r_means, r_texts) = pools
        picked = pick(c_means, c_texts, r_means, r_texts, params, rng,
                      same_pool=source == "self_judged")
        if isinstance(picked, str):
            dropped[picked] += 1
            continue
        chosen, rejected = picked
        top = max(m for m in c_means if m is not None)
        low = min(m for m in r_means if m is not None)
        counts["length_changed_chosen"] += c_means[chosen] < top
        counts["length_changed_rejected"] += r_means[rejected] > low
        counts["ties_broken_chosen"] += params.length_rho == 0 and c_means.count(top) > 1
        counts["ties_broken_rejected"] += params.length_rho == 0 and r_means.count(low) > 1
        pairs.append(pair_row(row["id"], row["prompt"], c_texts[chosen], r_texts[rejected],
                              c_means[chosen], r_means[rejected], source))
    margins = [pair["score_chosen"] - pair["score_rejected"] for pair in pairs
               if pair["score_chosen"] is not None]
    chosen_words = [len(pair["chosen"][0]["content"].split()) for pair in pairs]
    rejected_words = [len(pair["rejected"][0]["content"].split()) for pair in pairs]
    stats = {"source": source, "prompts": len(source_rows if source == "spin" else rows),
             "pairs": len(pairs), **{f"dropped_{k}": dropped.get(k, 0) for k in DROP_REASONS},
             "mean_margin": round(statistics.fmean(margins), 4) if margins else 0.0,
             "chosen_mean_words": round(statistics.fmean(chosen_words), 2)
             if chosen_words else 0.0,
             "rejected_mean_words": round(statistics.fmean(rejected_words), 2)
             if rejected_words else 0.0,
             "length_rho": params.length_rho,
             **{key: counts.get(key, 0) for key in (
                 "length_changed_chosen", "length_changed_rejected")},
             "tie_break": params.tie_break,
             **{key: counts.get(key, 0) for key in (
                 "ties_broken_chosen", "ties_broken_rejected")}}
    return pairs, stats


def load_source_answers(path: str, source: str) -> list[dict]:
    """Validate the source_answers stage's rows for `source`: judgment rows (means null for
    spin) written for that very source, with the seed answer as `reference` for spin."""
    rows = load_judgments(path)
    for line, row in enumerate(rows, 1):
        if row.get("source") != source:
            raise UserError(f"written for pairs.source {row.get('source')!r}, not {source!r}: "
                            "rerun the source_answers stage", file=path, line=line,
                            field="source")
        if not all(isinstance(text, str) for text in row["responses"]):
            raise UserError("every response must be a string", file=path, line=line,
                            field="responses")
        if source == "spin":
            require(row, "reference", str, file=path, line=line)
    if not rows:
        raise UserError(f"no answers for pairs.source {source}: run the source_answers stage "
                        "with this source", file=path)
    return rows


JUDGE_SHARE_WARN = 0.15  # NeMo-Aligner: beyond it the judge collapses to one score


def add_judge_pairs(pairs: list[dict], judge_pairs: list[dict], share: float
                    ) -> tuple[list[dict], dict]:
    """`pairs` plus the first judge-training pairs (the stage writes the most disputed first),
    as many as keep their share of the whole at most `share`; with the counts."""
    cap = int(share * len(pairs) / (1 - share) + 1e-9) if share > 0 else 0
    added = judge_pairs[:cap]
    total = len(pairs) + len(added)
    return pairs + added, {"judge_pairs": len(added), "judge_pairs_available": len(judge_pairs),
                           "judge_share": round(len(added) / total, 4) if total else 0.0}


def load_judge_pairs(path: str) -> list[dict]:
    """The meta_judge stage's pairs: TRL conversational rows with source meta_judge."""
    rows = []
    for line, obj in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected"):
            require(obj, key, list, file=path, line=line)
        if obj.get("source") != "meta_judge":
            raise UserError("expected source meta_judge", file=path, line=line, field="source")
        rows.append(obj)
    return rows


def run_pairs(*, params: Params, judgments_path: str, out_path: str | Path,
              metrics_path: str | Path, source_answers_path: str | None = None,
              meta_judge_path: str | None = None) -> dict:
    """judgments.jsonl (and, for sources other than self_judged, the source_answers rows; with
    pairs.judge_share > 0, the meta_judge stage's pairs) in; pairs.jsonl and metrics out
    (params pairs); zero pairs is an error."""
    pairs_params = params.pairs
    if pairs_params.judge_share > JUDGE_SHARE_WARN:
        log.warning("pairs.judge_share %.2f > %.2f: NeMo-Aligner reports the judge collapsing "
                    "to one score beyond it", pairs_params.judge_share, JUDGE_SHARE_WARN)
    with stage_outputs(out_path, metrics=metrics_path) as outputs:
        source_rows = None
        if pairs_params.source != "self_judged":
            if source_answers_path is None:
                raise UserError(f"pairs.source {pairs_params.source} needs --source-answers",
                                field="pairs.source")
            source_rows = load_source_answers(source_answers_path, pairs_params.source)
            rows = load_judgments(judgments_path) if pairs_params.source != "spin" else []
            pairs, stats = select_pairs(rows, pairs_params, source_rows)
        else:
            rows = load_judgments(judgments_path)
            # constrained prompts (docs/constraints.md): checker verdicts gate or add to scores
            checks = load_checks(judgments_path)
            scored, no_contrast = selection_rows(rows, checks, pairs_params)
            pairs, stats = select_pairs(scored, pairs_params)
            plain = select_pairs(rows, pairs_params)[0] if scored is not rows else None
            stats.update(pair_metrics(rows, checks, pairs, plain, no_contrast))
        log.info("pairs: %s", stats)
        if not pairs:
            raise UserError(
                f"no preference pairs from {stats['prompts']} prompts (pairs.source "
                f"{pairs_params.source}; dropped: {stats['dropped_too_few_valid']} with < "
                f"{max(2, pairs_params.min_valid)} valid scores (pairs.min_valid="
                f"{pairs_params.min_valid}), {stats['dropped_tie']} ties / margin < "
                f"pairs.min_margin={pairs_params.min_margin}, "
                f"{stats['dropped_no_source_answer']} without a source answer, "
                f"{stats['dropped_identical']} identical). Raise "
                "prompts.count or responses.n, use judge.mode=logprob (continuous scores, fewer "
                "ties) or more judge.samples, or lower pairs.min_margin.",
                file=source_answers_path if pairs_params.source == "spin" else judgments_path)
        if pairs_params.judge_share > 0:
            if meta_judge_path is None:
                raise UserError("pairs.judge_share > 0 needs --meta-judge",
                                field="pairs.judge_share")
            judge_pairs = load_judge_pairs(meta_judge_path)
            if not judge_pairs:
                log.warning("pairs.judge_share %s but no meta-judge pairs in %s (is "
                            "meta_judge.enabled true?)", pairs_params.judge_share,
                            meta_judge_path)
            pairs, judge_stats = add_judge_pairs(pairs, judge_pairs, pairs_params.judge_share)
            stats.update(judge_stats)
        write_jsonl(out_path, pairs)
        outputs.metrics.update(stats)
    return outputs.metrics
