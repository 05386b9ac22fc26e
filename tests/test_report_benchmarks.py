"""The report's benchmarks section: IFEval rows M0..M3 and chart, AlpacaEval next to the paper's
win rates, lm-eval scores; all optional."""

from __future__ import annotations

import csv

from click.testing import CliRunner

from selfreward.cli import main
from selfreward.core.io import write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ifeval(k: int, strict: float) -> dict:
    return {"model": f"models/m{k}", "prompts": 100, "max_new_tokens": 128,
            "prompts_file": "data/seed/ifeval_prompts.jsonl",
            "prompt_level_strict": {"accuracy": strict, "ci95": [strict - 0.05, strict + 0.05]},
            "prompt_level_loose": {"accuracy": strict + 0.1, "ci95": None},
            "instruction_level_strict": {"accuracy": strict + 0.05, "ci95": None},
            "instruction_level_loose": {"accuracy": strict + 0.15, "ci95": None}}


def test_benchmarks_section(tmp_path):
    metrics = tmp_path / "metrics"
    for k, strict in ((0, 0.2), (1, 0.25), (3, 0.3), (2, 0.28)):
        write_json(metrics / "ifeval" / "models" / f"m{k}.json", _ifeval(k, strict))
    write_json(metrics / "alpaca_eval" / "models" / "m2.json",
               {"generator": "selfreward-m2", "win_rate": 12.5, "length_controlled_winrate": 14.25,
                "paper_win_rate": 15.38, "annotator": "weighted_alpaca_eval_gpt4_turbo"})
    write_json(metrics / "lm_eval" / "models" / "m1.json",
               {"model": "models/m1", "tasks": {"arc_easy": {"acc": 0.5, "acc_norm": 0.55},
                                                "ifeval": {"prompt_level_strict_acc": 0.3}}})
    out, plots = tmp_path / "reports", tmp_path / "plots"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(metrics), "--out", str(out),
                                    "--plots", str(plots)])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "| M0 | 20.0 | 15.0–25.0 | 30.0 | 25.0 | 35.0 |" in md
    assert md.index("| M2 | 28.0") < md.index("| M3 | 30.0")  # in model order
    assert "| M2 | 12.50 | 14.25 | 15.38 | weighted_alpaca_eval_gpt4_turbo |" in md
    assert "| M1 | 55.0 (acc_norm) | 30.0 (prompt_level_strict_acc) |" in md
    assert (out / "ifeval.png").read_bytes()[:8] == PNG_MAGIC and "(ifeval.png)" in md
    with (plots / "ifeval.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["model"] for r in table] == ["0", "1", "2", "3"]
    assert table[3]["prompt_level_strict"] == "0.3"


def test_benchmarks_section_without_metrics(tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["report", "--metrics-dir", str(tmp_path / "none"), "--out",
                                    str(out), "--plots", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    md = (out / "summary.md").read_text()
    assert "No IFEval metrics yet" in md and "M1 9.94 %" in md and "M3 20.44 %" in md
    assert (out / "ifeval.png").read_bytes()[:8] == PNG_MAGIC
