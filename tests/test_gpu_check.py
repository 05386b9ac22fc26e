"""`make gpu-check` where no GPU is: its no-CUDA message and exit code (nothing written), and the
JSON it writes, checked against its schema on faked results."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _module()


def test_without_cuda_it_exits_at_once_with_its_message_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU from torch
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == gpu_check.NO_CUDA_EXIT == 3, proc.stderr[-2000:]
    assert "no CUDA device here" in proc.stderr and "nothing was checked" in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    assert time.monotonic() - t0 < 120  # torch's import only: no model is built


def _faked(statuses: dict[str, str]) -> dict:
    checks = [gpu_check.check(name, status, 12.3,
                              None if status == "passed" else f"{name} {status}: because",
                              score_diff_max=0.01)
              for name, status in statuses.items()]
    machine = {"gpus": ["NVIDIA H100 80GB HBM3"], "torch": "2.13.0", "cuda": "13.0",
               "vllm": "0.32.0"}
    return gpu_check.build_report(checks, machine, "embedded SmolLM2-135M-Instruct",
                                  time.time() - 5)


def test_report_matches_its_schema_and_says_what_it_skipped():
    import jsonschema

    report = _faked({"vllm_vs_hf": "skipped", "sft_dpo_bf16": "passed", "launch": "passed"})
    jsonschema.validate(report, gpu_check.SCHEMA)
    assert report["ok"] is True
    assert report["skipped"] == ["vllm_vs_hf: vllm_vs_hf skipped: because"]
    failed = _faked({"vllm_vs_hf": "passed", "sft_dpo_bf16": "failed", "launch": "skipped"})
    jsonschema.validate(failed, gpu_check.SCHEMA)
    assert failed["ok"] is False and len(failed["skipped"]) == 1
    # The schema rejects what the script must never write.
    for bad in ({**report, "checks": [{**report["checks"][0], "status": "maybe"}]},
                {**report, "checks": [{**report["checks"][0], "name": "other"}]},
                {k: v for k, v in report.items() if k != "skipped"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, gpu_check.SCHEMA)


def test_a_check_that_did_not_pass_must_say_why():
    with pytest.raises(ValueError, match="needs its reason"):
        gpu_check.check("launch", "skipped", 0)
    with pytest.raises(ValueError, match="needs its reason"):
        gpu_check.check("launch", "failed", 1.0, "")


def test_dpo_pairs_it_trains_on_load_as_the_dpo_stage_reads_them(tmp_path):
    from selfreward.stages.dpo import load_pairs

    rows = load_pairs(str(gpu_check.write_pairs(tmp_path / "pairs.jsonl", 16)))
    assert len(rows) == 16
    assert all(r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in rows)


@pytest.mark.parametrize("params", [gpu_check.sft_dpo_params(),
                                    gpu_check.launch_params("fsdp", 8),
                                    gpu_check.launch_params("fsdp", 1)])
def test_the_params_it_trains_with_are_valid(params):
    from selfreward.config.params import Params

    p = Params.model_validate(params)
    assert p.base.dtype == "float32" and p.sft.precision == "auto"  # bf16 autocast on a GPU


@pytest.mark.slow  # 3 training runs: 6 min on 2 busy cores
def test_training_checks_run_their_commands_and_report_what_cpu_lacks(tiny_model, tmp_path):
    """The training checks' own code path on CPU: the stages run and their metrics are read; on
    CPU there is no bf16 autocast, so sft_dpo_bf16 fails and says so, with update_kept 1.0; the
    launch check with one process trains through the profile's strategy (fsdp)."""
    clock = gpu_check.Clock(600)
    result = gpu_check.check_sft_dpo(tiny_model, tmp_path, clock)
    assert result["status"] == "failed", result
    assert "trained in fp32, not bf16 autocast" in result["reason"]
    assert "kept" not in result["reason"]  # the float32 save kept the update
    assert result["figures"]["dpo"]["update_kept"] == 1.0
    assert result["figures"]["sft"]["steps"] == 4
    launched = gpu_check.check_launch(tiny_model, tmp_path, clock, 1)
    assert launched["status"] == "passed", launched
    assert launched["figures"]["strategy"] == "fsdp" and launched["figures"]["num_processes"] == 1
    assert gpu_check.check_launch(tiny_model, tmp_path, gpu_check.Clock(10), 1)["reason"] == \
        "out of time"
