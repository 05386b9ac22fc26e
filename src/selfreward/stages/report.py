"""Stage `report`: reports/summary.md, the PNG charts and the cross-iteration plot CSVs, from
whatever metrics exist (report/summary.py); each file is written atomically."""

from __future__ import annotations

from pathlib import Path

from ..report.summary import write_report


def run_report(*, metrics_dir: str | Path, out_dir: str | Path, plots_dir: str | Path,
               ifeval_answers: str | Path | None = None) -> Path:
    """summary.md and charts in `out_dir`, plot CSVs in `plots_dir` (IFEval answers in
    `ifeval_answers` give the held-out split its paired change from M1); the summary's path."""
    return write_report(metrics_dir, out_dir, plots_dir, ifeval_answers)
