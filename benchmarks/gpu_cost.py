"""The GPU profile's cost sheet (docs/gpu.md) from the GPU rehearsal's own metrics.

`make rehearse-gpu` runs params.gpu.yaml on CPU with size-only overrides and copies its metrics/
and params.yaml to reports/gpu_rehearsal/; this script counts, per stage and iteration, the
engine calls, the prompt tokens read (prompt x samples) and the tokens trained there, scales them
to params.gpu.yaml's counts, and turns them into hours and memory on H100s for a 1.7B, a 7B and a
70B model with the throughputs of THROUGHPUT (each with its source).

    .venv/bin/python benchmarks/gpu_cost.py --rehearsal reports/gpu_rehearsal [--out FILE.md]

What is counted and what is assumed:
- calls and read tokens per call are the rehearsal's (templates, few-shot blocks and seed text are
  the profile's own); the texts the tiny model wrote are a few words, so generated tokens are
  taken at the cap (samples x max_new_tokens: an upper bound) and every judged response adds
  responses.max_new_tokens to what the judge reads;
- scale = the profile's count / the rehearsal's count of what drives the stage (tasks, prompts,
  groups, examples, pairs); counts the profile leaves open (OASST groups, pairs kept) are the
  paper's, marked as assumptions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Paper figures (Yuan et al. 2024) for counts the profile leaves to the data.
PAPER = {"eft_groups": 2171,  # EFT prompts judged: 1,630 train + 541 held-out
         "eft_train": 1630, "pairs": {"1": 3964, "2": 6942}}

# One H100 SXM 80 GB. Training: FLOPs per token (6N forward+backward, +2N recomputation with
# gradient checkpointing, +2N the DPO reference forward) at 40 % of the 989 TFLOPS bf16 dense
# peak (Llama 3 paper, Dubey et al. 2024, sec. 3.3: 38-43 % BF16 MFU on H100s). Prefill:
# 2N FLOPs per token at 50 % of peak. Decode: see `decode_source`.
PEAK_FLOPS = 989e12
MODELS = {
    "1.7B": {"params": 1.7e9, "decode_tps": 12000, "gpus_for_generation": 1,
             "decode_source": "estimate: the 8B figure x ~2.5 (fewer weights to stream per "
                              "step); not measured"},
    "7B": {"params": 7e9, "decode_tps": 5000, "gpus_for_generation": 1,
           "decode_source": "published: 5,777 output tok/s, Llama 3.1 8B FP8, vLLM 0.10, one "
                            "H100 (Red Hat, MLPerf Inference v5.1 offline); bf16 taken ~15 % "
                            "lower"},
    "70B": {"params": 70e9, "decode_tps": 2500, "gpus_for_generation": 8,
            "decode_source": "estimate for 8 x H100, tensor_parallel_size 8, bf16: 1,480 tok/s "
                             "published for 70B bf16 on 8 x A100 at batch 16 (vLLM 0.6) scaled "
                             "by the H100's ~1.7x bandwidth; not measured"},
}
MFU_TRAIN, MFU_PREFILL = 0.40, 0.50


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def generation_rows(reh: Path, gpu: dict, used: dict) -> list[dict]:
    """One row per generating stage: calls, read and generated tokens at the profile's scale."""
    metrics = reh / "metrics"
    iters = sorted(gpu["iterations"])
    # SELF-INSTRUCT: calls per attempt as the rehearsal made them, up to the profile's
    # max_attempts (an upper bound: SmolLM2 keeps more of its attempts than the tiny model).
    si = metrics / "self_instruct.json"
    attempts = load(si).get("attempts", 0) if si.exists() else 0
    specs = [("self_instruct", si, gpu["self_instruct"]["max_attempts"] / max(1, attempts),
              gpu["self_instruct"]["max_new_tokens"], 0, "attempts, up to max_attempts")]
    for name in sorted(gpu["oasst"]["exports"]):
        m = metrics / "seed" / name / "judge.json"
        groups = load(m)["groups_judged"] if m.exists() else 1
        specs.append((f"seed_judge@{name}", m, PAPER["eft_groups"] / groups,
                      gpu["oasst"]["judge"]["max_new_tokens"], 0,
                      f"groups (paper's {PAPER['eft_groups']}; assumption)"))
    ratio = gpu["prompts"]["count"] / used["prompts"]["count"]
    for t in iters:
        specs += [(f"prompts@{t}", metrics / f"iter{t}/prompts.json", ratio,
                   gpu["prompts"]["max_new_tokens"], 0, "prompts"),
                  (f"responses@{t}", metrics / f"iter{t}/responses.json", ratio,
                   gpu["responses"]["max_new_tokens"], 0, "prompts"),
                  (f"judge@{t}", metrics / f"iter{t}/judge.json", ratio,
                   gpu["judge"]["max_new_tokens"], gpu["responses"]["max_new_tokens"],
                   "prompts")]
    ifeval = sorted((metrics / "ifeval" / "models").glob("*.json"))
    for path in ifeval:
        specs.append((f"ifeval@{path.stem}", path, 100 / used["ifeval"]["max_prompts"],
                      gpu["ifeval"]["max_new_tokens"], 0, "IFEval prompts (all 100)"))
    rows = []
    for stage, path, scale, cap, embedded, unit in specs:
        if not path.exists():
            continue
        m = load(path)
        calls = m.get("engine_prompts", 0)
        if not calls:  # e.g. prompts@t from SELF-INSTRUCT tasks: no generation
            rows.append({"stage": stage, "calls": 0, "read": 0, "generated": 0,
                         "scale": scale, "unit": unit, "note": "no generation"})
            continue
        samples = m["engine_prompt_tokens_x_samples"] / max(1, m["engine_prompt_tokens"])
        read_per_call = m["engine_prompt_tokens"] / calls + embedded
        rows.append({"stage": stage, "calls": round(calls * scale),
                     "samples": round(samples, 2),
                     "read_per_call": round(read_per_call),
                     "read": round(calls * scale * read_per_call * samples),
                     "read_once": round(calls * scale * read_per_call),
                     "generated": round(calls * scale * samples * cap),
                     "generated_rehearsal": m["engine_generated_tokens"],
                     "scale": round(scale, 1), "unit": unit})
    return rows


def training_rows(reh: Path, gpu: dict) -> list[dict]:
    """Tokens trained per training stage (one epoch's tokens x epochs) at the profile's scale."""
    metrics = reh / "metrics"
    rows = []
    for name in sorted(gpu["oasst"]["exports"]):
        path = metrics / "seed" / name / "sft.json"
        if path.exists():
            m = load(path)
            per = sum(k["tokens"] for k in m["examples"].values()) / max(1, m["ift_examples"])
            n = gpu["oasst"]["ift"]["count"]
            rows.append({"stage": f"seed_sft@{name}", "examples": n, "tokens_per_example":
                         round(per), "tokens": round(n * per * gpu["sft"]["epochs"]),
                         "kind": "sft"})
    path = metrics / "sft.json"
    if path.exists():
        m = load(path)
        ex = m["examples"]
        total = 0
        for kind, c in ex.items():
            n = gpu["oasst"]["ift"]["count"] if kind == "ift" else PAPER["eft_train"]
            total += n * c["tokens"] / max(1, c["examples"])
        rows.append({"stage": "sft", "examples": gpu["oasst"]["ift"]["count"] +
                     PAPER["eft_train"], "tokens_per_example": round(
                         total / (gpu["oasst"]["ift"]["count"] + PAPER["eft_train"])),
                     "tokens": round(total * gpu["sft"]["epochs"]), "kind": "sft"})
    for t in sorted(gpu["iterations"]):
        path = metrics / f"iter{t}" / "dpo.json"
        if not path.exists():
            continue
        m = load(path)
        per_measured = m["pair_tokens"] / max(1, m["pairs_kept"])
        # The tiny model's answers are a few words: a pair is bounded by its prompt read twice
        # plus two answers at the cap.
        prompt_part = per_measured / 2
        per = min(2 * prompt_part + 2 * gpu["responses"]["max_new_tokens"],
                  2 * gpu["dpo"]["max_length"])
        n = PAPER["pairs"].get(t, PAPER["pairs"]["2"])
        rows.append({"stage": f"dpo@{t}", "examples": n, "tokens_per_example": round(per),
                     "tokens": round(n * per * gpu["dpo"]["epochs"]), "kind": "dpo",
                     "note": "pairs: paper's count (assumption)"})
    return rows


def hours(gen: list[dict], train: list[dict]) -> dict:
    """{model: {stage: H100-hours}}: GPU-hours (70B generation runs on 8 GPUs: 8 x its hours)."""
    out = {}
    for size, spec in MODELS.items():
        n = spec["params"]
        prefill_tps = MFU_PREFILL * PEAK_FLOPS * spec["gpus_for_generation"] / (2 * n)
        per = {}
        for r in gen:
            if r["calls"]:
                # vLLM's prefix caching reads a prompt once for its samples.
                per[r["stage"]] = spec["gpus_for_generation"] * (
                    r["read_once"] / prefill_tps + r["generated"] / spec["decode_tps"]) / 3600
        for r in train:
            flops_per_token = (10 if r["kind"] == "dpo" else 8) * n
            per[r["stage"]] = r["tokens"] * flops_per_token / (MFU_TRAIN * PEAK_FLOPS) / 3600
        out[size] = per
    return out


MEMORY = """\
| model | generation (vLLM, bf16 weights) | SFT / DPO (float32 master weights + grads + Adam = 16 B/param; DPO adds the float32 reference, 4 B/param) | settings |
|---|---|---|---|
| 1.7B | 3.4 GB weights + KV cache in 0.85 x 80 GB: 1 GPU | 27 GB (+ 7 GB reference) + activations: 1 GPU | `engine.tensor_parallel_size: 1`; `launch: {strategy: ddp, num_processes: 1}`, `grad_accum: 8` for the batch of 16 (or 8 GPUs, ddp or fsdp) |
| 7B | 14 GB weights: 1 GPU | 112 GB + 28 GB: over one GPU; fsdp on 8 GPUs: ~18 GB/GPU + activations | `tensor_parallel_size: 1` (2 for long contexts); `launch: {strategy: fsdp, num_processes: 8}` |
| 70B | 140 GB weights: `tensor_parallel_size: 8` on one node | 1.12 TB + 280 GB: more than 16 x 80 GB; LoRA (`dpo.lora.enabled`) or zero3 with CPU offload | `tensor_parallel_size: 8`; `launch: {strategy: zero3 or fsdp, num_processes: 16+, num_machines: 2+}` or LoRA |
"""


def render(gen: list[dict], train: list[dict], est: dict) -> str:
    head = ("| stage | calls | samples | read tokens/call | read (x samples) | generated (cap) "
            "| scaled by |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in gen:
        if not r["calls"]:
            lines.append(f"| {r['stage']} | 0 | | | | | {r['note']} |")
            continue
        lines.append(f"| {r['stage']} | {r['calls']:,} | {r['samples']:g} | "
                     f"{r['read_per_call']:,} | {r['read']:,} | {r['generated']:,} | "
                     f"x{r['scale']:g} ({r['unit']}) |")
    lines += ["", "| stage | examples | tokens/example | tokens trained |",
              "|---|---|---|---|"]
    for r in train:
        lines.append(f"| {r['stage']} | {r['examples']:,} | {r['tokens_per_example']:,} | "
                     f"{r['tokens']:,} |")
    stages = [r["stage"] for r in gen if r["calls"]] + [r["stage"] for r in train]
    lines += ["", "| stage | " + " | ".join(f"{s}: H100-hours" for s in MODELS) + " |",
              "|---|" + "---|" * len(MODELS)]
    for s in stages:
        lines.append(f"| {s} | " + " | ".join(f"{est[m][s]:.2f}" for m in MODELS) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(est[m].values()):.1f}**"
                                              for m in MODELS) + " |")
    lines += ["", MEMORY, "Decode throughputs:"]
    lines += [f"- {m}: {spec['decode_tps']:,} tok/s ({spec['decode_source']})"
              for m, spec in MODELS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rehearsal", default="reports/gpu_rehearsal", type=Path)
    ap.add_argument("--profile", default=ROOT / "params.gpu.yaml", type=Path)
    ap.add_argument("--out", default=None, type=Path)
    args = ap.parse_args(argv)
    gpu = yaml.safe_load(args.profile.read_text())
    used = yaml.safe_load((args.rehearsal / "params.yaml").read_text())
    gen, train = generation_rows(args.rehearsal, gpu, used), training_rows(args.rehearsal, gpu)
    text = render(gen, train, hours(gen, train))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
