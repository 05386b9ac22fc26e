"""ROUGE-L F1 with the `rouge-score` package's decisions, fast enough for a pool of thousands.

Tokens are those of rouge-score's default tokenizer (lowercase, runs of [a-z0-9]). Each token
becomes an integer id once, and a text becomes a string of code points, so the longest common
subsequence runs in rapidfuzz's compiled code. A pool is bucketed by length: a pair whose lengths
cannot reach the threshold is never compared, and a check stops at the first match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

from rapidfuzz import process
from rapidfuzz.distance import LCSseq

_TOKEN = re.compile(r"[a-z0-9]+")
_UNKNOWN = "\x00"  # a token the pool has never seen matches nothing in it
_SURROGATES = 0x800  # code points 0xD800-0xDFFF are not valid characters


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation (no stemming)."""
    # rouge-score lowercases, replaces each run of non-[a-z0-9] by a space and splits: the same
    # tokens as finding the [a-z0-9] runs of the lowercased text.
    return _TOKEN.findall(text.lower())


def f_measure(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F1 from an LCS length, in rouge-score's float arithmetic (symmetric in a, b)."""
    if not len_a or not len_b:
        return 0.0
    precision, recall = lcs / len_a, lcs / len_b
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l_f1(first: list[str], second: list[str]) -> float:
    """ROUGE-L F1 between two token lists."""
    return f_measure(LCSseq.similarity(first, second), len(first), len(second))


@cache
def min_lcs(len_a: int, len_b: int, threshold: float) -> int | None:
    """The least LCS length whose F1 reaches `threshold`, or None when none can.

    Computed with the same float expression as rouge-score, so `lcs >= min_lcs(...)` decides
    exactly as `f_measure(lcs, ...) >= threshold` (F1 grows with the LCS by 2/(a+b) per step,
    far more than its rounding error).
    """
    top = min(len_a, len_b)
    start = max(0, int(threshold * (len_a + len_b) / 2) - 2)
    if f_measure(start, len_a, len_b) >= threshold:
        start = 0  # threshold <= 0 or a rounding corner: scan from the bottom
    for lcs in range(start, top + 1):
        if f_measure(lcs, len_a, len_b) >= threshold:
            return lcs
    return None


class RougeLPool:
    """A growing set of texts; `first_match(text)` finds one with ROUGE-L F1 >= threshold."""

    MAX_IDS = 0x110000 - _SURROGATES - 1  # ids that fit in one code point (0 = unknown)

    def __init__(self, threshold: float, texts: Iterable[str] = ()) -> None:
        self.threshold = threshold
        self.ids: dict[str, int] = {}
        self.texts: list[str] = []
        self._buckets: dict[int, list] = {}  # token count -> encoded texts
        self._members: dict[int, list[int]] = {}  # token count -> indices into self.texts
        self._as_text = True
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def _char(self, token_id: int) -> str:
        return chr(token_id if token_id < 0xD800 else token_id + _SURROGATES)

    def _encode(self, tokens: list[str], grow: bool) -> str | list[int]:
        if grow:
            for tok in tokens:
                if tok not in self.ids:
                    self.ids[tok] = len(self.ids) + 1
            if self._as_text and len(self.ids) > self.MAX_IDS:
                self._to_lists()
        if self._as_text:
            return "".join(self._char(self.ids[t]) if t in self.ids else _UNKNOWN for t in tokens)
        return [self.ids.get(t, 0) for t in tokens]

    def _to_lists(self) -> None:
        """More distinct tokens than code points: compare lists of ids instead (slower)."""
        self._as_text = False
        for length, members in self._members.items():
            self._buckets[length] = [self._encode(rouge_tokens(self.texts[i]), grow=False)
                                     for i in members]

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        encoded = self._encode(tokens, grow=True)
        self._buckets.setdefault(len(tokens), []).append(encoded)
        self._members.setdefault(len(tokens), []).append(len(self.texts))
        self.texts.append(text)

    def first_match(self, text: str) -> int | None:
        """Index of a pool text with ROUGE-L F1 >= threshold against `text`, or None."""
        tokens = rouge_tokens(text)
        query = self._encode(tokens, grow=False)
        n = len(tokens)
        # Nearest lengths first: that is where near-duplicates are.
        for length in sorted(self._buckets, key=lambda m: (abs(m - n), m)):
            need = min_lcs(n, length, self.threshold)
            if need is None:
                continue
            if need == 0:
                return self._members[length][0]
            hit = process.extractOne(query, self._buckets[length], scorer=LCSseq.similarity,
                                     score_cutoff=need)
            if hit is not None:
                return self._members[length][hit[2]]
        return None
