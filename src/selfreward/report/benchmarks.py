"""The report's section on benchmarks outside the loop: IFEval per model (metrics/ifeval/),
AlpacaEval 2.0 next to the paper's win rates (metrics/alpaca_eval/) and lm-eval scores
(metrics/lm_eval/). Missing files are skipped; `report.py` appends this section."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..core.io import atomic_file, write_csv
from ..evaluation.ifeval import holdout_split
from ..evaluation.metrics import paired_gain
from .paper import PAPER_WIN_RATE

log = logging.getLogger(__name__)

DASH = "–"
IFEVAL_CHART = "ifeval.png"
IFEVAL_COLUMNS = ["model", "prompt_level_strict", "prompt_level_strict_lo",
                  "prompt_level_strict_hi", "prompt_level_loose", "instruction_level_strict",
                  "instruction_level_loose", "prompts"]
LM_EVAL_METRICS = ("prompt_level_strict_acc", "acc_norm", "acc", "exact_match")


def _model_index(model: str | None, path: Path) -> int | None:
    """k of models/m<k> (from the metrics' "model" field, else the file name)."""
    for name in (Path(model).name if model else "", path.stem):
        m = re.fullmatch(r"m(\d+)", name)
        if m:
            return int(m.group(1))
    return None


def _load_all(root: Path) -> list[tuple[int, dict]]:
    """(model index, metrics) for every JSON under root, by model index."""
    out = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("report: skipping unreadable %s (%s)", path, exc)
            continue
        k = _model_index(data.get("model") or data.get("generator", "").rsplit("-", 1)[-1],
                         path) if isinstance(data, dict) else None
        if k is not None:
            out.append((k, data))
    return sorted(out, key=lambda kv: kv[0])


def ifeval_rows(metrics_dir: str | Path) -> list[dict]:
    """One row per model with IFEval metrics: the four accuracies and the strict interval."""
    rows = []
    for k, m in _load_all(Path(metrics_dir) / "ifeval"):
        def acc(level: str, metrics: dict = m):
            return (metrics.get(level) or {}).get("accuracy")

        ci = (m.get("prompt_level_strict") or {}).get("ci95") or [None, None]
        rows.append({"model": k, "prompt_level_strict": acc("prompt_level_strict"),
                     "prompt_level_strict_lo": ci[0], "prompt_level_strict_hi": ci[1],
                     "prompt_level_loose": acc("prompt_level_loose"),
                     "instruction_level_strict": acc("instruction_level_strict"),
                     "instruction_level_loose": acc("instruction_level_loose"),
                     "prompts": m.get("prompts"), "prompts_file": m.get("prompts_file"),
                     "max_new_tokens": m.get("max_new_tokens")})
    return rows


def _pct(value) -> str:
    return DASH if value is None else f"{100 * value:.1f}"


def _num(value, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


SPLIT_NAMES = {"all": "all prompts", "trained": "trained types only",
               "held_out": "with a held-out type"}


def _answers(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return rows or None


def paired_split(baseline: list[dict], answers: list[dict], holdout: list[str],
                 types: list[str] = (), *, mode: str = "loose", seed: int = 0) -> dict:
    """Prompt-level accuracy of `answers` minus `baseline` (rows of two `ifeval` answer files:
    key, instruction_id_list, strict, loose) on the prompts both scored, per split, with a
    paired bootstrap 95 % interval (evaluation/metrics.paired_gain)."""
    before = {row["key"]: all(row[mode]) for row in baseline}
    shared = [row for row in answers if row["key"] in before]
    out = {}
    for name, keep in holdout_split(shared, holdout, types).items():
        gain = paired_gain([float(before[shared[k]["key"]]) for k in keep],
                           [float(all(shared[k][mode])) for k in keep], seed)
        out[name] = {k: gain[k] for k in ("n", "mean_before", "mean_after", "gain", "ci_low",
                                          "ci_high")}
    return out


def ifeval_split_lines(metrics_dir: str | Path, answers_dir: str | Path | None = None
                       ) -> list[str]:
    """IFEval three ways when prompts.constraints.holdout is set (docs/constraints.md): prompt-
    level loose accuracy on all prompts, on those of trained types only, on those with a held-out
    type, each with M_k - M1 paired by prompt (bootstrap 95 %) where the answers are in
    `answers_dir` (data/ifeval, the ifeval stages' answer files)."""
    from ..evaluation.ifeval import SPLITS

    models = [(k, m) for k, m in _load_all(Path(metrics_dir) / "ifeval") if m.get("splits")]
    if not models:
        return []
    answers = {k: _answers(Path(answers_dir) / f"{m['model']}.jsonl")
               if answers_dir and m.get("model") else None for k, m in models}
    holdout = models[-1][1].get("holdout") or []
    types = models[-1][1].get("trained_types") or []
    intro = (f"IFEval by instruction type (held out of training: {', '.join(holdout)}): "
             "prompt-level loose accuracy in % [bootstrap 95 %], and the change from M1 in "
             "points, paired by prompt [95 %].")
    lines = ["", intro, ""]
    rows = []
    for k, m in models:
        cells = [f"M{k}"]
        paired = (paired_split(answers[1], answers[k], holdout, types)
                  if k != 1 and answers.get(1) and answers.get(k) else {})
        for name in SPLITS:
            split = m["splits"].get(name) or {}
            loose = split.get("prompt_level_loose") or {}
            ci = loose.get("ci95") or [None, None]
            cell = (f"{_pct(loose.get('accuracy'))} [{_pct(ci[0])}–{_pct(ci[1])}] "
                    f"(n={split.get('prompts', 0)})")
            gain = paired.get(name) or {}
            if gain.get("gain") is not None:
                cell += (f"; {100 * gain['gain']:+.1f} [{100 * gain['ci_low']:+.1f}, "
                         f"{100 * gain['ci_high']:+.1f}]")
            cells.append(cell)
        rows.append(cells)
    return lines + _table(["model"] + [SPLIT_NAMES[n] for n in SPLITS], rows)


def benchmarks_markdown(ifeval: list[dict], alpaca: list[tuple[int, dict]],
                        lm_eval: list[tuple[int, dict]], chart: str | None,
                        split_lines: list[str] = ()) -> str:
    """The markdown section; empty benchmarks say how to produce them."""
    lines = ["", "## Benchmarks outside the loop", "", "### IFEval (official checkers)", ""]
    if ifeval:
        files = sorted({f"`{r['prompts_file']}` ({r['prompts']} prompts, answers ≤ "
                        f"{r['max_new_tokens']} tokens)" for r in ifeval})
        lines += [(f"Prompts: {', '.join(files)}. Accuracy in %, greedy answers; strict 95 % "
                   "interval from a bootstrap over prompts."), ""]
        lines += _table(
            ["model", "prompt strict", "95 % interval", "prompt loose", "instruction strict",
             "instruction loose"],
            [[f"M{r['model']}", _pct(r["prompt_level_strict"]),
              f"{_pct(r['prompt_level_strict_lo'])}–{_pct(r['prompt_level_strict_hi'])}",
              _pct(r["prompt_level_loose"]), _pct(r["instruction_level_strict"]),
              _pct(r["instruction_level_loose"])] for r in ifeval])
        if chart:
            lines += ["", f"![ifeval]({chart})"]
        lines += split_lines
    else:
        lines.append("No IFEval metrics yet (stages `ifeval@<model>`).")
    lines += ["", "### AlpacaEval 2.0 (vs GPT-4 Turbo)", ""]
    if alpaca:
        lines += _table(["model", "win rate %", "LC win rate %", "paper win rate %", "annotator"],
                        [[f"M{k}", _num(m.get("win_rate")),
                          _num(m.get("length_controlled_winrate")),
                          _num(m.get("paper_win_rate", PAPER_WIN_RATE.get(f"M{k}"))),
                          str(m.get("annotator", DASH))] for k, m in alpaca])
    else:
        lines.append("Not run (optional: list models in `alpaca_eval.models`, needs the "
                     "annotator's API key). Paper: " + ", ".join(
                         f"{k} {v} %" for k, v in PAPER_WIN_RATE.items()) + ".")
    if lm_eval:
        tasks = sorted({t for _, m in lm_eval for t in (m.get("tasks") or {})})
        lines += ["", "### lm-eval", ""]

        def score(scores: dict) -> str:
            metric = next((k for k in LM_EVAL_METRICS if k in scores), None)
            return DASH if metric is None else f"{100 * scores[metric]:.1f} ({metric})"

        lines += _table(["model"] + tasks,
                        [[f"M{k}"] + [score((m.get("tasks") or {}).get(t, {})) for t in tasks]
                         for k, m in lm_eval])
    return "\n".join(lines) + "\n"


def draw_ifeval_chart(rows: list[dict], out_dir: Path) -> str:
    """IFEval accuracies per model on a fixed 0–1 scale, the strict interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if rows:
        xs = [r["model"] for r in rows]
        for key, label in (("prompt_level_strict", "prompt-level strict"),
                           ("prompt_level_loose", "prompt-level loose"),
                           ("instruction_level_strict", "instruction-level strict"),
                           ("instruction_level_loose", "instruction-level loose")):
            pts = [(r["model"], r[key]) for r in rows if r[key] is not None]
            if not pts:
                continue
            if key == "prompt_level_strict":
                lo = [r[key] - (r["prompt_level_strict_lo"] or r[key]) for r in rows]
                hi = [(r["prompt_level_strict_hi"] or r[key]) - r[key] for r in rows]
                ax.errorbar(*zip(*pts), yerr=[lo, hi], marker="o", capsize=3, label=label)
            else:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_xticks(xs, [f"M{x}" for x in xs])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="IFEval (official checkers)", xlabel="model", ylabel="accuracy", ylim=(0, 1))
    fig.tight_layout()
    with atomic_file(out_dir / IFEVAL_CHART, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return IFEVAL_CHART


def benchmarks_section(metrics_dir: str | Path, out_dir: str | Path,
                       plots_dir: str | Path, ifeval_answers: str | Path | None = None) -> str:
    """Draw reports/ifeval.png and plots/eval/ifeval.csv; return the markdown section."""
    ifeval = ifeval_rows(metrics_dir)
    chart = draw_ifeval_chart(ifeval, Path(out_dir))
    write_csv(Path(plots_dir) / "ifeval.csv", IFEVAL_COLUMNS,
              ([("" if r[c] is None else r[c]) for c in IFEVAL_COLUMNS] for r in ifeval))
    return benchmarks_markdown(ifeval, _load_all(Path(metrics_dir) / "alpaca_eval"),
                               _load_all(Path(metrics_dir) / "lm_eval"), chart,
                               ifeval_split_lines(metrics_dir, ifeval_answers))
