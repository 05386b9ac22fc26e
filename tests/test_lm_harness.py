"""`selfreward lm-eval`: the harness command built from params (vLLM backend in the GPU profile),
scores read from lm_eval's results file into a DVC metrics file, IFEval's punkt data handed over;
and a real lm_eval run (HF backend, tiny model) of IFEval's task on the team's prompts, offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.params import load_params
from selfreward.evaluation.ifeval import score_response
from selfreward.evaluation.lm_harness import lm_eval_command, task_scores

ROOT = Path(__file__).resolve().parents[1]

RESULTS = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.61234,
                                    "acc_stderr,none": 0.01, "acc_norm,none": 0.58},
                       "ifeval": {"alias": "ifeval", "prompt_level_strict_acc,none": 0.25,
                                  "inst_level_loose_acc,none": 0.4}},
           "lm_eval_version": "0.4.13"}


def test_gpu_profile_command():
    p = load_params(ROOT / "params.gpu.yaml")
    cmd = lm_eval_command("models/m2", p.lm_eval, p.engine, "data/lm_eval/models/m2")
    assert cmd[1:5] == ["-m", "lm_eval", "run", "--model"] and cmd[5] == "vllm"
    args = cmd[cmd.index("--model_args") + 1]
    assert args.startswith("pretrained=models/m2,") and "tensor_parallel_size=" in args
    assert f"gpu_memory_utilization={p.engine.gpu_memory_utilization}" in args
    assert cmd[cmd.index("--tasks") + 1] == "ifeval,arc_easy,arc_challenge,hellaswag,mmlu"
    assert "--apply_chat_template" in cmd and "--limit" not in cmd


def test_scores_become_dvc_metrics(tiny_model, tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, env, check):
        seen["cmd"], seen["nltk"] = cmd, Path(env["NLTK_DATA"])
        out = Path(cmd[cmd.index("--output_path") + 1]) / "model"
        out.mkdir(parents=True)
        (out / "results_2026-01-01T00-00-00.json").write_text(json.dumps(RESULTS))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr("selfreward.evaluation.lm_harness.subprocess.run", fake_run)
    params = tmp_path / "params.yaml"
    params.write_text("lm_eval: {tasks: [arc_easy, ifeval], limit: 5}\n")
    metrics = tmp_path / "metrics" / "m1.json"
    res = CliRunner().invoke(main, ["lm-eval", "--params", str(params), "--model",
                                    str(tiny_model), "--out", str(tmp_path / "out"),
                                    "--metrics", str(metrics)])
    assert res.exit_code == 0, res.output
    assert seen["cmd"][seen["cmd"].index("--limit") + 1] == "5"
    assert (seen["nltk"] / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()
    m = json.loads(metrics.read_text())
    assert m["tasks"] == {"arc_easy": {"acc": 0.6123, "acc_stderr": 0.01, "acc_norm": 0.58},
                          "ifeval": {"prompt_level_strict_acc": 0.25,
                                     "inst_level_loose_acc": 0.4}}
    assert m["backend"] == "hf" and m["limit"] == 5


def test_task_scores_keep_filtered_metrics():
    scores = task_scores({"results": {"gsm8k": {"exact_match,strict-match": 0.1,
                                                "exact_match,flexible-extract": 0.2}}})
    assert scores == {"gsm8k": {"exact_match_strict-match": 0.1,
                                "exact_match_flexible-extract": 0.2}}


def test_not_a_checkpoint(tmp_path):
    res = CliRunner().invoke(main, ["lm-eval", "--params", str(ROOT / "params.yaml"), "--model",
                                    str(tmp_path), "--out", str(tmp_path / "o"), "--metrics",
                                    str(tmp_path / "m.json")])
    assert res.exit_code == 2 and "no config.json" in res.output


@pytest.mark.slow
def test_real_harness_run_on_team_prompts(tiny_model, tmp_path):
    """lm_eval itself (HF backend, CPU, offline) runs IFEval's task code on the team's prompts:
    the harness path `selfreward lm-eval` drives, end to end."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(
        "from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa\n")
    metric = "  - metric: {name}\n    aggregation: {agg}\n    higher_is_better: true\n"
    (tasks / "team_ifeval.yaml").write_text(
        "task: team_ifeval\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    train: {ROOT / 'data/seed/ifeval_prompts.jsonl'}\n"
        "output_type: generate_until\ntest_split: train\nnum_fewshot: 0\n"
        "doc_to_text: prompt\ndoc_to_target: 0\n"
        "generation_kwargs:\n  until: []\n  do_sample: false\n  temperature: 0.0\n"
        "  max_gen_toks: 4\nprocess_results: !function utils.process_results\nmetric_list:\n"
        + "".join(metric.format(name=f"prompt_level_{kind}_acc", agg="mean")
                  + metric.format(name=f"inst_level_{kind}_acc",
                                  agg="!function utils.agg_inst_level_acc")
                  for kind in ("strict", "loose"))
        + "metadata:\n  version: 4.0\n")
    params = tmp_path / "params.yaml"
    params.write_text("lm_eval: {tasks: [team_ifeval], limit: 3, batch_size: '1', "
                      "apply_chat_template: false, model_args: ''}\n")
    p = load_params(params)
    cmd = lm_eval_command(str(tiny_model), p.lm_eval, p.engine, tmp_path / "out")
    cmd += ["--include_path", str(tasks), "--log_samples"]
    from selfreward.evaluation.ifeval import install_punkt_english

    env = {"NLTK_DATA": install_punkt_english(), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = list((tmp_path / "out").rglob("results_*.json"))
    scores = task_scores(json.loads(found[0].read_text()))
    assert 0.0 <= scores["team_ifeval"]["prompt_level_strict_acc"] <= 1.0
    # the harness and the pipeline's own IFEval stage give the same verdicts on the same answers
    samples = [json.loads(line) for f in (tmp_path / "out").rglob("samples_team_ifeval*.jsonl")
               for line in f.read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        verdict = score_response(sample["doc"], sample["filtered_resps"][0])
        assert verdict["strict"] == [bool(v) for v in sample["inst_level_strict_acc"]]
        assert verdict["loose"] == [bool(v) for v in sample["inst_level_loose_acc"]]
        assert all(verdict["strict"]) == bool(sample["prompt_level_strict_acc"])
