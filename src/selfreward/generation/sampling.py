"""N sampled answers per prompt with the `responses` settings: the loop's candidates (stage
responses) and the verification gap's answers (stage verify) come from this one function."""

from __future__ import annotations

from pathlib import Path

from ..config.params import ResponsesParams
from ..core.shards import item_seed, run_sharded
from .engines import Sampling

# a constrained prompt keeps its IFEval fields, for the judge's checkers (docs/constraints.md)
CONSTRAINT_FIELDS = ("instruction_id_list", "kwargs")


def sample_responses(engine, rows: list[dict], params: ResponsesParams, shard_size: int,
                     output: str | Path, key: str | dict,
                     max_new_tokens: int | None = None) -> tuple[list[dict], dict]:
    """`params.n` sampled answers for each `{id, prompt}` row; shard k is seeded with (seed, k).
    `max_new_tokens` overrides params.max_new_tokens."""

    def sample_shard(chunk: list[dict], index: int) -> list[dict]:
        chats = [[{"role": "user", "content": row["prompt"]}] for row in chunk]
        answers = engine.generate(chats, Sampling(
            n=params.n, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=max_new_tokens or params.max_new_tokens,
            seed=item_seed(params.seed, index)))
        return [{"id": row["id"], "prompt": row["prompt"], "responses": texts,
                 **{k: row[k] for k in CONSTRAINT_FIELDS if k in row}}
                for row, texts in zip(chunk, answers)]

    return run_sharded(rows, output, key, shard_size, sample_shard, desc="responses",
                       stats=engine.stats)
