"""What SFT and DPO share: trainer arguments from params, LoRA, metrics, saving the checkpoint."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ..io import atomic_dir, write_csv, write_json
from ..models import save_checkpoint
from ..params import LoraParams, TrainParams

log = logging.getLogger(__name__)


def trainer_kwargs(p: TrainParams, output_dir: str) -> dict:
    """TrainingArguments fields common to SFTConfig and DPOConfig."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": output_dir,
        "learning_rate": p.learning_rate,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr": p.final_learning_rate},
        "warmup_steps": p.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "num_train_epochs": p.epochs,
        "max_steps": p.max_steps,
        "per_device_train_batch_size": p.batch_size,
        "gradient_accumulation_steps": p.grad_accum,
        "weight_decay": p.weight_decay,
        "gradient_checkpointing": p.gradient_checkpointing,
        "seed": p.seed,
        "data_seed": p.seed,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "use_cpu": not cuda,
        "logging_steps": 1,
        "save_strategy": "steps" if p.save_steps > 0 else "no",
        "save_steps": p.save_steps if p.save_steps > 0 else 500,
        "save_total_limit": 1,
        "report_to": [],
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
        # Every trainable weight gets a gradient (LoRA freezes, it skips none): no extra DDP pass.
        "ddp_find_unused_parameters": False,
    }


@contextlib.contextmanager
def training_workdir(p: TrainParams, out_dir: str | Path,
                     key: str) -> Iterator[tuple[str, str | None]]:
    """(trainer output_dir, checkpoint to resume from or None).

    With save_steps > 0 the trainer's checkpoints live in `<out>.ckpt/` and survive a crash; a
    rerun with the same inputs and params (same `key`) resumes from the latest one. The directory
    is removed once the stage has finished.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if p.save_steps <= 0:
        with tempfile.TemporaryDirectory(prefix="train-") as work:
            yield work, None
        return
    work = Path(str(out_dir) + ".ckpt")
    marker = work / "key.txt"
    if work.exists() and (not marker.exists() or marker.read_text() != key):
        log.info("discarding %s: made with other inputs or params", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    last = get_last_checkpoint(str(work))
    if last:
        log.info("resuming training from %s", last)
    yield str(work), last
    shutil.rmtree(work, ignore_errors=True)


def lora_config(p: LoraParams):
    """A peft LoraConfig, or None when LoRA is off."""
    if not p.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout,
                      target_modules=p.target_modules, task_type="CAUSAL_LM")


def finish_training(trainer, tok, out_dir: str | Path, dtype: str, metrics_path: str | Path,
                    plot_path: str | Path | None, extra: dict) -> dict:
    """Merge LoRA if any, save the checkpoint atomically, write metrics and the loss curve.

    Under `accelerate launch` every rank calls this (gathering sharded weights is collective);
    only the main process writes, so the outputs exist once.
    """
    model = trained_model(trainer)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = [h for h in trainer.state.log_history if "train_loss" in h]
    metrics = {"steps": trainer.state.global_step,
               "num_processes": trainer.accelerator.num_processes, **extra}
    if summary:
        metrics["train_loss"] = _finite(summary[-1]["train_loss"])
        metrics["train_runtime_s"] = round(summary[-1].get("train_runtime", 0.0), 2)
    if history:
        metrics["final_loss"] = _finite(history[-1]["loss"])
        for key in history[-1]:
            if key.startswith(("rewards/", "logps/", "distill/")):
                vals = [h[key] for h in history if key in h]
                metrics[key.replace("/", "_") + "_mean"] = _finite(sum(vals) / len(vals))
                metrics[key.replace("/", "_") + "_last"] = _finite(vals[-1])
    if model is not None:  # the main process
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        with atomic_dir(out_dir) as tmp:
            save_checkpoint(model, tok, tmp, dtype)
        if plot_path:
            cols = ["step", "loss"] + sorted({k for h in history for k in h
                                              if k.startswith(("rewards/", "distill/"))})
            write_csv(plot_path, [c.replace("/", "_") for c in cols],
                      ([h.get("step"), *(h.get(c, "") for c in cols[1:])] for h in history))
        write_json(metrics_path, metrics)
        log.info("training metrics: %s", metrics)
    # The other ranks stay until the checkpoint is on disk, so the launcher's exit means done.
    trainer.accelerator.wait_for_everyone()
    return metrics


def trained_model(trainer):
    """The trained model with full weights on the main process, None on the other ranks.

    Every rank must call it: under ZeRO-3 or FSDP the shards are gathered collectively.
    """
    from accelerate.utils import DistributedType

    acc = trainer.accelerator
    if acc.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return acc.unwrap_model(trainer.model) if acc.is_main_process else None
    state = acc.get_state_dict(trainer.model_wrapped)  # full (16-bit for ZeRO-3) on rank 0
    if not acc.is_main_process:
        return None
    return _rebuild(acc.unwrap_model(trainer.model), state)


def _rebuild(sharded, state: dict):
    """A plain CPU model (LoRA-wrapped if `sharded` is) holding the gathered `state`."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # Training is over: a model built now must not be partitioned by ZeRO-3's init hook again.
    unset_hf_deepspeed_config()
    peft_config = getattr(sharded, "peft_config", None)
    base = sharded.get_base_model() if peft_config else sharded
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(base.config, dtype=torch.float32)
    if peft_config:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config["default"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")
            and getattr(base.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"gathered state dict does not fit the model: missing="
                           f"{sorted(set(missing) - tied)[:5]} unexpected={sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()
    return model


def _finite(x: float) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(x) else None
