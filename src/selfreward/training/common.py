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

from ..config.errors import UserError
from ..config.params import LoraParams, TrainParams
from ..core.io import atomic_dir, write_csv, write_json
from ..core.machine import machine_info
from ..core.models import save_checkpoint
from .update import checkpoint_update

log = logging.getLogger(__name__)


def mixed_precision(precision: str) -> str:
    """'bf16', 'fp16' or 'fp32' for the forward/backward pass (master weights stay float32).

    auto: bf16 where the hardware does it natively (CUDA with bf16; CPUs with AMX/AVX512-BF16,
    where autocast roughly halves a training step), else fp32.
    """
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return "bf16" if native is not None and native() else "fp32"


def trainer_kwargs(params: TrainParams, output_dir: str) -> dict:
    """TrainingArguments fields common to SFTConfig and DPOConfig."""
    cuda = torch.cuda.is_available()
    precision = mixed_precision(params.precision)
    return {
        "output_dir": output_dir,
        "learning_rate": params.learning_rate,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr": params.final_learning_rate},
        "warmup_steps": params.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "num_train_epochs": params.epochs,
        "max_steps": params.max_steps,
        "per_device_train_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accum,
        "weight_decay": params.weight_decay,
        "gradient_checkpointing": params.gradient_checkpointing,
        "seed": params.seed,
        "data_seed": params.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": not cuda,
        "logging_steps": 1,
        "save_strategy": "steps" if params.save_steps > 0 else "no",
        "save_steps": params.save_steps if params.save_steps > 0 else 500,
        "save_total_limit": 1,
        "report_to": [],
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
        # Every trainable weight gets a gradient (LoRA freezes, it skips none): no extra DDP pass.
        "ddp_find_unused_parameters": False,
    }


@contextlib.contextmanager
def training_workdir(params: TrainParams, out_dir: str | Path,
                     key: str) -> Iterator[tuple[str, str | None]]:
    """(trainer output_dir, checkpoint to resume from or None).

    With save_steps > 0 the trainer's checkpoints live in `<out>.ckpt/` and survive a crash; a
    rerun with the same inputs and params (same `key`) resumes from the latest one. The directory
    is removed once the stage has finished.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if params.save_steps <= 0:
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


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks (the ModuleList as long as num_hidden_layers)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise UserError(f"cannot find the {n} transformer blocks of {type(model).__name__} to "
                    "freeze; set train_layers: 0", field="train_layers")


def freeze_lower_layers(model, top: int, key: str) -> dict:
    """Train only the top `top` blocks and the final norm; embeddings and lower blocks freeze.

    Backpropagation then stops at the lowest trained block: on 2 CPU cores training the top
    third of SmolLM2's 30 blocks takes about half the time of a full step.
    """
    total = sum(p.numel() for p in model.parameters())
    if top > 0:
        layers = decoder_layers(model)
        if top > len(layers):
            raise UserError(f"the model has {len(layers)} transformer blocks, fewer than {top}",
                            field=key)
        first = len(layers) - top
        trained = {id(p) for layer in layers[first:] for p in layer.parameters()}
        inner = model.get_decoder() if hasattr(model, "get_decoder") else None
        norm = getattr(inner, "norm", None)
        if isinstance(norm, torch.nn.Module):
            trained |= {id(p) for p in norm.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "trainable_share": round(trainable / total, 4)}


def lora_config(params: LoraParams, train_layers: int = 0, num_layers: int = 0):
    """A peft LoraConfig, or None when LoRA is off; adapters only on the top `train_layers`."""
    if not params.enabled:
        return None
    from peft import LoraConfig

    layers = list(range(num_layers - train_layers, num_layers)) if train_layers > 0 else None
    return LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
                      target_modules=params.target_modules, task_type="CAUSAL_LM",
                      layers_to_transform=layers)


def trainable_setup(model, params: TrainParams, stage: str) -> tuple[object, dict]:
    """(peft LoraConfig or None, metrics on what trains): LoRA adapters, or frozen lower blocks."""
    if params.lora.enabled:
        num_layers = len(decoder_layers(model)) if params.train_layers > 0 else 0
        return lora_config(params.lora, params.train_layers, num_layers), {"lora": True}
    return None, freeze_lower_layers(model, params.train_layers, f"{stage}.train_layers")


def finish_training(trainer, tok, input_dir: str | Path, out_dir: str | Path, dtype: str,
                    metrics_path: str | Path, plot_path: str | Path | None, extra: dict) -> dict:
    """Merge LoRA if any, save the checkpoint atomically, measure how far it moved from
    `input_dir`, write metrics and the loss curve.

    Under `accelerate launch` every rank calls this (gathering sharded weights is collective);
    only the main process writes, so the outputs exist once.
    """
    model = trained_model(trainer)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = [h for h in trainer.state.log_history if "train_loss" in h]
    metrics = {"steps": trainer.state.global_step,
               "num_processes": trainer.accelerator.num_processes, **extra,
               "machine": machine_info()}  # `precision: auto` differs by CPU
    if summary:
        metrics["train_loss"] = _finite(summary[-1]["train_loss"])
        metrics["train_runtime_s"] = round(summary[-1].get("train_runtime", 0.0), 2)
    if history:
        metrics["final_loss"] = _finite(history[-1]["loss"])
        for key in history[-1]:
            if key.startswith(("rewards/", "logps/", "distill/", "cream/")):
                vals = [h[key] for h in history if key in h]
                metrics[key.replace("/", "_") + "_mean"] = _finite(sum(vals) / len(vals))
                metrics[key.replace("/", "_") + "_last"] = _finite(vals[-1])
    if model is not None:  # the main process
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        # The save casts the model in place: keep the float32 weights to measure what it kept.
        trained = {k: v.detach().to("cpu", torch.float32, copy=dtype != "float32")
                   for k, v in model.state_dict().items()}
        with atomic_dir(out_dir) as tmp:
            save_checkpoint(model, tok, tmp, dtype)
            metrics["update"] = checkpoint_update(input_dir, tmp, trained)
        del trained
        if metrics["update"]["warning"]:
            log.warning("%s: %s", out_dir, metrics["update"]["warning"])
        if plot_path:
            cols = ["step", "loss"] + sorted({k for h in history for k in h
                                              if k.startswith(("rewards/", "distill/", "cream/"))})
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


def _finite(value: float) -> float | None:
    return round(float(value), 6) if value is not None and math.isfinite(value) else None
