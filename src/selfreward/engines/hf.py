"""Batched Hugging Face engine: left padding, length-sorted batches, n samples share a batch."""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from ..models import load_model
from .base import DIGITS, EngineStats, Sampling

log = logging.getLogger(__name__)


class HFEngine:
    name = "hf"

    def __init__(self, model_dir: str, *, dtype: str = "auto", batch_size: int = 16,
                 max_model_len: int = 2048, **_: object) -> None:
        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        self.model, self.tok = load_model(model_dir, dtype=dtype)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.tok.padding_side = "left"
        self.batch_size = batch_size
        ctx = getattr(self.model.config, "max_position_embeddings", None) or max_model_len
        self.max_model_len = min(max_model_len, ctx)
        eos = {self.tok.eos_token_id}
        im_end = self.tok.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tok.unk_token_id:
            eos.add(im_end)
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.stats = EngineStats()
        self._digit_cache: dict[str, tuple[int, list[int]]] = {}

    # -- tokenisation -------------------------------------------------------------------------
    def _encode(self, chats: list[list[dict]], suffix: str = "", room: int = 0) -> list[list[int]]:
        """Chat-template each conversation; truncate from the left to leave `room` tokens."""
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 + suffix for c in chats]
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        limit = max(8, self.max_model_len - room)
        out = []
        for seq in ids:
            if len(seq) > limit:
                self.stats.truncated_prompts += 1
                seq = seq[-limit:]
            out.append(seq)
        return out

    def _pad(self, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    # -- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        t0 = time.perf_counter()
        seqs = self._encode(chats, room=sampling.max_new_tokens)
        torch.manual_seed(sampling.seed)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        per_batch = max(1, self.batch_size // sampling.n)
        results: list[list[str]] = [[] for _ in seqs]
        greedy = sampling.temperature <= 0
        bar = tqdm(total=len(seqs) * sampling.n, desc="generate", unit="seq", leave=False,
                   disable=len(seqs) <= per_batch)
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            batch = self._pad([seqs[i] for i in idx])
            out = self.model.generate(
                **batch, do_sample=not greedy, temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p, top_k=None if greedy else 0,
                max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                eos_token_id=self.eos_ids, pad_token_id=self.tok.pad_token_id)
            new = out[:, batch["input_ids"].shape[1]:]
            for row, tokens in enumerate(new.tolist()):
                n_tok = next((k for k, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
                self.stats.generated_tokens += n_tok
                text = self.tok.decode(tokens[:n_tok], skip_special_tokens=True).strip()
                results[idx[row // sampling.n]].append(text)
            bar.update(len(idx) * sampling.n)
            bar.set_postfix(tok_s=f"{self.stats.generated_tokens / (time.perf_counter() - t0):.0f}")
        bar.close()
        self.stats.prompts += len(seqs)
        self.stats.seconds += time.perf_counter() - t0
        return results

    # -- logprob judging ----------------------------------------------------------------------
    def _digit_ids(self, prefix: str) -> tuple[int, list[int]]:
        """Tokens shared by prefix+'0'..'5', and each digit's single next token."""
        if prefix not in self._digit_cache:
            full = [self.tok(prefix + d, add_special_tokens=False)["input_ids"] for d in DIGITS]
            shared = 0
            while all(len(f) > shared for f in full) and len({f[shared] for f in full}) == 1:
                shared += 1
            if any(len(f) != shared + 1 for f in full):
                raise RuntimeError(f"digits after {prefix!r} are not single tokens for this "
                                   "tokenizer; use judge.mode=sample")
            self._digit_cache[prefix] = (shared, [f[shared] for f in full])
        return self._digit_cache[prefix]

    @torch.inference_mode()
    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        t0 = time.perf_counter()
        shared, digit_ids = self._digit_ids(assistant_prefix)
        prefix_ids = self.tok(assistant_prefix, add_special_tokens=False)["input_ids"][:shared]
        base = self._encode(chats, room=len(prefix_ids) + 1)
        seqs = [s + prefix_ids for s in base]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out: list[list[float]] = [[] for _ in seqs]
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self._pad([seqs[i] for i in idx])
            logits = self.model(**batch).logits[:, -1, :].float()
            probs = torch.softmax(logits[:, digit_ids], dim=-1)
            for row, i in enumerate(idx):
                out[i] = probs[row].tolist()
        self.stats.prompts += len(seqs)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
