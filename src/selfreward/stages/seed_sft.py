"""Stage `seed_sft`: the paper's "SFT baseline", M0 fine-tuned on the IFT built from Open
Assistant only (never on EFT or self-instruct data); it judges the EFT candidates (seed_judge)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config.params import Params
from ..core.outputs import stage_outputs
from ..training.sft import train_sft


def run_seed_sft(*, params: Params, model_dir: str | Path, ift_paths: Sequence[str],
                 out_dir: str | Path, metrics_path: str | Path) -> dict:
    """Fine-tune M0 on `ift_paths` alone (params sft, judge.template, base.dtype); write the
    judge checkpoint and its metrics."""
    with stage_outputs(out_dir, metrics_path):
        return train_sft(params, model_dir, ift_paths, [], out_dir, metrics_path)
