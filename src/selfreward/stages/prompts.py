"""Stage `prompts`: M_t writes new user prompts from few-shot examples, Self-Instruct filters."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from ..engines import Engine, Sampling
from ..errors import UserError
from ..io import remove_outputs, write_json, write_jsonl
from ..params import EngineParams, PromptsParams
from ..prompting import prompt_generation_messages
from ..seed import load_ift, user_prompt
from ..shards import ShardStore, fingerprint, finish, model_fingerprint

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+")
_LEAD = re.compile(r"^\s*(?:(?:new\s+)?task\s*\d*\s*[:.)-]|\d+\s*[.):-]|[-*#>]+)\s*", re.IGNORECASE)
_CUT = re.compile(r"\n\s*(?:task\s*\d+|answer|response|output|solution|input|example)\s*[:.]",
                  re.IGNORECASE)


_TASK = re.compile(r"(?:^|\n)\s*(?:new\s+)?task\s*\d+\s*[:.)-]", re.IGNORECASE)


def split_candidates(raw: str) -> list[str]:
    """Self-Instruct parsing: a reply that lists several "Task n:" items gives one candidate each."""
    parts = [part for part in _TASK.split(raw) if part.strip()]
    return [c for c in (clean_prompt(part) for part in parts or [raw]) if c] or [""]


def clean_prompt(raw: str) -> str:
    """Turn raw model text into one candidate prompt: drop numbering, answers and later tasks."""
    text = _LEAD.sub("", raw.strip(), count=1)
    lines = [ln.strip() for ln in _CUT.split(text)[0].strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0]
    # A task that introduces its input ("...following text:") keeps the next lines.
    if first.endswith(":") and len(lines) > 1:
        first = first + "\n" + "\n".join(lines[1:4])
    return first.strip().strip('"').strip()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l_f1(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 between two token lists (longest common subsequence)."""
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


class PromptFilter:
    """Self-Instruct filters against a growing pool; `check` returns a reject reason or None."""

    def __init__(self, p: PromptsParams, pool: list[str]) -> None:
        self.p = p
        self.pool = [words(x) for x in pool]
        self.exact = {" ".join(w) for w in self.pool}
        self.blacklist = [b.lower() for b in p.blacklist]

    def check(self, prompt: str) -> str | None:
        if not prompt:
            return "empty"
        toks = words(prompt)
        if len(toks) < self.p.min_words:
            return "too_short"
        if len(toks) > self.p.max_words:
            return "too_long"
        if not prompt[0].isascii() or not prompt[0].isalnum():
            return "bad_start"
        low = " " + " ".join(toks) + " "
        if any(f" {b} " in low for b in self.blacklist):
            return "blacklist"
        if " ".join(toks) in self.exact:
            return "duplicate"
        if any(rouge_l_f1(toks, other) >= self.p.rouge_threshold for other in self.pool):
            return "near_duplicate"
        return None

    def add(self, prompt: str) -> None:
        toks = words(prompt)
        self.pool.append(toks)
        self.exact.add(" ".join(toks))


def _shots(rng: random.Random, seed_prompts: list[tuple[str, str]],
           generated: list[tuple[str, str]], p: PromptsParams) -> list[tuple[str, str]]:
    n_gen = min(p.generated_shots, len(generated))
    n_seed = min(len(seed_prompts), p.seed_shots + p.generated_shots - n_gen)
    shots = rng.sample(seed_prompts, n_seed) + rng.sample(generated, n_gen)
    rng.shuffle(shots)
    return shots


def generate_prompts(engine: Engine, p: PromptsParams, seed_prompts: list[tuple[str, str]],
                     round_size: int, output: str | Path, key: str) -> tuple[list[dict], dict]:
    """Generate rounds of candidates until `p.count` pass the filters or attempts run out.

    Each round is one resumable shard; its few-shot examples and seed depend only on the round
    index and the prompts kept before it, so a resumed run repeats the same decisions.
    """
    filt = PromptFilter(p, [text for _, text in seed_prompts])
    store = ShardStore(output, key)
    kept: list[dict] = []
    reasons: Counter = Counter()
    attempts = candidates = 0
    rounds = -(-p.max_attempts // round_size)
    for r in range(rounds):
        if len(kept) >= p.count:
            break
        size = min(round_size, p.max_attempts - attempts)
        rng = random.Random(p.seed * 100_003 + r)
        gen_pool = [(row["id"], row["prompt"]) for row in kept]
        plans = [_shots(rng, seed_prompts, gen_pool, p) for _ in range(size)]

        raws = store.load(r, expected=len(plans))
        if raws is None:
            chats = [prompt_generation_messages([text for _, text in shots]) for shots in plans]
            outs = engine.generate(chats, Sampling(n=1, temperature=p.temperature, top_p=p.top_p,
                                                   max_new_tokens=p.max_new_tokens,
                                                   seed=p.seed * 100_003 + r))
            raws = [{"raw": o[0], "shots": [sid for sid, _ in shots]}
                    for o, shots in zip(outs, plans)]
            store.save(r, raws)
        for raw in raws:
            attempts += 1
            for prompt in split_candidates(raw["raw"]):
                if len(kept) >= p.count:
                    break
                candidates += 1
                reason = filt.check(prompt)
                if reason:
                    reasons[reason] += 1
                    continue
                filt.add(prompt)
                kept.append({"id": f"gen-{len(kept):04d}", "prompt": prompt,
                             "shots": raw["shots"]})
    metrics = {"rounds_resumed": store.resumed, "attempts": attempts, "candidates": candidates,
               "kept": len(kept),
               "keep_rate": round(len(kept) / candidates, 4) if candidates else 0.0,
               **{f"rejected_{k}": reasons.get(k, 0) for k in
                  ("empty", "too_short", "too_long", "bad_start", "blacklist", "duplicate",
                   "near_duplicate")}}
    return kept, metrics


def run_prompts(model_dir: str, p: PromptsParams, ep: EngineParams, seed_paths: list[str],
                out_path: str | Path, metrics_path: str | Path) -> dict:
    """Stage entry: seed prompts in, `prompts.jsonl` + metrics out."""
    from ..engines import engine_key, make_engine

    remove_outputs(out_path, metrics_path)
    seed_prompts = []
    for path in seed_paths:
        for i, conv in enumerate(load_ift(path)):
            seed_prompts.append((f"{Path(path).stem}-{i:04d}", user_prompt(conv)))
    if len(seed_prompts) < p.seed_shots:
        raise UserError(f"only {len(seed_prompts)} seed prompts; prompts.seed_shots is "
                        f"{p.seed_shots}", field="prompts.seed_shots")
    key = fingerprint(p, engine_key(ep), model_fingerprint(model_dir), seed_prompts)
    engine = make_engine(model_dir, ep, seed=p.seed)
    try:
        round_size = max(1, min(ep.shard_size, p.max_attempts, 2 * p.count))
        kept, metrics = generate_prompts(engine, p, seed_prompts, round_size, out_path, key)
    finally:
        engine.close()
    metrics.update(engine=engine.name, **{f"engine_{k}": v for k, v in
                                          engine.stats.as_dict().items()})
    log.info("prompts: kept %d of %d attempts; rejected %s", metrics["kept"], metrics["attempts"],
             {k: v for k, v in metrics.items() if k.startswith("rejected_") and v})
    if not kept:
        raise UserError(f"no generated prompt passed the filters ({metrics}); raise "
                        "prompts.max_attempts or prompts.max_new_tokens, or relax "
                        "prompts.rouge_threshold / prompts.blacklist", field="prompts")
    write_jsonl(out_path, kept)
    write_json(metrics_path, metrics)
    finish(out_path)
    return metrics
