"""Stage `ifeval` (one per entry of params `models`): one model's greedy answers to IFEval
prompts, scored by the official checkers (evaluation/ifeval.py).

Outputs: answers JSONL (one row per prompt: the answer and its strict/loose verdict per
instruction) and a metrics JSON (accuracies with bootstrap 95 % intervals, per instruction type).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.params import Params
from ..core.io import write_jsonl
from ..core.outputs import stage_outputs
from ..data.seed import select_prompts
from ..evaluation.ifeval import aggregate, load_ifeval_prompts, score_response, split_metrics
from ..generation.engines import Sampling, open_engine

log = logging.getLogger(__name__)


def run_ifeval(*, params: Params, model_dir: str, prompts_path: str | None,
               answers_path: str | Path, metrics_path: str | Path) -> dict:
    """Answer every prompt of `prompts_path` (default ifeval.prompts) greedily, up to
    ifeval.max_new_tokens (engine.*); score; write answers and metrics."""
    ifeval_params = params.ifeval
    prompts_path = prompts_path or ifeval_params.prompts
    with stage_outputs(answers_path, metrics=metrics_path) as outputs:
        rows = select_prompts(load_ifeval_prompts(prompts_path), ifeval_params.max_prompts,
                              ifeval_params.seed)
        with open_engine(model_dir, params.engine, seed=ifeval_params.seed) as engine:
            chats = [[{"role": "user", "content": row["prompt"]}] for row in rows]
            answers = [texts[0] for texts in engine.generate(chats, Sampling(
                n=1, temperature=0.0, max_new_tokens=ifeval_params.max_new_tokens,
                seed=ifeval_params.seed))]
            tokens = [engine.count_tokens(answer) for answer in answers]
        verdicts = [score_response(row, answer) for row, answer in zip(rows, answers)]
        outputs.record_engine(engine)
        metrics = outputs.metrics
        metrics.update({
            "model": model_dir, "prompts_file": str(prompts_path),
            "max_new_tokens": ifeval_params.max_new_tokens,
            # answers cut by the cap: length instructions ("at least 300 words") fail there
            "answers_at_cap": sum(t >= ifeval_params.max_new_tokens for t in tokens),
            "mean_answer_tokens": round(sum(tokens) / len(tokens), 2),
            **aggregate(rows, verdicts, samples=ifeval_params.bootstrap,
                        seed=ifeval_params.seed),
            "truncated_prompts": metrics["engine_truncated_prompts"]})
        constraints = params.prompts.constraints
        if constraints.holdout:  # docs/constraints.md: trained vs held-out instruction types
            metrics.update({"holdout": list(constraints.holdout),
                            "trained_types": list(constraints.types),
                            "splits": split_metrics(rows, verdicts, constraints.holdout,
                                                    constraints.types,
                                                    samples=ifeval_params.bootstrap,
                                                    seed=ifeval_params.seed)})
        write_jsonl(answers_path, ({"key": r["key"], "prompt": r["prompt"],
                                    "instruction_id_list": r["instruction_id_list"], "answer": a,
                                    "strict": v["strict"], "loose": v["loose"]}
                                   for r, a, v in zip(rows, answers, verdicts)))
    log.info("ifeval %s on %s (%d prompts): prompt-level strict %.3f %s, loose %.3f", model_dir,
             prompts_path, len(rows), metrics["prompt_level_strict"]["accuracy"],
             metrics["prompt_level_strict"]["ci95"], metrics["prompt_level_loose"]["accuracy"])
    return metrics
