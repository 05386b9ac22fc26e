"""Bad input, tried as a new user would: exit 2 with file:line:field, no traceback, no output,
no shard folder; an over-long prompt is a warning and a count, not a silent cut."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.params import EngineParams, Params, ResponsesParams
from selfreward.core.shards import shard_dir

JUDGMENT = {"id": "a", "prompt": "q", "responses": ["x", "y"], "scores": [[3.0], [1.0]],
            "mean": [3.0, 1.0]}


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def assert_nothing_written(*paths: Path) -> None:
    for path in paths:
        assert not path.exists(), path
        assert not shard_dir(path).exists(), shard_dir(path)


def test_invalid_utf8_in_a_jsonl_file_is_exit_2_with_file_and_line(tmp_path):
    good = (json.dumps(JUDGMENT) + "\n").encode()
    bad = json.dumps({**JUDGMENT, "id": "b"}).encode().replace(b'"q"', b'"caf\xe9"') + b"\n"
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_bytes(good + good + bad)
    (tmp_path / "params.yaml").write_text("{}\n")
    out, metrics = tmp_path / "pairs.jsonl", tmp_path / "pairs.json"
    res = invoke("pairs", "--params", str(tmp_path / "params.yaml"), "--judgments",
                 str(judgments), "--out", str(out), "--metrics", str(metrics))
    assert res.exit_code == 2, res.output
    assert f"{judgments}:3: invalid UTF-8 (byte 0xe9 at column" in res.output
    assert_nothing_written(out, metrics)


def test_invalid_utf8_in_prompts_leaves_no_shard_folder(tmp_path, tiny_model):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "\xff"}\n')
    (tmp_path / "params.yaml").write_text("{}\n")
    out, metrics = tmp_path / "responses.jsonl", tmp_path / "m.json"
    res = invoke("responses", "--params", str(tmp_path / "params.yaml"), "--model",
                 str(tiny_model), "--prompts", str(prompts), "--out", str(out),
                 "--metrics", str(metrics))
    assert res.exit_code == 2 and f"{prompts}:2: invalid UTF-8" in res.output
    assert_nothing_written(out, metrics)


def test_invalid_utf8_in_params_names_the_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes(b"pairs:\n  min_margin: 0.2\n  # r\xe9sum\xe9\n")
    res = invoke("pairs", "--params", str(params), "--judgments", "x", "--out",
                 str(tmp_path / "o"), "--metrics", str(tmp_path / "m"))
    assert res.exit_code == 2 and f"{params}:3: invalid UTF-8" in res.output


@pytest.mark.parametrize("text, line, field, words", [
    ("responses:\n  n: 4\n  temperature: -1\n", 3, "responses.temperature", "must be >= 0"),
    ("judge:\n  temperature: -0.5\n", 2, "judge.temperature", "must be >= 0"),
    ("self_instruct:\n  instance_temperature: -1\n", 2, "self_instruct.instance_temperature",
     "must be >= 0"),
    ("responses:\n  top_p: 0\n", 2, "responses.top_p", "must be in (0, 1]"),
    ("prompts:\n  top_p: 1.5\n", 2, "prompts.top_p", "must be in (0, 1]"),
    ("responses:\n  n: 0\n", 2, "responses.n", "must be > 0"),
    ("prompts:\n  count: -3\n", 2, "prompts.count", "must be > 0"),
    ("judge:\n  samples: 0\n", 2, "judge.samples", "must be > 0"),
    ("prompts:\n  seed_shots: -1\n", 2, "prompts.seed_shots", "must be >= 0"),
    ("prompts:\n  min_words: 10\n  max_words: 5\n", 3, "prompts.max_words", "min_words"),
    ("dpo:\n  learning_rate: 0\n", 2, "dpo.learning_rate", "must be > 0"),
])
def test_bad_sampling_params_exit_2_before_any_work(tmp_path, tiny_model, text, line, field,
                                                    words):
    """Before, `responses.temperature: -1` was accepted and sampled greedily."""
    params = tmp_path / "params.yaml"
    params.write_text(text)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hi"}\n')
    out, metrics = tmp_path / "responses.jsonl", tmp_path / "m.json"
    res = invoke("responses", "--params", str(params), "--model", str(tiny_model), "--prompts",
                 str(prompts), "--out", str(out), "--metrics", str(metrics))
    assert res.exit_code == 2, res.output
    assert f"{params}:{line}: field '{field}'" in res.output and words in res.output
    assert_nothing_written(out, metrics)


@pytest.mark.parametrize("text, line, words", [
    # an unclosed quote or bracket: PyYAML notices it lines later (here at the end, line 5)
    ("judge:\n  mode: 'logprob\n  samples: 3\nresponses:\n  n: 4\n", 2, "quoted scalar"),
    ("judge:\n  mode: [logprob\n  samples: 3\n", 2, "flow sequence"),
    ("judge:\n  mode: logprob\n samples: 3\n", 3, "expected <block end>"),
    ("judge:\n\tmode: logprob\n", 2, "'\\t'"),
])
def test_yaml_syntax_error_names_the_line_to_fix(tmp_path, text, line, words):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    res = invoke("pairs", "--params", str(params), "--judgments", "x", "--out",
                 str(tmp_path / "o"), "--metrics", str(tmp_path / "m"))
    assert res.exit_code == 2, res.output
    assert f"{params}:{line}: invalid YAML" in res.output and words in res.output, res.output
    assert_nothing_written(tmp_path / "o", tmp_path / "m")


def test_an_over_long_prompt_warns_once_with_the_count_and_is_in_the_metrics(
        tmp_path, tiny_model, caplog):
    """Before, prompts longer than the context were cut from the left without a word."""
    from selfreward.stages.responses import run_responses

    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "short", "prompt": "Hi?"},
            {"id": "long1", "prompt": "word " * 300},
            {"id": "long2", "prompt": "other " * 300}]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    caplog.set_level(logging.WARNING)
    params = Params(responses=ResponsesParams(n=2, max_new_tokens=4),
                    engine=EngineParams(name="hf", max_model_len=96, shard_size=1))
    metrics = run_responses(params=params, model_dir=str(tiny_model), prompts_path=str(prompts),
                            out_path=tmp_path / "r.jsonl", metrics_path=tmp_path / "m.json")
    warnings = [r.getMessage() for r in caplog.records if "longer than the context" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith("2 of 3 prompts")
    assert metrics["engine_truncated_prompts"] == 2
    assert json.loads((tmp_path / "m.json").read_text())["engine_truncated_prompts"] == 2


@pytest.mark.parametrize("key, value", [
    ("sft.grad_accum", "-1"),
    ("dpo.warmup_ratio", "2"),
    ("sft.lora.r", "0"),
    ("engine.gpu_memory_utilization", "5"),
    ("engine.tensor_parallel_size", "0"),
    ("engine.max_model_len", "-5"),
    ("sft.save_steps", "-3"),
    ("iterations.2.next", "models/m2"),  # equals the iteration's model
])
def test_values_accepted_before_pydantic_are_exit_2_at_load(tmp_path, key, value):
    """Before the pydantic config these loaded and failed later (or never): now the shipped
    params.yaml with one value changed stops `selfreward pairs` at load, naming line and key."""
    import yaml

    from selfreward.config.params import _key_lines

    text = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    line = _key_lines(yaml.compose(text))[key]
    lines = text.split("\n")
    name = re.escape(key.rsplit(".", 1)[-1])
    lines[line - 1], count = re.subn(rf"\b({name}:\s*)[^\s,}}#]+", rf"\g<1>{value}",
                                     lines[line - 1])
    assert count == 1, lines[line - 1]
    params = tmp_path / "params.yaml"
    params.write_text("\n".join(lines))
    out, metrics = tmp_path / "pairs.jsonl", tmp_path / "m.json"
    res = invoke("pairs", "--params", str(params), "--judgments", str(tmp_path / "j.jsonl"),
                 "--out", str(out), "--metrics", str(metrics))
    assert res.exit_code == 2, res.output
    assert f"{params}:{line}: field '{key}': " in res.output, res.output
    assert res.output.count("\n") == 1  # one error, one line
    assert_nothing_written(out, metrics)


# -- judgments.jsonl, pairs.min_valid, pairs.jsonl and dpo.max_length (issue 25, item 4) -------


def _pairs(tmp_path, rows: list, params_text: str = "{}\n"):
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "params.yaml").write_text(params_text)
    out, metrics = tmp_path / "pairs.jsonl", tmp_path / "pairs.json"
    res = invoke("pairs", "--params", str(tmp_path / "params.yaml"), "--judgments",
                 str(judgments), "--out", str(out), "--metrics", str(metrics))
    return res, judgments, out, metrics


@pytest.mark.parametrize("change, field, words", [
    ({"mean": [3.0]}, "mean", "1 means for 2 responses"),
    ({"mean": [3.0, 1.0, 2.0]}, "mean", "3 means for 2 responses"),
    ({"mean": [3.0, "high"]}, "mean", "means must be numbers or null"),
    ({"mean": [True, 1.0]}, "mean", "means must be numbers or null"),
    ({"responses": ["x", 7]}, "responses", "response 1 is int, expected a string"),
    ({"responses": [None, "y"]}, "responses", "response 0 is NoneType, expected a string"),
    ({"mean": 3.0}, "mean", "expected array, got float"),
])
def test_bad_judgments_exit_2_naming_line_and_field(tmp_path, change, field, words):
    res, judgments, out, metrics = _pairs(tmp_path, [JUDGMENT, {**JUDGMENT, **change}])
    assert res.exit_code == 2, res.output
    assert f"{judgments}:2: field '{field}': {words}" in res.output, res.output
    assert_nothing_written(out, metrics)


def test_min_valid_above_two_drops_prompts_with_fewer_scores(tmp_path):
    three = {**JUDGMENT, "responses": ["x", "y", "z"], "scores": [[3.0], [1.0], [None]],
             "mean": [3.0, 1.0, None]}
    res, _, out, metrics = _pairs(tmp_path, [three], "pairs:\n  min_valid: 3\n")
    assert res.exit_code == 2, res.output
    assert "1 with < 3 valid scores (pairs.min_valid=3)" in res.output, res.output
    assert_nothing_written(out, metrics)
    full = {**three, "id": "b", "scores": [[3.0], [1.0], [2.0]], "mean": [3.0, 1.0, 2.0]}
    res, *_ = _pairs(tmp_path, [three, full], "pairs:\n  min_valid: 3\n")
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["b"]
    stats = json.loads(metrics.read_text())
    assert (stats["pairs"], stats["dropped_too_few_valid"]) == (1, 1)


PAIR = {"prompt": [{"role": "user", "content": "Name a colour."}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "no"}]}


def _dpo(tmp_path, tiny_model, rows: list, params_text: str = "{}\n"):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "params.yaml").write_text(params_text)
    out, metrics = tmp_path / "m2", tmp_path / "dpo.json"
    res = invoke("dpo", "--params", str(tmp_path / "params.yaml"), "--model", str(tiny_model),
                 "--pairs", str(pairs), "--out", str(out), "--metrics", str(metrics))
    return res, pairs, out, metrics
MESSAGES = "expected a non-empty list of {role, content} messages"


@pytest.mark.parametrize("change, field, words", [
    ({"chosen": None}, "chosen", "missing required field"),
    ({"rejected": "no"}, "rejected", "expected array, got str"),
    ({"chosen": []}, "chosen", MESSAGES),
    ({"prompt": [{"role": "user", "content": 3}]}, "prompt", MESSAGES),
    ({"chosen": [{"content": "Blue."}]}, "chosen", MESSAGES),
])
def test_bad_pairs_stop_dpo_with_exit_2(tmp_path, tiny_model, change, field, words):
    bad = {k: v for k, v in {**PAIR, **change}.items() if v is not None}
    res, pairs, out, metrics = _dpo(tmp_path, tiny_model, [PAIR, PAIR, bad])
    assert res.exit_code == 2, res.output
    assert f"{pairs}:3: field '{field}': {words}" in res.output, res.output
    assert_nothing_written(out, metrics)


def test_dpo_with_every_prompt_over_max_length_is_exit_2(tmp_path, tiny_model):
    long = {**PAIR, "prompt": [{"role": "user", "content": "word " * 100}]}
    res, pairs, out, metrics = _dpo(tmp_path, tiny_model, [long, long],
                                    "dpo:\n  max_length: 32\n  max_steps: 1\n")
    assert res.exit_code == 2, res.output
    assert (f"{pairs}: field 'dpo.max_length': every prompt is at least dpo.max_length=32 "
            "tokens: no pair is left to train on") in res.output, res.output
    assert_nothing_written(out, metrics)
    assert not list(tmp_path.glob("*m2*"))  # no training work folder either
