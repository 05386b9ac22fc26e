"""Checker verdicts beside the self-judge (issue 23): every answer to a constrained prompt is
checked by IFEval's own checkers (strict and loose, evaluation/ifeval.py); in pair selection
(pairs.verifiers) the verdicts `gate` the pair or add a `bonus` to the judge's score.

The judge still orders the answers: under `gate`, chosen is the best-judged answer among those
passing every constraint (strict) and rejected the worst-judged among those failing one; a
prompt whose answers all pass or all fail gives no pair. Under `bonus`, the selection score is
judge mean + verifier_weight x share of the constraints passed (strict).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..config.errors import UserError
from ..config.params import PairsParams
from ..core.io import read_jsonl
from ..evaluation.ifeval import check_instruction, score_response

# Added to a passing answer's judge score under `gate`: above any judge score (0..5), so the
# highest lies among the passing answers and the lowest among the failing ones.
GATE_OFFSET = 10.0


def check_answers(row: dict) -> list[dict] | None:
    """Strict and loose verdicts per instruction for each answer of a constrained row (None
    when the row has no constraint)."""
    ids = row.get("instruction_id_list")
    if not ids:
        return None
    kwargs = row.get("kwargs")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise UserError(f"prompt {row['id']!r}: expected one kwargs object per instruction of "
                        "instruction_id_list", field="kwargs")
    for instruction_id, kw in zip(ids, kwargs):
        problem = check_instruction(instruction_id, kw)
        if problem:
            raise UserError(f"prompt {row['id']!r}: {problem}", field="instruction_id_list")
    doc = {"key": 0, "prompt": row["prompt"], "instruction_id_list": ids,
           "kwargs": row["kwargs"]}
    return [score_response(doc, answer) for answer in row["responses"]]


def add_checks(judged: list[dict], responses: list[dict]) -> tuple[list[dict], dict]:
    """Judgment rows with the constraints and `checks` of their responses row (same order);
    metrics: constrained prompts, answers passing every constraint (strict, loose)."""
    out = []
    for item, source in zip(judged, responses, strict=True):
        checks = check_answers(source)
        if checks is not None:
            item = {**item, "instruction_id_list": source["instruction_id_list"],
                    "kwargs": source["kwargs"], "checks": checks}
        out.append(item)
    return out, check_metrics(out)


def passes(check: dict, mode: str = "strict") -> bool:
    """Whether one answer's verdicts pass every constraint."""
    return all(check[mode])


def share(check: dict, mode: str = "strict") -> float:
    """Share of the constraints one answer passes."""
    return sum(check[mode]) / len(check[mode])


def check_metrics(rows: list[dict]) -> dict:
    """Answers checked and the share passing every constraint, strict and loose."""
    checks = [c for row in rows for c in row.get("checks") or []]
    if not checks:
        return {"constrained_prompts": 0}
    return {"constrained_prompts": sum(1 for row in rows if row.get("checks")),
            "answers_checked": len(checks),
            **{f"pass_rate_{mode}": round(statistics.fmean(passes(c, mode) for c in checks), 4)
               for mode in ("strict", "loose")}}


def load_checks(path: str | Path) -> dict[str, list[dict]]:
    """id -> checks of every constrained row of judgments.jsonl; a malformed `checks` is a
    UserError naming the file, line and field."""
    file, out = str(path), {}
    for line, obj in read_jsonl(path):
        checks = obj.get("checks")
        if checks is None:
            continue
        ids = obj.get("instruction_id_list") or []
        ok = (isinstance(checks, list) and len(checks) == len(obj.get("responses") or [])
              and all(isinstance(c, dict) and all(
                  isinstance(c.get(m), list) and len(c[m]) == len(ids)
                  and all(isinstance(v, bool) for v in c[m]) for m in ("strict", "loose"))
                  for c in checks))
        if not ids or not ok:
            raise UserError("expected one {strict, loose} object per response, each a list of "
                            "booleans per instruction of instruction_id_list", file=file,
                            line=line, field="checks")
        out[str(obj["id"])] = checks
    return out


def selection_rows(rows: list[dict], checks: dict[str, list[dict]],
                   params: PairsParams) -> tuple[list[dict], int]:
    """Rows whose `mean` is the selection score of pairs.verifiers (unchanged for `off` and for
    unconstrained rows), and how many rows `gate` left without a pair (all answers passing or
    all failing: their means become null)."""
    if params.verifiers == "off":
        return rows, 0
    out, no_contrast = [], 0
    for row in rows:
        row_checks = checks.get(str(row["id"]))
        if row_checks is None:
            out.append(row)
            continue
        means = row["mean"]
        if params.verifiers == "bonus":
            mean = [None if m is None else round(m + params.verifier_weight * share(c), 6)
                    for m, c in zip(means, row_checks)]
        else:
            verdicts = {passes(c) for m, c in zip(means, row_checks) if m is not None}
            if verdicts != {True, False}:
                no_contrast += 1
                mean = [None] * len(means)
            else:
                mean = [None if m is None else m + GATE_OFFSET * passes(c)
                        for m, c in zip(means, row_checks)]
        out.append({**row, "mean": mean})
    return out, no_contrast


def _picked(row: dict, pair: dict, side: str) -> int:
    return row["responses"].index(pair[side][0]["content"])


def pair_metrics(rows: list[dict], checks: dict[str, list[dict]], pairs: list[dict],
                 plain: list[dict] | None, no_contrast: int) -> dict:
    """Pass rates (strict, every constraint) of all answers, of the chosen and of the rejected
    ones; with `plain` (the pairs the judge alone picks) how many pairs the verifiers changed."""
    if not checks:
        return {}
    by_id = {str(row["id"]): row for row in rows}
    everything = [passes(c) for cs in checks.values() for c in cs]
    out = {"verified_prompts": len(checks),
           "pass_rate_answers": round(statistics.fmean(everything), 4)}
    for side in ("chosen", "rejected"):
        verdicts = [passes(checks[p["id"]][_picked(by_id[p["id"]], p, side)])
                    for p in pairs if p["id"] in checks]
        out[f"pass_rate_{side}"] = round(statistics.fmean(verdicts), 4) if verdicts else None
    if plain is not None:
        def picks(pair_list: list[dict]) -> dict[str, tuple[str, str]]:
            return {p["id"]: (p["chosen"][0]["content"], p["rejected"][0]["content"])
                    for p in pair_list}

        before, after = picks(plain), picks(pairs)
        out.update({
            "verifier_pairs_changed": sum(1 for i in set(before) | set(after)
                                          if before.get(i) != after.get(i)),
            "verifier_pairs_added": len(set(after) - set(before)),
            "verifier_pairs_removed": len(set(before) - set(after)),
            "verifier_no_contrast": no_contrast})
    return out
