"""The generation-verification gap (Song et al. 2025, "Mind the Gap") as pure functions: N answers
per prompt, each with a checker verdict (the ground truth) and a judge score; does the judge's
choice pass more often than a random answer? No models, no files."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

from .metrics import BOOTSTRAP_SAMPLES, _round, pair_accuracy, percentile_interval

RATES = ("random", "top", "lowest", "oracle", "selection_gain")


def _pick(passed: Sequence[bool], scores: Sequence[float | None], best: bool) -> float:
    """Pass rate of the judge's top (best=True) or lowest answer; a tie is broken at random, so
    it earns the tied answers' mean pass rate. Unscored answers are never picked; with none
    scored, the pick is a random answer."""
    scored = [s for s in scores if s is not None]
    if not scored:
        return statistics.fmean(passed)
    target = max(scored) if best else min(scored)
    tied = [p for p, s in zip(passed, scores) if s == target]
    return statistics.fmean(tied)


def prompt_rates(passed: Sequence[bool], scores: Sequence[float | None]) -> dict[str, float]:
    """One prompt's pass rates: a random answer, the judge's top and lowest, the oracle best."""
    if not passed or len(passed) != len(scores):
        raise ValueError("need one score per verdict and at least one answer")
    rand = statistics.fmean(passed)
    top = _pick(passed, scores, best=True)
    return {"random": rand, "top": top, "lowest": _pick(passed, scores, best=False),
            "oracle": float(max(passed)), "selection_gain": top - rand}


def verification_gap(passed: Sequence[Sequence[bool]], scores: Sequence[Sequence[float | None]],
                     seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Per-prompt checker verdicts and judge scores of N answers -> the mean pass rate of a random
    answer, of the judge's top- and lowest-scored answer, of the oracle best-of-N, and the
    selection gain (top - random), each with a bootstrap 95 % interval resampling prompts; and
    the pairwise order agreement over same-prompt answer pairs the checker separates (ties and
    unscored pairs count as misses; the interval resamples prompts)."""
    if len(passed) != len(scores):
        raise ValueError("passed and scores must have one entry per prompt")
    per_prompt = [prompt_rates(p, s) for p, s in zip(passed, scores)]
    pairs_by_prompt = [[(s[i], s[j]) if p[i] else (s[j], s[i])
                        for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] != p[j]]
                       for p, s in zip(passed, scores)]
    pairs = [pair for prompt_pairs in pairs_by_prompt for pair in prompt_pairs]
    acc = pair_accuracy(pairs)
    out: dict = {"prompts": len(per_prompt),
                 "answers": sum(len(p) for p in passed),
                 "answers_passed": sum(sum(p) for p in passed),
                 "prompts_separated": sum(1 for pp in pairs_by_prompt if pp)}
    n = len(per_prompt)
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {k: [] for k in (*RATES, "pair_accuracy")}
    agree = [sum(1 for a, b in pp if a is not None and b is not None and a > b)
             for pp in pairs_by_prompt]
    for _ in range(samples if n > 1 else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        for k in RATES:
            draws[k].append(statistics.fmean(per_prompt[i][k] for i in idx))
        total = sum(len(pairs_by_prompt[i]) for i in idx)
        if total:
            draws["pair_accuracy"].append(sum(agree[i] for i in idx) / total)
    for k in RATES:
        mean = statistics.fmean(r[k] for r in per_prompt) if per_prompt else None
        out[k] = {"mean": _round(mean), "ci": percentile_interval(draws[k])}
    out["pairs"] = {"n": acc["pairs"], "agree": acc["agree"], "disagree": acc["disagree"],
                    "tie": acc["tie"], "unscored": acc["unscored"],
                    "accuracy": acc["accuracy"],
                    "ci": percentile_interval(draws["pair_accuracy"])}
    ci = out["selection_gain"]["ci"]
    out["selection_gain_includes_zero"] = None if ci is None else ci[0] <= 0 <= ci[1]
    return out
