"""Eval answer cap (issue 19 item 3): which eval.max_new_tokens keeps the held-out answers whole?

Greedy answers of one model (default: the embedded SmolLM2-135M-Instruct as M0, converted to a temp
dir) to the seeded eval subset (eval.max_prompts of data/seed/eval_prompts.jsonl), generated once
with a generous cap. A greedy answer under a smaller cap is a prefix of this one, so the share that
would hit each candidate cap is the share whose whole answer is at least that many tokens.

    .venv/bin/python benchmarks/eval_cap.py [--model DIR] [--out benchmarks/results/eval_cap.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPS = (64, 96, 128, 160, 192, 256, 320)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint dir (default: the embedded model as M0)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--limit", type=int, default=384, help="the generous cap")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_cap.json"))
    args = parser.parse_args()

    from selfreward.config.params import load_params
    from selfreward.data.seed import load_prompts, select_prompts
    from selfreward.generation.engines import Sampling, open_engine
    from selfreward.stages.base import run_base

    params = load_params(args.params)
    rows = select_prompts(load_prompts(ROOT / "data" / "seed" / "eval_prompts.jsonl"),
                          params.eval.max_prompts, params.eval.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "m0")
            run_base(params=params, out_dir=model, metrics_path=Path(tmp) / "base.json")
        t0 = time.perf_counter()
        with open_engine(model, params.engine, seed=params.eval.seed) as engine:
            chats = [[{"role": "user", "content": row["prompt"]}] for row in rows]
            answers = [texts[0] for texts in engine.generate(chats, Sampling(
                n=1, temperature=0.0, max_new_tokens=args.limit, seed=params.eval.seed))]
            tokens = [engine.count_tokens(a) for a in answers]
        seconds = time.perf_counter() - t0
    at_cap = {cap: sum(t >= cap for t in tokens) for cap in CAPS}
    result = {"model": args.model or "embedded SmolLM2-135M-Instruct (M0)", "prompts": len(rows),
              "limit": args.limit, "answers_at_limit": sum(t >= args.limit for t in tokens),
              "tokens": sorted(tokens), "seconds": round(seconds, 1),
              "share_at_cap": {str(c): round(n / len(rows), 4) for c, n in at_cap.items()},
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "tokens"}, indent=2))


if __name__ == "__main__":
    main()
