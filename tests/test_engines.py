"""The HF engine on a tiny random model, and how the engine is chosen."""

from __future__ import annotations

import pytest
import torch

from selfreward.config.errors import UserError
from selfreward.config.params import EngineParams
from selfreward.generation import engines
from selfreward.generation.engines import make_engine, resolve_engine
from selfreward.generation.engines.base import (
    DIGITS,
    Sampling,
    digit_prefix_ids,
    encode_chats,
    expected_score,
)
from selfreward.generation.engines.hf import HFEngine, NucleusSampler, auto_dtype
from selfreward.judge.rubric import JUDGE_PREFIX, judge_messages

CHATS = [[{"role": "user", "content": "Name a colour."}],
         [{"role": "user", "content": "Write one long sentence about the sea and its waves."}],
         [{"role": "user", "content": "2+2?"}]]


@pytest.fixture(scope="module")
def engine(tiny_model):
    # float32: padded batches then match an unpadded pass to 1e-5 (bfloat16 only to ~1e-3).
    return HFEngine(str(tiny_model), batch_size=4, dtype="float32")


def test_generate_n_samples_per_chat_and_seeded(engine):
    s = Sampling(n=3, temperature=0.9, top_p=0.95, max_new_tokens=8, seed=7)
    first = engine.generate(CHATS, s)
    assert [len(o) for o in first] == [3, 3, 3]
    assert all(isinstance(t, str) for o in first for t in o)
    assert engine.generate(CHATS, s) == first
    other = engine.generate(CHATS, Sampling(n=3, temperature=0.9, top_p=0.95, max_new_tokens=8,
                                            seed=8))
    assert other != first


def _hf_nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """HF's own temperature + top-p warpers: which tokens stay possible."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits))
    return torch.isfinite(warped)


@pytest.mark.parametrize("k", [256, 3])  # 3: most rows' nucleus is wider, decided in full
def test_nucleus_sampler_draws_only_from_hfs_nucleus(k):
    torch.manual_seed(0)
    logits = torch.randn(64, 1000) * 3
    allowed = _hf_nucleus(logits.clone(), 0.7, 0.9)
    sampler = NucleusSampler(0.7, 0.9, candidates=k)
    for _ in range(20):
        out = sampler(None, logits.clone())
        token = out.argmax(-1)
        assert torch.isfinite(out).sum(-1).tolist() == [1] * 64
        assert allowed[torch.arange(64), token].all()


def test_nucleus_sampler_matches_the_distribution():
    logits = torch.full((4000, 50), -torch.inf)
    logits[:, :4] = torch.tensor([2.0, 1.0, 0.5, -3.0])
    torch.manual_seed(1)
    tokens = NucleusSampler(1.0, 0.9)(None, logits).argmax(-1)
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.5]), -1)  # token 3 lies outside the 0.9 nucleus
    freq = torch.bincount(tokens, minlength=50)[:4].float() / len(tokens)
    assert freq[3] == 0 and torch.allclose(freq[:3], p / p.sum(), atol=0.03)
    full = NucleusSampler(1.0, 1.0)(None, logits).argmax(-1)  # top_p 1: every token possible
    assert (full == 3).any()


def test_greedy_decodes_once_and_repeats_for_n(tiny_model):
    eng = HFEngine(str(tiny_model), batch_size=4)
    one = eng.generate(CHATS, Sampling(n=1, temperature=0.0, max_new_tokens=5, ignore_eos=True))
    assert eng.stats.generated_tokens == len(CHATS) * 5
    three = eng.generate(CHATS, Sampling(n=3, temperature=0.0, max_new_tokens=5,
                                         ignore_eos=True))
    assert three == [o * 3 for o in one]
    assert eng.stats.generated_tokens == 2 * len(CHATS) * 5  # decoded once, not three times


def test_ignore_eos_generates_exactly_max_new_tokens(tiny_model):
    eng = HFEngine(str(tiny_model), batch_size=4)
    eng.generate(CHATS, Sampling(n=2, temperature=1.0, max_new_tokens=6, ignore_eos=True))
    assert eng.stats.generated_tokens == len(CHATS) * 2 * 6
    assert eng.stats.prompts == len(CHATS)
    assert eng.stats.as_dict()["tokens_per_second"] > 0
    # Prompt tokens: once per prompt as encoded, and times the 2 samples (the cost sheet's reads).
    texts = [eng.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
             for c in CHATS]
    lengths = [len(eng.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert eng.stats.prompt_tokens == sum(lengths) > 0
    assert eng.stats.prompt_tokens_x_samples == 2 * sum(lengths)


def _manual_digit_probs(engine, chat) -> list[float]:
    """P(digit) from one unpadded forward pass over template + judge prefix."""
    prefix_ids, digit_ids = digit_prefix_ids(engine.tok, JUDGE_PREFIX)
    text = engine.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = engine.tok(text, add_special_tokens=False)["input_ids"] + prefix_ids
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits[digit_ids], dim=-1).tolist()


def test_digit_probs_match_an_unbatched_forward_pass(engine):
    chats = [judge_messages("What is 2+2?", "4"),
             judge_messages("Explain tides.", "The moon pulls the oceans; " * 12)]
    probs = engine.digit_probs(chats, JUDGE_PREFIX)
    assert len(probs) == 2
    for chat, p in zip(chats, probs):
        assert len(p) == len(DIGITS)
        assert sum(p) == pytest.approx(1.0, abs=1e-5)
        assert p == pytest.approx(_manual_digit_probs(engine, chat), abs=1e-5)
        assert 0.0 <= expected_score(p) <= 5.0


def test_digit_prefix_ids_are_single_distinct_tokens(engine):
    prefix_ids, digit_ids = digit_prefix_ids(engine.tok, JUDGE_PREFIX)
    assert len(set(digit_ids)) == 6
    decoded = engine.tok.decode(prefix_ids + [digit_ids[3]])
    assert decoded.replace(" ", "") == "Score:3"


def test_long_prompts_are_truncated_from_the_left_and_counted(tiny_model):
    eng = HFEngine(str(tiny_model), batch_size=4, max_model_len=64)
    long_chat = [{"role": "user", "content": "blah " * 300 + "final question?"}]
    out = eng.generate([long_chat, CHATS[0]], Sampling(n=1, max_new_tokens=4))
    assert len(out) == 2 and eng.stats.truncated_prompts == 1
    probs = eng.digit_probs([judge_messages("q " * 300, "a")], JUDGE_PREFIX)
    assert sum(probs[0]) == pytest.approx(1.0, abs=1e-5)
    assert eng.stats.truncated_prompts == 2
    ids = encode_chats(eng.tok, [long_chat], 20, eng.stats)[0]
    assert len(ids) == 20 and eng.tok.decode(ids).rstrip().endswith("assistant")


def test_make_engine_builds_hf(tiny_model):
    eng = make_engine(str(tiny_model), EngineParams(name="hf", batch_size=2), seed=3)
    assert eng.name == "hf" and eng.batch_size == 2
    assert str(eng.model.dtype) == f"torch.{auto_dtype()}"
    eng.close()


def test_auto_is_hf_without_cuda(monkeypatch):
    monkeypatch.setattr(engines, "_cuda", lambda: False)
    monkeypatch.setattr(engines, "_has_vllm", lambda: True)
    assert resolve_engine("auto") == "hf"
    assert resolve_engine("hf") == "hf"


def test_auto_is_vllm_with_cuda_and_an_importable_vllm(monkeypatch):
    monkeypatch.setattr(engines, "_cuda", lambda: True)
    monkeypatch.setattr(engines, "_has_vllm", lambda: True)
    monkeypatch.setattr(engines, "_vllm_imports", lambda: True)
    assert resolve_engine("auto") == "vllm"
    monkeypatch.setattr(engines, "_vllm_imports", lambda: False)
    assert resolve_engine("auto") == "hf"


def test_forced_vllm_without_vllm_names_the_install_target(monkeypatch):
    monkeypatch.setattr(engines, "_has_vllm", lambda: False)
    with pytest.raises(UserError, match="make setup-vllm-cpu") as err:
        resolve_engine("vllm")
    assert "engine.name" in str(err.value)


def test_forced_vllm_on_cpu_needs_the_cpu_build(monkeypatch):
    monkeypatch.setattr(engines, "_has_vllm", lambda: True)
    monkeypatch.setattr(engines, "_cuda", lambda: False)
    monkeypatch.setattr(engines, "_vllm_cpu_build", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU.*make setup-vllm-cpu"):
        resolve_engine("vllm")
    monkeypatch.setattr(engines, "_vllm_cpu_build", lambda: True)
    assert resolve_engine("vllm") == "vllm"
