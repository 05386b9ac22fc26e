"""Multi-GPU launch: the command lines built for 1 GPU, 8 GPUs and 2 nodes x 8 (checked with
accelerate's own parser and launcher setup), params validation, the CLI hook, a real 2-process CPU
SFT run through `accelerate launch`, and rebuilding a model from gathered (ZeRO-3/FSDP) weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfreward.config.errors import UserError
from selfreward.config.params import LaunchParams, load_params
from selfreward.training import launch
from selfreward.training.launch import build_launch_command, maybe_relaunch

ARGV = ["sft", "--model", "models/m0", "--out", "models/m1", "--metrics", "metrics/sft.json"]
NO_ENV: dict[str, str] = {}


def accelerate_args(cmd: list[str]):
    """Parse our command with accelerate's launcher and merge its config file, as it would."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
    return args, defaults


def torchrun_args(args, defaults):
    """What accelerate hands torchrun (nodes, ranks, rendezvous) for this launch."""
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return env


def test_one_gpu_runs_in_process(monkeypatch):
    p = LaunchParams()
    assert build_launch_command(ARGV, p, python="py", env=NO_ENV) == \
        ["py", "-m", "selfreward.cli", *ARGV]
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.setattr(os, "execvpe", lambda *a: pytest.fail(f"relaunched with {a}"))
    assert maybe_relaunch(p, argv=ARGV) is None


@pytest.mark.parametrize("strategy, flag, extra_env", [
    ("ddp", "multi_gpu", {}),
    ("zero3", "use_deepspeed", {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                                "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"}),
    ("fsdp", "use_fsdp", {"FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}),
])
def test_one_node_eight_gpus(strategy, flag, extra_env):
    p = LaunchParams(strategy=strategy, num_processes=8)
    cmd = build_launch_command(ARGV, p, python="py", env=NO_ENV)
    cfg = launch.CONFIG_DIR / f"accelerate_{strategy}.yaml"
    assert cmd == ["py", "-m", "accelerate.commands.launch", "--config_file", str(cfg),
                   "--num_processes", "8", "--num_machines", "1", "--machine_rank", "0",
                   "--main_process_port", "29500", "-m", "selfreward.cli", *ARGV]
    args, defaults = accelerate_args(cmd)
    assert getattr(args, flag) and args.module and args.training_script == "selfreward.cli"
    assert args.training_script_args == ARGV
    assert args.mixed_precision == "no"  # the Trainer owns bf16 (training/common.py)
    env = torchrun_args(args, defaults)
    assert args.nproc_per_node == "8"
    for key, value in extra_env.items():
        assert env[key] == value, key


@pytest.mark.parametrize("strategy", ["ddp", "zero3", "fsdp"])
def test_two_nodes_by_eight(strategy):
    p = LaunchParams(strategy=strategy, num_processes=16, num_machines=2,
                     main_process_ip="10.1.2.3", main_process_port=29501)
    cmd = build_launch_command(ARGV, p, python="py",
                               env={launch.MACHINE_RANK_ENV: "1"})
    assert cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.1.2.3"
    args, defaults = accelerate_args(cmd)
    torchrun_args(args, defaults)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    rendezvous = getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"
    assert rendezvous == "10.1.2.3:29501"


def test_machine_rank_env_is_checked():
    p = LaunchParams(num_processes=16, num_machines=2, main_process_ip="10.1.2.3")
    for bad in ("2", "one"):
        with pytest.raises(UserError, match="SELFREWARD_MACHINE_RANK"):
            build_launch_command(ARGV, p, env={launch.MACHINE_RANK_ENV: bad})


def test_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {"ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "fsdp": "FSDP"}
    for strategy, kind in kinds.items():
        path = launch.config_file(strategy)
        assert yaml.safe_load(path.read_text())["distributed_type"] == kind
        assert load_config_from_file(str(path)).distributed_type == kind
    assert sorted(p.name for p in launch.CONFIG_DIR.glob("accelerate_*.yaml")) == \
        sorted(f"accelerate_{s}.yaml" for s in kinds)


@pytest.mark.parametrize("section, field, message", [
    ("{num_processes: 12, num_machines: 8}", "launch.num_processes", "split evenly"),
    ("{num_processes: 16, num_machines: 2}", "launch.main_process_ip", "num_machines > 1"),
    ("{num_processes: 0}", "launch.num_processes", ">= 1"),
    ("{machine_rank: 1}", "launch.machine_rank", "[0, 0]"),
    ("{strategy: zero2}", "launch.strategy", "one of"),
])
def test_bad_launch_params_name_the_key(tmp_path, section, field, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"sft: {{max_steps: 1}}\nlaunch: {section}\n")
    with pytest.raises(UserError) as err:
        load_params(path)
    assert err.value.field == field and err.value.line == 2 and message in str(err.value)


def test_cli_relaunches_dpo_once(tmp_path, monkeypatch):
    """`selfreward dpo` with 8 processes re-executes itself under accelerate, stale outputs gone."""
    from click.testing import CliRunner

    from selfreward.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("launch: {num_processes: 8, strategy: zero3}\n")
    stale = tmp_path / "m2"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    args = ["dpo", "--params", str(params), "--model", "m1", "--pairs", "pairs.jsonl",
            "--out", str(stale), "--metrics", str(tmp_path / "dpo.json")]
    calls = []

    def fake_exec(file, cmd, env):
        calls.append((file, cmd, env))
        raise SystemExit(0)  # exec never returns

    monkeypatch.setattr(sys, "argv", ["selfreward", *args])
    monkeypatch.setattr(os, "execvpe", fake_exec)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (file, cmd, env), = calls
    assert file == sys.executable and cmd[-len(args):] == args
    assert "accelerate_zero3.yaml" in cmd[cmd.index("--config_file") + 1]
    assert env[launch.LAUNCHED_ENV] == "1"
    assert not stale.exists()
    # Another node of a multi-node run leaves (possibly shared) outputs to the rank-0 node.
    calls.clear()
    stale.mkdir()
    params.write_text("launch: {num_processes: 16, num_machines: 2, main_process_ip: 10.0.0.1}\n")
    monkeypatch.setenv(launch.MACHINE_RANK_ENV, "1")
    assert CliRunner().invoke(main, args).exit_code == 0
    (_, cmd, _), = calls
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and stale.exists()
    # Inside the launched process the same command trains instead of launching again.
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert maybe_relaunch(LaunchParams(num_processes=8), argv=args) is None


def test_two_process_sft_on_cpu(tiny_model, tmp_path):
    """A real `accelerate launch` of 2 CPU processes (gloo): one checkpoint, metrics once."""
    seed = Path(__file__).resolve().parents[1] / "data" / "seed" / "ift.jsonl"
    ift = tmp_path / "ift.jsonl"
    ift.write_text("".join(seed.read_text().splitlines(keepends=True)[:8]))
    params = tmp_path / "params.yaml"
    port = 29400 + os.getpid() % 500  # parallel test runs must not share a rendezvous port
    params.write_text("sft: {max_steps: 2, batch_size: 2, max_length: 96, learning_rate: 1.0e-3,"
                      " final_learning_rate: 1.0e-4}\n"
                      "base: {dtype: float32}\n"
                      f"launch: {{num_processes: 2, main_process_port: {port}}}\n")
    out, metrics = tmp_path / "m1", tmp_path / "sft.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    env.pop(launch.LAUNCHED_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "selfreward.cli", "sft", "--params", str(params), "--model",
         str(tiny_model), "--ift", str(ift), "--out", str(out), "--metrics", str(metrics),
         "--plot", str(tmp_path / "loss.csv")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "accelerate.commands.launch" in log and "--num_processes 2" in log
    assert log.count("training metrics:") == 1  # only the main process writes
    m = json.loads(metrics.read_text())
    assert m["num_processes"] == 2 and m["steps"] == 2
    # 2 steps x batch 2 x 2 ranks = the 8 examples once: the ranks trained on different shards.
    assert "'epoch': '1'" in log or "'epoch': 1.0" in log
    assert sorted(p.name for p in tmp_path.glob(".m1.*")) == []  # no leftover temp dirs

    from safetensors.torch import load_file

    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed, "training did not move any weight"


@pytest.mark.parametrize("lora", [False, True])
def test_rebuild_from_gathered_state(tiny_model, lora):
    """What ZeRO-3/FSDP hand the main process (a full state dict) becomes a plain model."""
    import torch
    from transformers import AutoModelForCausalLM

    from selfreward.training.common import _rebuild

    trained = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        trained = get_peft_model(trained, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     task_type="CAUSAL_LM"))
        for name, param in trained.named_parameters():  # a trained (non-zero) adapter
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    rebuilt = _rebuild(trained, state)
    expected = trained.merge_and_unload() if lora else trained
    if lora:
        rebuilt = rebuilt.merge_and_unload()
    for (name, a), (_, b) in zip(expected.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(RuntimeError, match="does not fit"):
        _rebuild(trained, {k: v for k, v in state.items() if "layers.1." not in k})
