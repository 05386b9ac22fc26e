"""EleutherAI's lm-evaluation-harness on a checkpoint (vLLM backend on a GPU, HF elsewhere) for
the usual regression suite (IFEval; ARC, HellaSwag, MMLU to watch for forgetting); stage lm_eval
writes its scores as a DVC metrics file.

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

log = logging.getLogger(__name__)


def model_args(model_dir: str, params: LmEvalParams, engine: EngineParams) -> str:
    """lm_eval's --model_args for the checkpoint, from the pipeline's engine settings."""
    args = [f"pretrained={model_dir}"]
    if engine.dtype != "auto":
        args.append(f"dtype={engine.dtype}")
    if params.backend == "vllm":
        args += [f"tensor_parallel_size={engine.tensor_parallel_size}",
                 f"gpu_memory_utilization={engine.gpu_memory_utilization}",
                 f"max_model_len={engine.max_model_len}", f"seed={params.seed}"]
    if params.model_args:
        args.append(params.model_args)
    return ",".join(args)


def lm_eval_command(model_dir: str, params: LmEvalParams, engine: EngineParams,
                    out_dir: str | Path) -> list[str]:
    """The harness command line: greedy tasks, results JSON under out_dir."""
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", params.backend,
           "--model_args", model_args(model_dir, params, engine),
           "--tasks", ",".join(params.tasks), "--batch_size", params.batch_size,
           "--output_path", str(out_dir), "--seed", str(params.seed)]
    if params.apply_chat_template:
        cmd.append("--apply_chat_template")
    if params.limit:
        cmd += ["--limit", str(params.limit)]
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


def run_harness(model_dir: str, params: LmEvalParams, engine: EngineParams,
                out_dir: str | Path) -> dict:
    """Run the harness on `model_dir` with its results under `out_dir`; its results JSON."""
    from .ifeval import install_punkt_english

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError("not a checkpoint directory (no config.json)", file=str(model_dir))
    cmd = lm_eval_command(model_dir, params, engine, out_dir)
    env = {**os.environ, "NLTK_DATA": install_punkt_english()}
    log.info("lm-eval: %s", " ".join(cmd))
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        raise UserError(f"lm_eval failed (exit {done.returncode}); its output is above")
    found = sorted(Path(out_dir).rglob("results_*.json"))
    if not found:
        raise UserError(f"lm_eval wrote no results_*.json under {out_dir}")
    return json.loads(found[-1].read_text(encoding="utf-8"))
