"""One comparison of self-rewarding variants (issue 19 item 5): iteration 1 from the same M1.

A variants YAML maps a name to params overrides (`section.key: value`, as `dvc exp run -S` takes
them); `plain: {}` is the plain loop. For every variant and seed, `dvc exp run` reproduces the
iteration-1 targets (M2 and what measures it) with the overrides plus the seed on the DPO and
tie-break seeds; stages a variant does not touch (M0, M1, their evaluation) come from DVC's cache.
Each run's metrics are read back from the workspace and tabulated per variant (mean over seeds,
and each seed's figure): reward gain and its value at equal length, fixed-judge gain, IFEval
paired difference vs M1 (prompt-level loose), the verification gap of M2, answers changed,
mean answer length, judge agreement and relevance of M2, wall time.

    .venv/bin/python benchmarks/variants.py variants.yaml --seeds 0 1 2 \\
        [--out benchmarks/results/variants.md] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import yaml

TARGETS = ("evaluate@1", "ifeval@m2", "verify@m2")
SEED_KEYS = ("dpo.seed", "pairs.seed")
COLUMNS = ("reward gain", "at equal length", "fixed-judge gain", "IFEval loose vs M1 (points)",
           "selection gain M2 (points)", "answers changed %", "mean words M2",
           "judge acc. M2 %", "relevance M2 %", "wall s")


def load_variants(path: str | Path) -> dict[str, dict]:
    """name -> {param path: value}; a clear error for anything else."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict | None) for v in data.values()):
        raise SystemExit(f"{path}: expected a mapping of variant name -> params overrides")
    return {str(name): dict(over or {}) for name, over in data.items()}


def exp_command(name: str, overrides: dict, seed: int) -> list[str]:
    """The `dvc exp run` of one variant and seed (iteration-1 targets only)."""
    sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    sets += [f"{key}={seed}" for key in SEED_KEYS]
    return (["dvc", "exp", "run", "--name", f"{name}-s{seed}", *TARGETS]
            + [arg for s in sets for arg in ("-S", s)])


def _get(data, *keys):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def read_figures(root: Path, wall: float) -> dict[str, float | None]:
    """One run's figures from the workspace metrics."""
    def load(rel: str) -> dict:
        path = root / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    ev, verify, m2 = load("metrics/iter1/eval.json"), load("metrics/verify/models/m2.json"), \
        load("metrics/models/m2.json")
    gain_sel = _get(verify, "strict", "selection_gain", "mean")
    ifeval = _get(ev, "ifeval_paired", "vs_prev", "prompt_level_loose", "diff")
    changed = _get(ev, "answers_changed", "share")
    acc = _get(m2, "judge_agreement", "pairwise_accuracy")
    rel = _get(m2, "relevance", "accuracy")
    return dict(zip(COLUMNS, (
        _get(ev, "reward_gain", "gain"),
        _get(ev, "reward_gain", "length_controlled", "intercept"),
        _get(ev, "fixed_judge_gain", "vs_prev", "gain"),
        None if ifeval is None else 100 * ifeval,
        None if gain_sel is None else 100 * gain_sel,
        None if changed is None else 100 * changed,
        _get(m2, "length", "mean_words"),
        None if acc is None else 100 * acc, None if rel is None else 100 * rel,
        round(wall, 1))))


def table(results: dict[str, list[dict]]) -> str:
    """Markdown: per variant, the mean over seeds and each seed's value in brackets."""
    def cell(values: list) -> str:
        xs = [v for v in values if v is not None]
        if not xs:
            return "–"
        seeds = ", ".join(f"{v:+.3f}" if abs(v) < 10 else f"{v:.1f}" for v in xs)
        mean = statistics.fmean(xs)
        return (f"{mean:+.3f}" if abs(mean) < 10 else f"{mean:.1f}") + f" ({seeds})"

    lines = ["| variant | seeds | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 2)]
    for name, runs in results.items():
        lines.append(f"| {name} | {len(runs)} | "
                     + " | ".join(cell([r[c] for r in runs]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", help="YAML: variant name -> params overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repo", default=".", help="the project checkout (dvc repo)")
    parser.add_argument("--out", help="write the markdown table here too")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    root = Path(args.repo)
    results: dict[str, list[dict]] = {}
    for name, overrides in load_variants(args.variants).items():
        for seed in args.seeds:
            cmd = exp_command(name, overrides, seed)
            print(" ".join(cmd), flush=True)
            if args.dry_run:
                continue
            start = time.perf_counter()
            subprocess.run(cmd, cwd=root, check=True)
            results.setdefault(name, []).append(read_figures(root,
                                                             time.perf_counter() - start))
    if results:
        text = table(results)
        print(text)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
