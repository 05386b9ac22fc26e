"""The generation-engine interface shared by the HF and vLLM engines, and their common helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

DIGITS = [str(d) for d in range(6)]


@dataclass
class Sampling:
    """How to sample: temperature 0 means greedy. `seed` makes a call reproducible.

    `ignore_eos` keeps generating to `max_new_tokens` (fixed-length work for benchmarks).
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    ignore_eos: bool = False


@dataclass
class EngineStats:
    """Counters a stage writes into its metrics."""

    prompts: int = 0
    generated_tokens: int = 0
    # Prompt tokens as encoded, once per prompt, and times the samples drawn from each (what an
    # engine without prefix caching prefills): the cost sheet's "tokens read" (docs/gpu.md).
    prompt_tokens: int = 0
    prompt_tokens_x_samples: int = 0
    truncated_prompts: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        tps = self.generated_tokens / self.seconds if self.seconds else 0.0
        return {"prompts": self.prompts, "generated_tokens": self.generated_tokens,
                "prompt_tokens": self.prompt_tokens,
                "prompt_tokens_x_samples": self.prompt_tokens_x_samples,
                "truncated_prompts": self.truncated_prompts, "seconds": round(self.seconds, 3),
                "tokens_per_second": round(tps, 2), **self.extra}


class Engine(Protocol):
    name: str
    stats: EngineStats

    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        """For each chat, `sampling.n` assistant replies (strings, special tokens removed)."""

    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        """For each chat continued by `assistant_prefix`, P(next token = '0'..'5'), renormalised."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the engine's own tokenizer (no special tokens)."""

    def close(self) -> None:
        """Free the model (GPU memory) before the next stage loads another."""


def expected_score(probs: list[float]) -> float:
    """Expected value of a distribution over the scores 0..5."""
    return float(sum(d * p for d, p in enumerate(probs)))


def encode_chats(tok, chats: list[list[dict]], limit: int, stats: EngineStats) -> list[list[int]]:
    """Chat-template and tokenize each conversation, keeping at most its last `limit` tokens.

    Truncating from the left keeps the end of the prompt (the question, the generation prompt);
    each truncation is counted in `stats` instead of failing the stage.
    """
    limit = max(8, limit)
    out = []
    for chat in chats:
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            stats.truncated_prompts += 1
            ids = ids[-limit:]
        stats.prompt_tokens += len(ids)
        out.append(ids)
    return out


def count_text_tokens(tok, text: str) -> int:
    """Tokens of `text` (no special tokens added): what answer lengths are measured in."""
    return len(tok(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tok) -> list[int]:
    """EOS and ChatML's <|im_end|>: either ends an assistant turn."""
    ids = {tok.eos_token_id}
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def count_generated(tokens: list[int], stops: list[int]) -> int:
    """Tokens before the first stop token (the stop token itself is not counted)."""
    return next((k for k, t in enumerate(tokens) if t in stops), len(tokens))


def digit_prefix_ids(tok, prefix: str) -> tuple[list[int], list[int]]:
    """Tokens of `prefix` that every `prefix + d` shares, and the single token of each digit d.

    A tokenizer may merge the prefix's trailing space with the digit; the shared part is then
    the prompt, and the merged tokens are the candidates.
    """
    full = [tok(prefix + d, add_special_tokens=False)["input_ids"] for d in DIGITS]
    shared = 0
    while all(len(f) > shared for f in full) and len({f[shared] for f in full}) == 1:
        shared += 1
    if any(len(f) != shared + 1 for f in full):
        raise RuntimeError(f"digits after {prefix!r} are not single tokens for this tokenizer; "
                           "use judge.mode=sample")
    return full[0][:shared], [f[shared] for f in full]
