"""Stage `evaluate_ifeval`: one model's greedy answers to IFEval prompts, scored by the official
checkers (selfreward/ifeval.py); and `ifeval-data`, the official 541 prompts from the hub.

Outputs: answers JSONL (one row per prompt: the answer and its strict/loose verdict per
instruction) and a metrics JSON (accuracies with bootstrap 95 % intervals, per instruction type).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..engines import Sampling, make_engine
from ..errors import UserError
from ..ifeval import aggregate, load_ifeval_prompts, score_response
from ..io import remove_outputs, write_json, write_jsonl
from ..params import Params
from .eval_answers import select_prompts

log = logging.getLogger(__name__)

OFFICIAL_DATASET = "google/IFEval"


def _tokens_counter(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def run_ifeval(model_dir: str, params: Params, prompts_path: str | None, answers_path: str | Path,
               metrics_path: str | Path) -> dict:
    """Answer every prompt greedily (ifeval.max_new_tokens), score, write answers and metrics."""
    p = params.ifeval
    prompts_path = prompts_path or p.prompts
    rows = select_prompts(load_ifeval_prompts(prompts_path), p.max_prompts, p.seed)
    remove_outputs(answers_path, metrics_path)
    engine = make_engine(model_dir, params.engine, seed=p.seed)
    try:
        chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
        answers = [o[0] for o in engine.generate(chats, Sampling(
            n=1, temperature=0.0, max_new_tokens=p.max_new_tokens, seed=p.seed))]
        engine_stats = engine.stats.as_dict()
    finally:
        engine.close()
    count_tokens = _tokens_counter(model_dir)
    verdicts = [score_response(r, a) for r, a in zip(rows, answers)]
    tokens = [count_tokens(a) for a in answers]
    metrics = {"model": model_dir, "prompts_file": str(prompts_path),
               "max_new_tokens": p.max_new_tokens,
               # answers cut by the cap: length instructions ("at least 300 words") fail there
               "answers_at_cap": sum(t >= p.max_new_tokens for t in tokens),
               "mean_answer_tokens": round(sum(tokens) / len(tokens), 2),
               **aggregate(rows, verdicts, samples=p.bootstrap, seed=p.seed),
               "engine": engine_stats}
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
