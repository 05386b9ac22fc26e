"""Judge: score parsing edge cases, sample and logprob modes."""

import pytest
from fakes import ScriptedEngine

from selfreward.config.params import EngineParams, JudgeParams
from selfreward.generation.engines.base import Sampling
from selfreward.judge.pointwise import judge_metrics, judge_rows
from selfreward.judge.scores import parse_score


@pytest.mark.parametrize("text, score", [
    ("Good answer.\nScore: 4", 4.0),
    ("Score: 4.5", 4.5),
    ("score:5", 5.0),
    ("Score: 2 ... on reflection, Score: 3", 3.0),
    ("It deserves 4 points.", None),
    ("Score: 9", None),
    ("Score: 45", None),
    ("**Score:** 5", 5.0),
    ("Score: **5**", 5.0),
    ("Score: 3/5", 3.0),
    ("SCORE = 1", 1.0),
    ("", None),
    ("Underscore: 2", None),  # no word boundary before "score": not a score
    ("Underscore: 2. Score: 4", 4.0),
    ("Final_score: 3", None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


ROWS = [{"id": "a", "prompt": "p1", "responses": ["good", "bad", "meh"]},
        {"id": "b", "prompt": "p2", "responses": ["x", "y"]}]


def test_sample_mode_records_nulls_and_means(tmp_path):
    replies = {"good": ["Score: 5", "Score: 4", "Score: 5"], "bad": ["Score: 1", "oops", "nah"],
               "meh": ["none", "none", "none"], "x": ["Score: 2"] * 3, "y": ["Score: 3"] * 3}

    def reply(text, k, seed):
        resp = text.split("<response>")[1].split("</response>")[0]
        return replies[resp][k]

    engine = ScriptedEngine(reply)
    rows, stats = judge_rows(engine, ROWS, JudgeParams(mode="sample", samples=3), 1,
                             tmp_path / "j.jsonl", "k")
    assert rows[0]["scores"] == [[5.0, 4.0, 5.0], [1.0, None, None], [None, None, None]]
    assert rows[0]["mean"] == [pytest.approx(14 / 3, abs=1e-5), 1.0, None]
    assert rows[0]["raw"][1] == ["Score: 1", "oops", "nah"]
    assert rows[0]["parsed"] == [3, 1, 0] and rows[1]["parsed"] == [3, 3]
    assert engine.calls[0][1].n == 3 and stats["shards"] == 2
    m = judge_metrics(rows)
    assert m["judgments"] == 15 and m["parsed"] == 10 and m["parse_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["responses_without_score"] == 1
    assert m["responses_fully_parsed"] == 3 and m["responses_partly_parsed"] == 1
    assert (m["hist_5"], m["hist_1"], m["hist_2"], m["hist_3"]) == (1, 1, 1, 1)


def test_logprob_mode_expected_value(tmp_path):
    engine = ScriptedEngine(None, probs=lambda text: [0, 0, 0, 0.5, 0.5, 0] if "good" in text
                            else [1, 0, 0, 0, 0, 0])
    rows, _ = judge_rows(engine, ROWS[:1], JudgeParams(mode="logprob"), 8, tmp_path / "j", "k")
    assert rows[0]["scores"] == [[3.5], [0.0], [0.0]] and rows[0]["mean"] == [3.5, 0.0, 0.0]
    assert "raw" not in rows[0] and rows[0]["parsed"] == [1, 1, 1]


def test_placeholder_text_in_a_question_survives_verbatim(tmp_path):
    """A question quoting `{response}` (or `{prompt}`) is shown to the judge as written: the
    template is filled in one pass, so the answer is not pasted into the question."""
    question = "What does the placeholder {response} mean in {prompt} templates?"
    seen = []

    def probs(text):
        seen.append(text)
        return [0, 0, 0, 1, 0, 0]

    engine = ScriptedEngine(None, probs=probs)
    rows, _ = judge_rows(engine, [{"id": "q", "prompt": question, "responses": ["ANSWER"]}],
                         JudgeParams(mode="logprob"), 4, tmp_path / "j", "k")
    assert question in seen[0] and seen[0].count("ANSWER") == 1
    assert rows[0]["prompt"] == question


def test_logprob_judge_on_a_tiny_real_model(tiny_model):
    from selfreward.generation.engines import make_engine

    engine = make_engine(str(tiny_model), EngineParams(name="hf", batch_size=4))
    from selfreward.generation.engines.base import expected_score
    from selfreward.judge.rubric import JUDGE_PREFIX, judge_messages

    chats = [judge_messages("What is 2+2?", r) for r in ("4", "five", "The answer is 4.")]
    probs = engine.digit_probs(chats, JUDGE_PREFIX)
    assert len(probs) == 3
    for pr in probs:
        assert len(pr) == 6 and sum(pr) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= expected_score(pr) <= 5.0
    # Sampling the same chats with the same seed is reproducible.
    s = Sampling(n=2, temperature=0.7, top_p=0.9, max_new_tokens=6, seed=3)
    assert engine.generate(chats[:1], s) == engine.generate(chats[:1], s)


def test_histograms_round_half_up_alike():
    """Means ending in .5 (two samples, or three with one unparsed) land in the upper bin, in the
    judge stage's histogram and the evaluation's alike (Python's round() would send 2.5 to 2)."""
    from selfreward.evaluation.metrics import score_bin, score_spread

    means = [0.5, 1.5, 2.5, 3.5, 4.5, 2.4999]
    rows = [{"scores": [[m] for m in means], "mean": means}]
    m = judge_metrics(rows)
    assert [m[f"hist_{d}"] for d in range(6)] == [0, 1, 2, 1, 1, 1]
    spread = score_spread(means)
    assert [spread[f"hist_{d}"] for d in range(6)] == [m[f"hist_{d}"] for d in range(6)]
    assert [score_bin(x) for x in (2.5, 3.5, 2.4999, 0.0, 5.0)] == [3, 4, 2, 0, 5]
