"""Seed data from Open Assistant: the hand-written fixture (tests/data/oasst_messages.jsonl) ->
exact IFT and EFT rows; the agreement filter, the split and the rebalancing on a deterministic
fake judge (groups kept / dropped and histograms computed by hand); the judgment pass resumes;
the three commands end to end against a local OpenAI-compatible judge server."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import ScriptedEngine
from procs import JsonHandler, local_server
from test_seed_pipeline import stage_cmd, stage_deps

from selfreward import templates
from selfreward.cli import main
from selfreward.config.params import JudgeParams, OasstEftParams
from selfreward.data.oasst import first_turns, prompt_key, read_export
from selfreward.data.oasst_seed import (
    agrees,
    build_eft,
    eft_groups,
    pick_judgment,
    rebalance,
    select_ift,
)
from selfreward.data.seed import load_eft, load_ift
from selfreward.stages.seed_judge import judge_groups

FIXTURE = Path(__file__).parent / "data" / "oasst_messages.jsonl"
TEMPLATES = Path(templates.__file__).parent
IFT_COUNT, IFT_SEED = 2, 2  # random.Random(2) picks candidates 0 and 5 of 6: a0 and k0

# The fake judge: K=3 judgments per reply, keyed by the reply's text.
JUDGMENTS = {
    # b0 (ranks 1, 3): 4 > 1 -> agrees. b2's scores 4, 4, 3 (mean 3.67): the first 4 is kept.
    "Put the egg in boiling water for about nine minutes, then cool it in cold water.":
        ["Detailed and correct.\nScore: 4", "Clear steps. Score: 4", "Good.\nScore: 3"],
    "Eggs are laid by hens.": ["Off topic.\nScore: 1"] * 3,
    # e0 (ranks 0, 1): 4 = 4 -> a tie: dropped with ties=drop, kept with ties=allow.
    # e2's scores 4, 0, 4 (mean 2.67): the first 4 is nearest.
    "Red is a primary colour.": ["Correct and direct.\nScore: 4"] * 3,
    "Purple.": ["Short and direct.\nScore: 4", "Wrong.\nScore: 0",
                "Score: 4\nIt answers directly."],
    # h0 (ranks 0-3): 5 > 4 > 2 > 0 -> agrees. h1: 5, 4.5, 5 -> "Excellent." (4.5 is no EFT score)
    "1. Keep a fixed bedtime. 2. Avoid screens for an hour before bed. 3. Keep the bedroom cool "
    "and dark.": ["Excellent.\nScore: 5", "Score: 4.5", "Great tips.\nScore: 5"],
    "Go to bed at the same time every day and skip late coffee.": ["Useful.\nScore: 4"] * 3,
    "Sleep is important for health.": ["Vague.\nScore: 2"] * 3,
    "Just stay awake.": ["Harmful advice.\nScore: 0"] * 3,
    # i0 (ranks 0-2): 3 < 4 for ranks 0 < 1 -> disagrees.
    "A spider has eight legs.": ["Correct.\nScore: 3"] * 3,
    "Eight, I believe.": ["Correct and friendly.\nScore: 4"] * 3,
    "Spiders are arachnids.": ["Off topic.\nScore: 1"] * 3,
    # j0: j1 has no parseable judgment -> unscored.
    "Gracias.": ["I cannot judge this."] * 3,
    "De nada.": ["Wrong.\nScore: 0"] * 3,
}


def fake_reply(chat_text: str, k: int, seed: int) -> str:
    response = chat_text.split("<response>")[1].split("</response>")[0]
    return JUDGMENTS[response][k % 3]


@pytest.fixture(scope="module")
def turns():
    return first_turns(read_export([str(FIXTURE)]), "en")


def test_fixture_counts_every_message_once(turns):
    _, stats = turns
    assert stats == {
        "messages_read": 42, "trees": 11, "lang": "en",
        "orphaned": 1,  # o1: its parent is not in the export
        "multi_turn_skipped": 3,  # a4, a5, h6
        "other_language": 4,  # c0, c1, c2 (German tree), h5 (a Spanish reply)
        "deleted": 2,  # b1 (rank 0!), f0 (a deleted prompt that also failed review)
        "failed_review": 1,  # b3
        "empty_text": 0, "root_not_prompter": 0, "reply_not_assistant": 0,
        "prompt_skipped": 1,  # f1: its prompt f0 was deleted
        "prompts_used": 9, "replies_used": 21,
        "duplicate_prompts": 1,  # g0 asks a0's question with other spacing
        "prompts": 8}
    reasons = ("orphaned", "multi_turn_skipped", "other_language", "deleted", "failed_review",
               "prompt_skipped")
    assert sum(stats[r] for r in reasons) + stats["prompts_used"] + stats["replies_used"] == 42


def test_ift_exact_rows(turns):
    rows, stats = select_ift(turns[0], IFT_COUNT, IFT_SEED)
    assert rows == [
        {"id": "a0", "messages": [{"role": "user", "content": "What is the capital of France?"},
                                  {"role": "assistant",
                                   "content": "The capital of France is Paris."}]},
        {"id": "k0", "messages": [{"role": "user", "content": "What is 7 times 8?"},
                                  {"role": "assistant", "content": "7 times 8 is 56."}]}]
    # a0 e0 h0 i0 j0 k0 have a usable rank-0 reply; b0's was deleted, d0's only reply is unranked
    assert stats == {"prompts_without_rank0_reply": 2, "ift_candidates": 6, "ift_examples": 2}
    everything, _ = select_ift(turns[0], 0, IFT_SEED)
    assert [r["id"] for r in everything] == ["a0", "e0", "h0", "i0", "j0", "k0"]


def _groups(turns):
    ift, _ = select_ift(turns[0], IFT_COUNT, IFT_SEED)
    ift_prompts = {prompt_key(r["messages"][0]["content"]) for r in ift}
    return eft_groups(turns[0], ift_prompts, min_replies=2, max_groups=0, seed=0)


def test_eft_groups_exact(turns):
    groups, stats = _groups(turns)
    assert [(g["id"], g["ranks"], g["message_ids"]) for g in groups] == [
        ("b0", [1, 3], ["b2", "b4"]),  # rank 0 deleted, rank 2 failed review
        ("e0", [0, 1], ["e1", "e2"]),
        ("h0", [0, 1, 2, 3], ["h1", "h2", "h3", "h4"]),  # h5 (Spanish) left out
        ("i0", [0, 1, 2], ["i1", "i2", "i3"]),
        ("j0", [0, 1], ["j1", "j2"])]
    assert groups[1]["prompt"] == "Name a primary colour."
    assert groups[1]["responses"] == ["Red is a primary colour.", "Purple."]
    assert stats == {"prompts_in_ift": 2, "prompts_too_few_ranked_replies": 1,  # d0: one reply
                     "eft_candidate_groups": 5, "groups_judged": 5, "replies_judged": 13}
    subset, stats = eft_groups(turns[0], set(), 2, 3, 0)
    assert len(subset) == 3 and stats["eft_candidate_groups"] == 7  # a0, k0 join without IFT


def _judged(turns, tmp_path) -> list[dict]:
    groups, _ = _groups(turns)
    engine = ScriptedEngine(fake_reply)
    rows, _ = judge_groups(engine, groups, JudgeParams(mode="sample", samples=3), 2,
                           tmp_path / "judgments.jsonl", "key")
    return rows


@pytest.mark.parametrize("texts, picked", [
    (["Fine.\nScore: 4", "Score: 4.5", "Great.\nScore: 5"], ("Fine.", 4)),  # 4, 5 both 0.5 away
    (["Good.\nScore: 3", "Score: 5\nClear.", "Ok.\nScore: 5"], ("Clear.", 5)),  # mean 4.33
    (["Score: 4.5", "nothing"], None),  # no whole score
    (["Score: 4"], None),  # no justification left
    (["no score here"], None),
])
def test_pick_judgment(texts, picked):
    assert pick_judgment(texts) == picked


@pytest.mark.parametrize("ranks, scores, ties, expected", [
    ([0, 1, 2], [5, 3, 1], "drop", True),
    ([0, 1, 2], [5, 3, 3], "drop", False),
    ([0, 1, 2], [5, 3, 3], "allow", True),
    ([0, 1], [2, 4], "allow", False),
    ([1, 3], [4, 1], "drop", True),  # gaps in the ranks (removed replies) do not matter
    ([0, 0, 1], [3, 4, 2], "drop", True),  # equal human ranks constrain nothing
])
def test_agrees(ranks, scores, ties, expected):
    assert agrees(ranks, scores, ties) is expected


def test_agreement_filter_with_ties_dropped(turns, tmp_path):
    rows = _judged(turns, tmp_path)
    assert rows[0]["scores"] == [[4.0, 4.0, 3.0], [1.0, 1.0, 1.0]]
    train, held, stats = build_eft(rows, OasstEftParams(ties="drop", max_score_share=1.0,
                                                        eval_fraction=0.34, seed=0))
    # kept b0, h0; e0 (tie) and i0 disagree; j0 has a reply without a score
    assert (stats["groups"], stats["groups_unscored"], stats["groups_disagreeing"],
            stats["groups_agreeing"]) == (5, 1, 2, 2)
    # round(0.34 * 2) = 1 group held out; random.Random(0).sample(["b0", "h0"], 1) == ["h0"]
    assert {e["group"] for e in held} == {"h0"} and {e["group"] for e in train} == {"b0"}
    assert [e["score"] for e in held] == [5, 4, 2, 0]
    assert stats["rebalanced_away"] == 0 and stats["train_examples"] == 2


def test_agreement_filter_split_and_rebalancing_with_ties_allowed(turns, tmp_path):
    rows = _judged(turns, tmp_path)
    train, held, stats = build_eft(rows, OasstEftParams(ties="allow", max_score_share=0.2,
                                                        eval_fraction=0.34, seed=0))
    assert (stats["groups_unscored"], stats["groups_disagreeing"],
            stats["groups_agreeing"]) == (1, 1, 3)  # b0, e0, h0 kept; i0 dropped; j0 unscored
    # random.Random(0).sample(["b0", "e0", "h0"], 1) == ["e0"]
    assert (stats["train_groups"], stats["eval_groups"]) == (2, 1)
    assert held == [
        {"prompt": "Name a primary colour.", "response": "Red is a primary colour.",
         "justification": "Correct and direct.", "score": 4, "group": "e0", "human_rank": 0,
         "message_id": "e1", "judge_scores": [4.0, 4.0, 4.0]},
        {"prompt": "Name a primary colour.", "response": "Purple.",
         "justification": "Short and direct.", "score": 4, "group": "e0", "human_rank": 1,
         "message_id": "e2", "judge_scores": [4.0, 0.0, 4.0]}]
    # Train before rebalancing: b2 4, b4 1, h1 5, h2 4, h3 2, h4 0 -> histogram 0..5 =
    # [1, 1, 1, 0, 2, 1]. Score 4 is the most common; a 0.2 cap over the 4 others allows
    # floor(0.2 * 4 / 0.8) = 1 example of score 4, so one of the two is dropped.
    hist = {name: [stats[f"hist_{name}_{d}"] for d in range(6)]
            for name in ("train_before", "train", "eval")}
    assert hist == {"train_before": [1, 1, 1, 0, 2, 1], "train": [1, 1, 1, 0, 1, 1],
                    "eval": [0, 0, 0, 0, 2, 0]}
    assert (stats["rebalanced_score"], stats["rebalanced_away"]) == (4, 1)
    assert stats["train_examples_before_rebalance"] == 6 and stats["train_examples"] == 5
    # The fours are train rows 0 (b2) and 3 (h2); random.Random(0).sample([0, 3], 1) == [3].
    egg, sleep = "How do I boil an egg?", "Give me three tips for better sleep."
    assert train == [
        {"prompt": egg, "response": "Put the egg in boiling water for about nine minutes, then "
         "cool it in cold water.", "justification": "Detailed and correct.", "score": 4,
         "group": "b0", "human_rank": 1, "message_id": "b2", "judge_scores": [4.0, 4.0, 3.0]},
        {"prompt": egg, "response": "Eggs are laid by hens.", "justification": "Off topic.",
         "score": 1, "group": "b0", "human_rank": 3, "message_id": "b4",
         "judge_scores": [1.0, 1.0, 1.0]},
        {"prompt": sleep, "response": "1. Keep a fixed bedtime. 2. Avoid screens for an hour "
         "before bed. 3. Keep the bedroom cool and dark.", "justification": "Excellent.",
         "score": 5, "group": "h0", "human_rank": 0, "message_id": "h1",
         "judge_scores": [5.0, 4.5, 5.0]},
        {"prompt": sleep, "response": "Sleep is important for health.", "justification": "Vague.",
         "score": 2, "group": "h0", "human_rank": 2, "message_id": "h3",
         "judge_scores": [2.0, 2.0, 2.0]},
        {"prompt": sleep, "response": "Just stay awake.", "justification": "Harmful advice.",
         "score": 0, "group": "h0", "human_rank": 3, "message_id": "h4",
         "judge_scores": [0.0, 0.0, 0.0]}]


def test_rebalance_caps_only_the_most_common_score():
    examples = [{"score": s} for s in [4] * 8 + [3] * 3 + [5]]
    kept, stats = rebalance(examples, 0.5, seed=1)
    # rest = 4 -> at most floor(0.5 * 4 / 0.5) = 4 fours remain
    assert [e["score"] for e in kept].count(4) == 4 and stats["rebalanced_away"] == 4
    assert [e["score"] for e in kept].count(3) == 3
    assert rebalance(examples, 0.7, seed=1)[1]["rebalanced_away"] == 0  # 8/12 <= 0.7 already
    assert rebalance(examples, 1.0, seed=1)[0] == examples


def test_no_prompt_in_two_sets_and_eval_disjoint_by_group(turns, tmp_path):
    ift, _ = select_ift(turns[0], IFT_COUNT, IFT_SEED)
    train, held, _ = build_eft(_judged(turns, tmp_path),
                               OasstEftParams(ties="allow", eval_fraction=0.34))
    ift_prompts = {prompt_key(r["messages"][0]["content"]) for r in ift}
    train_prompts = {prompt_key(e["prompt"]) for e in train}
    eval_prompts = {prompt_key(e["prompt"]) for e in held}
    assert not ift_prompts & train_prompts and not ift_prompts & eval_prompts
    assert not train_prompts & eval_prompts
    assert not {e["group"] for e in train} & {e["group"] for e in held}


def test_judgment_pass_resumes_after_a_crash(turns, tmp_path):
    groups, _ = _groups(turns)
    out, jp = tmp_path / "judgments.jsonl", JudgeParams(mode="sample", samples=3)

    class CrashAfterTwoCalls(ScriptedEngine):
        def generate(self, chats, sampling):
            if len(self.calls) == 2:
                raise KeyboardInterrupt("simulated crash")
            return super().generate(chats, sampling)

    with pytest.raises(KeyboardInterrupt):
        judge_groups(CrashAfterTwoCalls(fake_reply), groups, jp, 2, out, "key")
    engine = ScriptedEngine(fake_reply)
    rows, stats = judge_groups(engine, groups, jp, 2, out, "key")
    assert stats == {"shards": 3, "shards_resumed": 2, "shards_discarded": 0}
    assert len(engine.calls) == 1  # only the last shard (j0) was judged again
    clean, _ = judge_groups(ScriptedEngine(fake_reply), groups, jp, 2, tmp_path / "c.jsonl", "k")
    assert rows == clean


# -- the three commands, with an OpenAI-compatible judge on 127.0.0.1 ---------------------------
_opened: list[str] | None = None  # files opened while a command runs (None: not recording)


def _record_opens(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | Path):
        _opened.append(str(Path(args[0]).resolve()))


sys.addaudithook(_record_opens)  # audit hooks stay for the process; recording is switched


def templates_read(invoke) -> set[str]:
    """The template files (packaged, or anywhere named *.txt) a command opens while it runs."""
    global _opened
    templates.template.cache_clear()  # templates are cached per process: read them afresh
    templates.user_template.cache_clear()
    _opened = []
    try:
        result = invoke()
    finally:
        opened, _opened = _opened, None
    assert result.exit_code == 0, result.output
    return {p for p in opened if p.endswith(".txt")}


class FakeJudgeServer(JsonHandler):
    """Chat completions answering the judge prompt from JUDGMENTS; sample k = request seed % 3."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
        text = fake_reply(body["messages"][-1]["content"], body["seed"], 0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                              "usage": {"prompt_tokens": 50, "completion_tokens": 5}}).encode()
        self.send_json(200, payload)


@pytest.fixture
def judge_server():
    with local_server(FakeJudgeServer) as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", srv


def test_commands_end_to_end_with_an_endpoint_judge(tmp_path, judge_server, turns):
    url, srv = judge_server
    params, rubric = tmp_path / "params.yaml", tmp_path / "rubric.txt"
    rubric.write_text((TEMPLATES / "judge_compact.txt").read_text())
    params.write_text(f"""
engine: {{shard_size: 16}}  # one shard: sample j is sent with seed j
judge: {{template: {rubric}}}
oasst:
  lang: en
  ift: {{count: {IFT_COUNT}, seed: {IFT_SEED}}}
  judge: {{samples: 3, endpoint: "{url}", api_key_env: null, endpoint_concurrency: 2}}
  eft: {{ties: allow, max_score_share: 0.2, eval_fraction: 0.34, seed: 0}}
""")
    runner, out = CliRunner(), tmp_path / "out"
    read = {"ift": templates_read(lambda: runner.invoke(main, [
        "seed-ift", "--params", str(params), "--export", str(FIXTURE),
        "--out", str(out / "ift.jsonl"), "--metrics", str(out / "ift.json")]))}
    assert [c.prompt[0]["content"] for c in load_ift(out / "ift.jsonl")] == [
        "What is the capital of France?", "What is 7 times 8?"]
    ift_metrics = json.loads((out / "ift.json").read_text())
    assert ift_metrics == {**turns[1], "prompts_without_rank0_reply": 2, "ift_candidates": 6,
                           "ift_examples": 2}
    read["judge"] = templates_read(lambda: runner.invoke(main, [
        "seed-judge", "--params", str(params), "--export", str(FIXTURE),
        "--ift", str(out / "ift.jsonl"), "--out", str(out / "judgments.jsonl"),
        "--metrics", str(out / "judge.json")]))
    assert len(srv.requests) == 13 * 3  # one request per reply and sample (2+2+4+3+2 replies)
    assert sorted(r["seed"] for r in srv.requests) == [0] * 13 + [1] * 13 + [2] * 13
    judge = json.loads((out / "judge.json").read_text())
    assert judge["groups_judged"] == 5 and judge["judge"]["kind"] == "endpoint"
    assert judge["endpoint_usage"]["requests"] == 39
    read["eft"] = templates_read(lambda: runner.invoke(main, [
        "seed-eft", "--params", str(params), "--judgments", str(out / "judgments.jsonl"),
        "--train", str(out / "train.jsonl"), "--eval", str(out / "eval.jsonl"),
        "--metrics", str(out / "eft.json"), "--hist", str(out / "hist.csv")]))
    # The only template the commands read is the judge's rubric (judge.template), which
    # seed_judge lists in dvc.yaml as ${judge.template}; no packaged template is read.
    assert read == {"ift": set(), "judge": {str(rubric.resolve())}, "eft": set()}
    assert "${judge.template}" in stage_deps("seed_judge")
    assert not any(d.startswith("src/selfreward/templates/") and d.endswith(".txt") for d in
                   stage_deps("seed_ift") + stage_deps("seed_judge") + stage_deps("seed_eft"))
    # Identical to the in-process build: the endpoint sees the same judge prompts.
    train, held, stats = build_eft(_judged(turns, tmp_path),
                                   OasstEftParams(ties="allow", max_score_share=0.2,
                                                  eval_fraction=0.34, seed=0))
    assert [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()] == train
    assert [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()] == held
    assert json.loads((out / "eft.json").read_text()) == stats
    assert (out / "hist.csv").read_text().splitlines()[:2] == [
        "score,train_before_rebalance,train,eval", "0,1,1,0"]
    # The project's EFT loader takes both files; the SFT renders them through the judge template.
    assert [e.group for e in load_eft(out / "eval.jsonl")] == ["e0", "e0"]
    assert len(load_eft(out / "train.jsonl")) == 5
    assert not list(out.glob("*.shards"))


def test_seed_sft_trains_on_ift_only_even_with_sft_self_instruct(tmp_path):
    """seed-sft is the paper's SFT baseline: it never needs the self-instruct messages, so with
    sft.self_instruct on it gets past that check (which stops `sft`) to loading the model."""
    params, ift = tmp_path / "p.yaml", tmp_path / "ift.jsonl"
    params.write_text("sft: {self_instruct: true}\nself_instruct: {enabled: true}\n")
    ift.write_text('{"messages": [{"role": "user", "content": "Hi"}, '
                   '{"role": "assistant", "content": "Hello"}]}\n')
    args = ["--params", str(params), "--model", str(tmp_path / "none"), "--ift", str(ift),
            "--out", str(tmp_path / "o"), "--metrics", str(tmp_path / "m.json")]
    res = CliRunner().invoke(main, ["sft", *args])
    assert res.exit_code == 2 and "--self-instruct FILE" in res.output
    res = CliRunner().invoke(main, ["seed-sft", *args])
    assert res.exit_code == 2 and "not a model checkpoint" in res.output, res.output
    assert stage_cmd("seed_sft").startswith("selfreward seed-sft ")


@pytest.mark.parametrize(("judge_yaml", "field", "message"), [
    ('{endpoint: "ftp://judge.example", api_key_env: null}', "oasst.judge.endpoint",
     r"must be an http\(s\) URL"),
    ('{endpoint: "http://127.0.0.1:9/v1", api_key_env: SELFREWARD_TEST_UNSET_KEY}',
     "oasst.judge.api_key_env", "SELFREWARD_TEST_UNSET_KEY.*not set"),
    ('{endpoint: "http://127.0.0.1:9/v1", endpoint_retries: -1}',
     "oasst.judge.endpoint_retries", "must be >= 0"),
    ('{endpoint: "http://127.0.0.1:9/v1", endpoint_timeout: 0}',
     "oasst.judge.endpoint_timeout", "must be > 0"),
])
def test_endpoint_judge_errors_name_the_oasst_keys(tmp_path, monkeypatch, judge_yaml, field,
                                                   message):
    """The endpoint keys are shared with eval.*; errors name the section they came from."""
    monkeypatch.delenv("SELFREWARD_TEST_UNSET_KEY", raising=False)
    good, params = tmp_path / "good.yaml", tmp_path / "params.yaml"
    good.write_text(f"oasst:\n  ift: {{count: {IFT_COUNT}}}\n")
    params.write_text(f"oasst:\n  ift: {{count: {IFT_COUNT}}}\n  judge: {judge_yaml}\n")
    ift = tmp_path / "ift.jsonl"
    out = tmp_path / "judgments.jsonl"
    runner = CliRunner()
    assert runner.invoke(main, ["seed-ift", "--params", str(good), "--export",
                                str(FIXTURE), "--out", str(ift), "--metrics",
                                str(tmp_path / "ift.json")]).exit_code == 0
    result = runner.invoke(main, ["seed-judge", "--params", str(params), "--export",
                                  str(FIXTURE), "--ift", str(ift), "--out", str(out),
                                  "--metrics", str(tmp_path / "judge.json")])
    assert result.exit_code == 2, result.output
    assert field in result.output and "eval." not in result.output
    assert re.search(message, result.output), result.output
    assert not out.exists() and not (tmp_path / "judge.json").exists()
