"""The report's sections that say whether a gain is more than length and self-agreement (issue
19): gains at equal length, IFEval paired by prompt (both from metrics/iter<N>/eval.json) and the
verification gap per model (metrics/verify/). Missing figures show "–"."""

from __future__ import annotations

from pathlib import Path

from .benchmarks import _load_all

DASH = "–"
LEVELS = (("prompt_level_strict", "prompt strict"), ("prompt_level_loose", "prompt loose"),
          ("instruction_level_strict", "instruction strict"),
          ("instruction_level_loose", "instruction loose"))
LENGTH_NOTE = (
    "Each prompt's paired score difference d_i is regressed on tanh(Δlen_i / sd(Δlen)) (Δlen: "
    "answer length difference in tokens; the length term of AlpacaEval's length-controlled win "
    "rate, as a linear model). The intercept is the gain at equal length, the slope the score the "
    "judge pays per unit of the length term; both with a bootstrap 95 % interval over prompts. A "
    "raw gain whose equal-length interval includes 0 may be all length.")
PAIRED_NOTE = (
    "M_t+1's accuracy minus the other model's on the same prompts, in points, with the 95 % "
    "interval of the paired difference (prompts resampled, both models' verdicts together): "
    "the test that two overlapping per-model intervals are not.")
VERIFY_NOTE = (
    "N answers per prompt sampled from each model as the loop samples its candidates, checked by "
    "the official IFEval checkers (prompt-level strict) and scored by the model's own judge. Pass "
    "rate in % of a random answer, of the judge's top- and lowest-scored answer, of the best of N "
    "(oracle); selection gain = top − random in points; pairs = same-prompt answer pairs the "
    "checker separates that the judge orders the same way (ties count as misses). 95 % intervals "
    "from a bootstrap over prompts.")


def _signed(value, ci=None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return DASH
    text = f"{scale * value:+.{digits}f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]"
    return text


def _pct(value, ci=None) -> str:
    if value is None:
        return DASH
    text = f"{100 * value:.1f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _get(data, *keys):
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def gain_rows(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """Every score gain of every iteration with its equal-length fit."""
    rows = []
    for t, m in runs.items():
        ev = m.get("eval") or {}
        for label, gain in ((f"reward gain (frozen M{t})", ev.get("reward_gain")),
                            (f"fixed-judge gain vs M{t}", _get(ev, "fixed_judge_gain", "vs_prev")),
                            ("fixed-judge gain vs M1", _get(ev, "fixed_judge_gain", "vs_sft"))):
            if not isinstance(gain, dict) or (t == 1 and label.endswith("vs M1")):
                continue
            lc = gain.get("length_controlled") or {}
            rows.append({"iteration": t, "gain": label, "raw": gain.get("gain"),
                         "raw_ci": [gain.get("ci_low"), gain.get("ci_high")],
                         "intercept": lc.get("intercept"), "intercept_ci": lc.get("intercept_ci"),
                         "slope": lc.get("slope"), "slope_ci": lc.get("slope_ci"),
                         "mean_length_diff": lc.get("mean_length_diff"),
                         "length_correlation": lc.get("length_correlation")})
    return rows


def paired_ifeval_rows(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """IFEval differences of M_t+1 vs M_t and vs M1, paired by prompt, per iteration."""
    rows = []
    for t, m in runs.items():
        paired = _get(m.get("eval") or {}, "ifeval_paired") or {}
        for side, name in (("vs_prev", f"M{t}"), ("vs_sft", "M1")):
            if side in paired and not (side == "vs_sft" and t == 1):
                rows.append({"iteration": t, "comparison": f"M{t + 1} vs {name}",
                             "prompts": paired[side].get("prompts"),
                             **{k: paired[side].get(k) or {} for k, _ in LEVELS}})
    return rows


def verify_rows(metrics_dir: str | Path) -> list[dict]:
    """One row per model with verify metrics (prompt-level strict)."""
    rows = []
    for k, m in _load_all(Path(metrics_dir) / "verify"):
        strict = m.get("strict") or {}
        rows.append({"model": k, "prompts": strict.get("prompts"),
                     "n": m.get("answers_per_prompt"), "at_cap_share": m.get("at_cap_share"),
                     **{key: strict.get(key) or {} for key in
                        ("random", "top", "lowest", "oracle", "selection_gain", "pairs")},
                     "includes_zero": strict.get("selection_gain_includes_zero")})
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """A plain sentence per model on what its selection gain says."""
    out = []
    for r in rows:
        gain = r["selection_gain"]
        ci = gain.get("ci")
        if gain.get("mean") is None or not ci:
            continue
        text = f"{_signed(gain['mean'], ci, 100, 1)} points"
        if r["includes_zero"]:
            out.append(f"M{r['model']}: the selection-gain interval includes 0 ({text}): its "
                       "judge does not pick passing answers more often than chance, so "
                       "self-judged pairs cannot teach these skills.")
        elif ci[0] > 0:
            out.append(f"M{r['model']}: its judge picks passing answers above chance ({text}).")
        else:
            out.append(f"M{r['model']}: its judge prefers failing answers ({text}).")
    return out


def yardstick_markdown(runs: dict[int, dict[str, dict]], metrics_dir: str | Path) -> str:
    """The three sections (each only when it has rows), as markdown."""
    lines: list[str] = []
    gains = gain_rows(runs)
    if gains:
        lines += ["", "## Gains at equal length", "", LENGTH_NOTE, ""]
        lines += _table(
            ["iteration", "gain", "raw gain", "at equal length (intercept)",
             "slope (per length unit)", "mean Δtokens", "corr(d, Δtokens)"],
            [[str(r["iteration"]), r["gain"], _signed(r["raw"], r["raw_ci"]),
              _signed(r["intercept"], r["intercept_ci"]), _signed(r["slope"], r["slope_ci"]),
              DASH if r["mean_length_diff"] is None else f"{r['mean_length_diff']:+.1f}",
              DASH if r["length_correlation"] is None else f"{r['length_correlation']:.2f}"]
             for r in gains])
    paired = paired_ifeval_rows(runs)
    if paired:
        lines += ["", "## IFEval, paired by prompt", "", PAIRED_NOTE, ""]
        lines += _table(["iteration", "comparison", "prompts"] + [name for _, name in LEVELS],
                        [[str(r["iteration"]), r["comparison"], str(r["prompts"] or DASH)]
                         + [_signed(r[k].get("diff"), r[k].get("ci95"), 100, 1)
                            for k, _ in LEVELS] for r in paired])
    verify = verify_rows(metrics_dir)
    if verify:
        lines += ["", "## Does the judge see what it rewards? (verification gap)", "",
                  VERIFY_NOTE, ""]
        lines += _table(
            ["model", "prompts × N", "random %", "judge top %", "judge lowest %", "best of N %",
             "selection gain (points)", "pairs ordered right", "answers at cap %"],
            [[f"M{r['model']}", f"{r['prompts']} × {r['n']}",
              _pct(r["random"].get("mean"), r["random"].get("ci")),
              _pct(r["top"].get("mean"), r["top"].get("ci")),
              _pct(r["lowest"].get("mean")), _pct(r["oracle"].get("mean")),
              _signed(r["selection_gain"].get("mean"), r["selection_gain"].get("ci"), 100, 1),
              (f"{r['pairs'].get('agree')} / {r['pairs'].get('n')} "
               f"({_pct(r['pairs'].get('accuracy'), r['pairs'].get('ci'))} %)"
               if r["pairs"].get("n") else DASH),
              _pct(r["at_cap_share"])] for r in verify])
        lines += [""] + [f"- {s}" for s in verdicts(verify)]
    return "\n".join(lines) + ("\n" if lines else "")
