"""Meta-judge: verdicts from both orders, Bradley-Terry best/worst judgment from hand-made
verdicts (order-dependent = tie, a cycle, all ties), the stage on a scripted engine (resume
after a kill), the judge-training pairs' cap in `pairs`."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fakes import ScriptedEngine

from selfreward.config.errors import UserError
from selfreward.config.params import (
    EngineParams,
    JudgeParams,
    MetaJudgeParams,
    PairsParams,
    Params,
    load_params,
)
from selfreward.core.shards import finished_shards
from selfreward.judge.meta import best_and_worst, combine, disputed, parse_meta_winner
from selfreward.stages.meta_judge import run_meta_judge
from selfreward.stages.pairs import add_judge_pairs, run_pairs


@pytest.mark.parametrize("first, second, expected", [
    (1, 2, 0),      # a first: slot 1 (a); b first: slot 2 (a) -> a
    (2, 1, 1),      # both orders say b
    (1, 1, None),   # the first slot wins whatever it holds: order-dependent -> tie
    (2, 2, None),
    (None, 2, None),
])
def test_a_win_counts_only_when_both_orders_agree(first, second, expected):
    assert combine(first, second) == expected


@pytest.mark.parametrize("verdicts, expected", [
    # transitive: 0 > 1, 0 > 2, 1 > 2
    ({(0, 1): 0, (0, 2): 0, (1, 2): 0}, (0, 2)),
    # the order-dependent verdict on (0, 1) is a tie; 0 and 1 both beat 2, only 1 of them 3
    ({(0, 1): None, (0, 2): 0, (1, 2): 0, (1, 3): 0, (0, 3): None, (2, 3): None}, (1, 2)),
    # 2 beats everyone, 0 loses to everyone
    ({(0, 1): 1, (0, 2): 1, (1, 2): 1}, (2, 0)),
    # a cycle: 0 > 1 > 2 > 0 -> no judgment stands out
    ({(0, 1): 0, (1, 2): 0, (0, 2): 1}, None),
    # all ties -> no pair
    ({(0, 1): None, (0, 2): None, (1, 2): None}, None),
])
def test_best_and_worst_judgment_from_hand_made_verdicts(verdicts, expected):
    count = 1 + max(b for _, b in verdicts)
    picked = best_and_worst(count, verdicts)
    assert (picked if picked is None else picked[:2]) == expected


def test_parse_meta_winner_takes_the_last():
    assert parse_meta_winner("Judgment 1 is vague. Winner: Judgment 2") == 2
    assert parse_meta_winner("Winner: 1 ... no, Winner: 2") == 2
    assert parse_meta_winner("no verdict") is None


def _judgments(rows):
    return [{"id": rid, "prompt": f"Q {rid}?", "responses": [f"answer {rid}"],
             "scores": [scores], "raw": [raws], "mean": [None]} for rid, scores, raws in rows]


def test_disputed_picks_the_widest_spread_of_parsed_scores():
    rows = _judgments([("a", [1, 5, None], ["j1", "j2", "junk"]),   # variance 4
                       ("b", [3, 3, 3], ["x", "y", "z"]),           # no disagreement
                       ("c", [2, 3, 3], ["p", "q", "r"]),           # variance 0.22
                       ("d", [4, None, None], ["u", "v", "w"])])    # one parsed
    items = disputed(rows, limit=5)
    assert [i["id"] for i in items] == ["a#0", "c#0"]
    assert items[0]["judgments"] == ["j1", "j2"] and items[0]["scores"] == [1, 5]
    assert [i["id"] for i in disputed(rows, limit=1)] == ["a#0"]


def _quality(text: str, slot: int) -> int:
    return int(re.search(rf"<judgment_{slot}>q(\d)", text).group(1))


def fair(text):
    """Prefers the judgment with the higher q in either slot."""
    q1, q2 = _quality(text, 1), _quality(text, 2)
    return [0, 0.7 if q1 > q2 else 0.3, 0.3 if q1 > q2 else 0.7, 0, 0, 0]


def biased(text):
    return [0, 0.9, 0.1, 0, 0, 0]  # slot 1 always wins


SAMPLED = _judgments([("a", [1, 4, 2], ["q1 weak. Score: 1", "q9 best. Score: 4",
                                        "q5 mid. Score: 2"]),
                      ("b", [0, 5], ["q2 Score: 0", "q7 Score: 5"]),
                      ("c", [3, 3], ["q1 Score: 3", "q2 Score: 3"])])  # not disputed


def _run(tmp_path, monkeypatch, probs, calls=None, crash_at=None, **meta):
    def make(model_dir, params, seed=0):
        engine = ScriptedEngine(lambda *a: "", probs=probs)
        digit_probs = engine.digit_probs

        def counting(chats, prefix):
            if calls is not None:
                calls.append(len(chats))
                if len(calls) - 1 == crash_at:
                    raise RuntimeError("killed")
            assert prefix == "Winner: "
            return digit_probs(chats, prefix)

        engine.digit_probs = counting
        return engine

    monkeypatch.setattr("selfreward.generation.engines.make_engine", make)
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text("".join(json.dumps(r) + "\n" for r in SAMPLED))
    out = tmp_path / "meta.jsonl"
    params = Params(judge=JudgeParams(mode="sample"), engine=EngineParams(shard_size=1),
                    meta_judge=MetaJudgeParams(enabled=True, **meta))
    metrics = run_meta_judge(params=params, model_dir="m_t", judgments_path=str(judgments),
                             out_path=out, metrics_path=tmp_path / "m.json")
    return [json.loads(line) for line in out.read_text().splitlines()], metrics


def test_stage_writes_judge_training_pairs(tmp_path, monkeypatch):
    pairs, metrics = _run(tmp_path, monkeypatch, fair)
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("b#0", "q7 Score: 5", "q2 Score: 0"),  # the most disputed first (variance 6.25)
        ("a#0", "q9 best. Score: 4", "q1 weak. Score: 1")]
    assert all(p["source"] == "meta_judge" for p in pairs)
    assert "answer a" in pairs[1]["prompt"][0]["content"]  # the judge's own prompt
    assert metrics["responses_disputed"] == 2 and metrics["meta_judgments"] == 2 * (3 + 1)
    assert metrics["order_consistent_rate"] == 1.0 and metrics["judgment_parse_rate"] == 1.0


def test_a_position_biased_meta_judge_gives_no_pairs(tmp_path, monkeypatch):
    pairs, metrics = _run(tmp_path, monkeypatch, biased)
    assert pairs == [] and metrics["order_consistent_rate"] == 0.0


def test_the_stage_resumes_after_a_kill(tmp_path, monkeypatch):
    calls = []
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, monkeypatch, fair, calls, crash_at=1)
    assert len(finished_shards(tmp_path / "meta.jsonl")) == 1
    calls.clear()
    pairs, metrics = _run(tmp_path, monkeypatch, fair, calls)
    assert calls == [6] and metrics["shards_resumed"] == 1 and len(pairs) == 2


def test_disabled_writes_an_empty_file_and_logprob_judgments_are_refused(tmp_path):
    out = tmp_path / "meta.jsonl"
    metrics = run_meta_judge(params=Params(), model_dir="none", judgments_path="none",
                             out_path=out, metrics_path=tmp_path / "m.json")
    assert out.read_text() == "" and metrics == {"enabled": False}
    judgments = tmp_path / "j.jsonl"
    judgments.write_text(json.dumps({"id": "a", "prompt": "q", "responses": ["r"],
                                     "scores": [[3.2]], "mean": [3.2]}) + "\n")
    with pytest.raises(UserError, match="raw"):
        run_meta_judge(params=Params(judge=JudgeParams(mode="sample"),
                                     meta_judge=MetaJudgeParams(enabled=True)),
                       model_dir="none", judgments_path=str(judgments), out_path=out,
                       metrics_path=tmp_path / "m.json")
    (tmp_path / "p.yaml").write_text("meta_judge:\n  enabled: true\n")
    with pytest.raises(UserError, match="judge.mode: sample"):
        load_params(tmp_path / "p.yaml")


@pytest.mark.parametrize("share, actor, added", [(0.0, 10, 0), (0.15, 10, 1), (0.2, 10, 2),
                                                 (0.2, 12, 3), (0.4, 3, 2)])
def test_judge_pairs_are_capped_at_their_share(share, actor, added):
    pairs, stats = add_judge_pairs([{}] * actor, [{"j": k} for k in range(5)], share)
    assert stats["judge_pairs"] == added and len(pairs) == actor + added
    assert pairs[actor:] == [{"j": k} for k in range(added)]  # the most disputed first
    assert stats["judge_share"] <= share


def test_pairs_adds_judge_pairs_and_warns_above_015(tmp_path, caplog):
    judgments = tmp_path / "j.jsonl"
    judgments.write_text("".join(json.dumps({"id": f"p{k}", "prompt": "q", "responses": ["a", "b"],
                                             "mean": [4.0, 1.0]}) + "\n" for k in range(4)))
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps({"id": f"j{k}", "prompt": [{"role": "user", "content": "x"}],
                                        "chosen": [{"role": "assistant", "content": "c"}],
                                        "rejected": [{"role": "assistant", "content": "r"}],
                                        "source": "meta_judge"}) + "\n" for k in range(3)))
    caplog.set_level(logging.WARNING)
    stats = run_pairs(params=Params(pairs=PairsParams(judge_share=0.2)),
                      judgments_path=str(judgments), meta_judge_path=str(meta),
                      out_path=tmp_path / "pairs.jsonl", metrics_path=tmp_path / "m.json")
    assert (stats["pairs"], stats["judge_pairs"]) == (4, 1) and "collapsing" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["self_judged"] * 4 + ["meta_judge"]
