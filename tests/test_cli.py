"""CLI contract: help texts, bad input -> exit 2 with file:line:field and no partial output."""

import json

import pytest
from click.testing import CliRunner

from selfreward.cli import main

STAGES = ["base", "sft", "prompts", "responses", "judge", "pairs", "dpo"]


def test_every_stage_has_help():
    runner = CliRunner()
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0
    for stage in STAGES:
        assert stage in res.output
        sub = runner.invoke(main, [stage, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output and len(sub.output) > 200


GOOD = {"prompt": "p", "response": "r", "justification": "j", "score": 3}


@pytest.mark.parametrize("lines, message", [
    ([json.dumps(GOOD)] * 6 + ['{"prompt": "p", "score": 3'], "eft.jsonl:7: invalid JSON"),
    ([json.dumps({k: v for k, v in GOOD.items() if k != "response"})],
     "eft.jsonl:1: field 'response': missing required field"),
    ([json.dumps({**GOOD, "score": 9})], "eft.jsonl:1: field 'score': score must be"),
    ([], "eft.jsonl: file is empty"),
])
def test_sft_bad_seed_file_exits_2_and_leaves_no_output(tmp_path, tiny_model, lines, message):
    eft = tmp_path / "eft.jsonl"
    eft.write_text("\n".join(lines) + ("\n" if lines else ""))
    (tmp_path / "params.yaml").write_text("sft:\n  max_steps: 1\n")
    out = tmp_path / "m1"
    res = CliRunner().invoke(main, ["sft", "--params", str(tmp_path / "params.yaml"),
                                    "--model", str(tiny_model), "--eft", str(eft),
                                    "--out", str(out), "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.count("Error") == 1 and "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "m.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m1")]


@pytest.mark.parametrize("params, message", [
    ("sft:\n  learnig_rate: 1.0e-5\n", "params.yaml:2: field 'sft.learnig_rate': unknown key"),
    ("sft:\n  batch_size: eight\n", "params.yaml:2: field 'sft.batch_size': expected integer"),
])
def test_bad_params_exit_2_before_any_work(tmp_path, tiny_model, params, message):
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "m1"
    res = CliRunner().invoke(main, ["sft", "--params", str(tmp_path / "params.yaml"),
                                    "--model", str(tiny_model), "--out", str(out),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and message in res.output
    assert not out.exists()


def test_missing_model_dir_is_a_user_error(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hi"}\n')
    res = CliRunner().invoke(main, ["responses", "--params", str(tmp_path / "params.yaml"),
                                    "--model", str(tmp_path / "nope"), "--prompts", str(prompts),
                                    "--out", str(tmp_path / "r.jsonl"),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and "no config.json" in res.output
