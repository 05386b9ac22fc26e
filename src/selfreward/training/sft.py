"""SFT with TRL's SFTTrainer (stages sft and seed_sft): seed IFT plus judge turns (EFT-train
rendered the way the judge is asked, and balanced synthetic relevance turns built from the IFT
answers), the loss on the assistant's answer only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params, SftParams
from ..core.models import load_model
from ..core.shards import fingerprint, model_fingerprint
from ..data.seed import load_eft, load_ift
from ..judge.rubric import judge_template
from .common import (
    finish_training,
    mixed_precision,
    trainable_setup,
    trainer_kwargs,
    training_workdir,
)
from .completion_loss import completion_loss_trainer
from .sft_data import (
    SftExample,
    check_lengths,
    eft_examples,
    grouped_order,
    ift_examples,
    synthetic_judge_examples,
)

log = logging.getLogger(__name__)


def sft_dataset(examples: list[SftExample]):
    """Prompt/completion conversational rows, so the loss covers the assistant answer only."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion}
                              for ex in examples])


def build_examples(params: SftParams, ift_paths: Sequence[str], eft_paths: Sequence[str],
                   rubric: str | None = None) -> list[SftExample]:
    """IFT turns, EFT turns in `params.eft_format`, and `params.judge_data` synthetic judge turns,
    the judge turns rendered with `rubric` (the judge template's text)."""
    ift = [c for path in ift_paths for c in load_ift(path)]
    eft = [e for path in eft_paths for e in load_eft(path)]
    examples = (ift_examples(ift) + eft_examples(eft, params.eft_format, rubric)
                + synthetic_judge_examples(ift, params.judge_data, rubric))
    if not examples:
        raise UserError("no SFT examples: pass --ift and/or --eft files")
    return examples


def train_sft(params: Params, model_dir: str | Path, ift_paths: Sequence[str],
              eft_paths: Sequence[str], out_dir: str | Path, metrics_path: str | Path,
              plot_path: str | Path | None = None) -> dict:
    """Fine-tune `model_dir` on the seed files (params sft); write the checkpoint to `out_dir` in
    base.dtype, its metrics and loss curve. Judge turns use judge.template, the rubric the judge
    stage will ask with."""
    from trl import SFTConfig, SFTTrainer

    sft = params.sft
    examples = build_examples(sft, ift_paths, eft_paths, judge_template(params.judge.template))
    model, tokenizer = load_model(model_dir, dtype="float32", for_training=True)
    counts = check_lengths(tokenizer, examples, sft.max_length)
    peft_config, trainable = trainable_setup(model, sft, "sft")
    args = {}
    if sft.batching == "grouped":  # the epochs are laid out in the dataset, read in order
        examples = grouped_order(examples, sft.epochs, sft.seed)
        args = {"num_train_epochs": 1, "train_sampling_strategy": "sequential"}
    dataset = sft_dataset(examples)
    key = fingerprint(sft, model_fingerprint(model_dir), dataset.to_list())
    with training_workdir(sft, out_dir, key) as (workdir, resume):
        config = SFTConfig(**{**trainer_kwargs(sft, workdir), **args},
                           max_length=sft.max_length,
                           completion_only_loss=True, packing=False,
                           dataset_num_proc=None)
        trainer = completion_loss_trainer(SFTTrainer, sft.loss_normalization)(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=peft_config)
        log.info("SFT on %s", ", ".join(f"{c['examples']} {kind}" for kind, c in counts.items()))
        trainer.train(resume_from_checkpoint=resume)
        extra = {"examples": counts, "eft_format": sft.eft_format,
                 "loss_normalization": sft.loss_normalization, "batching": sft.batching,
                 "ift_examples": counts.get("ift", {}).get("examples", 0),
                 "eft_examples": counts.get("eft", {}).get("examples", 0),
                 "precision": mixed_precision(sft.precision),
                 **trainable}
        return finish_training(trainer, tokenizer, model_dir, out_dir, params.base.dtype,
                               metrics_path, plot_path, extra)
