"""AlpacaEval 2.0: model_outputs.json from a tiny model read back by alpaca_eval's own loading code,
and alpaca_eval's real annotator command run against a local OpenAI-compatible server on 127.0.0.1
(the key only in the Authorization header, never in outputs, metrics or logs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from procs import JsonHandler, local_server

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import load_params
from selfreward.evaluation.alpaca import annotator_command, load_alpaca_rows

SECRET = "sk-alpaca-test-5d1e-DO-NOT-LEAK"
KEY_ENV = "SELFREWARD_TEST_ALPACA_KEY"
INSTRUCTIONS = [("Name a colour.", "helpful_base"), ("Say hello.", "koala"),
                ("Count to three.", "oasst"), ("Give a fruit.", "vicuna")]


def test_model_outputs_read_back_by_alpaca_eval(tiny_model, tmp_path, write_jsonl):
    from alpaca_eval import utils as ae_utils

    prompts = write_jsonl("alpaca.jsonl", [{"instruction": i, "dataset": d}
                                           for i, d in INSTRUCTIONS[:3]])
    params = tmp_path / "params.yaml"
    params.write_text("engine: {name: hf, batch_size: 4}\nalpaca_eval: {max_new_tokens: 4}\n")
    out = tmp_path / "m1" / "model_outputs.json"
    res = CliRunner().invoke(main, ["alpaca-outputs", "--params", str(params), "--model",
                                    str(tiny_model), "--prompts", str(prompts), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = ae_utils.load_or_convert_to_dataframe(out)  # alpaca_eval's own reader
    assert list(df["instruction"]) == [i for i, _ in INSTRUCTIONS[:3]]
    assert list(df["dataset"]) == [d for _, d in INSTRUCTIONS[:3]]
    assert set(df.columns) == {"instruction", "output", "generator", "dataset"}
    assert all(isinstance(o, str) for o in df["output"])
    assert ae_utils.get_generator_name(None, df) == "selfreward-model"


def test_alpaca_rows_errors(tmp_path, write_jsonl):
    good = tmp_path / "a.json"
    good.write_text(json.dumps([{"instruction": "x", "dataset": "koala"}]))
    assert load_alpaca_rows(good) == [{"instruction": "x", "dataset": "koala"}]
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps([{"instruction": "x"}, {"instruction": ""}]))
    with pytest.raises(UserError, match="item 2: expected a non-empty string") as exc:
        load_alpaca_rows(bad)
    assert exc.value.field == "instruction" and exc.value.exit_code == 2
    jsonl = write_jsonl("c.jsonl", [{"instruction": "x"}, {"output": "y"}])
    with pytest.raises(UserError) as exc:
        load_alpaca_rows(jsonl)
    assert exc.value.line == 2 and exc.value.field == "instruction"
    with pytest.raises(UserError, match="selfreward alpaca-data"):
        load_alpaca_rows(tmp_path / "alpaca_eval.json")


# -- the annotator against a local OpenAI-compatible server ----------------------------------------
class FakeGPT4Turbo(JsonHandler):
    """Chat completions with top logprobs, as alpaca_eval's weighted GPT-4 Turbo annotator reads
    them: prefers the output containing GOOD (P = 0.9), else no preference (0.5)."""

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "body": body})
        text = body["messages"][-1]["content"]
        first = text.split('"model_identifier": "m"')[1].split('"model_identifier": "M"')[0]
        second = text.split('"model_identifier": "M"')[1]
        p_second = 0.9 if "GOOD" in second and "GOOD" not in first else (
            0.1 if "GOOD" in first and "GOOD" not in second else 0.5)
        best = "M" if p_second >= 0.5 else "m"
        top = [{"token": "M", "bytes": [77], "logprob": math.log(p_second)},
               {"token": "m", "bytes": [109], "logprob": math.log(1 - p_second)}]
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "length",
                              "message": {"role": "assistant", "content": best},
                              "logprobs": {"content": [{"token": best, "bytes": [ord(best)],
                                                        "logprob": top[0]["logprob"],
                                                        "top_logprobs": top}]}}],
                 "usage": {"prompt_tokens": 300, "completion_tokens": 1, "total_tokens": 301}}
        self.send_json(200, json.dumps(reply).encode())


@pytest.fixture
def server():
    with local_server(FakeGPT4Turbo) as srv:
        yield srv


def _hub_cache_with_gamed_annotations(cache: Path, n: int) -> None:
    """The length-controlled win rate reads df_gamed.csv from the hub dataset; offline, a small
    synthetic one in the hub cache layout stands in (the numbers are not the real ones)."""
    repo = cache / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    lines = ["model,index,instruction_difficulty,preference,std_delta_len,not_gamed_baseline"]
    for model, pref, delta in (("gamed_long", 0.8, 1.5), ("gamed_short", 0.2, -1.5)):
        lines += [f"{model},{i},{0.1 * (i % 3)},{pref},{delta},False" for i in range(n)]
    (snap / "df_gamed.csv").write_text("\n".join(lines) + "\n")


def test_annotator_against_local_server(server, tmp_path, monkeypatch, caplog):
    outputs = tmp_path / "model_outputs.json"
    outputs.write_text(json.dumps([
        {"instruction": i, "output": ("GOOD answer " if k < 3 else "plain answer ") + i,
         "generator": "selfreward-m2", "dataset": d} for k, (i, d) in enumerate(INSTRUCTIONS)]))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([
        {"instruction": i, "output": "reference answer to " + i,
         "generator": "gpt4_1106_preview", "dataset": d} for i, d in INSTRUCTIONS]))
    cache = tmp_path / "hub"
    _hub_cache_with_gamed_annotations(cache, len(INSTRUCTIONS))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    params = tmp_path / "params.yaml"
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    params.write_text(f"alpaca_eval: {{api_key_env: {KEY_ENV}, base_url: '{base}'}}\n")
    out, metrics = tmp_path / "annotations", tmp_path / "metrics" / "m2.json"
    res = CliRunner().invoke(main, ["alpaca-eval", "--params", str(params), "--model-outputs",
                                    str(outputs), "--reference", str(reference), "--out",
                                    str(out), "--metrics", str(metrics)])
    assert res.exit_code == 0, res.output
    assert len(server.requests) == len(INSTRUCTIONS)
    for req in server.requests:
        assert req["path"] == "/v1/chat/completions"
        assert req["auth"] == f"Bearer {SECRET}"  # the key travels in the header only
        assert req["body"]["model"] == "gpt-4-1106-preview"  # the AlpacaEval 2.0 annotator
        assert req["body"]["logprobs"] is True and req["body"]["max_tokens"] == 1
    m = json.loads(metrics.read_text())
    # P(ours better) = 0.9, 0.9, 0.9, 0.5 -> 80 %
    assert m["win_rate"] == pytest.approx(80.0, abs=0.01)
    assert 0 <= m["length_controlled_winrate"] <= 100
    assert m["generator"] == "selfreward-m2" and m["paper_win_rate"] == 15.38
    assert m["instances"] == 4 and m["endpoint"] == base
    # no key anywhere it could be kept
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "hub" not in p.parts]
    assert written and not any(SECRET in p.read_text(errors="replace") for p in written)
    assert SECRET not in res.output and SECRET not in caplog.text


def test_annotator_needs_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    for name, rows in (("o.json", [{"instruction": "x", "output": "y", "generator": "g"}]),
                       ("r.json", [{"instruction": "x", "output": "z", "generator": "ref"}])):
        (tmp_path / name).write_text(json.dumps(rows))
    params = tmp_path / "params.yaml"
    params.write_text(f"alpaca_eval: {{api_key_env: {KEY_ENV}}}\n")
    res = CliRunner().invoke(main, ["alpaca-eval", "--params", str(params), "--model-outputs",
                                    str(tmp_path / "o.json"), "--reference",
                                    str(tmp_path / "r.json"), "--out", str(tmp_path / "out"),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and KEY_ENV in res.output
    assert not (tmp_path / "m.json").exists()


def test_annotator_command_has_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml").alpaca_eval
    cmd = annotator_command(p, "mo.json", "ref.json", str(tmp_path))
    assert SECRET not in " ".join(cmd)
    assert cmd[cmd.index("--annotators_config") + 1] == "weighted_alpaca_eval_gpt4_turbo"


def test_alpaca_data_copies_the_hub_files(tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, filename, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        path = tmp_path / "hub" / filename
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi!",
                                     "generator": "gpt4_1106_preview", "dataset": "koala"}]))
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    res = CliRunner().invoke(main, ["alpaca-data", "--out-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    assert [c[:3] for c in calls] == [
        ("tatsu-lab/alpaca_eval", "alpaca_eval.json", "dataset"),
        ("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json", "dataset")]
    rows = load_alpaca_rows(tmp_path / "data" / "alpaca_eval.json")
    assert rows[0]["instruction"] == "Say hi."
