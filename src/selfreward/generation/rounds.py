"""The few-shot generation loop shared by `prompts` (new prompts for an iteration) and
`self-instruct` step 1 (new instructions): rounds of sampled generations, each a resumable
shard, parsed into candidates that pass one InstructionFilter until enough are kept."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..core.shards import ShardStore, item_seed
from ..data.filters import InstructionFilter
from .engines import Engine, Sampling

Shot = tuple[str, str]  # (id, text)


class RoundParams(Protocol):
    count: int
    max_attempts: int
    seed_shots: int
    generated_shots: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass
class Rounds:
    """What the loop kept (`{"text", "shots"}` in the order kept), what it dropped (`{"text",
    "reason"}`) and how it got there."""

    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    attempts: int = 0
    candidates: int = 0
    resumed: int = 0


def pick_shots(rng: random.Random, seeds: list[Shot], generated: list[Shot],
               params: RoundParams) -> list[Shot]:
    """`generated_shots` kept generations (fewer while there are fewer) topped up with seeds to
    `seed_shots + generated_shots`, shuffled."""
    n_gen = min(params.generated_shots, len(generated))
    n_seed = min(len(seeds), params.seed_shots + params.generated_shots - n_gen)
    shots = rng.sample(seeds, n_seed) + rng.sample(generated, n_gen)
    rng.shuffle(shots)
    return shots


def generate_rounds(engine: Engine, params: RoundParams, seeds: list[Shot], round_size: int,
                    output: str | Path, key: str | dict, instruction_filter: InstructionFilter,
                    messages: Callable[[list[str]], list[dict]],
                    parse: Callable[[str], list[str]], id_prefix: str,
                    on_round: Callable[[int, Rounds], None] | None = None) -> Rounds:
    """Generate rounds until `params.count` candidates pass the filter or `max_attempts`
    generations are spent. A round's shots and sampling seed depend only on its index and what
    was kept before it, so a resumed run (rounds read back from the shard store) repeats the
    same decisions."""
    store = ShardStore(output, key, layout=round_size)
    out = Rounds()
    for round_index in range(-(-params.max_attempts // round_size)):
        if len(out.kept) >= params.count:
            break
        size = min(round_size, params.max_attempts - out.attempts)
        rng = random.Random(item_seed(params.seed, round_index))
        generated = [(row["id"], row["text"]) for row in out.kept]
        plans = [pick_shots(rng, seeds, generated, params) for _ in range(size)]
        replies = store.load(round_index, expected=len(plans))
        if replies is None:
            chats = [messages([text for _, text in shots]) for shots in plans]
            texts = engine.generate(chats, Sampling(
                n=1, temperature=params.temperature, top_p=params.top_p,
                max_new_tokens=params.max_new_tokens, seed=item_seed(params.seed, round_index)))
            replies = [{"raw": text[0], "shots": [sid for sid, _ in shots]}
                       for text, shots in zip(texts, plans)]
            store.save(round_index, replies)
        for reply in replies:
            out.attempts += 1
            for text in parse(reply["raw"]):
                if len(out.kept) >= params.count:
                    break
                out.candidates += 1
                reason = instruction_filter.check(text)
                if reason:
                    out.reasons[reason] += 1
                    out.dropped.append({"text": text, "reason": reason})
                    continue
                instruction_filter.add(text)
                out.kept.append({"id": id_prefix.format(len(out.kept)), "text": text,
                                 "shots": reply["shots"]})
        if on_round is not None:
            on_round(round_index, out)
    out.resumed = store.resumed
    return out
