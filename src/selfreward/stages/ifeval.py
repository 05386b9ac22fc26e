"""Stage `evaluate_ifeval`: one model's greedy answers to IFEval prompts, scored by the official
checkers (selfreward/ifeval.py); and `ifeval-data`, the official 541 prompts from the hub.

Outputs: answers JSONL (one row per prompt: the answer and its strict/loose verdict per
instruction) and a metrics JSON (accuracies with bootstrap 95 % intervals, per instruction type).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config.errors import UserError
from ..config.params import Params
from ..core.io import remove_outputs, write_json, write_jsonl
from ..data.seed import select_prompts
from ..evaluation.ifeval import aggregate, load_ifeval_prompts, score_response
from ..generation.engines import Sampling, open_engine

log = logging.getLogger(__name__)

OFFICIAL_DATASET = "google/IFEval"


def run_ifeval(model_dir: str, params: Params, prompts_path: str | None, answers_path: str | Path,
               metrics_path: str | Path) -> dict:
    """Answer every prompt greedily (ifeval.max_new_tokens), score, write answers and metrics."""
    ifeval_params = params.ifeval
    prompts_path = prompts_path or ifeval_params.prompts
    rows = select_prompts(load_ifeval_prompts(prompts_path), ifeval_params.max_prompts,
                          ifeval_params.seed)
    remove_outputs(answers_path, metrics_path)
    with open_engine(model_dir, params.engine, seed=ifeval_params.seed) as engine:
        chats = [[{"role": "user", "content": row["prompt"]}] for row in rows]
        answers = [texts[0] for texts in engine.generate(chats, Sampling(
            n=1, temperature=0.0, max_new_tokens=ifeval_params.max_new_tokens,
            seed=ifeval_params.seed))]
        tokens = [engine.count_tokens(answer) for answer in answers]
    engine_stats = engine.stats.as_dict()
    verdicts = [score_response(row, answer) for row, answer in zip(rows, answers)]
    metrics = {"model": model_dir, "prompts_file": str(prompts_path),
               "max_new_tokens": ifeval_params.max_new_tokens,
               # answers cut by the cap: length instructions ("at least 300 words") fail there
               "answers_at_cap": sum(t >= ifeval_params.max_new_tokens for t in tokens),
               "mean_answer_tokens": round(sum(tokens) / len(tokens), 2),
               **aggregate(rows, verdicts, samples=ifeval_params.bootstrap,
                           seed=ifeval_params.seed),
               "truncated_prompts": engine_stats["truncated_prompts"], "engine": engine_stats}
    write_jsonl(answers_path, ({"key": r["key"], "prompt": r["prompt"],
                                "instruction_id_list": r["instruction_id_list"], "answer": a,
                                "strict": v["strict"], "loose": v["loose"]}
                               for r, a, v in zip(rows, answers, verdicts)))
    write_json(metrics_path, metrics)
    log.info("ifeval %s on %s (%d prompts): prompt-level strict %.3f %s, loose %.3f", model_dir,
             prompts_path, len(rows), metrics["prompt_level_strict"]["accuracy"],
             metrics["prompt_level_strict"]["ci95"], metrics["prompt_level_loose"]["accuracy"])
    return metrics


def official_rows(dataset) -> list[dict]:
    """google/IFEval rows as input_data.jsonl rows: the Arrow table gives every kwargs object
    every key, with null where an instruction does not take it; those nulls are dropped."""
    out = []
    for row in dataset:
        out.append({"key": int(row["key"]), "prompt": row["prompt"],
                    "instruction_id_list": list(row["instruction_id_list"]),
                    "kwargs": [{k: v for k, v in kw.items() if v is not None}
                               for kw in row["kwargs"]]})
    return out


def download_official(out_path: str | Path, revision: str | None = None) -> int:
    """Write the official IFEval prompts (Hugging Face dataset google/IFEval, needs network)."""
    import datasets

    try:
        dataset = datasets.load_dataset(OFFICIAL_DATASET, split="train", revision=revision)
    except (OSError, ValueError) as exc:  # offline (ConnectionError), not found: say what to do
        raise UserError(f"could not load {OFFICIAL_DATASET} ({type(exc).__name__}: {exc}); on a "
                        "machine without the hub copy input_data.jsonl there instead") from None
    n = write_jsonl(out_path, official_rows(dataset))
    try:
        load_ifeval_prompts(out_path)  # every row must pass the checker registry
    except UserError:
        remove_outputs(out_path)
        raise
    return n
