"""vLLM engine: offline `vllm.LLM`; the n samples of a prompt share one prefill, prefix caching on.

Every prompt gets its own sampling seed (derived from `Sampling.seed` and its position), so the
output of a call depends only on its inputs, not on batching or on what ran before: a resumed
shard reproduces an uninterrupted run. Build it only under `if __name__ == "__main__"` (the
`selfreward` command is such an entry point): vLLM starts worker processes with spawn.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from pathlib import Path

from ...config.errors import UserError
from ...core.models import ensure_chat_template
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

# On CPU vLLM reads gpu_memory_utilization as a fraction of *host* memory; a fixed KV cache is
# safer next to other processes. VLLM_CPU_KVCACHE_SPACE (GiB) overrides it, as in vLLM.
CPU_KV_CACHE_GIB = 2
SEED_SPACE = 2**62
# Extra `vllm.LLM` keyword arguments as JSON, for machine tuning that does not change results
# (e.g. {"enforce_eager": true} skips torch.compile: a faster start, slower decoding).
ARGS_ENV = "SELFREWARD_VLLM_ARGS"


def prompt_seed(seed: int, index: int, samples: int) -> int:
    """Seed of the index-th prompt of a call; vLLM gives its j-th sample seed + j."""
    return (seed * 1_000_003 + index * samples) % SEED_SPACE


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_dir: str, *, dtype: str = "auto", max_model_len: int = 2048,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 enable_prefix_caching: bool = True, seed: int = 0, **_: object) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        if not (Path(model_dir) / "config.json").is_file():
            raise UserError("not a model checkpoint (no config.json); did the previous stage run?",
                            file=str(model_dir))
        self.tok = _tokenizer(model_dir)
        ctx = _context_length(model_dir)
        self.max_model_len = min(max_model_len, ctx) if ctx else max_model_len
        self.eos_ids = stop_token_ids(self.tok)
        kwargs: dict = {}
        if current_platform.is_cpu():
            kv_gib = int(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or CPU_KV_CACHE_GIB)
            # Chunked prefill rewinds per-request generators, which CPU generators cannot do
            # ("CPU Generator does not use offset"); whole-prompt prefill keeps seeds usable.
            kwargs.update(kv_cache_memory_bytes=kv_gib * 2**30, enable_chunked_prefill=False,
                          max_num_batched_tokens=max(self.max_model_len, 4096))
        kwargs.update(_env_args())
        t0 = time.perf_counter()
        self.llm = LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed,
                       max_model_len=self.max_model_len,
                       tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization,
                       enable_prefix_caching=enable_prefix_caching, **kwargs)
        self.stats = EngineStats(extra={"startup_seconds": round(time.perf_counter() - t0, 2)})
        log.info("vLLM engine ready in %.1f s (max_model_len %d)",
                 self.stats.extra["startup_seconds"], self.max_model_len)

    def _run(self, seqs: list[list[int]], params) -> list:
        prompts = [{"prompt_token_ids": s} for s in seqs]
        # No vLLM progress bar: the shard runner reports items/s and tokens/s (~1 % faster).
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        from vllm import SamplingParams

        t0 = time.perf_counter()
        seqs = encode_chats(self.tok, chats, self.max_model_len - sampling.max_new_tokens,
                            self.stats)
        self.stats.prompt_tokens_x_samples += sum(map(len, seqs)) * sampling.n
        greedy = sampling.temperature <= 0
        # Greedy samples are all alike and vLLM refuses n > 1 for them: decode once, repeat.
        n = 1 if greedy else sampling.n
        stops = [] if sampling.ignore_eos else self.eos_ids
        params = [SamplingParams(
            n=n, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_new_tokens,
            stop_token_ids=stops, ignore_eos=sampling.ignore_eos, skip_special_tokens=True,
            seed=prompt_seed(sampling.seed, i, n)) for i in range(len(seqs))]
        results = []
        for out in self._run(seqs, params):
            samples = sorted(out.outputs, key=lambda c: c.index)
            self.stats.generated_tokens += sum(count_generated(list(c.token_ids), stops)
                                               for c in samples)
            texts = [c.text.strip() for c in samples]
            results.append(texts * (sampling.n // n))
        self.stats.prompts += len(seqs)
        self.stats.seconds += time.perf_counter() - t0
        return results

    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        from vllm import SamplingParams

        t0 = time.perf_counter()
        prefix_ids, digit_ids = digit_prefix_ids(self.tok, assistant_prefix)
        base = encode_chats(self.tok, chats, self.max_model_len - len(prefix_ids) - 1, self.stats)
        self.stats.prompt_tokens_x_samples += sum(map(len, base))
        # logprob_token_ids returns the raw log-probabilities of exactly these tokens, however
        # unlikely: no top-k cut-off can drop a digit.
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=digit_ids)
        out = [_renormalise(o.outputs[0].logprobs[0], digit_ids)
               for o in self._run([s + prefix_ids for s in base], params)]
        self.stats.prompts += len(base)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def count_tokens(self, text: str) -> int:
        return count_text_tokens(self.tok, text)

    def close(self) -> None:
        """Shut the engine's worker processes down and free its memory."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _renormalise(logprobs: dict, digit_ids: list[int]) -> list[float]:
    """P(digit) / sum of P(digits) from vLLM's {token_id: Logprob} of one position."""
    values = [logprobs[d].logprob if d in logprobs else -math.inf for d in digit_ids]
    top = max(values)
    if top == -math.inf:
        raise RuntimeError("vLLM returned no log-probability for any digit token")
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def _env_args() -> dict:
    """Extra LLM kwargs from $SELFREWARD_VLLM_ARGS (a JSON object)."""
    text = os.environ.get(ARGS_ENV, "").strip()
    if not text:
        return {}
    try:
        args = json.loads(text)
    except ValueError as exc:
        raise UserError(f"${ARGS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise UserError(f"${ARGS_ENV} must be a JSON object of vllm.LLM arguments")
    return args


def _tokenizer(model_dir: str):
    """The checkpoint's tokenizer with a chat template, as HFEngine renders prompts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tok)
    return tok


def _context_length(model_dir: str) -> int | None:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None)
