"""The paper's seed data built from Open Assistant (stages `seed_ift`, `seed_judge`, `seed_eft`).

- IFT: first conversational turns in one language, the rank-0 (best) human reply only.
- EFT: first-turn prompts outside the IFT set with >= 2 ranked replies. A judge (by default the
  IFT-only SFT of M0, or an OpenAI-compatible endpoint) writes K sampled judgments per reply with
  the pipeline's judge template (`seed_judge`, sharded and resumable: the expensive part). A
  prompt's replies are kept only when their scores order them as the human ranks do; the kept
  groups are split train/eval by prompt, and EFT-train is rebalanced by capping its most common
  score (`seed_eft`, cheap: rerun it to try other ties / cap settings without re-judging).
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from collections import Counter
from itertools import combinations
from pathlib import Path

from ..config.errors import UserError
from ..config.params import OasstEftParams
from ..core.io import read_jsonl, require
from ..judge.scores import parse_score, strip_score
from .oasst import FirstTurn, prompt_key

log = logging.getLogger(__name__)


# -- IFT ------------------------------------------------------------------------------------------
def select_ift(turns: list[FirstTurn], count: int, seed: int) -> tuple[list[dict], dict]:
    """`count` seeded first turns (0 = all) that have a usable rank-0 reply, in export order."""
    candidates = []
    for turn in turns:
        best = next((r for r in turn.replies if r.rank == 0), None)
        if best is not None:
            candidates.append((turn, best))
    if not candidates:
        raise UserError("no usable first-turn prompt has a usable rank-0 reply (see the skip "
                        "counts in the log): check oasst.lang and the export")
    chosen = range(len(candidates))
    if 0 < count < len(candidates):
        chosen = sorted(random.Random(seed).sample(range(len(candidates)), count))
    elif count > len(candidates):
        log.warning("seed IFT: %d examples asked (oasst.ift.count), only %d candidates", count,
                    len(candidates))
    rows = [{"id": candidates[i][0].message_id,
             "messages": [{"role": "user", "content": candidates[i][0].text},
                          {"role": "assistant", "content": candidates[i][1].text.strip()}]}
            for i in chosen]
    return rows, {"prompts_without_rank0_reply": len(turns) - len(candidates),
                  "ift_candidates": len(candidates), "ift_examples": len(rows)}


# -- EFT candidate groups and their judgments ------------------------------------------------------
def eft_groups(turns: list[FirstTurn], ift_prompts: set[str], min_replies: int,
               max_groups: int, seed: int) -> tuple[list[dict], dict]:
    """One group per prompt outside the IFT set with >= `min_replies` ranked replies, replies in
    human-rank order (best first); a seeded subset of `max_groups` (0 = all), in export order."""
    groups, in_ift, too_few = [], 0, 0
    for turn in turns:
        if prompt_key(turn.text) in ift_prompts:
            in_ift += 1
            continue
        ranked = sorted((r for r in turn.replies if r.rank is not None), key=lambda r: r.rank)
        if len(ranked) < min_replies:
            too_few += 1
            continue
        groups.append({"id": turn.message_id, "prompt": turn.text,
                       "responses": [r.text.strip() for r in ranked],
                       "ranks": [r.rank for r in ranked],
                       "message_ids": [r.message_id for r in ranked]})
    candidates = len(groups)
    if 0 < max_groups < len(groups):
        keep = sorted(random.Random(seed).sample(range(len(groups)), max_groups))
        groups = [groups[i] for i in keep]
    return groups, {"prompts_in_ift": in_ift, "prompts_too_few_ranked_replies": too_few,
                    "eft_candidate_groups": candidates, "groups_judged": len(groups),
                    "replies_judged": sum(len(g["responses"]) for g in groups)}


# -- EFT: agreement filter, split, rebalancing -----------------------------------------------------
def pick_judgment(judgments: list[str]) -> tuple[str, int] | None:
    """The sampled judgment a reply's EFT example keeps: of those ending in a whole score with
    a justification, the one nearest the mean of all parsed scores (the earliest on ties)."""
    parsed = [(text, parse_score(text)) for text in judgments]
    values = [s for _, s in parsed if s is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    usable = [(abs(s - mean), i, strip_score(text), int(s)) for i, (text, s) in enumerate(parsed)
              if s is not None and s.is_integer() and strip_score(text)]
    if not usable:
        return None
    _, _, justification, score = min(usable)
    return justification, score


def agrees(ranks: list[int], scores: list[int], ties: str) -> bool:
    """Do the scores order the replies as the human ranks do (rank 0 = best)? Replies with equal
    ranks constrain nothing; equal scores for different ranks agree only with ties='allow'."""
    for i, j in combinations(range(len(ranks)), 2):
        if ranks[i] == ranks[j]:
            continue
        better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
        if scores[better] < scores[worse] or (scores[better] == scores[worse] and ties == "drop"):
            return False
    return True


def split_groups(group_ids: list[str], eval_fraction: float, seed: int) -> set[str]:
    """The seeded set of group ids held out for evaluation: round(fraction x groups), at least
    one and leaving at least one for training."""
    n_eval = min(max(round(eval_fraction * len(group_ids)), 1), len(group_ids) - 1)
    return set(random.Random(seed).sample(group_ids, n_eval))


def rebalance(examples: list[dict], max_share: float, seed: int) -> tuple[list[dict], dict]:
    """Drop seeded examples of the most common score (the higher score on a tie) until it makes
    up at most `max_share` of what remains; the other scores are untouched."""
    counts = Counter(e["score"] for e in examples)
    if max_share >= 1 or not counts:
        return examples, {"rebalanced_score": None, "rebalanced_away": 0}
    top = max(counts, key=lambda s: (counts[s], s))
    rest = len(examples) - counts[top]
    allowed = math.floor(max_share * rest / (1 - max_share) + 1e-9)
    if counts[top] <= allowed:
        return examples, {"rebalanced_score": top, "rebalanced_away": 0}
    of_top = [i for i, e in enumerate(examples) if e["score"] == top]
    dropped = set(random.Random(seed).sample(of_top, counts[top] - allowed))
    kept = [e for i, e in enumerate(examples) if i not in dropped]
    return kept, {"rebalanced_score": top, "rebalanced_away": len(dropped)}


def _histogram(examples: list[dict]) -> list[int]:
    counts = Counter(e["score"] for e in examples)
    return [counts.get(d, 0) for d in range(6)]


def build_eft(rows: list[dict], params: OasstEftParams) -> tuple[list[dict], list[dict], dict]:
    """EFT train and eval rows from judged groups: agreement filter, split by prompt group,
    rebalancing of the train split. Rows keep the human rank and every parsed judge score."""
    kept: list[list[dict]] = []
    unscored = disagreeing = 0
    for row in rows:
        picks = [pick_judgment(raw) for raw in row["raw"]]
        if any(pick is None for pick in picks):
            unscored += 1
            continue
        if not agrees(row["ranks"], [pick[1] for pick in picks], params.ties):
            disagreeing += 1
            continue
        kept.append([{"prompt": row["prompt"], "response": response, "justification": just,
                      "score": score, "group": row["id"], "human_rank": rank,
                      "message_id": mid, "judge_scores": [parse_score(t) for t in raw]}
                     for response, (just, score), rank, mid, raw
                     in zip(row["responses"], picks, row["ranks"], row["message_ids"],
                            row["raw"])])
    counts = {"groups": len(rows), "groups_unscored": unscored,
              "groups_disagreeing": disagreeing, "groups_agreeing": len(kept), "ties": params.ties}
    if len(kept) < 2:
        raise UserError(f"{len(kept)} of {len(rows)} judged prompt groups agree with the human "
                        f"ranking ({disagreeing} disagree, {unscored} have a reply without a "
                        "usable judgment); need 2 to split train/eval: judge more groups, use "
                        "a stronger judge, raise oasst.judge.max_new_tokens or set "
                        "oasst.eft.ties: allow")
    held_out = split_groups([g[0]["group"] for g in kept], params.eval_fraction, params.seed)
    train_all = [e for g in kept if g[0]["group"] not in held_out for e in g]
    evaluation = [e for g in kept if g[0]["group"] in held_out for e in g]
    train, rebalanced = rebalance(train_all, params.max_score_share, params.seed)
    if not train:
        raise UserError(f"rebalancing removed every EFT-train example (all scored "
                        f"{rebalanced['rebalanced_score']}): raise oasst.eft.max_score_share")
    hists = {"train_before": _histogram(train_all), "train": _histogram(train),
             "eval": _histogram(evaluation)}
    counts.update({"train_groups": len(kept) - len(held_out), "eval_groups": len(held_out),
                   "train_examples_before_rebalance": len(train_all), **rebalanced,
                   "train_examples": len(train), "eval_examples": len(evaluation),
                   **{f"hist_{name}_{d}": h[d] for name, h in hists.items() for d in range(6)}})
    return train, evaluation, counts


def load_judgments(path: str | Path) -> list[dict]:
    """Judgment rows written by `seed-judge`: per group the replies, human ranks, message
    ids and the K raw judgments of each reply (validated with file:line errors)."""
    file, rows = str(path), []
    for line, obj in read_jsonl(path):
        require(obj, "id", str, file=file, line=line)
        require(obj, "prompt", str, file=file, line=line)
        n = len(require(obj, "responses", list, file=file, line=line))
        for key, ok in (("responses", lambda v: isinstance(v, str)),
                        ("ranks", lambda v: isinstance(v, int) and not isinstance(v, bool)),
                        ("message_ids", lambda v: isinstance(v, str)),
                        ("raw", lambda v: isinstance(v, list) and len(v) > 0
                         and all(isinstance(t, str) for t in v))):
            values = require(obj, key, list, file=file, line=line)
            if len(values) != n or not all(ok(v) for v in values):
                raise UserError(f"expected {n} entries (one per response) of the right type; "
                                "'raw' holds each reply's sampled judgment texts", file=file,
                                line=line, field=key)
        rows.append(obj)
    return rows


