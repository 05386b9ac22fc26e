"""Shared fixtures: a tiny random Llama with the SmolLM2 tokenizer, built offline once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# External test data (the 175 official Self-Instruct seed tasks, Apache-2.0): present beside the
# project in CI, absent in a user's clone; never copied into the repository.
SHARED_SEED_TASKS = ROOT.parent / "shared" / "data" / "self_instruct_seed_tasks.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama (hidden 32) with the embedded SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfreward.core.models import embedded_gguf, ensure_chat_template

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ensure_chat_template(tok)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a tiny random checkpoint (read-only: copy it before training into it)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def official_seed_tasks() -> Path:
    """Path of the 175 official Self-Instruct seed tasks; the test skips where they are absent."""
    if not SHARED_SEED_TASKS.is_file():
        pytest.skip(f"external test data absent: {SHARED_SEED_TASKS} (the 175 official "
                    "Self-Instruct seed tasks; see docs/data.md)")
    return SHARED_SEED_TASKS


@pytest.fixture
def write_jsonl(tmp_path):
    def _write(name: str, rows: list, raw_lines: list[str] | None = None) -> Path:
        path = tmp_path / name
        lines = [json.dumps(r) for r in rows] + (raw_lines or [])
        path.write_text("\n".join(lines) + ("\n" if lines else ""))
        return path

    return _write


SCRIPT_WORDS = ("apple river stone cloud green music table window garden yellow silver ocean "
                "forest candle paper bridge winter summer letter planet travel kitchen budget "
                "energy health doctor market coffee mountain station").split()


def build_scripted_model(out: Path) -> Path:
    """A tiny Llama whose weights are set by hand to act as a bigram sampler over a script:
    after any token it writes a few random words, then '.Score: d' with a random digit 0-5.

    Attention and MLP outputs are zeroed, so the next-token distribution depends only on the last
    token's class. Sampled judgments therefore parse (varying scores) and generated prompts pass
    the filters: what the end-to-end tests of the sample-mode judge need from a model that small.
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_model(out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, tie_word_embeddings=False)
    model.config.tie_word_embeddings = False

    def single(text: str) -> int:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (text, ids)
        return ids[0]

    words = [i for w in SCRIPT_WORDS if len(ids := tok(" " + w, add_special_tokens=False)
                                             ["input_ids"]) == 1 for i in ids]
    dot, score, colon = single("."), single("Score"), single(":")
    space = tok("Score: 1", add_special_tokens=False)["input_ids"][-2]
    digits = [tok("Score: " + str(d), add_special_tokens=False)["input_ids"][-1] for d in range(6)]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    classes = {"start": 0, "dot": 1, "score": 2, "colon": 3, "space": 4, "digit": 5}
    hidden = model.config.hidden_size
    scale = math.sqrt(hidden)  # RMSNorm maps a one-hot of any size to sqrt(hidden) * e_c
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, classes["start"]] = 1.0
        for ids, c in ((words, "start"), ([dot], "dot"), ([score], "score"), ([colon], "colon"),
                       ([space], "space"), (digits, "digit")):
            for i in ids:
                emb[i].zero_()
                emb[i, classes[c]] = 1.0
        head = model.lm_head.weight
        head.fill_(0.0)
        head[:, :6] = -40.0 / scale  # every other token: very unlikely from every class

        def allow(c: str, targets: list[int], logit: float = 0.0) -> None:
            for t in targets:
                head[t, classes[c]] = logit / scale

        allow("start", words)
        allow("start", [dot], math.log(len(words) / 4))  # about one word in five ends the run
        allow("dot", [score])
        allow("score", [colon])
        allow("colon", [space])
        allow("space", digits)
        allow("digit", [end])
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory) -> Path:
    return build_scripted_model(tmp_path_factory.mktemp("scripted") / "model")
