"""Stage `base`: make M0 a standard HF checkpoint (embedded SmolLM2 GGUF, local dir or hub id)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import atomic_dir
from ..core.models import add_chat_template, load_base, save_checkpoint
from ..core.outputs import stage_outputs

log = logging.getLogger(__name__)


def run_base(*, params: Params, out_dir: str | Path, metrics_path: str | Path) -> dict:
    """Convert/copy base.model to `out_dir` in base.dtype; write its size as metrics."""
    base = params.base
    with stage_outputs(out_dir, metrics=metrics_path) as outputs:
        model, tokenizer = load_base(base.model, base.revision)
        added = add_chat_template(model, tokenizer)
        with atomic_dir(out_dir) as tmp:
            save_checkpoint(model, tokenizer, tmp, base.dtype)
        size = sum(f.stat().st_size for f in Path(out_dir).iterdir() if f.is_file())
        outputs.metrics.update({"parameters": sum(t.numel() for t in model.parameters()),
                                "checkpoint_mb": round(size / 2**20, 2), "dtype": base.dtype,
                                "source": base.model, "chat_template_tokens_added": added})
    log.info("base model written to %s: %s", out_dir, outputs.metrics)
    return outputs.metrics
