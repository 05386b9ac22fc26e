"""Stage `alpaca_outputs` (pipelines/external_evals/dvc.yaml, one per alpaca_eval.models entry):
a model's greedy answers to the AlpacaEval instructions as alpaca_eval's model_outputs.json."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.outputs import stage_outputs
from ..evaluation.alpaca import load_alpaca_rows, model_outputs, write_alpaca_json
from ..generation.engines import Sampling, open_engine

log = logging.getLogger(__name__)


def run_alpaca_outputs(*, params: Params, model_dir: str, prompts_path: str | None,
                       out_path: str | Path, generator: str | None = None) -> int:
    """Greedy answers of `model_dir` to the instructions of `prompts_path` (default
    alpaca_eval.prompts), up to alpaca_eval.max_new_tokens (engine.*); returns their number."""
    settings = params.alpaca_eval
    generator = generator or f"selfreward-{Path(model_dir).name}"
    with stage_outputs(out_path):
        rows = load_alpaca_rows(prompts_path or settings.prompts)
        if settings.max_prompts:
            rows = rows[:settings.max_prompts]
        with open_engine(model_dir, params.engine, seed=0) as engine:
            chats = [[{"role": "user", "content": row["instruction"]}] for row in rows]
            answers = [texts[0].strip() for texts in engine.generate(chats, Sampling(
                n=1, temperature=0.0, max_new_tokens=settings.max_new_tokens, seed=0))]
        write_alpaca_json(out_path, model_outputs(rows, answers, generator))
    log.info("alpaca_eval outputs: %d answers of %s -> %s", len(rows), generator, out_path)
    return len(rows)
