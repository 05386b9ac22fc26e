"""Judge cost benchmark: logprob vs sample (K=3) judging on the held-out EFT set, one run.

For each mode: seconds per judged response and agreement with the human EFT scores (pairwise
accuracy within groups, ties counted separately; parse rate for sample mode).

    .venv/bin/python benchmarks/judge_cost.py --model models/m1 [--limit 48] [--out FILE]

The model should be the SFT model M1 (`dvc repro sft` makes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from selfreward.config.params import EngineParams, JudgeParams
from selfreward.data.seed import load_eft
from selfreward.generation.engines import make_engine
from selfreward.judge.agreement import eft_agreement


def bench_mode(engine, examples, jp: JudgeParams) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        metrics, rows = eft_agreement(engine, examples, jp, 64, Path(tmp) / "judge")
        seconds = time.perf_counter() - t0
    scored = sum(r["model"] is not None for r in rows)
    return {"mode": jp.mode, "samples": jp.samples if jp.mode == "sample" else 1,
            "responses": len(rows), "seconds": round(seconds, 2),
            "seconds_per_response": round(seconds / len(rows), 3),
            "scored_responses": scored,
            "pairwise_accuracy": metrics["pairwise_accuracy"],
            "pairwise_accuracy_no_ties": metrics["pairwise_accuracy_no_ties"],
            "pairwise_tie_rate": metrics["pairwise_tie_rate"],
            "spearman": metrics["spearman"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/m1")
    ap.add_argument("--eft", default="data/seed/eft_eval.jsonl")
    ap.add_argument("--limit", type=int, default=0, help="first N EFT rows (0 = all)")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--out", default="benchmarks/results/judge_cost.json")
    args = ap.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        sys.exit(f"{args.model}: no checkpoint; run `dvc repro sft` first")
    examples = load_eft(args.eft)
    if args.limit:
        examples = examples[:args.limit]
    engine = make_engine(args.model, EngineParams(name="auto"))
    results = [bench_mode(engine, examples, JudgeParams(mode="logprob")),
               bench_mode(engine, examples, JudgeParams(mode="sample", samples=args.samples,
                                                        max_new_tokens=args.max_new_tokens))]
    lp, sm = results
    summary = {"model": args.model, "engine": engine.name, "results": results,
               "sample_over_logprob_seconds": round(sm["seconds"] / lp["seconds"], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'mode':<10}{'s/response':>12}{'pairwise acc':>14}{'acc no ties':>13}"
          f"{'tie rate':>10}{'scored':>9}")
    for r in results:
        print(f"{r['mode'] + ('x' + str(r['samples']) if r['mode'] == 'sample' else ''):<10}"
              f"{r['seconds_per_response']:>12}{r['pairwise_accuracy']!s:>14}"
              f"{r['pairwise_accuracy_no_ties']!s:>13}{r['pairwise_tie_rate']!s:>10}"
              f"{r['scored_responses']:>6}/{r['responses']}")
    print(f"sample (K={args.samples}) costs {summary['sample_over_logprob_seconds']}x logprob "
          "per response")


if __name__ == "__main__":
    main()
