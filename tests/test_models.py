"""Stage base: the embedded GGUF becomes a standard checkpoint; local dirs work; bad paths fail."""

import json

import pytest
import torch

from selfreward.errors import UserError
from selfreward.params import BaseParams
from selfreward.stages.base import make_base


def test_local_dir_base_is_saved_in_the_requested_dtype(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = make_base(BaseParams(model=str(tiny_model), dtype="bfloat16"), tmp_path / "m0",
                        tmp_path / "base.json")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m0")
    assert model.dtype == torch.bfloat16
    tok = AutoTokenizer.from_pretrained(tmp_path / "m0")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert json.loads((tmp_path / "base.json").read_text()) == metrics
    assert metrics["dtype"] == "bfloat16" and metrics["parameters"] > 0


def test_bad_base_model_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        make_base(BaseParams(model=str(tmp_path / "empty")), tmp_path / "m0", tmp_path / "b.json")
    with pytest.raises(UserError, match="GGUF file not found"):
        make_base(BaseParams(model=str(tmp_path / "x.gguf")), tmp_path / "m0", tmp_path / "b.json")
    assert not (tmp_path / "m0").exists()


@pytest.mark.slow
def test_embedded_smollm2_converts_to_a_working_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "m0"
    metrics = make_base(BaseParams(), out, tmp_path / "base.json")
    assert 130e6 < metrics["parameters"] < 140e6 and metrics["checkpoint_mb"] < 300
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer and answer.isascii() and len(answer.split()) >= 3
