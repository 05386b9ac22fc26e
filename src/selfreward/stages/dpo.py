"""Stage `dpo` (M_t -> M_t+1): TRL DPOTrainer on the self-rewarded pairs, reference = M_t.

With dpo.distill.weight > 0 the loss adds a token-level KL to a teacher on the chosen and the
rejected answers (training/distill.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..io import read_jsonl, remove_outputs, require
from ..models import load_model
from ..params import DpoParams
from ..shards import fingerprint, model_fingerprint
from ..training.common import (
    finish_training,
    mixed_precision,
    trainable_setup,
    trainer_kwargs,
    training_workdir,
)
from ..training.distill import distill_trainer, load_teacher

log = logging.getLogger(__name__)


def load_pairs(path: str) -> list[dict]:
    """Validate TRL conversational preference rows: prompt, chosen, rejected (message lists)."""
    rows = []
    for line, obj in read_jsonl(path):
        row = {}
        for key in ("prompt", "chosen", "rejected"):
            msgs = require(obj, key, list, file=path, line=line)
            if not msgs or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                   and isinstance(m.get("role"), str) for m in msgs):
                raise UserError("expected a non-empty list of {role, content} messages",
                                file=path, line=line, field=key)
            row[key] = [{"role": m["role"], "content": m["content"]} for m in msgs]
        rows.append(row)
    return rows


def run_dpo(p: DpoParams, model_dir: str | Path, pairs_path: str, out_dir: str | Path,
            metrics_path: str | Path, plot_path: str | Path | None, dtype: str) -> dict:
    """Train M_t+1 from M_t with DPO; the frozen reference is a copy of M_t."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    remove_outputs(out_dir, metrics_path)
    rows = load_pairs(pairs_path)
    distill = p.distill.weight > 0
    key = fingerprint(p, model_fingerprint(model_dir), rows,
                      model_fingerprint(p.distill.teacher) if distill else None)
    model, tok = load_model(model_dir, dtype="float32", for_training=True)
    teacher = load_teacher(p.distill, tok) if distill else None
    peft_config, trainable = trainable_setup(model, p, "dpo")
    ref = None
    if not p.lora.enabled:  # with LoRA, TRL uses the adapter-disabled base as reference
        ref, _ = load_model(model_dir, dtype="float32")
    with training_workdir(p, out_dir, key) as (work, resume):
        config = DPOConfig(**trainer_kwargs(p, work), beta=p.beta, loss_type=p.loss_type,
                           max_length=p.max_length, dataset_num_proc=None)
        kwargs = {"model": model, "ref_model": ref, "args": config,
                  "train_dataset": Dataset.from_list(rows), "processing_class": tok,
                  "peft_config": peft_config}
        if distill:
            trainer = distill_trainer(teacher, p.distill, **kwargs)
            log.info("DPO + distillation on %d pairs (beta=%s, KL weight %s to %s)", len(rows),
                     p.beta, p.distill.weight, p.distill.teacher)
        else:
            trainer = DPOTrainer(**kwargs)
            log.info("DPO on %d pairs (beta=%s)", len(rows), p.beta)
        trainer.train(resume_from_checkpoint=resume)
        extra = {"pairs": len(rows), "beta": p.beta, "precision": mixed_precision(p.precision),
                 **trainable}
        if distill:
            extra.update(distill_weight=p.distill.weight, distill_teacher=p.distill.teacher)
        return finish_training(trainer, tok, model_dir, out_dir, dtype, metrics_path, plot_path,
                               extra)
