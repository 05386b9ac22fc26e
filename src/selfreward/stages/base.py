"""Stage `base`: make M0 a standard HF checkpoint (embedded SmolLM2 GGUF, local dir or hub id)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import BaseParams
from ..core.io import atomic_dir, remove_outputs, write_json
from ..core.models import add_chat_template, load_base, save_checkpoint

log = logging.getLogger(__name__)


def make_base(params: BaseParams, out_dir: str | Path, metrics_path: str | Path) -> dict:
    """Convert/copy the base model to `out_dir` in `params.dtype`; write its size as metrics."""
    remove_outputs(out_dir, metrics_path)
    model, tok = load_base(params.model, params.revision)
    added = add_chat_template(model, tok)
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(model, tok, tmp, params.dtype)
    size = sum(f.stat().st_size for f in Path(out_dir).iterdir() if f.is_file())
    metrics = {"parameters": sum(t.numel() for t in model.parameters()),
               "checkpoint_mb": round(size / 2**20, 2), "dtype": params.dtype,
               "source": params.model,
               "chat_template_tokens_added": added}
    write_json(metrics_path, metrics)
    log.info("base model written to %s: %s", out_dir, metrics)
    return metrics
