"""`selfreward report`: reports/summary.md + PNG charts + DVC plot CSVs from whatever metrics exist.

Reads metrics/sft.json, metrics/models/m<k>.json (one per evaluated model, M0 included) and
metrics/iter<N>/{prompts,judge,pairs,dpo,eval}.json; any file or iteration may be missing (a run
in progress): its cells show "–". The report leads with what says whether the run worked: did
training move the weights and the answers, did the policy move towards its judge, is the judge
any good, and can the head-to-head judge be trusted.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..core.io import atomic_file, write_csv
from .benchmarks import benchmarks_section
from .charts import CHARTS, draw_charts
from .yardstick import yardstick_markdown

log = logging.getLogger(__name__)

STAGE_FILES = ("prompts", "responses", "judge", "pairs", "dpo", "eval")
DASH = "–"
ITERATION_COLUMNS = [
    "iteration", "weights_changed", "answers_changed", "reward_gain", "reward_gain_ci_low",
    "reward_gain_ci_high", "fixed_judge_gain", "win_rate_vs_prev", "win_rate_vs_prev_ci_low",
    "win_rate_vs_prev_ci_high", "win_pct_vs_prev", "tie_pct_vs_prev", "loss_pct_vs_prev",
    "win_rate_vs_sft", "win_pct_vs_sft", "first_slot_rate", "p_newer_vs_prev",
    "mean_self_reward", "self_reward_std", "parse_rate", "prompts_kept", "pairs",
    "dpo_reward_accuracy"]
MODEL_COLUMNS = [
    "index", "model", "judge_pairwise_accuracy", "judge_pairwise_accuracy_ci_low",
    "judge_pairwise_accuracy_ci_high", "judge_spearman", "judge_best_hit_rate", "score_std",
    "relevance_accuracy", "relevance_ci_low", "relevance_ci_high", "fixed_judge_score",
    "fixed_judge_ci_low", "fixed_judge_ci_high", "self_score", "mean_words", "median_words",
    "mean_tokens"]
HEAD_TO_HEAD_NOTE = (
    "Each pair is judged in both orders; a verdict that flips with the order is a tie. Win rate "
    "= (wins + ties/2) / prompts, with its bootstrap 95 % interval; first-slot rate = share of "
    "verdicts picking whichever answer was shown first (0.5 = no position bias).")
MODELS_NOTE = (
    "As a judge (the model scoring with the pipeline's own judge code): pairwise accuracy on the "
    "held-out EFT set (same-prompt pairs with different human scores ordered as the humans did; "
    "ties are failures; group-bootstrap 95 % interval), Spearman with the human scores, score "
    "spread (std of its EFT scores: 0 = one bin), relevance (its own answer to a held-out prompt "
    "scored above another prompt's answer; Wilson 95 % interval). As a policy: the fixed judge's "
    "pointwise rubric score of its greedy answers (one answer at a time: no position to be "
    "biased by; bootstrap 95 % interval) and answer length.")
MOVEMENT_NOTE = (
    "Weights changed: share of the checkpoint's weights that differ from M_t as saved. Answers "
    "changed: share of held-out prompts whose greedy answer differs. Reward gain: the frozen "
    "judge M_t's mean score of M_t+1's answers minus of its own (paired by prompt, bootstrap 95 % "
    "interval): what DPO optimised; at equal length: that gain with the length difference "
    "regressed out (section \"Gains at equal length\"). Fixed-judge gain: the same with the "
    "fixed judge.")

PROVENANCE_NOTE = (
    "Float results hold for the machine they were made on: under `precision: auto` and "
    "`engine.dtype: auto` a CPU with AVX512-BF16 trains and generates in bf16, one without in "
    "fp32 (docs/reproducibility.md).")


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


def collect_models(metrics_dir: str | Path) -> dict[int, dict]:
    """{k: headline metrics of model M_k} from metrics/models/m<k>.json."""
    root = Path(metrics_dir) / "models"
    found = {}
    for f in root.glob("m*.json") if root.is_dir() else []:
        m = re.fullmatch(r"m(\d+)\.json", f.name)
        if m:
            found[int(m.group(1))] = _load(f)
    return dict(sorted(found.items()))


def _get(data, *keys, default=None):
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return default
        data = data[k]
    return data


def _ci(data, key: str = "ci", index: int = 0):
    ci = _get(data, key)
    return ci[index] if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def dpo_reward_accuracy(dpo: dict) -> float | None:
    """Mean DPO reward accuracy over training logs (TRL's rewards/accuracies)."""
    for key in ("rewards_accuracies_mean", "eval_rewards_accuracies", "rewards_accuracies_last"):
        if isinstance(dpo.get(key), (int, float)):
            return dpo[key]
    return None


def iteration_rows(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """One row per iteration: movement, the loop's numbers and the head-to-head."""
    rows = []
    for t, m in runs.items():
        ev = m["eval"]
        gain = _get(ev, "reward_gain") or {}
        judge_std = _get(m["judge"], "spread", "std")
        row = {"iteration": t,
               "weights_changed": _get(m["dpo"], "update", "changed_share"),
               "update_warning": _get(m["dpo"], "update", "warning"),
               "answers_changed": _get(ev, "answers_changed", "share"),
               "reward_gain": gain.get("gain"), "reward_gain_ci_low": gain.get("ci_low"),
               "reward_gain_ci_high": gain.get("ci_high"),
               "reward_gain_lc": _get(gain, "length_controlled", "intercept"),
               "reward_gain_lc_ci": _get(gain, "length_controlled", "intercept_ci"),
               "fixed_judge_gain": _get(ev, "fixed_judge_gain", "vs_prev", "gain"),
               "fixed_judge_gain_ci": (_get(ev, "fixed_judge_gain", "vs_prev", "ci_low"),
                                       _get(ev, "fixed_judge_gain", "vs_prev", "ci_high")),
               "prompts_kept": _get(m["prompts"], "kept"),
               "prompt_attempts": _get(m["prompts"], "attempts"),
               "prompts": m["prompts"],
               "parse_rate": _get(m["judge"], "parse_rate"),
               "mean_self_reward": _get(m["judge"], "mean_score"),
               "self_reward_std": judge_std,
               "pairs": _get(m["pairs"], "pairs"),
               "dpo_reward_accuracy": dpo_reward_accuracy(m["dpo"]),
               "hist": [_get(m["judge"], f"hist_{d}") for d in range(6)],
               "judge": _get(ev, "judge")}
        for side in ("prev", "sft"):
            vs = _get(ev, f"vs_{side}") or {}
            for k in ("win", "tie", "loss"):
                row[f"{k}_pct_vs_{side}"] = vs.get(f"{k}_pct")
            row[f"win_rate_vs_{side}"] = vs.get("win_rate")
            row[f"win_rate_vs_{side}_ci_low"] = _ci(vs, "win_rate_ci", 0)
            row[f"win_rate_vs_{side}_ci_high"] = _ci(vs, "win_rate_ci", 1)
            row[f"n_vs_{side}"] = vs.get("n")
            row[f"first_slot_rate_vs_{side}"] = vs.get("first_slot_rate")
            row[f"position_biased_vs_{side}"] = _get(vs, "position_bias", "biased")
            row[f"flip_rate_vs_{side}"] = _get(vs, "position_bias", "flip_rate")
            row[f"p_newer_vs_{side}"] = vs.get("mean_p_x")
        row["first_slot_rate"] = row["first_slot_rate_vs_prev"]
        rows.append(row)
    return rows


def model_rows(models: dict[int, dict]) -> list[dict]:
    """One row per evaluated model M_k (M0 = the base, M1 = SFT, M_t+1 after iteration t)."""
    rows = []
    for k, sec in models.items():
        ja, ln = sec.get("judge_agreement") or {}, sec.get("length") or {}
        rel, fixed = sec.get("relevance") or {}, sec.get("fixed_judge") or {}
        rows.append({
            "index": k, "model": sec.get("model") or f"models/m{k}",
            "judge_pairwise_accuracy": ja.get("pairwise_accuracy"),
            "judge_pairwise_accuracy_ci_low": _ci(ja, "pairwise_accuracy_ci", 0),
            "judge_pairwise_accuracy_ci_high": _ci(ja, "pairwise_accuracy_ci", 1),
            "judge_spearman": ja.get("spearman"), "judge_best_hit_rate": ja.get("best_hit_rate"),
            "score_std": sec.get("score_std"),
            "relevance_accuracy": rel.get("accuracy"),
            "relevance_ci_low": _ci(rel, "accuracy_ci", 0),
            "relevance_ci_high": _ci(rel, "accuracy_ci", 1),
            "fixed_judge_score": fixed.get("mean"), "fixed_judge_ci_low": fixed.get("ci_low"),
            "fixed_judge_ci_high": fixed.get("ci_high"),
            "fixed_judge": fixed.get("model") or fixed.get("kind"),
            "self_score": _get(sec, "self_score", "mean"),
            **{c: ln.get(c) for c in ("mean_words", "median_words", "mean_tokens")},
            "at_cap_share": ln.get("at_cap_share"), "max_new_tokens": ln.get("max_new_tokens")})
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


def _interval(value, low, high, pct: bool = False, signed: bool = False) -> str:
    """`value [low, high]` (a 95 % interval), as a percentage or a (signed) number."""
    if value is None:
        return DASH

    def number_text(number: float) -> str:
        return f"{100 * number:.1f}" if pct else f"{number:+.3f}" if signed else f"{number:.3f}"

    if low is None or high is None:
        return number_text(value)
    return f"{number_text(value)} [{number_text(low)}, {number_text(high)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _judge_text(judge) -> str:
    if not isinstance(judge, dict):
        return "fixed judge"
    if judge.get("kind") == "endpoint":
        return f"endpoint `{judge.get('model')}` at {judge.get('url')}"
    return f"local model `{judge.get('model')}` ({judge.get('mode')} mode)"


def warnings(sft: dict, its: list[dict]) -> list[str]:
    """Plain sentences for everything that makes the run's figures meaningless or doubtful."""
    out = []
    if _get(sft, "update", "warning"):
        out.append(f"SFT (M0 → M1): {sft['update']['warning']}.")
    for r in its:
        t = r["iteration"]
        if r["update_warning"]:
            out.append(f"DPO iteration {t} (M{t} → M{t + 1}): {r['update_warning']}.")
        if r["answers_changed"] == 0:
            out.append(f"Iteration {t}: not one greedy answer changed (M{t} → M{t + 1}).")
        for side, name in (("prev", f"M{t}"), ("sft", "M1")):
            if r[f"position_biased_vs_{side}"] and not (side == "sft" and t == 1):
                flips = r[f"flip_rate_vs_{side}"]
                follows = (f", verdict follows the slot in {_fmt(flips, True)} % of pairs"
                           if flips is not None else "")
                out.append(
                    f"Iteration {t}, M{t + 1} vs {name}: the head-to-head judge is position-"
                    f"biased (first-slot rate {_fmt(r[f'first_slot_rate_vs_{side}'])}{follows}): "
                    "its win rates say little; read the fixed judge's pointwise scores instead.")
    return out


def render_markdown(sft: dict, its: list[dict], models: list[dict], charts: list[str]) -> str:
    """The summary a person reads instead of raw JSON."""
    intro = (f"Generated by `selfreward report` from `metrics/` ({len(its)} iteration(s), "
             f"{len(models)} evaluated model(s)). Iteration t trains M_t+1 from M_t; M0 is the "
             f"base model, M1 the SFT model. {DASH} = not measured; [a, b] = 95 % interval.")
    lines = ["# Self-rewarding run: summary", "", intro, ""]
    if not its and not models:
        return "\n".join(lines + ["No iteration metrics found yet: run `dvc repro`.", ""])
    notes = warnings(sft, its)
    if notes:
        lines += ["## Warnings", ""] + [f"- **{n}**" for n in notes] + [""]
    if its:
        lines += ["## Did the model move?", "", MOVEMENT_NOTE, ""]
        lines += _table(
            ["iteration", "weights changed %", "answers changed %", "reward gain (frozen M_t)",
             "at equal length", "fixed-judge gain"],
            [[f"{r['iteration']} (M{r['iteration']} → M{r['iteration'] + 1})",
              _fmt(r["weights_changed"], True), _fmt(r["answers_changed"], True),
              _interval(r["reward_gain"], r["reward_gain_ci_low"], r["reward_gain_ci_high"],
                        signed=True),
              _interval(r["reward_gain_lc"], *(r["reward_gain_lc_ci"] or (None, None)),
                        signed=True),
              _interval(r["fixed_judge_gain"], *r["fixed_judge_gain_ci"], signed=True)]
             for r in its])
    if models:
        lines += ["", "## Models as judge and as policy", "", MODELS_NOTE, ""]
        lines += _table(
            ["model", "pairwise acc %", "Spearman", "5-best %", "score std", "relevance %",
             "fixed-judge score (0-5)", "mean words", "answers at cap %"],
            [[f"M{m['index']} (`{m['model']}`)",
              _interval(m["judge_pairwise_accuracy"], m["judge_pairwise_accuracy_ci_low"],
                        m["judge_pairwise_accuracy_ci_high"], pct=True),
              _fmt(m["judge_spearman"]), _fmt(m["judge_best_hit_rate"], True),
              _fmt(m["score_std"]),
              _interval(m["relevance_accuracy"], m["relevance_ci_low"], m["relevance_ci_high"],
                        pct=True),
              _interval(m["fixed_judge_score"], m["fixed_judge_ci_low"],
                        m["fixed_judge_ci_high"]),
              _fmt(m["mean_words"]),
              _fmt(m["at_cap_share"], True)
              + (f" (≤ {m['max_new_tokens']})" if m["max_new_tokens"] else "")]
             for m in models])
        fixed = {m["fixed_judge"] for m in models if m["fixed_judge"]}
        if fixed:
            lines += ["", f"Fixed judge: {', '.join(f'`{f}`' for f in sorted(fixed))}."]
    if its:
        lines += ["", "## Self-rewarding loop", ""]
        lines += _table(
            ["iteration", "prompts kept", "judge parse rate", "mean self-reward (0-5)",
             "self-reward std", "pairs", "DPO reward accuracy"],
            [[f"{r['iteration']} (M{r['iteration']} → M{r['iteration'] + 1})",
              _fmt(r["prompts_kept"]) + (f" / {r['prompt_attempts']}" if r["prompt_attempts"]
                                         else ""),
              _fmt(r["parse_rate"]), _fmt(r["mean_self_reward"]), _fmt(r["self_reward_std"]),
              _fmt(r["pairs"]), _fmt(r["dpo_reward_accuracy"])] for r in its])
        judges = {_judge_text(r["judge"]) for r in its if r["judge"]}
        lines += ["", "## Head-to-head on held-out prompts", "",
                  f"Judge: {', '.join(sorted(judges)) or DASH}. {HEAD_TO_HEAD_NOTE}", ""]
        lines += _table(
            ["iteration", "comparison", "win rate", "win %", "tie %", "loss %", "prompts",
             "first-slot rate"],
            [[str(r["iteration"]), f"M{r['iteration'] + 1} vs {name}",
              _interval(r[f"win_rate_vs_{side}"], r[f"win_rate_vs_{side}_ci_low"],
                        r[f"win_rate_vs_{side}_ci_high"]),
              *(DASH if r[f"{k}_pct_vs_{side}"] is None else f"{r[f'{k}_pct_vs_{side}']:.1f}"
                for k in ("win", "tie", "loss")), _fmt(r[f"n_vs_{side}"]),
              _fmt(r[f"first_slot_rate_vs_{side}"])
              + (" (biased)" if r[f"position_biased_vs_{side}"] else "")]
             for r in its for side, name in (("prev", f"M{r['iteration']}"), ("sft", "M1"))
             if not (side == "sft" and r["iteration"] == 1)])
        lines += prompts_section(its)
        lines += ["", "## Self-judged score histogram (rounded mean score per response)", ""]
        lines += _table(["iteration"] + [str(d) for d in range(6)],
                        [[str(r["iteration"])] + [_fmt(h) for h in r["hist"]] for r in its])
    if sft:
        lines += ["", "## SFT (M0 → M1)", "", sft_text(sft)]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c[:-4]}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


PROMPTS_NOTE = (
    "A seeded sample of the prompts each iteration kept (what the loop answered, judged and "
    "trained on) and of the candidates the filters dropped, with the rule that dropped them "
    "(docs/prompts.md).")


def _one_line(text: str, limit: int = 160) -> str:
    text = " ⏎ ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def prompts_section(its: list[dict]) -> list[str]:
    """Per iteration: the prompt source, drops per reason and the sampled kept/dropped prompts
    of metrics/iter<t>/prompts.json; [] when no iteration has a sample."""
    its = [r for r in its if r["prompts"].get("sample_kept") is not None]
    if not its:
        return []
    lines = ["", "## Prompts the loop trained on", "", PROMPTS_NOTE]
    for r in its:
        m = r["prompts"]
        drops = ", ".join(f"{k[len('rejected_'):]} {v}" for k, v in m.items()
                          if k.startswith("rejected_") and v)
        lines += ["", f"### Iteration {r['iteration']} (source: {m.get('source', 'generate')}; "
                  f"kept {_fmt(m.get('kept'))}" + (f"; dropped: {drops}" if drops else "") + ")",
                  "", "Kept:", ""]
        lines += [f"- {_one_line(text)}" for text in m["sample_kept"]] or ["- (none)"]
        lines += ["", "Dropped:", ""]
        lines += [f"- [{d.get('reason', DASH)}] {_one_line(d.get('text', ''))}"
                  for d in m.get("sample_dropped") or []] or ["- (none)"]
    return lines


def sft_text(sft: dict) -> str:
    """One paragraph: what SFT trained on and how far it moved the weights."""
    kinds = _get(sft, "examples") or {}
    parts = [f"{c.get('examples')} {k} ({c.get('truncated', 0)} truncated)"
             for k, c in kinds.items() if isinstance(c, dict)]
    upd = _get(sft, "update") or {}
    return (f"{sft.get('steps', DASH)} steps on {', '.join(parts) or DASH}; EFT as "
            f"`{sft.get('eft_format', DASH)}`; final loss {_fmt(sft.get('final_loss'))}; "
            f"weights changed {_fmt(upd.get('changed_share'), True)} % "
            f"(update RMS {_fmt(upd.get('update_rms'))}, relative "
            f"{_fmt(upd.get('relative_update'))}).")


def provenance_text(metrics_dir: str | Path) -> str:
    """Where the figures were made: each machine (CPU, its bf16 and vector flags, threads, GPU,
    torch) with the stages that ran on it, their training precision and engine dtype. The same
    commit gives other figures on a CPU with AVX512-BF16 under `auto` (docs/reproducibility.md)."""
    root = Path(metrics_dir)
    files = [root / "sft.json"] + sorted(root.glob("iter*/*.json")) + \
        sorted(root.glob("models/*.json"))
    machines: dict[str, list[str]] = {}
    for path in files:
        m = _load(path)
        machine = m.get("machine")
        if not isinstance(machine, dict):
            continue
        how = [f"precision {m['precision']}"] if m.get("precision") else []
        how += [f"engine dtype {m['engine_dtype']}"] if m.get("engine_dtype") else []
        name = str(path.relative_to(root).with_suffix(""))
        flags = ", ".join(machine.get("cpu_flags") or []) or DASH
        key = (f"{machine.get('cpu') or DASH} (flags: {flags}; bf16 native: "
               f"{'yes' if machine.get('cpu_bf16_native') else 'no'}), "
               f"{machine.get('torch_threads', DASH)} torch threads of "
               f"{machine.get('cpus', DASH)} CPUs, GPU {machine.get('gpu') or 'none'}, "
               f"torch {machine.get('torch', DASH)}")
        machines.setdefault(key, []).append(name + (f" ({', '.join(how)})" if how else ""))
    if not machines:
        return ""
    lines = ["", "## Provenance", "", PROVENANCE_NOTE, ""]
    for key, stages in machines.items():
        lines.append(f"- {key}: {'; '.join(stages)}")
    return "\n".join(lines) + "\n"


def _csv_value(value) -> str:
    return "" if value is None else str(value)


def write_report(metrics_dir: str | Path, out_dir: str | Path, plots_dir: str | Path,
                 ifeval_answers: str | Path | None = None) -> Path:
    """Write <out_dir>/summary.md and charts, and <plots_dir>/{iterations,models}.csv."""
    out, plots = Path(out_dir), Path(plots_dir)
    sft = _load(Path(metrics_dir) / "sft.json")
    runs = collect(metrics_dir)
    its, models = iteration_rows(runs), model_rows(collect_models(metrics_dir))
    out.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(its, models, out)
    write_csv(plots / "iterations.csv", ITERATION_COLUMNS,
              ([_csv_value(r[c]) for c in ITERATION_COLUMNS] for r in its))
    write_csv(plots / "models.csv", MODEL_COLUMNS,
              ([_csv_value(r[c]) for c in MODEL_COLUMNS] for r in models))
    benchmarks = benchmarks_section(metrics_dir, out, plots, ifeval_answers)  # IFEval, AlpacaEval, lm-eval
    summary = out / "summary.md"
    with atomic_file(summary) as fh:
        fh.write(render_markdown(sft, its, models, charts) + yardstick_markdown(runs, metrics_dir)
                 + benchmarks + provenance_text(metrics_dir))
    for note in warnings(sft, its):
        log.warning("report: %s", note)
    log.info("report: %d iteration(s), %d model(s), charts %s -> %s", len(its), len(models),
             charts, summary)
    return summary


__all__ = ["CHARTS", "collect", "collect_models", "iteration_rows", "model_rows", "write_report"]
