"""The verification gap (issue 19 item 2): metrics on hand-made checker verdicts and judge
scores, and the `verify` stage end to end on a tiny random model with the official checkers."""

from __future__ import annotations

import pytest

from selfreward.evaluation.verification import prompt_rates, verification_gap

# 4 prompts x 4 answers: checker verdicts (True = passes)
PASSED = [[True, False, False, False], [True, True, False, False], [False] * 4,
          [True, False, True, True]]


def test_a_judge_that_ranks_by_the_checker_selects_the_oracle():
    scores = [[float(p) + 0.1 * j for j, p in enumerate(row)] for row in PASSED]
    gap = verification_gap(PASSED, scores, samples=500)
    random_rate = (0.25 + 0.5 + 0 + 0.75) / 4
    oracle = 3 / 4
    assert gap["random"]["mean"] == pytest.approx(random_rate)
    assert gap["oracle"]["mean"] == pytest.approx(oracle)
    assert gap["top"]["mean"] == pytest.approx(oracle)
    assert gap["lowest"]["mean"] == pytest.approx(0.0)
    assert gap["selection_gain"]["mean"] == pytest.approx(oracle - random_rate)
    # separated pairs: 3 + 4 + 0 + 3, all ordered right
    assert gap["pairs"]["n"] == 10 and gap["pairs"]["agree"] == 10
    assert gap["pairs"]["accuracy"] == 1.0
    assert gap["prompts_separated"] == 3
    lo, hi = gap["selection_gain"]["ci"]
    assert lo <= gap["selection_gain"]["mean"] <= hi and lo >= 0


def test_a_constant_judge_gains_nothing():
    gap = verification_gap(PASSED, [[2.0] * 4 for _ in PASSED], samples=500)
    assert gap["selection_gain"]["mean"] == pytest.approx(0.0)
    assert gap["selection_gain"]["ci"] == [0.0, 0.0]
    assert gap["selection_gain_includes_zero"] is True
    assert gap["top"]["mean"] == gap["random"]["mean"] == gap["lowest"]["mean"]
    assert gap["pairs"]["tie"] == 10 and gap["pairs"]["accuracy"] == 0.0


def test_an_inverted_judge_picks_the_failures():
    scores = [[-float(p) for p in row] for row in PASSED]
    gap = verification_gap(PASSED, scores, samples=200)
    assert gap["top"]["mean"] == pytest.approx(0.0)  # only prompt 4's failure is top-scored
    assert gap["selection_gain"]["mean"] < 0
    assert gap["pairs"]["disagree"] == 10


def test_ties_and_unscored_answers():
    # top score tied between a pass and a fail: half a pass; an unscored answer is never picked
    rates = prompt_rates([True, False, True], [3.0, 3.0, None])
    assert rates == {"random": pytest.approx(2 / 3), "top": 0.5, "lowest": 0.5, "oracle": 1.0,
                     "selection_gain": pytest.approx(0.5 - 2 / 3)}
    assert prompt_rates([True, False], [None, None])["top"] == 0.5
    with pytest.raises(ValueError):
        prompt_rates([True], [1.0, 2.0])


# -- the stage -----------------------------------------------------------------------------------
def _rows():
    def row(key: int, instruction_id: str, prompt: str) -> dict:
        return {"key": key, "prompt": prompt, "instruction_id_list": [instruction_id],
                "kwargs": [{}]}

    return [row(1, "change_case:english_lowercase", "Answer in lowercase: why rain?"),
            row(2, "startend:quotation", "Wrap your answer in double quotes."),
            row(3, "change_case:english_lowercase", "Answer in lowercase: why tea?")]


def _answer(prompt: str, k: int, seed: int) -> str:
    """Answers 0 and 2 follow the instruction, 1 and 3 do not (all four for prompt 2 do not)."""
    if "quotes" in prompt:
        return f"No quotes here {k}."
    return f"all lowercase answer {k}." if k % 2 == 0 else f"SHOUTED ANSWER {k}."


def _checker_judge(content: str) -> list[float]:
    """A judge that sees what the checker sees: lowercase answers get 4, the others 1."""
    answer = content.split("SHOUTED")
    return [0, 1, 0, 0, 0, 0] if len(answer) > 1 else [0, 0, 0, 0, 1, 0]


def _run(tmp_path, params_text: str, prompts, model, name: str = "m1"):
    from click.testing import CliRunner

    from selfreward.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    out, metrics = tmp_path / "data" / f"{name}.jsonl", tmp_path / "metrics" / f"{name}.json"
    res = CliRunner().invoke(main, ["verify", "--params", str(params), "--model", str(model),
                                    "--prompts", str(prompts), "--out", str(out),
                                    "--metrics", str(metrics)])
    return res, out, metrics


def test_stage_with_a_checker_aligned_judge(tiny_model, tmp_path, write_jsonl, monkeypatch):
    import json

    from fakes import ScriptedEngine

    engine = ScriptedEngine(_answer, probs=_checker_judge)
    monkeypatch.setattr("selfreward.generation.engines.make_engine", lambda *a, **k: engine)
    prompts = write_jsonl("ifeval.jsonl", _rows())
    res, out, metrics = _run(tmp_path, "responses: {n: 4, max_new_tokens: 16}\n"
                             "verify: {max_new_tokens: 12, bootstrap: 200}\n", prompts,
                             tiny_model)
    assert res.exit_code == 0, res.output
    (count, sampling), = engine.calls
    assert count == 3 and sampling.n == 4 and sampling.temperature == 0.7
    assert sampling.max_new_tokens == 12  # verify's cap, not responses'
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == [1, 2, 3]
    assert rows[0]["strict"] == [[True], [False], [True], [False]]
    assert rows[0]["scores"] == [pytest.approx(4.0), pytest.approx(1.0)] * 2
    m = json.loads(metrics.read_text())["strict"]
    assert m["random"]["mean"] == pytest.approx((0.5 + 0 + 0.5) / 3, abs=1e-4)
    assert m["oracle"]["mean"] == m["top"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["selection_gain"]["mean"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["pairs"] == {**m["pairs"], "n": 8, "agree": 8, "accuracy": 1.0}
    assert not list(tmp_path.rglob("*.shards"))


def test_stage_on_a_tiny_model_and_bad_input(tiny_model, tmp_path, write_jsonl):
    import json

    prompts = write_jsonl("ifeval.jsonl", _rows())
    params = "responses: {n: 2}\nverify: {max_new_tokens: 4, bootstrap: 50, max_prompts: 2}\n"
    res, out, metrics = _run(tmp_path, params, prompts, tiny_model)
    assert res.exit_code == 0, res.output
    m = json.loads(metrics.read_text())
    assert m["strict"]["prompts"] == 2 and m["strict"]["answers"] == 4
    assert m["answers_per_prompt"] == 2 and m["max_new_tokens"] == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["responses"]) == len(r["scores"]) == 2 for r in rows)
    assert all(0 <= s <= 5 for r in rows for s in r["scores"])
    bad = write_jsonl("bad.jsonl", [{"key": 1, "prompt": "x",
                                     "instruction_id_list": ["keywords:existence"],
                                     "kwargs": [{}]}])  # keywords missing
    res, out, metrics = _run(tmp_path, params, bad, tiny_model, name="bad")
    assert res.exit_code == 2 and "bad.jsonl" in res.output and "kwargs[0]" in res.output
    assert not out.exists() and not metrics.exists()
