"""Stage `seed_ift`: the paper's IFT seed data from an Open Assistant export: first
conversational turns in one language, the rank-0 (best) human reply only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..data.oasst import first_turns, read_export
from ..data.oasst_seed import select_ift

log = logging.getLogger(__name__)


def run_seed_ift(*, params: Params, exports: Sequence[str], out_path: str | Path,
                 metrics_path: str | Path) -> dict:
    """Open Assistant export(s) in (params oasst.lang, oasst.ift); IFT `messages` rows and
    metrics (messages read, skipped per reason, candidates) out."""
    oasst = params.oasst
    with stage_outputs(out_path, metrics=metrics_path) as outputs:
        turns, read_stats = first_turns(read_export(exports), oasst.lang)
        rows, stats = select_ift(turns, oasst.ift.count, oasst.ift.seed)
        outputs.metrics.update({**read_stats, **stats})
        write_jsonl(out_path, rows)
    log.info("seed IFT: %d examples from %d candidates", len(rows), stats["ift_candidates"])
    return outputs.metrics
