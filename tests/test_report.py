"""`selfreward report`: summary.md tables, PNG charts and plot CSVs from whatever metrics exist."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from selfreward.cli import main
from selfreward.report.charts import CHARTS
from selfreward.report.summary import collect, collect_models, model_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def model_metrics(k: int, acc: float, words: float) -> dict:
    return {"model": f"models/m{k}",
            "judge_agreement": {"pairwise_accuracy": acc, "pairwise_accuracy_ci": [acc - 0.1,
                                                                                 acc + 0.05],
                                "pairwise_tie_rate": 0.0, "best_hit_rate": 0.5,
                                "spearman": 0.4, "kendall_tau": 0.3},
            "score_std": 0.3,
            "relevance": {"accuracy": 0.5 + k / 10, "accuracy_ci": [0.4, 0.9], "pairs": 54},
            "self_score": {"mean": 2.5 + k / 10},
            "fixed_judge": {"kind": "local", "model": "models/m1", "mean": 2.0 + k / 4,
                            "ci_low": 1.9 + k / 4, "ci_high": 2.1 + k / 4},
            "length": {"mean_words": float(words), "median_words": words - 1.0,
                       "mean_tokens": words * 1.3, "max_new_tokens": 256,
                       "at_cap_share": k / 20}}


def write(root: Path, rel: str, obj: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_metrics(root: Path) -> Path:
    """M0..M3 evaluated; iterations 1 and 2 complete; iteration 3 has only run its prompts."""
    for k in range(4):
        write(root, f"models/m{k}.json", model_metrics(k, 0.6 + k / 100, 40 + k))
    write(root, "sft.json", {"steps": 12, "eft_format": "score", "final_loss": 0.4,
                             "examples": {"eft": {"examples": 136, "truncated": 0}},
                             "update": {"changed_share": 0.26, "update_rms": 3e-4,
                                        "relative_update": 2e-3, "warning": None}})
    for t, (kept, reward, win) in {1: (14, 3.1, 37.5), 2: (16, 3.4, 62.5)}.items():
        write(root, f"iter{t}/prompts.json", {"kept": kept, "attempts": 40})
        write(root, f"iter{t}/judge.json", {"parse_rate": 1.0, "mean_score": reward,
                                            "spread": {"std": 0.25},
                                            **{f"hist_{d}": d + t for d in range(6)}})
        write(root, f"iter{t}/pairs.json", {"pairs": kept - 2})
        write(root, f"iter{t}/dpo.json", {"rewards_accuracies_mean": 0.5 + t / 10,
                                          "update": {"changed_share": 0.9, "warning": None}})
        vs = {"n": 16, "win_pct": win, "tie_pct": 25.0, "loss_pct": 75.0 - win,
              "win_rate": (win + 12.5) / 100, "win_rate_ci": [0.45, 0.9],
              "first_slot_rate": 0.6, "position_bias": {"biased": False}, "mean_p_x": 0.55}
        write(root, f"iter{t}/eval.json", {
            "iteration": str(t), "judge": {"kind": "local", "model": "models/m1",
                                           "mode": "logprob"},
            "answers_changed": {"prompts": 16, "changed": 8 + t, "share": (8 + t) / 16},
            "reward_gain": {"gain": 0.1 * t, "ci_low": 0.05 * t, "ci_high": 0.2 * t,
                            "length_controlled": {"intercept": 0.01, "intercept_ci": [-0.05, 0.07],
                                                  "slope": 0.3, "slope_ci": [0.2, 0.4],
                                                  "mean_length_diff": 5.5,
                                                  "length_correlation": 0.6}},
            "fixed_judge_gain": {"vs_prev": {"gain": 0.25, "ci_low": 0.1, "ci_high": 0.4}},
            "vs_prev": vs, "vs_sft": vs})
    write(root, "iter3/prompts.json", {"kept": 12, "attempts": 40})
    (root / "iter3" / "judge.json").write_text("{not json")  # a half-written file is skipped
    return root


def test_report_from_partial_run(tmp_path):
    metrics = make_metrics(tmp_path / "metrics")
    out, plots = tmp_path / "reports", tmp_path / "plots" / "eval"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(metrics), "--out", str(out),
                                    "--plots", str(plots)])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "## Warnings" not in md  # nothing to warn about
    assert ("| 1 (M1 → M2) | 90.0 | 56.2 | +0.100 [+0.050, +0.200] | +0.010 [-0.050, +0.070] "
            "| +0.250 [+0.100, +0.400] |") in md
    assert "| 2 (M2 → M3) | 16 / 40 | 1.000 | 3.400 | 0.250 | 14 | 0.700 |" in md
    assert "| 3 (M3 → M4) | 12 / 40 | – | – | – | – | – |" in md
    assert "| 2 | M3 vs M2 | 0.750 [0.450, 0.900] | 62.5 | 25.0 | 12.5 | 16 | 0.600 |" in md
    assert md.count("| 1 | M2 vs M1 |") == 1  # M_t is M1 in iteration 1: one row, not two
    assert ("| M0 (`models/m0`) | 60.0 [50.0, 65.0] | 0.400 | 50.0 | 0.300 | 50.0 [40.0, 90.0] "
            "| 2.000 [1.900, 2.100] | 40.0 | 0.0 (≤ 256) |") in md
    assert "| 40.0 | 0.0 (≤ 256) |" in md and "| 43.0 | 15.0 (≤ 256) |" in md
    # every gain beside its value at equal length, with the judge's price of length
    assert ("| 1 | reward gain (frozen M1) | +0.100 [+0.050, +0.200] | +0.010 [-0.050, +0.070] "
            "| +0.300 [+0.200, +0.400] | +5.5 | 0.60 |") in md
    assert "| 2 | fixed-judge gain vs M2 | +0.250 [+0.100, +0.400] | – | – | – | – |" in md
    assert "| M3 (`models/m3`) |" in md and "Fixed judge: `models/m1`." in md
    assert "local model `models/m1` (logprob mode)" in md
    assert "12 steps on 136 eft (0 truncated)" in md
    for chart in CHARTS:
        assert (out / chart).read_bytes()[:8] == PNG_MAGIC
        assert f"({chart})" in md

    with (plots / "iterations.csv").open() as fh:
        its = list(csv.DictReader(fh))
    assert [r["iteration"] for r in its] == ["1", "2", "3"]
    assert its[1]["win_pct_vs_prev"] == "62.5" and its[1]["mean_self_reward"] == "3.4"
    assert its[0]["reward_gain"] == "0.1" and its[0]["answers_changed"] == "0.5625"
    assert its[2]["win_pct_vs_prev"] == "" and its[2]["prompts_kept"] == "12"
    with (plots / "models.csv").open() as fh:
        models = list(csv.DictReader(fh))
    assert [(r["index"], r["model"]) for r in models] == [
        ("0", "models/m0"), ("1", "models/m1"), ("2", "models/m2"), ("3", "models/m3")]
    assert models[3]["judge_pairwise_accuracy"] == "0.63"
    assert models[0]["fixed_judge_score"] == "2.0"


def test_report_with_no_metrics(tmp_path):
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(tmp_path / "none"), "--out",
                                    str(tmp_path / "r"), "--plots", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "No iteration metrics found yet" in (tmp_path / "r" / "summary.md").read_text()
    assert all((tmp_path / "r" / c).read_bytes()[:8] == PNG_MAGIC for c in CHARTS)
    assert (tmp_path / "p" / "iterations.csv").read_text().startswith("iteration,")


def test_model_rows_come_from_the_per_model_metrics(tmp_path):
    metrics = make_metrics(tmp_path / "metrics")
    runs = collect(metrics)
    assert sorted(runs) == [1, 2, 3] and runs[3]["judge"] == {}
    rows = model_rows(collect_models(metrics))
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["judge_pairwise_accuracy"] == 0.6 and rows[1]["relevance_accuracy"] == 0.6


def test_report_lists_a_seeded_sample_of_kept_and_dropped_prompts(tmp_path):
    from fakes import ScriptedEngine

    from selfreward.config.params import PromptsParams
    from selfreward.stages.prompts import generate_prompts

    good = ["Explain how a kettle boils water.", "Give me three tips for a job interview.",
            "Why do cats purr?", "Write a haiku about winter mornings.",
            "How can I keep basil alive indoors?", "List five rivers in Africa.",
            "Translate 'thank you' into Japanese.", "What causes thunder during storms?",
            "Suggest a name for a bakery.", "Compare trains and buses for commuting.",
            "Draft an invitation to a picnic on Sunday.", "Convert 30 miles to kilometres."]
    bad = ["I am a helpful assistant.", "Summarize this passage.", "Question: Answer:",
           "Cooking is a fun hobby.", "The weather in the city.", "I'm a web-based chatbot.",
           "Reply to this email politely.", "A poem about it.", "Water is wet and cold.",
           "In this task you write."]
    replies = iter([f"Task 5: {text}" for pair in zip(good, bad + bad[:2]) for text in pair])
    p = PromptsParams(count=12, max_attempts=24, seed_shots=1, generated_shots=0)
    _, metrics = generate_prompts(ScriptedEngine(lambda text, k, seed: next(replies)), p,
                                  [("s", "Name three rivers in France.")], round_size=8,
                                  output=tmp_path / "p.jsonl", key="k")
    assert len(metrics["sample_kept"]) == 8 and set(metrics["sample_kept"]) <= set(good)
    assert len(metrics["sample_dropped"]) == 8
    assert {d["text"] for d in metrics["sample_dropped"]} <= set(bad)
    root = tmp_path / "metrics"
    (root / "iter1").mkdir(parents=True)
    (root / "iter1" / "prompts.json").write_text(json.dumps(metrics))
    (root / "iter2").mkdir()
    (root / "iter2" / "prompts.json").write_text(json.dumps(
        {"source": "pool", "kept": 2, "sample_kept": ["Why do cats purr?", "Line one\nline two"],
         "sample_dropped": []}))
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(root), "--out",
                                    str(tmp_path / "r"), "--plots", str(tmp_path / "pl")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "summary.md").read_text()
    section = md.split("## Prompts the loop trained on")[1].split("\n## ")[0]
    it1, it2 = section.split("### Iteration 1")[1].split("### Iteration 2")
    assert "source: generate; kept 12; dropped: " in it1
    assert metrics["rejected_self_talk"] == 3 and "self_talk 3" in it1
    kept_part, dropped_part = it1.split("Dropped:")
    assert sum(f"- {text}\n" in kept_part for text in good) == 8
    assert sum(f"] {d['text']}\n" in dropped_part for d in metrics["sample_dropped"]) == 8
    assert f"- [{metrics['sample_dropped'][0]['reason']}] " in dropped_part
    assert "(source: pool; kept 2)" in it2 and "- Line one ⏎ line two" in it2
    assert "Dropped:\n\n- (none)" in it2


def test_report_paired_ifeval_and_verification_gap(tmp_path):
    metrics = make_metrics(tmp_path / "metrics")
    level = {"before": 0.2, "after": 0.25, "diff": 0.05, "ci95": [-0.025, 0.125]}
    eval1 = json.loads((metrics / "iter1" / "eval.json").read_text())
    eval1["ifeval_paired"] = {"vs_prev": {"prompts": 40, **{k: level for k in (
        "prompt_level_strict", "prompt_level_loose", "instruction_level_strict",
        "instruction_level_loose")}}}
    write(metrics, "iter1/eval.json", eval1)

    def gap(gain: float, ci: list[float]) -> dict:
        return {"prompts": 32, "random": {"mean": 0.345, "ci": [0.3, 0.4]},
                "top": {"mean": 0.345 + gain, "ci": [0.28, 0.41]},
                "lowest": {"mean": 0.37, "ci": [0.3, 0.44]}, "oracle": {"mean": 0.57, "ci": None},
                "selection_gain": {"mean": gain, "ci": ci},
                "pairs": {"n": 146, "agree": 73, "accuracy": 0.5, "ci": [0.42, 0.58]},
                "selection_gain_includes_zero": ci[0] <= 0 <= ci[1]}

    write(metrics, "verify/models/m1.json", {"model": "models/m1", "answers_per_prompt": 4,
                                             "at_cap_share": 0.25,
                                             "strict": gap(-0.005, [-0.06, 0.05])})
    write(metrics, "verify/models/m2.json", {"model": "models/m2", "answers_per_prompt": 4,
                                             "strict": gap(0.1, [0.02, 0.18])})
    out = tmp_path / "reports"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(metrics), "--out", str(out),
                                    "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "| 1 | M2 vs M1 | 40 | +5.0 [-2.5, +12.5] | +5.0 [-2.5, +12.5] |" in md
    assert ("| M1 | 32 × 4 | 34.5 [30.0, 40.0] | 34.0 [28.0, 41.0] | 37.0 | 57.0 "
            "| -0.5 [-6.0, +5.0] | 73 / 146 (50.0 [42.0, 58.0] %) | 25.0 |") in md
    assert ("M1: the selection-gain interval includes 0 (-0.5 [-6.0, +5.0] points): its judge "
            "does not pick passing answers more often than chance, so self-judged pairs cannot "
            "teach these skills.") in md
    assert "M2: its judge picks passing answers above chance (+10.0 [+2.0, +18.0] points)." in md


def test_provenance_names_each_machine_with_its_stages_and_precision(tmp_path):
    """The report says which CPU (bf16 flags), threads and precision made which figures."""
    from selfreward.core.machine import machine_info

    metrics = make_metrics(tmp_path / "metrics")
    here = machine_info()
    other = {"cpu": "AMD EPYC 9R14", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
             "cpu_bf16_native": True, "cpus": 2, "torch_threads": 2, "gpu": None,
             "torch": "2.13.0"}
    sft = json.loads((metrics / "sft.json").read_text())
    (metrics / "sft.json").write_text(json.dumps({**sft, "machine": here, "precision": "fp32"}))
    (metrics / "iter1" / "judge.json").write_text(json.dumps(
        {"machine": other, "engine_dtype": "bfloat16"}))
    out = tmp_path / "reports"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(metrics), "--out", str(out),
                                    "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "## Provenance" in md
    line = next(x for x in md.splitlines() if x.startswith("- AMD EPYC 9R14"))
    assert "(flags: avx2, avx512f, avx512_bf16; bf16 native: yes), 2 torch threads of 2" in line
    assert line.endswith("iter1/judge (engine dtype bfloat16)")
    mine = next(x for x in md.splitlines() if x.startswith(f"- {here['cpu']} (flags"))
    assert mine.endswith("sft (precision fp32)")
    assert f"{here['torch_threads']} torch threads" in mine
    assert here["cpu_bf16_native"] == ("avx512_bf16" in here["cpu_flags"]
                                       or "amx_bf16" in here["cpu_flags"])
