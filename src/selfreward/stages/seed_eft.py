"""Stage `seed_eft`: a prompt's replies are kept only when their judged scores order them as the
human ranks do; the kept groups are split train/eval by prompt, and EFT-train is rebalanced by
capping its most common score. Cheap: rerun it to try other settings without re-judging."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import OasstEftParams
from ..core.io import remove_outputs, write_csv, write_json, write_jsonl
from ..data.oasst_seed import build_eft, load_judgments

log = logging.getLogger(__name__)


def run_seed_eft(p: OasstEftParams, judgments_path: str, train_path: str | Path,
                 eval_path: str | Path, metrics_path: str | Path,
                 hist_path: str | Path | None = None) -> dict:
    """Stage entry: judgments in; EFT train/eval rows, metrics and score histogram CSV out."""
    remove_outputs(train_path, eval_path, metrics_path, *([hist_path] if hist_path else []))
    train, evaluation, metrics = build_eft(load_judgments(judgments_path), p)
    write_jsonl(train_path, train)
    write_jsonl(eval_path, evaluation)
    if hist_path:
        write_csv(hist_path, ["score", "train_before_rebalance", "train", "eval"],
                  ([d, metrics[f"hist_train_before_{d}"], metrics[f"hist_train_{d}"],
                    metrics[f"hist_eval_{d}"]] for d in range(6)))
    write_json(metrics_path, metrics)
    log.info("seed EFT: %d of %d groups agree; %d train (%d rebalanced away), %d eval examples",
             metrics["groups_agreeing"], metrics["groups"], metrics["train_examples"],
             metrics["rebalanced_away"], metrics["eval_examples"])
    return metrics
