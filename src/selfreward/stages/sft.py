"""Stage `sft` (M0 -> M1): TRL SFTTrainer on seed IFT and EFT-train plus judge turns
(training/sft.py); with sft.self_instruct, the self-instruct stage's messages are extra IFT."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.outputs import stage_outputs
from ..training.sft import train_sft


def run_sft(*, params: Params, model_dir: str | Path, ift_paths: Sequence[str],
            eft_paths: Sequence[str], self_instruct_path: str | None, out_dir: str | Path,
            metrics_path: str | Path, plot_path: str | Path | None = None) -> dict:
    """Fine-tune M0 on the seed files (params sft, judge.template, base.dtype); write M1, its
    metrics and loss curve. The training process writes the metrics (the main rank alone)."""
    with stage_outputs(out_dir, metrics_path, plot_path):
        if params.sft.self_instruct:
            if not self_instruct_path:
                raise UserError("sft.self_instruct is true: pass the self-instruct messages "
                                "with --self-instruct FILE", field="sft.self_instruct")
            ift_paths = [*ift_paths, self_instruct_path]
        return train_sft(params, model_dir, ift_paths, eft_paths, out_dir, metrics_path,
                         plot_path)
