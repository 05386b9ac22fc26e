"""`selfreward report`: reports/summary.md + PNG charts + DVC plot CSVs from whatever metrics exist.

Reads metrics/iter<N>/{prompts,judge,pairs,dpo,eval}.json; any file or iteration may be missing
(a run in progress, or an older run without evaluation): its cells show "–".
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .io import atomic_file, write_csv

log = logging.getLogger(__name__)

STAGE_FILES = ("prompts", "responses", "judge", "pairs", "dpo", "eval")
DASH = "–"
CHARTS = ("win_rate.png", "judge_agreement.png", "self_reward.png", "length.png",
          "judge_hist.png")
ITERATION_COLUMNS = ["iteration", "win_pct_vs_prev", "tie_pct_vs_prev", "loss_pct_vs_prev",
                     "win_pct_vs_sft", "tie_pct_vs_sft", "loss_pct_vs_sft", "p_newer_vs_prev",
                     "p_newer_vs_sft", "mean_self_reward",
                     "parse_rate", "prompts_kept", "pairs", "dpo_reward_accuracy"]
HEAD_TO_HEAD_NOTE = (
    "Each pair is judged in both orders; a verdict that flips with the order is a tie. "
    "Percentages for the newer model; first-slot rate = share of verdicts picking whichever "
    "answer was shown first (0.5 = no position bias); P(newer better) = the logprob judge's "
    "probability that the newer answer is better, averaged over both orders (position bias "
    "cancels; 0.5 = no preference).")
AGREEMENT_NOTE = (
    "Pairwise accuracy: same-prompt response pairs with different human scores that the model "
    "orders the same way (ties are failures; tie rate shown). 5-best: groups where the model's "
    "top response has the best human score. Exact: rounded model score equals the human score.")
MODEL_COLUMNS = ["iteration", "model", "judge_pairwise_accuracy", "judge_tie_rate",
                 "judge_best_hit_rate", "judge_exact_match", "judge_spearman", "judge_kendall_tau",
                 "mean_words", "median_words", "mean_tokens", "median_tokens"]


def _load(path: Path) -> dict:
    """A metrics JSON file, or {} if it is missing or unreadable (reported, not fatal)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("report: skipping unreadable %s (%s)", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def collect(metrics_dir: str | Path) -> dict[int, dict[str, dict]]:
    """{iteration: {stage: metrics}} for every metrics/iter<N> directory, in order."""
    root = Path(metrics_dir)
    found = {}
    for d in root.glob("iter*") if root.is_dir() else []:
        m = re.fullmatch(r"iter(\d+)", d.name)
        if m and d.is_dir():
            found[int(m.group(1))] = {s: _load(d / f"{s}.json") for s in STAGE_FILES}
    return dict(sorted(found.items()))


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def dpo_reward_accuracy(dpo: dict) -> float | None:
    """Mean DPO reward accuracy over training logs (TRL's rewards/accuracies)."""
    for key in ("rewards_accuracies_mean", "eval_rewards_accuracies", "rewards_accuracies_last"):
        if isinstance(dpo.get(key), (int, float)):
            return dpo[key]
    return None


def iteration_rows(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """One row per iteration: the self-rewarding loop's numbers and head-to-head results."""
    rows = []
    for t, m in runs.items():
        ev = m["eval"]
        row = {"iteration": t,
               "prompts_kept": _get(m["prompts"], "kept"),
               "prompt_attempts": _get(m["prompts"], "attempts"),
               "parse_rate": _get(m["judge"], "parse_rate"),
               "mean_self_reward": _get(m["judge"], "mean_score"),
               "pairs": _get(m["pairs"], "pairs"),
               "dpo_reward_accuracy": dpo_reward_accuracy(m["dpo"]),
               "hist": [_get(m["judge"], f"hist_{d}") for d in range(6)],
               "judge": _get(ev, "judge")}
        for side in ("prev", "sft"):
            for k in ("win", "tie", "loss"):
                row[f"{k}_pct_vs_{side}"] = _get(ev, f"vs_{side}", f"{k}_pct")
            row[f"n_vs_{side}"] = _get(ev, f"vs_{side}", "n")
            row[f"first_slot_rate_vs_{side}"] = _get(ev, f"vs_{side}", "first_slot_rate")
            row[f"p_newer_vs_{side}"] = _get(ev, f"vs_{side}", "mean_p_x")
        rows.append(row)
    return rows


def model_rows(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """One row per model: M1 (iteration 0, from iteration 1's eval) and M_t+1 after iteration t."""
    models: dict[int, dict] = {}
    for t, m in runs.items():
        ev = m["eval"]
        if not ev:
            continue
        if t - 1 not in models and isinstance(ev.get("prev"), dict):
            models[t - 1] = ev["prev"]
        if isinstance(ev.get("next"), dict):
            models[t] = ev["next"]
    rows = []
    for t, sec in sorted(models.items()):
        ja, ln = sec.get("judge_agreement") or {}, sec.get("length") or {}
        rows.append({"iteration": t, "model": sec.get("model") or f"M{t + 1}",
                     "judge_pairwise_accuracy": ja.get("pairwise_accuracy"),
                     "judge_tie_rate": ja.get("pairwise_tie_rate"),
                     "judge_best_hit_rate": ja.get("best_hit_rate"),
                     "judge_exact_match": ja.get("exact_match"),
                     "judge_spearman": ja.get("spearman"), "judge_kendall_tau": ja.get("kendall_tau"),
                     **{k: ln.get(k) for k in ("mean_words", "median_words", "mean_tokens",
                                               "median_tokens")}})
    return rows


def _fmt(value, pct: bool = False) -> str:
    """A table cell: fractions as percentages when pct, small floats with 3 decimals."""
    if value is None:
        return DASH
    if isinstance(value, float):
        if pct:
            return f"{100 * value:.1f}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _pct(value) -> str:
    """A cell for a value that is already a percentage."""
    return DASH if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _judge_text(judge) -> str:
    if not isinstance(judge, dict):
        return "fixed judge"
    if judge.get("kind") == "endpoint":
        return f"endpoint `{judge.get('model')}` at {judge.get('url')}"
    return f"local model `{judge.get('model')}` ({judge.get('mode')} mode)"


def render_markdown(its: list[dict], models: list[dict], charts: list[str]) -> str:
    """The summary a person reads instead of raw JSON."""
    intro = (f"Generated by `selfreward report` from `metrics/` ({len(its)} iteration(s)). "
             f"Iteration t trains M_t+1 from M_t; M1 is the SFT model. {DASH} = not measured.")
    lines = ["# Self-rewarding run: summary", "", intro, ""]
    if not its:
        return "\n".join(lines + ["No iteration metrics found yet: run `dvc repro`.", ""])
    lines += ["## Self-rewarding loop", ""]
    lines += _table(
        ["iteration", "prompts kept", "judge parse rate", "mean self-reward (0-5)", "pairs",
         "DPO reward accuracy"],
        [[f"{r['iteration']} (M{r['iteration']} → M{r['iteration'] + 1})",
          _fmt(r["prompts_kept"]) + (f" / {r['prompt_attempts']}" if r["prompt_attempts"]
                                     else ""),
          _fmt(r["parse_rate"]), _fmt(r["mean_self_reward"]), _fmt(r["pairs"]),
          _fmt(r["dpo_reward_accuracy"])] for r in its])
    judges = {_judge_text(r["judge"]) for r in its if r["judge"]}
    lines += ["", "## Head-to-head on held-out prompts", "",
              f"Judge: {', '.join(sorted(judges)) or DASH}. {HEAD_TO_HEAD_NOTE}", ""]
    lines += _table(
        ["iteration", "comparison", "win %", "tie %", "loss %", "prompts", "first-slot rate",
         "P(newer better)"],
        [[str(r["iteration"]), f"M{r['iteration'] + 1} vs {name}",
          _pct(r[f"win_pct_vs_{side}"]), _pct(r[f"tie_pct_vs_{side}"]),
          _pct(r[f"loss_pct_vs_{side}"]), _fmt(r[f"n_vs_{side}"]),
          _fmt(r[f"first_slot_rate_vs_{side}"]), _fmt(r[f"p_newer_vs_{side}"])]
         for r in its for side, name in (("prev", f"M{r['iteration']}"), ("sft", "M1"))
         if not (side == "sft" and r["iteration"] == 1)])
    lines += ["", "## Judge agreement with human scores (held-out EFT set)", "",
              AGREEMENT_NOTE, ""]
    lines += _table(
        ["model", "pairwise acc %", "tie rate %", "5-best %", "exact %", "Spearman",
         "Kendall τ"],
        [[f"M{m['iteration'] + 1} (`{m['model']}`)", _fmt(m["judge_pairwise_accuracy"], True),
          _fmt(m["judge_tie_rate"], True), _fmt(m["judge_best_hit_rate"], True),
          _fmt(m["judge_exact_match"], True), _fmt(m["judge_spearman"]),
          _fmt(m["judge_kendall_tau"])] for m in models])
    lines += ["", "## Response length on held-out prompts", ""]
    lines += _table(["model", "mean words", "median words", "mean tokens", "median tokens"],
                    [[f"M{m['iteration'] + 1}", _fmt(m["mean_words"]), _fmt(m["median_words"]),
                      _fmt(m["mean_tokens"]), _fmt(m["median_tokens"])] for m in models])
    lines += ["", "## Self-judged score histogram (rounded mean score per response)", ""]
    lines += _table(["iteration"] + [str(d) for d in range(6)],
                    [[str(r["iteration"])] + [_fmt(h) for h in r["hist"]] for r in its])
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c[:-4]}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


def draw_charts(its: list[dict], models: list[dict], out_dir: Path) -> list[str]:
    """PNG charts of the same curves (matplotlib, Agg); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        with atomic_file(out_dir / name, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        written.append(name)

    def no_data(ax) -> None:  # every chart file exists (DVC outputs), even before any data
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)

    def line_chart(name, rows, series, title, ylabel, xlabel="iteration"):
        pts = {label: [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
               for key, label in series}
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, xy in pts.items():
            if xy:
                ax.plot(*zip(*xy), marker="o", label=label)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if any(pts.values()):
            ax.set_xticks(sorted({r["iteration"] for r in rows}))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        else:
            no_data(ax)
        save(fig, name)

    line_chart("win_rate.png", its, [("win_pct_vs_prev", "win % vs M_t"),
                                     ("tie_pct_vs_prev", "tie % vs M_t"),
                                     ("win_pct_vs_sft", "win % vs M1")],
               "Head-to-head: M_t+1 (both orders)", "%")
    line_chart("judge_agreement.png", models,
               [("judge_pairwise_accuracy", "pairwise accuracy"),
                ("judge_best_hit_rate", "5-best"), ("judge_exact_match", "exact match"),
                ("judge_spearman", "Spearman")],
               "Judge agreement with human scores", "rate / correlation",
               "iteration (0 = M1, t = M_t+1)")
    line_chart("self_reward.png", its, [("mean_self_reward", "mean self-reward")],
               "Mean self-judged score of sampled answers", "score (0-5)")
    line_chart("length.png", models, [("mean_words", "mean words"),
                                      ("median_words", "median words"),
                                      ("mean_tokens", "mean tokens")],
               "Answer length on held-out prompts", "length", "iteration (0 = M1, t = M_t+1)")
    hists = [r for r in its if any(h is not None for h in r["hist"])]
    fig, axes = plt.subplots(1, max(1, len(hists)), figsize=(3 * max(1, len(hists)) + 1, 3),
                             sharey=True, squeeze=False)
    for ax, r in zip(axes[0], hists):
        ax.bar(range(6), [h or 0 for h in r["hist"]])
        ax.set(title=f"iteration {r['iteration']}", xlabel="self-judged score", xticks=range(6))
    if not hists:
        axes[0][0].set_title("self-judged score histogram")
        no_data(axes[0][0])
    axes[0][0].set_ylabel("responses")
    save(fig, "judge_hist.png")
    return written


def _csv_value(v) -> str:
    return "" if v is None else str(v)


def run_report(metrics_dir: str | Path, out_dir: str | Path, plots_dir: str | Path) -> Path:
    """Write <out_dir>/summary.md and charts, and <plots_dir>/{iterations,models}.csv."""
    out, plots = Path(out_dir), Path(plots_dir)
    runs = collect(metrics_dir)
    its, models = iteration_rows(runs), model_rows(runs)
    out.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(its, models, out)
    write_csv(plots / "iterations.csv", ITERATION_COLUMNS,
              ([_csv_value(r[c]) for c in ITERATION_COLUMNS] for r in its))
    write_csv(plots / "models.csv", MODEL_COLUMNS,
              ([_csv_value(r[c]) for c in MODEL_COLUMNS] for r in models))
    from .report_benchmarks import benchmarks_section  # IFEval, AlpacaEval, lm-eval

    benchmarks = benchmarks_section(metrics_dir, out, plots)
    summary = out / "summary.md"
    with atomic_file(summary) as fh:
        fh.write(render_markdown(its, models, charts) + benchmarks)
    log.info("report: %d iteration(s), %d model(s), charts %s -> %s", len(its), len(models),
             charts, summary)
    return summary
