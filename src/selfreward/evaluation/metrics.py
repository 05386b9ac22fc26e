"""Evaluation metrics as pure functions: judge agreement with human scores, head-to-head win rates
from position-swapped verdicts, and response-length statistics. No models, no files."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence

Score = float | None  # a model score; None = the judge gave no parseable score

OUTCOMES = ("agree", "disagree", "tie", "unscored")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def score_bin(score: float) -> int:
    """The histogram bin of a mean score: rounded half up (2.5 -> 3), the one rule every
    histogram and exact match use (Python's round() sends 2.5 to 2 and 3.5 to 4)."""
    return math.floor(score + 0.5)


def compare(preferred: Score, other: Score) -> str:
    """How a judge's scores order a pair whose first item is the human-preferred one."""
    if preferred is None or other is None:
        return "unscored"
    if preferred > other:
        return "agree"
    return "disagree" if preferred < other else "tie"


def pair_accuracy(pairs: Sequence[tuple[Score, Score]]) -> dict:
    """Counts and rates over (score of preferred, score of other) pairs; ties count separately.

    accuracy = agree / all pairs (a tie or unscored pair is not a success); accuracy_no_ties =
    agree / (agree + disagree).
    """
    counts = Counter(compare(a, b) for a, b in pairs)
    n = len(pairs)
    decided = counts["agree"] + counts["disagree"]
    return {"pairs": n, **{k: counts[k] for k in OUTCOMES},
            "accuracy": _round(counts["agree"] / n) if n else None,
            "accuracy_no_ties": _round(counts["agree"] / decided) if decided else None,
            "tie_rate": _round(counts["tie"] / n) if n else None}


def group_pairs(human: Sequence[float], groups: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (better, worse) of items in the same group with different human scores."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    out = []
    for idx in by_group.values():
        for a_pos, a in enumerate(idx):
            for b in idx[a_pos + 1:]:
                if human[a] != human[b]:
                    out.append((a, b) if human[a] > human[b] else (b, a))
    return out


def best_hit_rate(model: Sequence[Score], human: Sequence[float],
                  groups: Sequence[str]) -> float | None:
    """Share of groups whose model-top response has the group's best human score.

    A tie for the model's top score earns the fraction of tied responses that are human-best (the
    chance a random pick among them is right); groups with no scored response count as misses.
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    if not by_group:
        return None
    total = 0.0
    for idx in by_group.values():
        scored = [i for i in idx if model[i] is not None]
        if not scored:
            continue
        top = max(model[i] for i in scored)
        best_human = max(human[i] for i in idx)
        tops = [i for i in scored if model[i] == top]
        total += sum(1 for i in tops if human[i] == best_human) / len(tops)
    return total / len(by_group)


def exact_match(model: Sequence[Score], human: Sequence[float]) -> float | None:
    """Share of items whose model score, rounded half up to an integer, equals the human score."""
    if not model:
        return None
    return sum(1 for m, h in zip(model, human)
               if m is not None and score_bin(m) == h) / len(model)


def rankdata(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None when fewer than 2 items or either side is constant."""
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    sxx = sum((a - mx) ** 2 for a in xs)
    syy = sum((b - my) ** 2 for b in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho with tie correction (Pearson correlation of average ranks)."""
    return pearson(rankdata(xs), rankdata(ys))


def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b: (concordant - discordant) / sqrt of the pairs untied in x and in y."""
    n = len(xs)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + tied_x) * (concordant + discordant + tied_y))
    return (concordant - discordant) / denom if denom else None


def judge_agreement(model: Sequence[Score], human: Sequence[float],
                    groups: Sequence[str]) -> dict:
    """The paper's reward-modelling table for one judge on a grouped, human-scored set.

    Correlations use only items the model scored; unscored items count as misses elsewhere.
    """
    if not (len(model) == len(human) == len(groups)):
        raise ValueError("model, human and groups must have equal length")
    pairs = [(model[a], model[b]) for a, b in group_pairs(human, groups)]
    acc = pair_accuracy(pairs)
    scored = [(m, h) for m, h in zip(model, human) if m is not None]
    xs, ys = [m for m, _ in scored], [h for _, h in scored]
    best = best_hit_rate(model, human, groups)
    em = exact_match(model, human)
    return {"items": len(model), "groups": len(set(groups)), "scored": len(scored),
            **{f"pairwise_{k}": v for k, v in acc.items()},
            "best_hit_rate": _round(best), "exact_match": _round(em),
            "spearman": _round(spearman(xs, ys)), "kendall_tau": _round(kendall_tau_b(xs, ys)),
            "mean_model_score": _round(statistics.fmean(xs)) if xs else None,
            "mean_human_score": _round(statistics.fmean(human)) if human else None}


def combine_orders(first: int | None, second: int | None) -> str:
    """Outcome for candidate X from two verdicts (1 or 2 = the better slot, None = no verdict).

    Order 1 shows X as response 1, order 2 shows X as response 2. X wins only if both orders
    prefer it and loses only if both prefer the other; a flip or a missing verdict is a tie.
    """
    x_first = {1: "x", 2: "y"}.get(first)  # type: ignore[arg-type]
    x_second = {2: "x", 1: "y"}.get(second)  # type: ignore[arg-type]
    if x_first == x_second == "x":
        return "win"
    if x_first == x_second == "y":
        return "loss"
    return "tie"


def win_rates(outcomes: Sequence[str]) -> dict:
    """Win / tie / loss counts and percentages for candidate X."""
    counts = Counter(outcomes)
    unknown = set(counts) - {"win", "tie", "loss"}
    if unknown:
        raise ValueError(f"unknown outcomes: {sorted(unknown)}")
    n = len(outcomes)

    def pct(key: str) -> float | None:
        return round(100 * counts[key] / n, 2) if n else None

    return {"n": n, "win": counts["win"], "tie": counts["tie"], "loss": counts["loss"],
            "win_pct": pct("win"), "tie_pct": pct("tie"), "loss_pct": pct("loss"),
            # one number per comparison, as in the paper's plots: wins + half the ties
            "win_rate": round((counts["win"] + 0.5 * counts["tie"]) / n, 4) if n else None}


def length_stats(words: Sequence[int], tokens: Sequence[int]) -> dict:
    """Mean and median response length in words and tokens."""
    def stats(xs: Sequence[int], unit: str) -> dict:
        return {f"mean_{unit}": round(statistics.fmean(xs), 2) if xs else None,
                f"median_{unit}": float(statistics.median(xs)) if xs else None}

    return {"responses": len(words), **stats(words, "words"), **stats(tokens, "tokens"),
            "empty": sum(1 for w in words if w == 0)}


def cap_hits(tokens: Sequence[int], cap: int) -> dict:
    """How many answers reached the max_new_tokens cap (re-tokenized length >= cap): cut off, so
    a judge scores a truncated answer and length growth beyond the cap is hidden."""
    hits = sum(1 for t in tokens if t >= cap)
    return {"max_new_tokens": cap, "at_cap": hits,
            "at_cap_share": round(hits / len(tokens), 4) if tokens else None}


# -- intervals and the figures that say whether a run moved ----------------------------------------
CI_LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
POSITION_BIAS_MARGIN = 0.2  # a first-slot rate outside 0.5 +- this is reported as position bias
MAX_FLIP_RATE = 0.8  # verdicts that follow the slot, not the answer, in more pairs than this


def wilson_interval(successes: int, trials: int, z_score: float = 1.96) -> list[float] | None:
    """95 % Wilson score interval of a proportion (well-behaved at 0 and 1 and for small n)."""
    if trials <= 0:
        return None
    p, z2 = successes / trials, z_score * z_score
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = (z_score * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
            / (1 + z2 / trials))
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def bootstrap_ci(values: Sequence[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                 stat=statistics.fmean) -> list[float] | None:
    """Percentile bootstrap 95 % interval of `stat` over `values` (resampled with replacement)."""
    values = list(values)
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    boots = sorted(stat([values[rng.randrange(n)] for _ in range(n)]) for _ in range(samples))
    lo = boots[int((1 - CI_LEVEL) / 2 * samples)]
    hi = boots[min(samples - 1, int((1 + CI_LEVEL) / 2 * samples))]
    return [round(lo, 4), round(hi, 4)]


def paired_gain(before: Sequence[float | None], after: Sequence[float | None],
                seed: int = 0) -> dict:
    """Mean of after - before over items scored both times, with a paired bootstrap interval.

    The frozen-judge reward gain: judge M_t's scores of M_t's answers (before) and of M_t+1's
    answers to the same prompts (after). An interval above 0 means M_t+1 moved towards its judge.
    """
    pairs = [(b, a) for b, a in zip(before, after) if a is not None and b is not None]
    diffs = [a - b for b, a in pairs]
    ci = bootstrap_ci(diffs, seed)
    return {"n": len(diffs),
            "mean_before": _round(statistics.fmean(b for b, _ in pairs)) if pairs else None,
            "mean_after": _round(statistics.fmean(a for _, a in pairs)) if pairs else None,
            "gain": _round(statistics.fmean(diffs)) if diffs else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "improved": sum(1 for d in diffs if d > 0), "worsened": sum(1 for d in diffs if d < 0)}


def mean_with_ci(values: Sequence[float | None], seed: int = 0) -> dict:
    """Mean of the scored values with its bootstrap 95 % interval."""
    xs = [v for v in values if v is not None]
    ci = bootstrap_ci(xs, seed)
    return {"n": len(xs), "mean": _round(statistics.fmean(xs)) if xs else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None}


def win_rate_ci(outcomes: Sequence[str], seed: int = 0) -> list[float] | None:
    """Bootstrap 95 % interval of the win rate (wins + half the ties) over prompts."""
    points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes]
    return bootstrap_ci(points, seed)


def position_bias(first_slot_rate: float | None, verdicts: int,
                  flip_rate: float | None = None) -> dict:
    """Whether a pairwise judge picks a slot rather than an answer.

    Two symptoms: the first-slot rate (with its Wilson interval) lies outside 0.5 +-
    POSITION_BIAS_MARGIN, or the flip rate (share of pairs whose verdict follows the slot when
    the order is swapped: a content-blind judge scores 1.0, a coin 0.5) exceeds MAX_FLIP_RATE.
    """
    if first_slot_rate is None or verdicts <= 0:
        return {"first_slot_rate": None, "ci": None, "flip_rate": flip_rate, "biased": None}
    ci = wilson_interval(round(first_slot_rate * verdicts), verdicts)
    biased = abs(first_slot_rate - 0.5) > POSITION_BIAS_MARGIN or (
        flip_rate is not None and flip_rate > MAX_FLIP_RATE)
    return {"first_slot_rate": first_slot_rate, "ci": ci, "flip_rate": flip_rate,
            "biased": biased}


def answers_changed(before: dict[str, str], after: dict[str, str]) -> dict:
    """Share of prompts (answered by both) whose answer differs, e.g. greedy M_t vs M_t+1."""
    ids = [i for i in before if i in after]
    changed = sum(1 for i in ids if before[i].strip() != after[i].strip())
    return {"prompts": len(ids), "changed": changed,
            "share": round(changed / len(ids), 4) if ids else None}


def score_spread(scores: Sequence[float | None]) -> dict:
    """How spread a judge's scores are: standard deviation, range and rounded histogram.

    A judge whose scores all land in one bin cannot rank anything, whatever its mean.
    """
    xs = [s for s in scores if s is not None]
    hist = Counter(score_bin(s) for s in xs)
    return {"std": _round(statistics.pstdev(xs)) if len(xs) > 1 else None,
            "min": _round(min(xs)) if xs else None, "max": _round(max(xs)) if xs else None,
            "bins_used": len(hist), **{f"hist_{d}": hist.get(d, 0) for d in range(6)}}


def derangement(size: int, seed: int = 0) -> list[int]:
    """A seeded permutation with no fixed point (one random cycle): item i -> result[i] != i."""
    if size < 2:
        return list(range(size))
    order = list(range(size))
    random.Random(seed).shuffle(order)
    out = [0] * size
    for k in range(size):
        out[order[k]] = order[(k + 1) % size]
    return out


def relevance_items(prompts: Sequence[str], answers: Sequence[str], seed: int = 0) -> list[dict]:
    """Each prompt with its own answer (chosen) and another prompt's answer (rejected)."""
    if len(prompts) < 2:
        return []
    other = derangement(len(prompts), seed)
    return [{"index": i, "prompt": prompts[i], "chosen": answers[i],
             "rejected": answers[other[i]], "other": other[i]} for i in range(len(prompts))]


def grouped_accuracy_ci(model: Sequence[Score], human: Sequence[float], groups: Sequence[str],
                        seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
                        ) -> list[float] | None:
    """Bootstrap 95 % interval of pairwise accuracy, resampling whole groups (pairs within a
    group share a prompt and are not independent)."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    per_group = []
    for idx in by_group.values():
        sub_h, sub_m = [human[i] for i in idx], [model[i] for i in idx]
        outcomes = [compare(sub_m[a], sub_m[b]) for a, b in group_pairs(sub_h, ["g"] * len(idx))]
        if outcomes:
            per_group.append((sum(o == "agree" for o in outcomes), len(outcomes)))
    if not per_group:
        return None
    rng = random.Random(seed)
    k = len(per_group)
    boots = []
    for _ in range(samples):
        draw = [per_group[rng.randrange(k)] for _ in range(k)]
        boots.append(sum(a for a, _ in draw) / sum(n for _, n in draw))
    boots.sort()
    return [round(boots[int((1 - CI_LEVEL) / 2 * samples)], 4),
            round(boots[min(samples - 1, int((1 + CI_LEVEL) / 2 * samples))], 4)]


# -- the gain at equal length ------------------------------------------------------------------
def percentile_interval(draws: list[float]) -> list[float] | None:
    """The 95 % percentile interval of bootstrap draws (None without any)."""
    if not draws:
        return None
    draws = sorted(draws)
    k = len(draws)
    return [round(draws[int((1 - CI_LEVEL) / 2 * k)], 4),
            round(draws[min(k - 1, int((1 + CI_LEVEL) / 2 * k))], 4)]


def _length_fit(diffs: Sequence[float], length_diffs: Sequence[float]
                ) -> tuple[float, float | None]:
    """(intercept, slope) of the OLS fit d = a + b * tanh(dlen / sd(dlen)); slope None (and
    intercept = mean d) when the length term is constant (e.g. every dlen equal)."""
    sd = statistics.pstdev(length_diffs) if len(length_diffs) > 1 else 0.0
    if sd == 0:
        return statistics.fmean(diffs), None
    xs = [math.tanh(x / sd) for x in length_diffs]
    mx, md = statistics.fmean(xs), statistics.fmean(diffs)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return md, None
    slope = sum((x - mx) * (d - md) for x, d in zip(xs, diffs)) / sxx
    return md - slope * mx, slope


def length_controlled_gain(diffs: Sequence[float | None], length_diffs: Sequence[float | None],
                           seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """The gain at equal length: OLS of each prompt's paired score difference d_i on
    tanh(dlen_i / sd(dlen)) (dlen = answer length difference in tokens; the length term of
    AlpacaEval's length-controlled win rate, as a linear model).

    intercept = the gain left when both answers are as long; slope = score points the judge pays
    per unit of the length term. Both with a percentile bootstrap 95 % interval resampling
    prompts (the fit, sd included, is redone on every resample). Prompts missing either value
    are left out.
    """
    if len(diffs) != len(length_diffs):
        raise ValueError("diffs and length_diffs must have equal length")
    pairs = [(float(d), float(x)) for d, x in zip(diffs, length_diffs)
             if d is not None and x is not None]
    out: dict = {"n": len(pairs), "intercept": None, "intercept_ci": None, "slope": None,
                 "slope_ci": None, "raw_gain": None, "length_correlation": None}
    if not pairs:
        return out
    ds, xs = [d for d, _ in pairs], [x for _, x in pairs]
    intercept, slope = _length_fit(ds, xs)
    rng = random.Random(seed)
    n = len(pairs)
    intercepts, slopes = [], []
    for _ in range(samples if n > 1 else 0):
        draw = [pairs[rng.randrange(n)] for _ in range(n)]
        a, b = _length_fit([d for d, _ in draw], [x for _, x in draw])
        intercepts.append(a)
        if b is not None:
            slopes.append(b)
    out.update({"intercept": _round(intercept), "intercept_ci": percentile_interval(intercepts),
                "slope": _round(slope), "slope_ci": percentile_interval(slopes),
                "raw_gain": _round(statistics.fmean(ds)),
                "mean_length_diff": _round(statistics.fmean(xs)),
                "length_correlation": _round(pearson(xs, ds))})
    return out
