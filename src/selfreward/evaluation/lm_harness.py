"""`selfreward lm-eval`: EleutherAI's lm-evaluation-harness on a checkpoint (vLLM backend on a GPU,
HF elsewhere) for the usual regression suite (IFEval; ARC, HellaSwag, MMLU to watch for
forgetting), with the scores written as a DVC metrics file.

The harness runs as its own command in a child process; IFEval's punkt model is handed to it
through NLTK_DATA (selfreward/ifeval.py), so the run downloads only the task datasets.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..config.errors import UserError
from ..config.params import EngineParams, LmEvalParams
from ..core.io import remove_outputs, write_json

log = logging.getLogger(__name__)


def model_args(model_dir: str, p: LmEvalParams, engine: EngineParams) -> str:
    """lm_eval's --model_args for the checkpoint, from the pipeline's engine settings."""
    args = [f"pretrained={model_dir}"]
    if engine.dtype != "auto":
        args.append(f"dtype={engine.dtype}")
    if p.backend == "vllm":
        args += [f"tensor_parallel_size={engine.tensor_parallel_size}",
                 f"gpu_memory_utilization={engine.gpu_memory_utilization}",
                 f"max_model_len={engine.max_model_len}", f"seed={p.seed}"]
    if p.model_args:
        args.append(p.model_args)
    return ",".join(args)


def lm_eval_command(model_dir: str, p: LmEvalParams, engine: EngineParams,
                    out_dir: str | Path) -> list[str]:
    """The harness command line: greedy tasks, results JSON under out_dir."""
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", p.backend,
           "--model_args", model_args(model_dir, p, engine), "--tasks", ",".join(p.tasks),
           "--batch_size", p.batch_size, "--output_path", str(out_dir), "--seed", str(p.seed)]
    if p.apply_chat_template:
        cmd.append("--apply_chat_template")
    if p.limit:
        cmd += ["--limit", str(p.limit)]
    return cmd


def task_scores(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from an lm_eval results JSON ("acc,none" -> "acc")."""
    out: dict[str, dict[str, float]] = {}
    for task, values in sorted(results.get("results", {}).items()):
        scores = {}
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores[metric if filt in ("", "none") else f"{metric}_{filt}"] = round(value, 4)
        out[task] = scores
    return out


def run_lm_eval(model_dir: str, p: LmEvalParams, engine: EngineParams, out_dir: str | Path,
                metrics_path: str | Path) -> dict:
    """Run the harness on model_dir; keep its results under out_dir, scores in metrics_path."""
    from .ifeval import install_punkt_english

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError("not a checkpoint directory (no config.json)", file=str(model_dir))
    remove_outputs(out_dir, metrics_path)
    cmd = lm_eval_command(model_dir, p, engine, out_dir)
    env = {**os.environ, "NLTK_DATA": install_punkt_english()}
    log.info("lm-eval: %s", " ".join(cmd))
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        remove_outputs(out_dir)
        raise UserError(f"lm_eval failed (exit {done.returncode}); its output is above")
    found = sorted(Path(out_dir).rglob("results_*.json"))
    if not found:
        raise UserError(f"lm_eval wrote no results_*.json under {out_dir}")
    results = json.loads(found[-1].read_text(encoding="utf-8"))
    metrics = {"model": model_dir, "backend": p.backend, "tasks": task_scores(results),
               "limit": p.limit or None, "apply_chat_template": p.apply_chat_template,
               "lm_eval_version": results.get("lm_eval_version")}
    write_json(metrics_path, metrics)
    return metrics
