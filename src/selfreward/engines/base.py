"""The generation-engine interface shared by the HF and vLLM engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

DIGITS = [str(d) for d in range(6)]


@dataclass
class Sampling:
    """How to sample: temperature 0 means greedy. `seed` makes a call reproducible."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0


@dataclass
class EngineStats:
    """Counters a stage writes into its metrics."""

    prompts: int = 0
    generated_tokens: int = 0
    truncated_prompts: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        tps = self.generated_tokens / self.seconds if self.seconds else 0.0
        return {"prompts": self.prompts, "generated_tokens": self.generated_tokens,
                "truncated_prompts": self.truncated_prompts, "seconds": round(self.seconds, 3),
                "tokens_per_second": round(tps, 2), **self.extra}


class Engine(Protocol):
    name: str
    stats: EngineStats

    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        """For each chat, `sampling.n` assistant replies (strings, special tokens removed)."""

    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        """For each chat continued by `assistant_prefix`, P(next token = '0'..'5'), renormalised."""

    def close(self) -> None:
        """Free the model (GPU memory) before the next stage loads another."""


def expected_score(probs: list[float]) -> float:
    """Expected value of a distribution over the scores 0..5."""
    return float(sum(d * p for d, p in enumerate(probs)))
