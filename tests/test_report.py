"""`selfreward report`: summary.md tables, PNG charts and plot CSVs from whatever metrics exist."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from selfreward.cli import main
from selfreward.report import CHARTS, collect, model_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def agreement(acc: float) -> dict:
    return {"pairwise_accuracy": acc, "pairwise_tie_rate": 0.0, "best_hit_rate": 0.5,
            "exact_match": 0.25, "spearman": 0.4, "kendall_tau": 0.3}


def side(model: str, acc: float, words: float) -> dict:
    return {"model": model, "judge_agreement": agreement(acc),
            "length": {"mean_words": float(words), "median_words": words - 1.0,
                       "mean_tokens": words * 1.3,
                       "median_tokens": words * 1.2}}


def write(root: Path, rel: str, obj: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_metrics(root: Path) -> Path:
    """Iterations 1 and 2 complete; iteration 3 has only run its prompts stage so far."""
    for t, (kept, reward, win) in {1: (14, 3.1, 37.5), 2: (16, 3.4, 62.5)}.items():
        write(root, f"iter{t}/prompts.json", {"kept": kept, "attempts": 40})
        write(root, f"iter{t}/judge.json", {"parse_rate": 1.0, "mean_score": reward,
                                            **{f"hist_{d}": d + t for d in range(6)}})
        write(root, f"iter{t}/pairs.json", {"pairs": kept - 2})
        write(root, f"iter{t}/dpo.json", {"rewards_accuracies_mean": 0.5 + t / 10})
        vs = {"n": 16, "win_pct": win, "tie_pct": 25.0, "loss_pct": 75.0 - win,
              "first_slot_rate": 0.6, "mean_p_x": 0.5 + t / 20}
        write(root, f"iter{t}/eval.json", {
            "iteration": str(t), "judge": {"kind": "local", "model": "models/m1",
                                           "mode": "logprob"},
            "vs_prev": vs, "vs_sft": vs,
            "prev": side(f"models/m{t}", 0.6 + t / 100, 40 + t),
            "next": side(f"models/m{t + 1}", 0.6 + (t + 1) / 100, 41 + t)})
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
    assert "| 2 (M2 → M3) | 16 / 40 | 1.000 | 3.400 | 14 | 0.700 |" in md
    assert "| 3 (M3 → M4) | 12 / 40 | – | – | – | – |" in md
    assert "| 2 | M3 vs M2 | 62.5 | 25.0 | 12.5 | 16 | 0.600 | 0.600 |" in md
    assert "| 1 | M2 vs M1 |" in md and "| 1 | M2 vs M1 | 37.5" in md
    assert md.count("| 1 | M2 vs M1 |") == 1  # M_t is M1 in iteration 1: one row, not two
    assert "| M1 (`models/m1`) | 61.0 | 0.0 | 50.0 | 25.0 | 0.400 | 0.300 |" in md
    assert "| M3 | 43.0 | 42.0 | 55.9 | 51.6 |" in md
    assert "local model `models/m1` (logprob mode)" in md
    for chart in CHARTS:
        assert (out / chart).read_bytes()[:8] == PNG_MAGIC
        assert f"({chart})" in md

    with (plots / "iterations.csv").open() as fh:
        its = list(csv.DictReader(fh))
    assert [r["iteration"] for r in its] == ["1", "2", "3"]
    assert its[1]["win_pct_vs_prev"] == "62.5" and its[1]["mean_self_reward"] == "3.4"
    assert its[0]["p_newer_vs_sft"] == "0.55"
    assert its[2]["win_pct_vs_prev"] == "" and its[2]["prompts_kept"] == "12"
    with (plots / "models.csv").open() as fh:
        models = list(csv.DictReader(fh))
    assert [(r["iteration"], r["model"]) for r in models] == [
        ("0", "models/m1"), ("1", "models/m2"), ("2", "models/m3")]
    assert models[2]["judge_pairwise_accuracy"] == "0.63"


def test_report_with_no_metrics(tmp_path):
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(tmp_path / "none"), "--out",
                                    str(tmp_path / "r"), "--plots", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "No iteration metrics found yet" in (tmp_path / "r" / "summary.md").read_text()
    assert all((tmp_path / "r" / c).read_bytes()[:8] == PNG_MAGIC for c in CHARTS)
    assert (tmp_path / "p" / "iterations.csv").read_text().startswith("iteration,")


def test_model_rows_take_m1_from_iteration_1(tmp_path):
    runs = collect(make_metrics(tmp_path / "metrics"))
    assert sorted(runs) == [1, 2, 3] and runs[3]["judge"] == {}
    rows = model_rows(runs)
    assert rows[0]["judge_pairwise_accuracy"] == 0.61  # "prev" of iteration 1 = M1
    assert rows[1]["judge_pairwise_accuracy"] == 0.62  # "next" of iteration 1 = M2
