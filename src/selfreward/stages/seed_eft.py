"""Stage `seed_eft`: a prompt's replies are kept only when their judged scores order them as the
human ranks do; the kept groups are split train/eval by prompt, and EFT-train is rebalanced by
capping its most common score. Cheap: rerun it to try other settings without re-judging."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import write_csv, write_jsonl
from ..core.outputs import stage_outputs
from ..data.oasst_seed import build_eft, load_judgments

log = logging.getLogger(__name__)


def run_seed_eft(*, params: Params, judgments_path: str, train_path: str | Path,
                 eval_path: str | Path, metrics_path: str | Path,
                 hist_path: str | Path | None = None) -> dict:
    """`seed-judge` judgments in (params oasst.eft); EFT train/eval rows, metrics and the score
    histogram CSV before/after rebalancing out."""
    with stage_outputs(train_path, eval_path, hist_path, metrics=metrics_path) as outputs:
        train, evaluation, metrics = build_eft(load_judgments(judgments_path), params.oasst.eft)
        outputs.metrics.update(metrics)
        write_jsonl(train_path, train)
        write_jsonl(eval_path, evaluation)
        if hist_path:
            write_csv(hist_path, ["score", "train_before_rebalance", "train", "eval"],
                      ([d, metrics[f"hist_train_before_{d}"], metrics[f"hist_train_{d}"],
                        metrics[f"hist_eval_{d}"]] for d in range(6)))
    log.info("seed EFT: %d of %d groups agree; %d train (%d rebalanced away), %d eval examples",
             metrics["groups_agreeing"], metrics["groups"], metrics["train_examples"],
             metrics["rebalanced_away"], metrics["eval_examples"])
    return outputs.metrics
