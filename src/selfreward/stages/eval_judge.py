"""A model as judge: agreement with human scores on a grouped EFT set, the relevance check (an
answer to the prompt vs an answer to another prompt), and accuracy on any preference-pair file.

All scoring goes through the pipeline's own `judge_rows`, so what is measured is the judge the
self-rewarding loop uses (same template, same mode, same engine).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.io import remove_outputs, write_json
from ..data.seed import load_eft
from ..generation.engines import open_engine
from ..judge.agreement import (
    eft_agreement,
    eft_relevance_items,
    load_preference_pairs,
    pairs_agreement,
    relevance_check,
)

log = logging.getLogger(__name__)


def run_eval_judge(model_dir: str, params: Params, eft_path: str | None, pairs_path: str | None,
                   out_path: str | None) -> dict:
    """CLI entry: a model's agreement with an EFT file (plus the relevance check built from it)
    and/or a preference-pairs file."""
    if not eft_path and not pairs_path:
        raise UserError("give --eft FILE and/or --pairs FILE")
    examples = load_eft(eft_path) if eft_path else None
    pairs = load_preference_pairs(pairs_path) if pairs_path else None
    if out_path:
        remove_outputs(out_path)
    result: dict = {"model": model_dir, "judge_mode": params.judge.mode}
    shard_size, seed = params.engine.shard_size, params.eval.seed
    with (open_engine(model_dir, params.engine, seed=params.judge.seed) as engine,
          tempfile.TemporaryDirectory(prefix="selfreward-eval-judge-") as tmp):
        if examples is not None:
            result["eft"], _ = eft_agreement(engine, examples, params.judge, shard_size,
                                             Path(tmp) / "eft", seed)
            items = eft_relevance_items(examples, seed)
            if items:
                result["eft_relevance"], _ = relevance_check(
                    engine, items, params.judge, shard_size, Path(tmp) / "relevance")
            result["eft_file"] = eft_path
        if pairs is not None:
            result["pairs"] = pairs_agreement(engine, pairs, params.judge, shard_size,
                                              Path(tmp) / "pairs")
            result["pairs_file"] = pairs_path
    if out_path:
        write_json(out_path, result)
    return result
