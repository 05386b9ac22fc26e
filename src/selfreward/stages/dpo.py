"""Stage `dpo` (M_t -> M_t+1): TRL DPOTrainer on the self-rewarded pairs, reference = M_t.

The loss: TRL's dpo.loss_type (one or a weighted list, dpo.loss_weights; dpo.ld_alpha for
LD-DPO); dpo.cream.enabled makes it CREAM (training/cream.py); distillation weights > 0 add
token-level KL terms to a teacher (training/distill.py). Formulas: training/losses.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.io import read_jsonl, require
from ..core.models import load_model
from ..core.outputs import stage_outputs
from ..core.shards import fingerprint, model_fingerprint
from ..judge.judgments import load_judgments
from ..training.common import (
    finish_training,
    mixed_precision,
    trainable_setup,
    trainer_kwargs,
    training_workdir,
)
from ..training.cream import cream_trainer, pair_consistency, previous_model
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


def pair_counts(pairs: int, dataset, max_length: int | None) -> dict:
    """What TRL kept of the pairs: `dataset` is the trainer's tokenized train set, from which
    pairs whose prompt alone fills `max_length` were dropped; a kept pair whose prompt + chosen
    or prompt + rejected is longer than `max_length` is truncated (its answer end is cut)."""
    truncated = tokens = 0
    cap = max_length or float("inf")
    for prompt, chosen, rejected in zip(dataset["prompt_ids"], dataset["chosen_ids"],
                                        dataset["rejected_ids"]):
        truncated += len(prompt) + max(len(chosen), len(rejected)) > cap
        # One epoch's forward tokens per policy pass: prompt + chosen and prompt + rejected,
        # each cut at max_length (the cost sheet's "tokens trained", docs/gpu.md).
        tokens += min(len(prompt) + len(chosen), cap) + min(len(prompt) + len(rejected), cap)
    return {"pairs": pairs, "pairs_kept": len(dataset),
            "pairs_dropped_for_length": pairs - len(dataset), "pairs_truncated": truncated,
            "pair_tokens": int(tokens)}


def cream_consistency(params: Params, model, tokenizer, model_dir: str | Path, rows: list[dict],
                      pairs_path: str, judgments_path: str | None) -> tuple[list[float], dict]:
    """CREAM's C per pair (training/cream.py): the judge's ranking of the N answers against
    M_t's implicit reward over M_t-1."""
    if not judgments_path:
        raise UserError("dpo.cream.enabled needs the judgments of the N answers (--judgments)",
                        file=pairs_path, field="dpo.cream.enabled")
    ids = [row.get("id") for row in read_jsonl_ids(pairs_path)]
    previous_dir = previous_model(params, model_dir)
    previous, _ = load_model(previous_dir, dtype="float32")
    model.eval()
    values, metrics = pair_consistency([{"id": i} for i in ids], load_judgments(judgments_path),
                                       model, previous, tokenizer, params.dpo.max_length,
                                       params.dpo.cream.consistency, judgments_path)
    model.train()
    del previous
    log.info("CREAM: C against %s: %s", previous_dir, metrics)
    return values, {**metrics, "cream_previous": previous_dir}


def read_jsonl_ids(path: str) -> list[dict]:
    """Each pair's `id` (a string, as the pairs stage writes it)."""
    out = []
    for line, obj in read_jsonl(path):
        out.append({"id": require(obj, "id", str, file=path, line=line)})
    return out


def run_dpo(*, params: Params, model_dir: str | Path, pairs_path: str, out_dir: str | Path,
            metrics_path: str | Path, plot_path: str | Path | None = None,
            judgments_path: str | None = None) -> dict:
    """Train M_t+1 from M_t with DPO on the pairs (params dpo, base.dtype); the frozen reference
    is a copy of M_t. The training process writes the metrics (the main rank alone).
    `judgments_path` (all N scored answers per prompt) is read only by CREAM (dpo.cream)."""
    with stage_outputs(out_dir, metrics_path, plot_path):
        return train_dpo(params, model_dir, pairs_path, out_dir, metrics_path, plot_path,
                         judgments_path)


def train_dpo(params: Params, model_dir: str | Path, pairs_path: str, out_dir: str | Path,
              metrics_path: str | Path, plot_path: str | Path | None,
              judgments_path: str | None = None) -> dict:
    """The DPO run of `run_dpo`, inside its output contract."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    dpo = params.dpo
    rows = load_pairs(pairs_path)
    distill = max(dpo.distill.weight, dpo.distill.chosen_weight, dpo.distill.rejected_weight) > 0
    model, tokenizer = load_model(model_dir, dtype="float32", for_training=True)
    cream_metrics = {}
    if dpo.cream.enabled:
        values, cream_metrics = cream_consistency(params, model, tokenizer, model_dir, rows,
                                                  pairs_path, judgments_path)
        for row, value in zip(rows, values):
            row["consistency"] = value
    key = fingerprint(dpo, model_fingerprint(model_dir), rows,
                      model_fingerprint(dpo.distill.teacher) if distill else None)
    teacher = load_teacher(dpo.distill, tokenizer) if distill else None
    peft_config, trainable = trainable_setup(model, dpo, "dpo")
    ref = None
    if not dpo.lora.enabled:  # with LoRA, TRL uses the adapter-disabled base as reference
        ref, _ = load_model(model_dir, dtype="float32")
    with training_workdir(dpo, out_dir, key) as (workdir, resume):
        config = DPOConfig(**trainer_kwargs(dpo, workdir), beta=dpo.beta,
                           loss_type=dpo.loss_type, loss_weights=dpo.loss_weights,
                           ld_alpha=dpo.ld_alpha, precompute_ref_log_probs=dpo.cream.enabled,
                           max_length=dpo.max_length, dataset_num_proc=None)
        kwargs = {"model": model, "ref_model": ref, "args": config,
                  "train_dataset": Dataset.from_list(rows), "processing_class": tokenizer,
                  "peft_config": peft_config}
        if dpo.cream.enabled:
            trainer = cream_trainer(dpo.beta, **kwargs)
            log.info("CREAM DPO on %d pairs (beta=%s, mean C %s)", len(rows), dpo.beta,
                     cream_metrics["cream_c_mean"])
        elif distill:
            trainer = distill_trainer(teacher, dpo.distill, **kwargs)
            log.info("DPO + distillation on %d pairs (beta=%s, KL weight %s to %s)", len(rows),
                     dpo.beta, dpo.distill.weight, dpo.distill.teacher)
        else:
            trainer = DPOTrainer(**kwargs)
            log.info("DPO on %d pairs (beta=%s)", len(rows), dpo.beta)
        counts = pair_counts(len(rows), trainer.train_dataset, dpo.max_length)
        if counts["pairs_dropped_for_length"] or counts["pairs_truncated"]:
            log.warning("dpo: of %d pairs, %d dropped (prompt alone >= dpo.max_length %d) and "
                        "%d truncated (answer cut at dpo.max_length)", len(rows),
                        counts["pairs_dropped_for_length"], dpo.max_length,
                        counts["pairs_truncated"])
        if not counts["pairs_kept"]:
            raise UserError(f"every prompt is at least dpo.max_length={dpo.max_length} tokens: "
                            "no pair is left to train on; raise dpo.max_length",
                            file=pairs_path, field="dpo.max_length")
        trainer.train(resume_from_checkpoint=resume)
        extra = {**counts, "beta": dpo.beta, "precision": mixed_precision(dpo.precision),
                 **trainable, "loss_type": dpo.loss_type, "loss_weights": dpo.loss_weights,
                 "ld_alpha": dpo.ld_alpha, **cream_metrics}
        if distill:
            extra.update(distill_weight=dpo.distill.weight, distill_teacher=dpo.distill.teacher,
                         distill_chosen_weight=dpo.distill.chosen_weight,
                         distill_rejected_weight=dpo.distill.rejected_weight)
        return finish_training(trainer, tokenizer, model_dir, out_dir, params.base.dtype,
                               metrics_path, plot_path, extra)
