#!/usr/bin/env python3
"""Write a pytest JUnit XML report's counts and every skipped test, with its reason, to the
GitHub run summary ($GITHUB_STEP_SUMMARY; stdout without it).

Skips are where the suite did not look: a failed vLLM setup (tests/test_vllm.py) or an absent
external file (../shared/data) must be seen on the run's page, not only deep in its log.
Usage: test_summary.py REPORT.xml
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def summary(report: Path) -> str:
    """Markdown: one line of counts, then a table of the skipped tests and their reasons."""
    if not report.is_file():
        return f"## Tests\n\nNo test report ({report}): the test step did not run to its end.\n"
    cases = list(ET.parse(report).getroot().iter("testcase"))
    outcome: dict[str, list] = {"failed": [], "skipped": [], "passed": []}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome["failed"].append(name)
        elif skipped is not None:
            reason = (skipped.get("message") or "").replace("|", "\\|").replace("\n", " ")
            outcome["skipped"].append((name, reason))
        else:
            outcome["passed"].append(name)
    lines = ["## Tests", "", ", ".join(f"{len(v)} {k}" for k, v in outcome.items()), ""]
    if outcome["skipped"]:
        lines += [f"### Skipped ({len(outcome['skipped'])}): not checked in this run", "",
                  "| test | reason |", "|---|---|"]
        lines += [f"| `{name}` | {reason} |" for name, reason in outcome["skipped"]]
    if outcome["failed"]:
        lines += ["", f"### Failed ({len(outcome['failed'])})", ""]
        lines += [f"- `{name}`" for name in outcome["failed"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    text = summary(Path(argv[0]))
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
