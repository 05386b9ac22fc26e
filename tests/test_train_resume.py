"""Training stages resume from their last checkpoint after a crash (train.save_steps > 0)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from selfreward.config.params import SftParams
from selfreward.training.common import training_workdir

ROOT = Path(__file__).resolve().parents[1]


def test_workdir_is_kept_only_for_the_same_key(tmp_path):
    p = SftParams(save_steps=1)
    out = tmp_path / "m1"
    ckpt = Path(str(out) + ".ckpt")
    gen = training_workdir(p, out, "key-a")
    work, resume = gen.__enter__()
    assert work == str(ckpt) and resume is None
    (ckpt / "checkpoint-2").mkdir()
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    # A crash: the context never exits. Same key -> resume; other key -> start over.
    with training_workdir(p, out, "key-a") as (_, resume):
        assert resume == str(ckpt / "checkpoint-2")
    assert not ckpt.exists()  # removed after a finished run
    (ckpt / "checkpoint-5").mkdir(parents=True)
    (ckpt / "key.txt").write_text("key-a")
    with training_workdir(p, out, "key-b") as (_, resume):
        assert resume is None and not (ckpt / "checkpoint-5").exists()
    with training_workdir(SftParams(save_steps=0), out, "k") as (work, resume):
        assert resume is None and not work.endswith(".ckpt")


def test_sft_killed_mid_training_resumes(tmp_path, tiny_model):
    params = {"sft": {"max_steps": 30, "batch_size": 1, "max_length": 64, "save_steps": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "selfreward.cli", "sft", "--model", str(tiny_model),
           "--ift", str(ROOT / "data/seed/ift.jsonl"), "--out", "m1", "--metrics", "m.json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "m1.ckpt"
    deadline = time.time() + 300
    while not (ckpt / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m.json").exists()

    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming training from" in done.stderr and "checkpoint-" in done.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["steps"] == 30
    assert (tmp_path / "m1" / "model.safetensors").exists() and not ckpt.exists()
