"""Stage `lm_eval` (pipelines/external_evals/dvc.yaml, one per lm_eval.models entry):
EleutherAI's lm-evaluation-harness on a checkpoint, its scores as a DVC metrics file."""

from __future__ import annotations

from pathlib import Path

from ..config.params import Params
from ..core.outputs import stage_outputs
from ..evaluation.lm_harness import run_harness, task_scores


def run_lm_eval(*, params: Params, model_dir: str, out_dir: str | Path,
                metrics_path: str | Path) -> dict:
    """The harness's tasks on `model_dir` (params lm_eval, engine); its files under `out_dir`,
    {task: {metric: value}} in `metrics_path`."""
    settings = params.lm_eval
    with stage_outputs(out_dir, metrics=metrics_path) as outputs:
        results = run_harness(model_dir, settings, params.engine, out_dir)
        outputs.metrics.update({
            "model": model_dir, "backend": settings.backend, "tasks": task_scores(results),
            "limit": settings.limit or None, "apply_chat_template": settings.apply_chat_template,
            "lm_eval_version": results.get("lm_eval_version")})
    return outputs.metrics
