"""What an iteration changed, measured on held-out answers: the head-to-head items and their
summary (win rates, position bias), the frozen-judge reward gain and the fixed-judge gains."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..judge.fixed import LocalPointwiseJudge
from .eval_dir import FIXED_SCORES, RELEVANCE, load_scores
from .metrics import length_controlled_gain, paired_gain, position_bias, win_rate_ci, win_rates

log = logging.getLogger(__name__)


def comparison_items(opponent: str, candidate: dict[str, dict],
                     other: dict[str, dict]) -> list[dict]:
    """Items pitting the candidate's answer (x) against the opponent's (y) for every prompt both
    answered (both: answers by prompt id)."""
    ids = [i for i in candidate if i in other]
    if len(ids) < max(len(candidate), len(other)):
        log.warning("head-to-head vs %s: only %d shared prompts (%d vs %d answers)", opponent,
                    len(ids), len(candidate), len(other))
    if not ids:
        raise UserError(f"no eval prompt was answered by both models (vs {opponent}); "
                        "regenerate the eval answers with the same eval params")
    return [{"opponent": opponent, "id": i, "prompt": candidate[i]["prompt"],
             "x": candidate[i]["answer"], "y": other[i]["answer"]} for i in ids]


def outcome_summary(records: list[dict], seed: int = 0) -> dict:
    """Win/tie/loss for x with the win rate's bootstrap interval, plus position-bias and
    soft-preference diagnostics."""
    outcomes = [r["outcome"] for r in records]
    rates = win_rates(outcomes)
    rates["win_rate_ci"] = win_rate_ci(outcomes, seed)
    verdicts = [v for r in records for v in (r["verdict_x_first"], r["verdict_x_second"])]
    valid = [v for v in verdicts if v is not None]
    rates["no_verdict"] = len(verdicts) - len(valid)  # unparseable, or P("1") == P("2")
    rates["first_slot_rate"] = round(sum(1 for v in valid if v == 1) / len(valid), 4) if valid \
        else None
    both = [r for r in records if r["verdict_x_first"] is not None
            and r["verdict_x_second"] is not None]
    flips = sum(1 for r in both if r["verdict_x_first"] == r["verdict_x_second"])
    rates["position_bias"] = position_bias(rates["first_slot_rate"], len(valid),
                                           round(flips / len(both), 4) if both else None)
    soft = [r["p_x"] for r in records if "p_x" in r]
    if soft:
        rates["mean_p_x"] = round(sum(soft) / len(soft), 4)
    return rates


def frozen_judge_gain(judge_dir: str, params: Params, model_eval: str, prev: dict[str, dict],
                      nxt: dict[str, dict], shards_for: Path) -> dict:
    """Judge M_t (`judge_dir`) on M_t+1's answers vs its own, paired by prompt."""
    before = load_scores(model_eval, RELEVANCE, key="own_score")  # M_t judging its answers
    ids = [i for i in nxt if i in prev and i in before]
    with contextlib.closing(LocalPointwiseJudge(judge_dir, params)) as judge:
        after = judge.score([nxt[i]["prompt"] for i in ids], [nxt[i]["answer"] for i in ids],
                            shards_for)
    gain = paired_gain([before[i] for i in ids], after, params.eval.seed)
    gain["length_controlled"] = length_controlled(
        [before[i] for i in ids], after, [prev[i] for i in ids], [nxt[i] for i in ids],
        params.eval.seed)
    return {"judge": judge_dir, **gain}


def _tokens(answer: dict) -> int | None:
    tokens = answer.get("tokens")
    return tokens if isinstance(tokens, int) else None


def length_controlled(before: list[float | None], after: list[float | None],
                      before_answers: list[dict], after_answers: list[dict], seed: int) -> dict:
    """The gain at equal length (metrics.length_controlled_gain) of paired scores, from the
    answers' token counts (eval_model's answers.jsonl `tokens`)."""
    diffs = [None if a is None or b is None else a - b for b, a in zip(before, after)]
    dlen = [None if _tokens(x) is None or _tokens(y) is None else _tokens(y) - _tokens(x)
            for x, y in zip(before_answers, after_answers)]
    return length_controlled_gain(diffs, dlen, seed)


def fixed_judge_gain(candidate_eval: str, other_eval: str, seed: int,
                     candidate_answers: dict[str, dict] | None = None,
                     other_answers: dict[str, dict] | None = None) -> dict:
    """Fixed-judge pointwise score of the candidate's answers minus the other's, by prompt; with
    both models' answers (by id), also the gain at equal length."""
    candidate = load_scores(candidate_eval, FIXED_SCORES)
    other = load_scores(other_eval, FIXED_SCORES)
    ids = [i for i in candidate if i in other]
    gain = paired_gain([other[i] for i in ids], [candidate[i] for i in ids], seed)
    if candidate_answers is not None and other_answers is not None:
        ids = [i for i in ids if i in candidate_answers and i in other_answers]
        gain["length_controlled"] = length_controlled(
            [other[i] for i in ids], [candidate[i] for i in ids],
            [other_answers[i] for i in ids], [candidate_answers[i] for i in ids], seed)
    return gain
