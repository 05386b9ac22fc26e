"""Batched Hugging Face engine: left padding, length-sorted batches, n samples share a batch."""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from ...core.models import load_model
from .base import (
    EngineStats,
    Sampling,
    count_generated,
    count_text_tokens,
    digit_prefix_ids,
    encode_chats,
    stop_token_ids,
)

log = logging.getLogger(__name__)


def auto_dtype() -> str:
    """bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else float32."""
    if torch.cuda.is_available():
        return "bfloat16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return "bfloat16" if native is not None and native() else "float32"


class NucleusSampler(LogitsProcessor):
    """Samples each row's next token (temperature, top-p) and leaves only that token finite, so
    `generate` runs its cheap greedy step.

    HF's own sampler sorts the whole vocabulary for top-p and draws one exponential per
    vocabulary entry, per row and step: a third of a CPU decoding step at batch 64. Here only
    the `candidates` most probable tokens are sorted and drawn from; a row whose nucleus reaches
    past them is decided over the whole vocabulary. The nucleus rule is HF's: keep a token while
    the more probable ones hold less than top_p of the mass. HF runs custom processors after
    its own (min_new_tokens), so suppressed tokens stay suppressed.
    """

    def __init__(self, temperature: float, top_p: float, candidates: int = 256) -> None:
        self.temperature, self.top_p, self.candidates = temperature, top_p, candidates

    def _draw(self, logits: torch.Tensor, candidates: int) -> torch.Tensor:
        """One token id per row from the nucleus among its `candidates` best tokens."""
        values, index = logits.topk(candidates, dim=-1)
        probs = torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True))
        keep = probs.cumsum(-1) - probs < self.top_p
        keep[:, 0] = True
        choice = torch.multinomial(probs.masked_fill(~keep, 0.0), 1)
        token = index.gather(1, choice).flatten()
        if candidates < logits.shape[-1]:
            wide = keep[:, -1].nonzero().flatten()
            if len(wide):
                token[wide] = self._draw(logits[wide], logits.shape[-1])
        return token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_p >= 1:
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1).flatten()
        else:
            token = self._draw(logits, min(self.candidates, logits.shape[-1]))
        out = torch.full_like(scores, -torch.inf)
        out[torch.arange(len(token)), token] = 0.0
        return out


class HFEngine:
    name = "hf"

    def __init__(self, model_dir: str, *, dtype: str = "auto", batch_size: int = 16,
                 score_batch_size: int = 16, max_model_len: int = 2048, **_: object) -> None:
        if dtype == "auto":
            dtype = auto_dtype()
        self.model, self.tok = load_model(model_dir, dtype=dtype)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.tok.padding_side = "left"
        self.batch_size = batch_size
        self.score_batch_size = score_batch_size
        ctx = getattr(self.model.config, "max_position_embeddings", None) or max_model_len
        self.max_model_len = min(max_model_len, ctx)
        self.eos_ids = stop_token_ids(self.tok)
        # the dtype `auto` resolved to here: bf16 on CPUs with AVX512-BF16, else fp32 (metrics)
        self.stats = EngineStats(extra={"dtype": dtype})

    def _attention(self, decoding: bool) -> None:
        """On CPU, eager attention for decoding and SDPA for prefill-only scoring.

        PyTorch's CPU SDPA kernel is slow for one-token decoding steps (eager decodes SmolLM2
        ~25 % faster at batch 64) but fast for long prompts (~45 % less time for judging).
        """
        kind = "eager" if decoding and self.device == "cpu" else "sdpa"
        if self.model.config._attn_implementation != kind:
            self.model.set_attn_implementation(kind)

    def _pad(self, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.inference_mode()
    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        t0 = time.perf_counter()
        seqs = encode_chats(self.tok, chats, self.max_model_len - sampling.max_new_tokens,
                            self.stats)
        self.stats.prompt_tokens_x_samples += sum(map(len, seqs)) * sampling.n
        torch.manual_seed(sampling.seed)
        self._attention(decoding=True)
        # Longest first, so each batch pads little and an out-of-memory error comes early.
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        greedy = sampling.temperature <= 0
        # Greedy samples are all alike (and HF refuses n > 1 for them): decode once, repeat.
        n = 1 if greedy else sampling.n
        per_batch = max(1, self.batch_size // n)
        results: list[list[str]] = [[] for _ in seqs]
        stops = [] if sampling.ignore_eos else self.eos_ids
        sampler = LogitsProcessorList(
            [] if greedy else [NucleusSampler(sampling.temperature, sampling.top_p)])
        bar = tqdm(total=len(seqs) * n, desc="generate", unit="seq", leave=False,
                   disable=len(seqs) <= per_batch)
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            # The n samples of a prompt are n rows: the sampler draws each row independently.
            batch = self._pad([seqs[i] for i in idx for _ in range(n)])
            out = self.model.generate(
                **batch, do_sample=False, temperature=None, top_p=None, top_k=None,
                logits_processor=sampler, max_new_tokens=sampling.max_new_tokens,
                min_new_tokens=sampling.max_new_tokens if sampling.ignore_eos else None,
                eos_token_id=self.eos_ids, pad_token_id=self.tok.pad_token_id)
            new = out[:, batch["input_ids"].shape[1]:]
            for row, tokens in enumerate(new.tolist()):
                n_tok = count_generated(tokens, stops)
                self.stats.generated_tokens += n_tok
                text = self.tok.decode(tokens[:n_tok], skip_special_tokens=True).strip()
                results[idx[row // n]].append(text)
            bar.update(len(idx) * n)
            bar.set_postfix(tok_s=f"{self.stats.generated_tokens / (time.perf_counter() - t0):.0f}")
        bar.close()
        self.stats.prompts += len(seqs)
        self.stats.seconds += time.perf_counter() - t0
        return [texts * (sampling.n // n) for texts in results]

    @torch.inference_mode()
    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        t0 = time.perf_counter()
        prefix_ids, digit_ids = digit_prefix_ids(self.tok, assistant_prefix)
        base = encode_chats(self.tok, chats, self.max_model_len - len(prefix_ids) - 1, self.stats)
        self.stats.prompt_tokens_x_samples += sum(map(len, base))
        seqs = [s + prefix_ids for s in base]
        self._attention(decoding=False)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out: list[list[float]] = [[] for _ in seqs]
        for start in range(0, len(order), self.score_batch_size):
            idx = order[start:start + self.score_batch_size]
            batch = self._pad([seqs[i] for i in idx])
            # Only the last position's logits are needed: skip the vocab projection elsewhere.
            logits = self.model(**batch, logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits[:, digit_ids], dim=-1)
            for row, i in enumerate(idx):
                out[i] = probs[row].tolist()
        self.stats.prompts += len(seqs)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def count_tokens(self, text: str) -> int:
        return count_text_tokens(self.tok, text)

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
