"""Meta-judge (Meta-Rewarding, Wu et al. 2024, arXiv 2407.19594; docs/pairs.md): the model
compares two of its own judgments of the same response, in both orders; a Bradley-Terry fit over
the order-consistent verdicts picks the best and the worst judgment, which become a
judge-training preference pair."""

from __future__ import annotations

import itertools
import re
import statistics

from ..templates import fill, user_template

META_FIELDS = ("prompt", "response", "judgment_1", "judgment_2")
META_PREFIX = "Winner: "  # the assistant prefix the logprob meta-judge scores from
_WINNER = re.compile(r"winner\s*[:=]?\s*\**\s*(?:judgment\s*)?([12])(?!\d)", re.IGNORECASE)
_SAME = 1e-6  # strengths closer than this are equal: no best or worst judgment


def meta_template(path: str | None = None) -> str:
    """The meta-judge prompt: the file at `path` (meta_judge.template) or the packaged
    templates/meta_judge.txt; it must contain {prompt}, {response}, {judgment_1}, {judgment_2}."""
    return user_template(path, "meta_judge", META_FIELDS, "meta_judge.template")


def meta_messages(prompt: str, response: str, judgment_1: str, judgment_2: str,
                  text: str) -> list[dict]:
    """The user turn asking which of two judgments of `response` is better."""
    return [{"role": "user", "content": fill(text, prompt=prompt.strip(),
                                              response=response.strip(),
                                              judgment_1=judgment_1.strip(),
                                              judgment_2=judgment_2.strip())}]


def parse_meta_winner(text: str) -> int | None:
    """The last `Winner: 1|2` (or `Winner: Judgment n`) in a reply, or None."""
    found = _WINNER.findall(text)
    return int(found[-1]) if found else None


def disputed(rows: list[dict], limit: int) -> list[dict]:
    """The `limit` responses whose parsed sampled scores spread most (population variance > 0;
    ties in file order): `{id, prompt, response, index, judgments [texts], scores, spread}`,
    only judgments whose score parsed."""
    items = []
    for row in rows:
        for i, (response, scores, raws) in enumerate(zip(row["responses"], row["scores"],
                                                         row["raw"])):
            kept = [(text, s) for text, s in zip(raws, scores) if s is not None]
            if len(kept) < 2:
                continue
            spread = statistics.pvariance([s for _, s in kept])
            if spread > 0:
                items.append({"id": f"{row['id']}#{i}", "prompt": row["prompt"],
                              "response": response, "judgments": [t for t, _ in kept],
                              "scores": [s for _, s in kept], "spread": round(spread, 6)})
    order = sorted(range(len(items)), key=lambda k: (-items[k]["spread"], k))
    return [items[k] for k in order[:limit]]


def comparisons(count: int) -> list[tuple[int, int]]:
    """Every unordered pair (a, b), a < b, of `count` judgments."""
    return list(itertools.combinations(range(count), 2))


def combine(first: int | None, second: int | None) -> int | None:
    """The verdict on (a, b) from the order (a, b) giving `first` and the order (b, a) giving
    `second` (1 or 2 = the slot that won, None = unparsed): 0 = a, 1 = b, None = a tie (the
    verdict follows the order, or either is missing)."""
    if first == 1 and second == 2:
        return 0
    if first == 2 and second == 1:
        return 1
    return None


def bradley_terry(count: int, verdicts: dict[tuple[int, int], int | None],
                  prior: float = 0.5, steps: int = 500) -> list[float]:
    """Bradley-Terry strengths (summing to `count`) of `count` judgments from the verdicts on
    compared pairs (0 = the first won, 1 = the second, None = a tie). A tie counts half a win
    each way and every compared pair `prior` wins each way, so the fit stays finite; a perfect
    cycle or all ties gives equal strengths (minorisation-maximisation, Hunter 2004)."""
    wins = [[0.0] * count for _ in range(count)]
    for (a, b), verdict in verdicts.items():
        share = 0.5 if verdict is None else 1.0 if verdict == 0 else 0.0
        wins[a][b] += share + prior
        wins[b][a] += 1.0 - share + prior
    strength = [1.0] * count
    for _ in range(steps):
        new = []
        for i in range(count):
            total = sum(wins[i])
            denominator = sum((wins[i][j] + wins[j][i]) / (strength[i] + strength[j])
                              for j in range(count) if j != i and wins[i][j] + wins[j][i] > 0)
            new.append(total / denominator if denominator else strength[i])
        scale = count / sum(new)
        strength = [s * scale for s in new]
    return strength


def best_and_worst(count: int, verdicts: dict[tuple[int, int], int | None]
                   ) -> tuple[int, int, list[float]] | None:
    """(best, worst, strengths) of the judgments, or None when no judgment stands out (every
    verdict a tie, a cycle: the top and lowest strengths equal)."""
    strength = bradley_terry(count, verdicts)
    best = max(range(count), key=lambda i: (strength[i], -i))
    worst = min(range(count), key=lambda i: (strength[i], i))
    if strength[best] - strength[worst] < _SAME:
        return None
    return best, worst, strength
