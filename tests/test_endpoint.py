"""The OpenAI-compatible endpoint judge against a real local HTTP server (http.server in a thread
on 127.0.0.1): verdicts in both orders, the key in the Authorization header only, retries and
errors that never reveal the key."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from procs import JsonHandler, local_server

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.core.io import write_json, write_jsonl
from selfreward.judge.endpoint import MAX_DELAY, ChatEndpoint, retry_after, retry_delay

SECRET = "sk-test-7f3a9c1e-DO-NOT-LEAK"
KEY_ENV = "SELFREWARD_TEST_JUDGE_KEY"


class FakeOpenAI(JsonHandler):
    """Chat completions: picks the response containing GOOD, else the first slot (biased)."""

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "body": body})
            fail = srv.fail_next.pop(0) if srv.fail_next else None
        if fail:
            # echo the credentials back, as some proxies do, to prove the client scrubs them
            payload = json.dumps({"error": f"denied for {self.headers.get('Authorization')}"})
            status, headers = fail if isinstance(fail, tuple) else (fail, {})
            self.send_json(status, payload.encode(), headers)
            return
        text = body["messages"][-1]["content"]
        r1 = text.split("<response_1>")[1].split("</response_1>")[0]
        r2 = text.split("<response_2>")[1].split("</response_2>")[0]
        winner = 2 if "GOOD" in r2 and "GOOD" not in r1 else 1
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                     "role": "assistant", "content": f"Response {winner} is better.\n"
                                                     f"Winner: {winner}"}}],
                 "usage": {"prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109}}
        self.send_json(200, json.dumps(reply).encode())



@pytest.fixture
def server():
    with local_server(FakeOpenAI) as srv:
        yield srv


def url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def eval_dir(path: Path, answers: dict[str, str]) -> Path:
    """A directory as `selfreward eval-model` writes it, built by hand (no model needed)."""
    write_jsonl(path / "answers.jsonl",
                [{"id": i, "prompt": f"Question {i}?", "answer": a, "words": len(a.split()),
                  "tokens": len(a.split())} for i, a in answers.items()])
    write_jsonl(path / "fixed_judge_scores.jsonl",  # the fixed judge's pointwise scores
                [{"id": i, "score": 4.0 if "GOOD" in a else 1.0} for i, a in answers.items()])
    write_json(path / "summary.json", {"model": str(path), "prompts": len(answers),
                                       "length": {"mean_words": 2.0}})
    return path


def test_evaluate_with_endpoint_judge(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    m1 = eval_dir(tmp_path / "m1", {"a": "bad", "b": "GOOD one", "c": "meh", "d": "x"})
    m2 = eval_dir(tmp_path / "m2", {"a": "weak", "b": "GOOD too", "c": "GOOD", "d": "y"})
    m3 = eval_dir(tmp_path / "m3", {"a": "GOOD", "b": "poor", "c": "GOOD", "d": "z"})
    params = tmp_path / "params.yaml"
    params.write_text(f"eval:\n  judge_endpoint: {url(server)}\n  endpoint_model: judge-9\n"
                      f"  api_key_env: {KEY_ENV}\n  endpoint_concurrency: 3\n"
                      "engine: {shard_size: 3}\n")
    out, metrics = tmp_path / "verdicts.jsonl", tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["evaluate", "--params", str(params), "--iteration", "2",
                                    "--model-eval", str(m2), "--next-eval", str(m3),
                                    "--sft-eval", str(m1), "--out", str(out),
                                    "--metrics", str(metrics)])
    assert res.exit_code == 0, res.output
    m = json.loads(metrics.read_text())
    # M3 vs M2: a win (GOOD vs weak), a loss (poor vs GOOD), two ties (both/neither GOOD: the
    # judge's first-slot bias flips with the order)
    assert (m["vs_prev"]["win"], m["vs_prev"]["tie"], m["vs_prev"]["loss"]) == (1, 2, 1)
    # M3 vs M1: a: win, b: loss, c: win (GOOD vs meh), d: tie
    assert (m["vs_sft"]["win"], m["vs_sft"]["tie"], m["vs_sft"]["loss"]) == (2, 1, 1)
    assert m["vs_sft"]["win_pct"] == 50.0 and m["vs_prev"]["first_slot_rate"] == 0.75
    assert m["judge"] == {"kind": "endpoint", "url": url(server) + "/chat/completions",
                          "model": "judge-9"}
    assert m["endpoint_usage"]["requests"] == 16 and m["endpoint_usage"]["prompt_tokens"] == 1600
    # pointwise view of the same answers: M3 has 2 GOOD of 4, M2 has 2 -> gain 0
    assert m["fixed_judge_gain"]["vs_prev"]["gain"] == 0.0
    assert m["answers_changed"] == {"prompts": 4, "changed": 3, "share": 0.75}  # c: same text

    reqs = server.requests
    assert len(reqs) == 16  # 2 opponents x 4 prompts x 2 orders
    assert all(r["auth"] == f"Bearer {SECRET}" for r in reqs)
    assert all(r["path"] == "/v1/chat/completions" and r["body"]["model"] == "judge-9"
               and r["body"]["temperature"] == 0.0 for r in reqs)
    # the key is sent, and nowhere else
    written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    for text in written + [res.output, caplog.text, repr(m)]:
        assert SECRET not in text
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["raw_x_first"] for r in recs} <= {"Response 1 is better.\nWinner: 1",
                                                "Response 2 is better.\nWinner: 2"}


def test_retry_then_success_and_errors_hide_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    ep = ChatEndpoint(url(server), "judge-9", KEY_ENV, retries=2, backoff=0.01)
    server.fail_next = [429, 503]
    chat = [{"role": "user", "content": "<response_1>a</response_1><response_2>GOOD"
                                        "</response_2>"}]
    assert ep.complete(chat, max_tokens=8).endswith("Winner: 2")
    assert ep.usage["retries"] == 2 and len(server.requests) == 3
    server.fail_next = [401]
    with pytest.raises(UserError) as err:
        ep.complete(chat, max_tokens=8)
    assert "HTTP 401" in str(err.value) and SECRET not in str(err.value)
    assert "***" in str(err.value)  # the echoed key was scrubbed
    assert SECRET not in repr(ep)


CHAT = [{"role": "user", "content": "<response_1>a</response_1><response_2>GOOD</response_2>"}]


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The delays the client waits between attempts (recorded, not slept)."""
    delays: list[float] = []
    monkeypatch.setattr("selfreward.judge.endpoint.time.sleep", delays.append)
    return delays


def test_429_with_retry_after_then_200_waits_what_the_server_asks(server, sleeps):
    server.fail_next = [(429, {"Retry-After": "7"})]
    endpoint = ChatEndpoint(url(server), "judge-9", None, retries=3, backoff=0.5)
    assert endpoint.complete(CHAT, max_tokens=8).endswith("Winner: 2")
    assert sleeps == [7.0] and len(server.requests) == 2 and endpoint.usage["retries"] == 1
    # an HTTP date in the past means "now"; a huge wait is capped
    server.fail_next = [(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                        (503, {"Retry-After": "86400"})]
    assert endpoint.complete(CHAT, max_tokens=8).endswith("Winner: 2")
    assert sleeps[1:] == [0.0, MAX_DELAY]


def test_429_without_retry_after_backs_off_exponentially_with_jitter(server, sleeps):
    server.fail_next = [429, 429, 503]
    endpoint = ChatEndpoint(url(server), "judge-9", None, retries=3, backoff=1.0)
    assert endpoint.complete(CHAT, max_tokens=8).endswith("Winner: 2")
    assert len(sleeps) == 3 and len(server.requests) == 4
    for attempt, delay in enumerate(sleeps):  # in [b/2, b] for b = 1, 2, 4 seconds
        assert 2 ** attempt / 2 <= delay <= 2 ** attempt
    rng = random.Random(0)
    spread = {retry_delay(2, 1.0, None, rng) for _ in range(20)}
    assert len(spread) == 20 and min(spread) >= 2 and max(spread) <= 4  # jittered, not in step
    assert retry_after("3") == 3.0 and retry_after("soon") is None and retry_after(None) is None


def test_missing_key_and_bad_url(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match=f"{KEY_ENV}.*not set"):
        ChatEndpoint("http://127.0.0.1:9/v1", "m", KEY_ENV)
    with pytest.raises(UserError, match="eval.judge_endpoint"):
        ChatEndpoint("ftp://example.com", "m", None)


def test_no_key_server_and_unreachable(server):
    ep = ChatEndpoint(url(server) + "/chat/completions", "m", None)
    chats = [[{"role": "user", "content": f"<response_1>{a}</response_1><response_2>{b}"
                                          "</response_2>"}] for a, b in [("GOOD", "x"), ("x", "GOOD")]]
    assert [t[-1] for t in ep.complete_many(chats, max_tokens=8)] == ["1", "2"]
    assert all(r["auth"] is None for r in server.requests)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    dead = ChatEndpoint(f"http://127.0.0.1:{port}/v1", "m", None, retries=0, timeout=2)
    with pytest.raises(UserError, match="unreachable"):
        dead.complete(chats[0], max_tokens=8)


def test_unreachable_endpoint_exits_2_and_leaves_no_output_or_shard_folder(tmp_path):
    """Before, the failed stage left `verdicts.jsonl.shards/` holding only meta.json."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    m1 = eval_dir(tmp_path / "m1", {"a": "x", "b": "y"})
    m2 = eval_dir(tmp_path / "m2", {"a": "GOOD", "b": "z"})
    params = tmp_path / "params.yaml"
    params.write_text(f"eval:\n  judge_endpoint: http://127.0.0.1:{port}/v1\n"
                      "  api_key_env: null\n  endpoint_retries: 0\n")
    out, metrics = tmp_path / "verdicts.jsonl", tmp_path / "eval.json"
    res = CliRunner().invoke(main, ["evaluate", "--params", str(params), "--iteration", "1",
                                    "--model-eval", str(m1), "--next-eval", str(m2),
                                    "--sft-eval", str(m1), "--out", str(out),
                                    "--metrics", str(metrics)])
    assert res.exit_code == 2, res.output
    assert "unreachable" in res.output and "eval.judge_endpoint" in res.output
    assert not out.exists() and not metrics.exists()
    assert not Path(str(out) + ".shards").exists()
