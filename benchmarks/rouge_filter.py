"""ROUGE-L filter benchmark: 2,000 candidates against a 5,000-text pool, one run.

Three implementations decide "is there a pool text with ROUGE-L F1 >= 0.7?" per candidate:
- fast: `selfreward.data.rouge.RougeLPool` (rapidfuzz LCS, length buckets, first-hit exit), all
  candidates;
- before: the pure-Python `rouge_l_f1` the prompts stage used until now (copied below), on a
  sample of candidates (it takes ~0.6 s each);
- rouge-score: the reference package, on a smaller sample; plus per-pair timings of all three on
  the same random pairs.
Times are the process's CPU seconds (`time.process_time`): all three run on one thread, and CPU
time does not count the waits of a shared or paused machine, so the ratios hold there too.
Texts are sampled from a word-bigram model of the project's seed prompts; a share of candidates
are edits of pool texts, so that both decisions occur. Decisions are compared on every sample.

    .venv/bin/python benchmarks/rouge_filter.py [--before-sample 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import re
import time
from pathlib import Path

from rouge_score import rouge_scorer

from selfreward.data.rouge import RougeLPool, rouge_l_f1, rouge_tokens
from selfreward.data.seed import load_ift, load_prompts, load_seed_tasks, user_prompt

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.7
_WORD = re.compile(r"[a-z0-9]+")


def words_before(text: str) -> list[str]:
    """Tokenisation of the filter before (same tokens as rouge-score's)."""
    return _WORD.findall(text.lower())


def rouge_l_f1_before(a: list[str], b: list[str]) -> float:
    """The prompts stage's ROUGE-L F1 until now: an O(len(a) x len(b)) table in Python."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def corpus_texts() -> list[str]:
    seed = ROOT / "data" / "seed"
    texts = [user_prompt(c) for c in load_ift(seed / "ift.jsonl")]
    texts += [r["prompt"] for r in load_prompts(seed / "eval_prompts.jsonl")]
    texts += [t.instruction for t in load_seed_tasks(seed / "self_instruct_tasks.jsonl")]
    return texts


def bigram_sampler(texts: list[str], rng: random.Random):
    follow: dict[str, list[str]] = {}
    starts = []
    for text in texts:
        toks = text.split()
        if toks:
            starts.append(toks[0])
        for a, b in itertools.pairwise(toks):
            follow.setdefault(a, []).append(b)
    vocab = [w for text in texts for w in text.split()]

    def sample() -> str:
        n = max(3, int(rng.lognormvariate(2.7, 0.45)))  # median ~15 words, like instructions
        out = [rng.choice(starts)]
        while len(out) < n:
            nxt = follow.get(out[-1])
            out.append(rng.choice(nxt) if nxt and rng.random() < 0.85 else rng.choice(vocab))
        return " ".join(out)

    return sample


def near_duplicate(rng: random.Random, text: str, vocab: list[str]) -> str:
    toks = text.split()
    for _ in range(rng.randint(1, max(1, len(toks) // 3))):
        i = rng.randrange(len(toks) + 1)
        op = rng.random()
        if op < 0.4 and len(toks) > 3:
            del toks[min(i, len(toks) - 1)]
        elif op < 0.7:
            toks.insert(i, rng.choice(vocab))
        else:
            toks[min(i, len(toks) - 1)] = rng.choice(vocab)
    return " ".join(toks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--near-share", type=float, default=0.3, help="candidates edited from pool")
    ap.add_argument("--before-sample", type=int, default=40, help="candidates run by 'before'")
    ap.add_argument("--reference-sample", type=int, default=8, help="by rouge-score")
    ap.add_argument("--pairs", type=int, default=5000, help="random pairs timed per pair")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/rouge_filter.json"))
    args = ap.parse_args()

    rng = random.Random(args.seed)
    texts = corpus_texts()
    sample = bigram_sampler(texts, rng)
    vocab = [w for t in texts for w in t.split()]
    pool_texts = [sample() for _ in range(args.pool)]
    candidates = [near_duplicate(rng, rng.choice(pool_texts), vocab)
                  if rng.random() < args.near_share else sample()
                  for _ in range(args.candidates)]

    # fast: building the pool (tokens -> ids once) is part of the cost.
    t0 = time.process_time()
    pool = RougeLPool(THRESHOLD, pool_texts)
    build_s = time.process_time() - t0
    t0 = time.process_time()
    fast = [pool.first_match(c) is not None for c in candidates]
    fast_s = time.process_time() - t0

    # before: the same loop as the prompts stage had (any() stops at the first hit).
    picked = rng.sample(range(len(candidates)), args.before_sample)
    pool_words = [words_before(t) for t in pool_texts]
    t0 = time.process_time()
    before = {i: any(rouge_l_f1_before(words_before(candidates[i]), w) >= THRESHOLD
                     for w in pool_words) for i in picked}
    before_s = time.process_time() - t0

    # fast again on exactly the sampled candidates: the ratio compares like with like.
    t0 = time.process_time()
    for i in picked:
        pool.first_match(candidates[i])
    fast_sample_s = time.process_time() - t0

    # rouge-score on fewer candidates, the same any() loop.
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    ref_picked = picked[:args.reference_sample]
    t0 = time.process_time()
    reference = {i: any(scorer.score(t, candidates[i])["rougeL"].fmeasure >= THRESHOLD
                        for t in pool_texts) for i in ref_picked}
    reference_s = time.process_time() - t0

    # Per pair, on the same random pairs.
    pairs = [(rng.choice(candidates), rng.choice(pool_texts)) for _ in range(args.pairs)]
    tok_pairs = [(rouge_tokens(a), rouge_tokens(b)) for a, b in pairs]
    t0 = time.process_time()
    ref_scores = [scorer.score(b, a)["rougeL"].fmeasure for a, b in pairs]
    pair_ref_s = time.process_time() - t0
    t0 = time.process_time()
    before_scores = [rouge_l_f1_before(a, b) for a, b in tok_pairs]
    pair_before_s = time.process_time() - t0
    t0 = time.process_time()
    fast_scores = [rouge_l_f1(a, b) for a, b in tok_pairs]
    pair_fast_s = time.process_time() - t0

    per_cand = {"fast": fast_s / len(candidates), "before": before_s / len(picked),
                "rouge_score": reference_s / len(ref_picked),
                "fast_on_sample": fast_sample_s / len(picked)}
    fast_on_sample = sum(1 for i in picked if fast[i]) / len(picked)
    result = {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "timer": "process CPU time", "threshold": THRESHOLD, "pool": args.pool, "candidates": args.candidates,
        "near_duplicate_share": args.near_share,
        "fast": {"pool_build_seconds": round(build_s, 3), "seconds": round(fast_s, 3),
                 "ms_per_candidate": round(1e3 * per_cand["fast"], 4),
                 "dropped": sum(fast), "kept": len(fast) - sum(fast)},
        "before": {"candidates_timed": len(picked), "seconds": round(before_s, 2),
                   "ms_per_candidate": round(1e3 * per_cand["before"], 2),
                   "fast_ms_per_candidate_same_sample": round(1e3 * per_cand["fast_on_sample"],
                                                              4),
                   "decisions_equal_fast": sum(before[i] == fast[i] for i in picked),
                   "dropped_share_on_sample": round(fast_on_sample, 3)},
        "rouge_score": {"candidates_timed": len(ref_picked), "seconds": round(reference_s, 2),
                        "ms_per_candidate": round(1e3 * per_cand["rouge_score"], 2),
                        "decisions_equal_fast": sum(reference[i] == fast[i]
                                                    for i in ref_picked)},
        "per_pair_us": {"pairs": len(pairs),
                        "rouge_score": round(1e6 * pair_ref_s / len(pairs), 2),
                        "before": round(1e6 * pair_before_s / len(pairs), 2),
                        "fast_single_pair": round(1e6 * pair_fast_s / len(pairs), 3),
                        "scores_equal_rouge_score": sum(x == y for x, y in
                                                        zip(fast_scores, ref_scores)),
                        "before_equal_rouge_score": sum(x == y for x, y in
                                                        zip(before_scores, ref_scores))},
        "speedup_per_candidate": {
            "fast_vs_before": round(per_cand["before"] / per_cand["fast"], 1),
            "fast_vs_before_same_sample": round(per_cand["before"] / per_cand["fast_on_sample"],
                                                1),
            "fast_vs_rouge_score": round(per_cand["rouge_score"] / per_cand["fast"], 1)},
        "full_run_seconds_estimate": {
            "fast": round(build_s + fast_s, 2),
            "before": round(per_cand["before"] * len(candidates), 1),
            "rouge_score": round(per_cand["rouge_score"] * len(candidates), 1)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
