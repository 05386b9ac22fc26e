"""The `Score: n` a rubric judgment ends with: parsed, or cut off to leave the justification.

Kept apart from judging (pointwise.py) so that the seed-data code reads scores without loading
any engine."""

from __future__ import annotations

import re

# \b: "Underscore: 2" holds no score.
_SCORE = re.compile(r"\bscore\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)(?!\d)", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The last `Score: n` in a judgment, if it lies in 0..5; otherwise None (unparseable)."""
    matches = _SCORE.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if 0 <= value <= 5 else None


def strip_score(text: str) -> str:
    """A judgment without the last `Score: n` that parse_score reads: its justification."""
    found = list(_SCORE.finditer(text))
    if not found:
        return text.strip()
    return (text[:found[-1].start()] + text[found[-1].end():]).strip()
