"""Stage `seed_ift`: the paper's IFT seed data from an Open Assistant export: first
conversational turns in one language, the rank-0 (best) human reply only."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import OasstParams
from ..core.io import remove_outputs, write_json, write_jsonl
from ..data.oasst import first_turns, read_export
from ..data.oasst_seed import select_ift

log = logging.getLogger(__name__)


def run_seed_ift(p: OasstParams, export: list[str], out_path: str | Path,
                 metrics_path: str | Path) -> dict:
    """Stage entry: Open Assistant export in, IFT `messages` rows + metrics out."""
    remove_outputs(out_path, metrics_path)
    turns, read_stats = first_turns(read_export(export), p.lang)
    rows, stats = select_ift(turns, p.ift.count, p.ift.seed)
    metrics = {**read_stats, **stats}
    write_jsonl(out_path, rows)
    write_json(metrics_path, metrics)
    log.info("seed IFT: %d examples from %d candidates", len(rows), stats["ift_candidates"])
    return metrics
