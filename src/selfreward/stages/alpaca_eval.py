"""Stage `alpaca_eval` (pipelines/external_evals/dvc.yaml, one per alpaca_eval.models entry):
alpaca_eval's annotator on a model's model_outputs.json; win rate and length-controlled win rate
as DVC metrics, next to the paper's figure.

The annotator's API key comes from the environment variable named by alpaca_eval.api_key_env
and reaches alpaca_eval through its process environment only (evaluation/alpaca.py)."""

from __future__ import annotations

from pathlib import Path

from ..config.params import Params
from ..core.outputs import stage_outputs
from ..evaluation.alpaca import annotate


def run_alpaca_eval(*, params: Params, model_outputs_path: str, reference_path: str | None,
                    out_dir: str | Path, metrics_path: str | Path) -> dict:
    """Annotate `model_outputs_path` against `reference_path` (default alpaca_eval.reference,
    GPT-4 Turbo's outputs) with alpaca_eval.annotator; its files in `out_dir`."""
    settings = params.alpaca_eval
    with stage_outputs(out_dir, metrics=metrics_path) as outputs:
        Path(out_dir).mkdir(parents=True)
        outputs.metrics.update(annotate(settings, model_outputs_path,
                                        reference_path or settings.reference, out_dir))
    return outputs.metrics
