"""`make gpu-check`: on the GPUs present, within 10 minutes, the paths a CPU cannot exercise.

  vllm_vs_hf     vLLM on CUDA against the HF engine on the same prompts: greedy generation
                 (exact-match share) and the logprob judge (|difference| of the expected score)
  sft_dpo_bf16   `selfreward sft` then `selfreward dpo`, a few steps each, bf16 autocast
                 (precision auto), float32 saves: the save keeps the update (update_kept)
  launch         `selfreward sft` under params.gpu.yaml's launch.strategy on every GPU present
                 (one GPU: the strategy's single-process path through `accelerate launch`)

Model: the embedded SmolLM2-135M-Instruct (converted by the `base` stage's code), or --model DIR.
Writes one JSON (--out, default reports/gpu_check.json; schema: SCHEMA below) and says what it
skipped and why. Exit 0: every check passed or was skipped; 1: a check failed; 3: no CUDA device
(nothing is checked and nothing is written).

    .venv/bin/python benchmarks/gpu_check.py [--out reports/gpu_check.json] [--model DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 3
NO_CUDA_MESSAGE = ("gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing "
                   "was checked and no JSON written. Run `make gpu-check` on a machine with an "
                   "NVIDIA GPU (docs/gpu.md).")
BUDGET_S = 540  # the whole check stays under 10 minutes, model conversion included
# First guesses, not yet calibrated on a GPU (docs/gpu.md): both engines run float32 here, so
# they differ by kernels only.
MAX_SCORE_DIFF = 0.05
MIN_EXACT_SHARE = 0.75

SCHEMA = {
    "type": "object",
    "required": ["schema", "ok", "started", "seconds", "machine", "model", "checks", "skipped"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": 1},
        "ok": {"type": "boolean"},
        "started": {"type": "string"},
        "seconds": {"type": "number", "minimum": 0},
        "machine": {"type": "object", "required": ["gpus", "torch", "cuda"],
                    "properties": {"gpus": {"type": "array", "items": {"type": "string"}},
                                   "torch": {"type": "string"},
                                   "cuda": {"type": ["string", "null"]},
                                   "vllm": {"type": ["string", "null"]}}},
        "model": {"type": "string"},
        "checks": {"type": "array", "items": {
            "type": "object", "required": ["name", "status", "seconds", "reason", "figures"],
            "additionalProperties": False,
            "properties": {"name": {"enum": ["vllm_vs_hf", "sft_dpo_bf16", "launch"]},
                           "status": {"enum": ["passed", "failed", "skipped"]},
                           "seconds": {"type": "number", "minimum": 0},
                           "reason": {"type": ["string", "null"]},
                           "figures": {"type": "object"}}}},
        "skipped": {"type": "array", "items": {"type": "string"}},
    },
}


def check(name: str, status: str, seconds: float, reason: str | None = None,
          **figures) -> dict:
    """One check's entry: skipped and failed checks say why in `reason`."""
    if status != "passed" and not reason:
        raise ValueError(f"{name}: a {status} check needs its reason")
    return {"name": name, "status": status, "seconds": round(seconds, 1), "reason": reason,
            "figures": figures}


def build_report(checks: list[dict], machine: dict, model: str, started: float) -> dict:
    """The JSON written: every check, `ok` (none failed) and the skipped ones with their reason."""
    return {"schema": 1, "ok": all(c["status"] != "failed" for c in checks),
            "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(
                timespec="seconds"),
            "seconds": round(time.time() - started, 1), "machine": machine, "model": model,
            "checks": checks,
            "skipped": [f"{c['name']}: {c['reason']}" for c in checks if c["status"] == "skipped"]}


def machine_info() -> dict:
    import torch

    try:
        import importlib.metadata

        vllm = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        vllm = None
    return {"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "torch": torch.__version__, "cuda": torch.version.cuda, "vllm": vllm}


class Clock:
    """The time left of BUDGET_S; a check that cannot fit is skipped with that reason."""

    def __init__(self, budget: float) -> None:
        self.end = time.monotonic() + budget

    def left(self) -> float:
        return self.end - time.monotonic()


# -- the model and the data ----------------------------------------------------------------------

def prepare_model(work: Path, model: str | None) -> Path:
    if model:
        return Path(model)
    from selfreward.config.params import Params
    from selfreward.stages.base import run_base

    out = work / "m0"
    run_base(params=Params(), out_dir=out, metrics_path=work / "base.json")
    return out


def seed_chats(count: int) -> tuple[list[str], list[str]]:
    """`count` user prompts of the seed IFT data and their reference answers."""
    rows = [json.loads(x) for x in (ROOT / "data/seed/ift.jsonl").read_text().splitlines() if x]
    rows = rows[:count]
    return ([r["messages"][0]["content"] for r in rows],
            [r["messages"][-1]["content"] for r in rows])


def write_ift(work: Path) -> Path:
    """The first 16 seed IFT conversations, the SFT data of the training checks."""
    ift = work / "ift.jsonl"
    ift.write_text("".join((ROOT / "data/seed/ift.jsonl").read_text().splitlines(True)[:16]))
    return ift


def write_pairs(path: Path, count: int) -> Path:
    """DPO pairs from the seed IFT: the reference answer chosen, its first sentence rejected."""
    prompts, answers = seed_chats(count)
    with path.open("w") as f:
        for i, (p, a) in enumerate(zip(prompts, answers)):
            f.write(json.dumps({"id": f"g{i}", "prompt": [{"role": "user", "content": p}],
                                "chosen": [{"role": "assistant", "content": a}],
                                "rejected": [{"role": "assistant",
                                              "content": a.split(". ")[0][:80]}],
                                "score_chosen": 5.0, "score_rejected": 1.0}) + "\n")
    return path


# -- the checks ------------------------------------------------------------------------------------

def check_vllm_vs_hf(model: Path, clock: Clock) -> dict:
    import importlib.util

    t0 = time.monotonic()
    if importlib.util.find_spec("vllm") is None:
        return check("vllm_vs_hf", "skipped", 0, "vllm is not installed (make install-gpu)")
    if clock.left() < 180:
        return check("vllm_vs_hf", "skipped", 0, "out of time")
    from selfreward.config.params import EngineParams
    from selfreward.generation.engines import Sampling, expected_score, make_engine
    from selfreward.judge.rubric import JUDGE_PREFIX, judge_messages

    prompts, answers = seed_chats(16)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    judge_chats = [judge_messages(p, a) for p, a in zip(prompts, answers)]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=32)
    out = {}
    for name in ("hf", "vllm"):
        engine = make_engine(str(model), EngineParams(name=name, dtype="float32",
                                                      max_model_len=2048,
                                                      gpu_memory_utilization=0.5))
        try:
            texts = [r[0] for r in engine.generate(chats, greedy)]
            scores = [expected_score(p) for p in engine.digit_probs(judge_chats, JUDGE_PREFIX)]
            out[name] = {"texts": texts, "scores": scores, "stats": engine.stats.as_dict()}
        finally:
            engine.close()
    exact = sum(a == b for a, b in zip(out["hf"]["texts"], out["vllm"]["texts"])) / len(prompts)
    diffs = [abs(a - b) for a, b in zip(out["hf"]["scores"], out["vllm"]["scores"])]
    figures = {"prompts": len(prompts), "greedy_exact_share": round(exact, 3),
               "score_diff_max": round(max(diffs), 4),
               "score_diff_mean": round(sum(diffs) / len(diffs), 4),
               "vllm_tokens_per_second": out["vllm"]["stats"]["tokens_per_second"],
               "hf_tokens_per_second": out["hf"]["stats"]["tokens_per_second"]}
    bad = []
    if figures["score_diff_max"] > MAX_SCORE_DIFF:
        bad.append(f"logprob judge differs by up to {figures['score_diff_max']} > "
                   f"{MAX_SCORE_DIFF}")
    if exact < MIN_EXACT_SHARE:
        bad.append(f"greedy answers agree on {exact:.0%} < {MIN_EXACT_SHARE:.0%} of the prompts")
    return check("vllm_vs_hf", "failed" if bad else "passed", time.monotonic() - t0,
                 "; ".join(bad) or None, **figures)


def run_stage(argv: list[str], params: dict, work: Path, timeout: float) -> tuple[int, str]:
    """`selfreward <argv> --params <params>` in a subprocess: (exit code, the log's tail)."""
    path = work / f"params-{argv[0]}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    env.pop("SELFREWARD_LAUNCHED", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "selfreward.cli", argv[0], "--params",
                               str(path), *argv[1:]], cwd=work, env=env, capture_output=True,
                              text=True, timeout=max(1, timeout), check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


TRAIN = {"max_steps": 4, "batch_size": 2, "max_length": 256, "save_steps": 0,
         "precision": "auto", "gradient_checkpointing": True}


def sft_dpo_params() -> dict:
    """In-process training (1 GPU, ddp), bf16 autocast where supported, float32 saves."""
    return {"base": {"dtype": "float32"}, "launch": {"num_processes": 1, "strategy": "ddp"},
            "sft": {**TRAIN, "learning_rate": 1e-5, "final_learning_rate": 1e-6},
            "dpo": {**TRAIN, "learning_rate": 1e-6, "final_learning_rate": 1e-7}}


def launch_params(strategy: str, gpus: int) -> dict:
    """SFT under `strategy` with one process per GPU present."""
    return {"base": {"dtype": "float32"},
            "launch": {"num_processes": gpus, "strategy": strategy},
            "sft": {**TRAIN, "learning_rate": 1e-5, "final_learning_rate": 1e-6}}


def check_sft_dpo(model: Path, work: Path, clock: Clock) -> dict:
    t0 = time.monotonic()
    if clock.left() < 120:
        return check("sft_dpo_bf16", "skipped", 0, "out of time")
    ift = write_ift(work)
    params = sft_dpo_params()
    code, log = run_stage(["sft", "--model", str(model), "--ift", str(ift), "--out",
                           str(work / "sft"), "--metrics", str(work / "sft.json")],
                          params, work, clock.left() / 2)
    if code:
        return check("sft_dpo_bf16", "failed", time.monotonic() - t0, f"sft exit {code}: {log}")
    code, log = run_stage(["dpo", "--model", str(work / "sft"), "--pairs",
                           str(write_pairs(work / "pairs.jsonl", 16)), "--out",
                           str(work / "dpo"), "--metrics", str(work / "dpo.json")],
                          params, work, clock.left())
    if code:
        return check("sft_dpo_bf16", "failed", time.monotonic() - t0, f"dpo exit {code}: {log}")
    figures, bad = {}, []
    for name in ("sft", "dpo"):
        m = json.loads((work / f"{name}.json").read_text())
        update = m["update"]
        figures[name] = {"precision": m.get("precision"), "steps": m["steps"],
                         "update_kept": update["update_kept"],
                         "changed_share": update["changed_share"],
                         "changed_share_bf16": update.get("changed_share_bf16"),
                         "train_runtime_s": m.get("train_runtime_s")}
        if m.get("precision") != "bf16":
            bad.append(f"{name} trained in {m.get('precision')}, not bf16 autocast")
        if update["update_kept"] is None or update["update_kept"] < 0.99:
            bad.append(f"{name}: the float32 save kept {update['update_kept']} of the update")
    return check("sft_dpo_bf16", "failed" if bad else "passed", time.monotonic() - t0,
                 "; ".join(bad) or None, **figures)


def check_launch(model: Path, work: Path, clock: Clock, gpus: int) -> dict:
    t0 = time.monotonic()
    if clock.left() < 90:
        return check("launch", "skipped", 0, "out of time")
    profile = yaml.safe_load((ROOT / "params.gpu.yaml").read_text())
    strategy = profile["launch"]["strategy"]
    if strategy == "zero3":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            return check("launch", "skipped", 0, "launch.strategy zero3 needs deepspeed, "
                         "which is not installed (docs/scaling.md)")
    ift = write_ift(work)
    params = launch_params(strategy, gpus)
    code, log = run_stage(["sft", "--model", str(model), "--ift", str(ift), "--out",
                           str(work / "launched"), "--metrics", str(work / "launched.json")],
                          params, work, clock.left())
    if code:
        return check("launch", "failed", time.monotonic() - t0,
                     f"sft under {strategy} x {gpus} exit {code}: {log}")
    m = json.loads((work / "launched.json").read_text())
    figures = {"strategy": strategy, "num_processes": m["num_processes"], "steps": m["steps"],
               "update_kept": m["update"]["update_kept"],
               "changed_share": m["update"]["changed_share"]}
    bad = []
    if m["num_processes"] != gpus:
        bad.append(f"{m['num_processes']} processes trained, expected {gpus}")
    if not m["update"]["changed_share"]:
        bad.append("no weight changed")
    return check("launch", "failed" if bad else "passed", time.monotonic() - t0,
                 "; ".join(bad) or None, **figures)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports/gpu_check.json")
    ap.add_argument("--model", default=None, help="an HF checkpoint dir (default: embedded 135M)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return NO_CUDA_EXIT
    started, clock = time.time(), Clock(BUDGET_S)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        model = prepare_model(work, args.model)
        checks = []
        for name, run in (
                ("vllm_vs_hf", lambda: check_vllm_vs_hf(model, clock)),
                ("sft_dpo_bf16", lambda: check_sft_dpo(model, work, clock)),
                ("launch", lambda: check_launch(model, work, clock, torch.cuda.device_count()))):
            try:
                checks.append(run())
            except Exception as exc:  # noqa: BLE001 (one broken path must not hide the others)
                checks.append(check(name, "failed", 0, f"{type(exc).__name__}: {exc}"))
            print(json.dumps(checks[-1]), flush=True)
    report = build_report(checks, machine_info(), args.model or "embedded SmolLM2-135M-Instruct",
                          started)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for line in report["skipped"]:
        print(f"skipped {line}")
    print(f"gpu-check: {'ok' if report['ok'] else 'FAILED'}; results in {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
