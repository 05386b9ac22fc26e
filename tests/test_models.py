"""Stage base: the embedded GGUF becomes a standard checkpoint; local dirs work; bad paths fail."""

import json

import pytest
import torch

from selfreward.config.errors import UserError
from selfreward.config.params import BaseParams, Params
from selfreward.stages.base import run_base


def test_local_dir_base_is_saved_in_the_requested_dtype(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = run_base(params=Params(base=BaseParams(model=str(tiny_model), dtype="bfloat16")),
                       out_dir=tmp_path / "m0", metrics_path=tmp_path / "base.json")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m0")
    assert model.dtype == torch.bfloat16
    tok = AutoTokenizer.from_pretrained(tmp_path / "m0")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert json.loads((tmp_path / "base.json").read_text()) == metrics
    assert metrics["dtype"] == "bfloat16" and metrics["parameters"] > 0


def test_bad_base_model_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        run_base(params=Params(base=BaseParams(model=str(tmp_path / "empty"))),
                 out_dir=tmp_path / "m0", metrics_path=tmp_path / "b.json")
    with pytest.raises(UserError, match="GGUF file not found"):
        run_base(params=Params(base=BaseParams(model=str(tmp_path / "x.gguf"))),
                 out_dir=tmp_path / "m0", metrics_path=tmp_path / "b.json")
    assert not (tmp_path / "m0").exists() and not (tmp_path / "b.json").exists()


@pytest.mark.slow
def test_embedded_smollm2_converts_to_a_working_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "m0"
    metrics = run_base(params=Params(), out_dir=out, metrics_path=tmp_path / "base.json")
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


def _model_without_chat_template(out):
    """A tiny Llama whose word-level tokenizer has no chat template and no ChatML tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "hello", "world", "user", "assistant", "hi"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_checkpoint_without_chat_template_gets_chatml_as_real_special_tokens(tmp_path):
    """Before, ChatML was set as a template only: `<|im_start|>` then tokenized as plain text
    (here: unknown pieces). Now the markers are added special tokens with their own embeddings."""
    from selfreward.core.models import CHATML_TOKENS, ensure_chat_template, load_model

    source = _model_without_chat_template(tmp_path / "plain")
    metrics = run_base(params=Params(base=BaseParams(model=str(source))), out_dir=tmp_path / "m0",
                       metrics_path=tmp_path / "base.json")
    assert metrics["chat_template_tokens_added"] == list(CHATML_TOKENS)
    model, tok = load_model(tmp_path / "m0")
    ids = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=True,
                                  add_generation_prompt=True, return_dict=False)
    markers = [tok.convert_tokens_to_ids(t) for t in CHATML_TOKENS]
    assert tok.unk_token_id not in markers and len(set(markers)) == 2
    assert ids.count(markers[0]) == 2 and ids.count(markers[1]) == 1
    assert model.get_input_embeddings().num_embeddings >= len(tok)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([ids])).logits).all()
    # A tokenizer that cannot hold ChatML is refused by the engines' loader, not rendered wrong.
    from transformers import AutoTokenizer

    with pytest.raises(UserError, match="selfreward base"):
        ensure_chat_template(AutoTokenizer.from_pretrained(source))
