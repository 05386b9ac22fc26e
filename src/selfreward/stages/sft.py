"""Stage `sft` (M0 -> M1): TRL SFTTrainer on seed IFT plus EFT-train rendered as judge turns."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..io import remove_outputs
from ..models import load_model
from ..params import SftParams
from ..seed import Conversation, eft_conversation, load_eft, load_ift
from ..shards import fingerprint, model_fingerprint
from ..training.common import finish_training, lora_config, trainer_kwargs, training_workdir

log = logging.getLogger(__name__)


def sft_dataset(ift: list[Conversation], eft: list[Conversation]):
    """Prompt/completion conversational rows, so the loss covers the assistant answer only."""
    from datasets import Dataset

    rows = [{"prompt": c.prompt, "completion": c.completion} for c in ift + eft]
    return Dataset.from_list(rows)


def run_sft(p: SftParams, model_dir: str | Path, ift_paths: list[str], eft_paths: list[str],
            out_dir: str | Path, metrics_path: str | Path, plot_path: str | Path | None,
            dtype: str) -> dict:
    """Fine-tune `model_dir` on the seed data; write M1 to `out_dir`."""
    from trl import SFTConfig, SFTTrainer

    remove_outputs(out_dir, metrics_path)
    ift = [c for path in ift_paths for c in load_ift(path)]
    eft = [eft_conversation(e) for path in eft_paths for e in load_eft(path)]
    if not ift and not eft:
        raise UserError("no SFT examples: pass --ift and/or --eft files")
    model, tok = load_model(model_dir, dtype="float32", for_training=True)
    dataset = sft_dataset(ift, eft)
    key = fingerprint(p, model_fingerprint(model_dir), dataset.to_list())
    with training_workdir(p, out_dir, key) as (work, resume):
        config = SFTConfig(**trainer_kwargs(p, work), max_length=p.max_length,
                           completion_only_loss=True, packing=False,
                           dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=tok, peft_config=lora_config(p.lora))
        log.info("SFT on %d IFT + %d EFT examples", len(ift), len(eft))
        trainer.train(resume_from_checkpoint=resume)
        return finish_training(trainer, tok, out_dir, dtype, metrics_path, plot_path,
                               {"ift_examples": len(ift), "eft_examples": len(eft)})
