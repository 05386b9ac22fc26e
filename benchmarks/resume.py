"""Resume cost: `selfreward responses` killed with SIGKILL once half its shards exist, then rerun.

Compares the rerun's work with an uninterrupted run (prompts and tokens through the engine,
engine seconds, wall time) and checks that both outputs are byte-identical. Target: the rerun
does <= 55 % of the full run's work.

    .venv/bin/python benchmarks/resume.py [--engine hf|vllm] [--out benchmarks/results/resume.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from selfreward.core.shards import finished_shards

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.55


def write_inputs(tmp: Path, args) -> tuple[Path, Path]:
    """params.yaml (engine + responses sections) and prompts.jsonl from the seed IFT prompts."""
    from selfreward.data.seed import load_ift, user_prompt

    prompts = [user_prompt(c) for c in load_ift(ROOT / "data" / "seed" / "ift.jsonl")]
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i:03d}", "prompt": prompts[i % len(prompts)]})
                            + "\n" for i in range(args.prompts)))
    params = {"engine": {"name": args.engine, "shard_size": args.shard_size},
              "responses": {"n": args.n, "temperature": 0.7, "top_p": 0.9,
                            "max_new_tokens": args.max_new_tokens, "seed": 0}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp / "params.yaml", path


def command(args, params: Path, model: str, prompts: Path, out: Path) -> list[str]:
    python = ROOT / ".venv-vllm" / "bin" / "python" if args.engine == "vllm" else sys.executable
    return [str(python), "-m", "selfreward.cli", "responses", "--params", str(params),
            "--model", model, "--prompts", str(prompts), "--out", str(out),
            "--metrics", str(out.with_suffix(".metrics.json"))]


def run(cmd: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    return json.loads(Path(cmd[-1]).read_text()), time.perf_counter() - t0


def kill_half_way(cmd: list[str], out: Path, shards: int) -> tuple[int, float]:
    """Start the run, SIGKILL it once half its shard files exist; (shards written, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while len(finished_shards(out)) < shards // 2:
            if proc.poll() is not None:
                raise SystemExit("the run ended before it could be interrupted")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return len(finished_shards(out)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="HF checkpoint dir (default: embedded SmolLM2, converted)")
    ap.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "resume.json"))
    args = ap.parse_args()
    shards = -(-args.prompts // args.shard_size)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if model is None:
            from selfreward.core.models import load_base, save_checkpoint

            model = str(tmp / "model")
            save_checkpoint(*load_base("embedded"), model, "bfloat16")
        params, prompts = write_inputs(tmp, args)
        full_out, killed_out = tmp / "full" / "responses.jsonl", tmp / "killed" / "responses.jsonl"
        full, full_wall = run(command(args, params, model, prompts, full_out))
        cmd = command(args, params, model, prompts, killed_out)
        written, killed_after = kill_half_way(cmd, killed_out, shards)
        resumed, resumed_wall = run(cmd)
        identical = killed_out.read_bytes() == full_out.read_bytes()

    def ratio(key: str) -> float:
        return round(resumed[key] / full[key], 3)

    summary = {"config": vars(args), "shards": shards, "shards_written_at_kill": written,
               "killed_after_seconds": round(killed_after, 1),
               "shards_resumed": resumed["shards_resumed"], "identical_output": identical,
               "full": {"wall_seconds": round(full_wall, 1), **{k: full[k] for k in (
                   "engine_prompts", "engine_generated_tokens", "engine_seconds")}},
               "resumed": {"wall_seconds": round(resumed_wall, 1), **{k: resumed[k] for k in (
                   "engine_prompts", "engine_generated_tokens", "engine_seconds")}},
               "work_ratio": {"prompts": ratio("engine_prompts"),
                              "tokens": ratio("engine_generated_tokens"),
                              "engine_seconds": ratio("engine_seconds"),
                              "wall": round(resumed_wall / full_wall, 3)},
               "target": TARGET}
    print(json.dumps(summary, indent=2))
    work = summary["work_ratio"]["tokens"]
    print(f"resume did {work:.0%} of the full run's tokens after a kill at "
          f"{written}/{shards} shards (target <= {TARGET:.0%}): "
          f"{'ok' if work <= TARGET else 'MISSED'}; output identical: {identical}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
