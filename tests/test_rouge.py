"""The fast ROUGE-L filter decides exactly as the `rouge-score` package does."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer, tokenizers

from selfreward.data.rouge import RougeLPool, f_measure, min_lcs, rouge_l_f1, rouge_tokens

WORDS = ["the", "a", "of", "to", "and", "in", "is", "for", "on", "with", "write", "explain",
         "list", "give", "describe", "summarise", "compare", "story", "poem", "email", "recipe",
         "bread", "rain", "river", "city", "plan", "budget", "code", "python", "sort", "numbers",
         "three", "five", "short", "long", "simple", "friendly", "formal", "sentence",
         "paragraph", "reasons", "ideas"]
ODD = ["İstanbul", "naïve", "straße", "café", "x²", "1,000", "e-mail", "don't", "C++", "–", "🙂",
       "ǅ", "\u00a0", "Ⅻ", "٣", "ﬁle", "K", "ǰ", "(a)", "3.14", ":", "..."]


def _sentence(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 3] + list(range(4, 40)))
    out = []
    for _ in range(n):
        word = rng.choice(ODD) if rng.random() < 0.08 else rng.choice(WORDS)
        if rng.random() < 0.15:
            word = word.upper() if rng.random() < 0.5 else word.capitalize()
        out.append(word + (rng.choice(",.;:!?") if rng.random() < 0.1 else ""))
    return " ".join(out)


def _near_duplicate(rng: random.Random, text: str) -> str:
    """A few word edits, case and punctuation changes: ROUGE-L near the threshold."""
    words = text.split()
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        i = rng.randint(0, len(words))
        if op < 0.35 and words:
            del words[min(i, len(words) - 1)]
        elif op < 0.7:
            words.insert(i, rng.choice(WORDS + ODD))
        elif words:
            words[min(i, len(words) - 1)] = rng.choice(WORDS)
    text = " ".join(words)
    return text.lower() if rng.random() < 0.3 else text + rng.choice(["", ".", "?", " !"])


def _pairs(n_random: int, n_near: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [(_sentence(rng), _sentence(rng)) for _ in range(n_random)]
    for _ in range(n_near):
        a = _sentence(rng)
        pairs.append((a, _near_duplicate(rng, a)))
    return pairs


def test_tokenisation_is_rouge_scores_default():
    reference = tokenizers.DefaultTokenizer(use_stemmer=False)
    rng = random.Random(1)
    texts = [_sentence(rng) for _ in range(2000)] + ODD + ["", "   ", "İİ", "ABC def-GHI_jkl"]
    for text in texts:
        assert rouge_tokens(text) == reference.tokenize(text), text


@pytest.mark.parametrize("threshold, n_pairs", [(0.7, 5000), (0.5, 1500), (0.3, 1500),
                                                (0.9, 1500), (1.0, 1000), (0.0, 1000)])
def test_pair_decisions_equal_rouge_score(threshold, n_pairs):
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = _pairs(n_pairs * 2 // 5, n_pairs * 3 // 5, seed=int(threshold * 10))
    hits = 0
    for a, b in pairs:
        reference = scorer.score(b, a)["rougeL"].fmeasure
        fast = RougeLPool(threshold, [b]).first_match(a) is not None
        assert fast == (reference >= threshold), (a, b, reference)
        assert rouge_l_f1(rouge_tokens(a), rouge_tokens(b)) == reference
        hits += fast
    if 0 < threshold < 1:  # the near-duplicates put many pairs on both sides of the line
        assert 0.1 * len(pairs) < hits < 0.9 * len(pairs)


def test_pool_decisions_equal_rouge_score_over_a_growing_pool():
    """Self-Instruct's loop: each candidate against every text kept so far, kept if none match."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(7)
    base = [_sentence(rng) for _ in range(60)]
    candidates = [_near_duplicate(rng, rng.choice(base)) if rng.random() < 0.6 else
                  _sentence(rng) for _ in range(250)]
    pool_texts = base[:20]
    pool = RougeLPool(0.7, pool_texts)
    kept = 0
    for cand in candidates:
        reference = any(scorer.score(x, cand)["rougeL"].fmeasure >= 0.7 for x in pool_texts)
        hit = pool.first_match(cand)
        assert (hit is not None) == reference, cand
        if hit is not None:
            assert scorer.score(pool_texts[hit], cand)["rougeL"].fmeasure >= 0.7
        else:
            pool_texts.append(cand)
            pool.add(cand)
            kept += 1
    assert 30 < kept < 220 and len(pool) == len(pool_texts)


def test_threshold_exactly_on_the_boundary():
    # F1 = 2 * LCS / (a + b) = 0.7 in exact arithmetic: 7 common of 10 + 10 tokens.
    a = "w1 w2 w3 w4 w5 w6 w7 a1 a2 a3"
    b = "w1 w2 w3 w4 w5 w6 w7 b1 b2 b3"
    reference = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    assert (RougeLPool(0.7, [a]).first_match(b) is not None) == (reference >= 0.7)
    for la in range(1, 60):
        for lb in range(1, 60):
            need = min_lcs(la, lb, 0.7)
            for lcs in range(min(la, lb) + 1):
                assert (need is not None and lcs >= need) == (f_measure(lcs, la, lb) >= 0.7)


def test_unseen_tokens_and_the_list_fallback(monkeypatch):
    pool = RougeLPool(0.7, ["write a poem about the sea"])
    assert pool.first_match("zzz yyy xxx www vvv uuu") is None  # unknown tokens match nothing
    assert pool.first_match("write a poem about the sea please") == 0
    assert len(pool.ids) == 6  # a query does not grow the vocabulary
    # More distinct tokens than code points: the pool switches to lists of ids, same decisions.
    monkeypatch.setattr(RougeLPool, "MAX_IDS", 8)
    pool = RougeLPool(0.7, ["write a poem about the sea"])
    pool.add("explain how tides work to a child")
    assert not pool._as_text
    assert pool.first_match("explain how the tides work to a child") == 1
    assert pool.first_match("write a poem about a sea") == 0
    assert pool.first_match("something else entirely here") is None
