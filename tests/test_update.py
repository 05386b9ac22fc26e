"""Training keeps its update: one real SFT step at a small learning rate, saved in float32 and in
bfloat16, compared tensor by tensor with its input; the metrics say what the save kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfreward.config.params import BaseParams, JudgeDataParams, Params, SftParams
from selfreward.core.models import load_model, save_checkpoint
from selfreward.stages.sft import run_sft
from selfreward.training.common import freeze_lower_layers
from selfreward.training.update import checkpoint_update, update_warning

ROOT = Path(__file__).resolve().parents[1]


def _as_dtype(src: Path, dst: Path, dtype: str) -> Path:
    model, tok = load_model(src, "float32")
    save_checkpoint(model, tok, dst, dtype)
    return dst


def _one_step(tmp_path: Path, model_dir: Path, dtype: str, lr: float = 1e-6) -> dict:
    p = SftParams(learning_rate=lr, final_learning_rate=lr, max_steps=1, batch_size=2,
                  max_length=256, precision="fp32", judge_data=JudgeDataParams())
    out = tmp_path / f"out-{dtype}"
    return run_sft(params=Params(sft=p, base=BaseParams(dtype=dtype)), model_dir=model_dir,
                   ift_paths=[str(ROOT / "data/seed/ift.jsonl")], eft_paths=[],
                   self_instruct_path=None, out_dir=out, metrics_path=tmp_path / f"{dtype}.json")


def _changed(before: dict, after: dict) -> tuple[int, int]:
    changed = total = 0
    for name, new in after.items():
        old = before[name]
        changed += int((old.double() != new.double()).sum())
        total += old.numel()
    return changed, total


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_small_step_is_kept_by_a_float32_save_only(tmp_path, tiny_model, dtype):
    model_dir = _as_dtype(tiny_model, tmp_path / "m0", dtype)  # the pipeline saves every mN so
    metrics = _one_step(tmp_path, model_dir, dtype)
    upd = metrics["update"]
    before = load_file(model_dir / "model.safetensors")
    after = load_file(tmp_path / f"out-{dtype}" / "model.safetensors")
    changed, total = _changed(before, after)
    # the metrics agree with an independent comparison of the two files
    assert upd["params_compared"] == total
    assert upd["changed_share"] == pytest.approx(changed / total, abs=1e-6)
    # Adam's first step moves (almost) every weight by ~lr = 1e-6
    assert upd["changed_share_in_memory"] > 0.9
    if dtype == "float32":
        # the saved update is the in-memory update: every weight the step changed, changed
        assert upd["changed_share"] == upd["changed_share_in_memory"]
        assert upd["update_kept"] == pytest.approx(1.0, abs=1e-6)
        assert upd["update_rms"] == pytest.approx(upd["update_rms_in_memory"], rel=1e-6)
        assert upd["warning"] is None
    else:
        # bf16 spacing near 0.02 is ~1e-4: a 1e-6 step rounds back to the input except for
        # weights very close to 0 (measured: 1.9 % changed, 2.8 % of the update kept)
        assert upd["changed_share"] < 0.05 and upd["update_kept"] < 0.1
        assert "kept only" in upd["warning"] or "identical" in upd["warning"]
    # the checkpoint opens as a standard HF model with exactly the saved weights
    reloaded, _ = load_model(tmp_path / f"out-{dtype}", "float32")
    state = reloaded.state_dict()
    for name, tensor in after.items():
        assert torch.equal(state[name], tensor.float())


def test_checkpoint_update_projection_and_warnings(tmp_path, tiny_model):
    base = _as_dtype(tiny_model, tmp_path / "base", "float32")
    model, tok = load_model(base, "float32")
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q_proj.weight"):
                p.add_(0.01)
                trained[name] = p.detach().clone()
    save_checkpoint(model, tok, tmp_path / "moved", "float32")
    upd = checkpoint_update(base, tmp_path / "moved", trained)
    q_share = sum(p.numel() for n, p in model.named_parameters() if n.endswith("q_proj.weight"))
    total = sum(t.numel() for t in load_file(base / "model.safetensors").values())
    assert upd["changed_share"] == pytest.approx(q_share / total, abs=1e-6)
    assert upd["update_max_abs"] == pytest.approx(0.01, rel=1e-4)
    assert upd["update_kept"] == pytest.approx(1.0, abs=1e-6)
    assert update_warning({"changed_share": 0.0}).startswith("the saved checkpoint is identical")
    assert "kept only 20.0 %" in update_warning({"changed_share": 0.5, "update_kept": 0.2})
    assert update_warning({"changed_share": 0.5, "update_kept": 0.99}) is None


def test_freeze_lower_layers_trains_only_the_top(tiny_model, tmp_path):
    model, _ = load_model(tiny_model, "float32", for_training=True)
    info = freeze_lower_layers(model, 1, "sft.train_layers")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.norm.")) for n in trainable)
    assert 0 < info["trainable_share"] < 1
    with pytest.raises(Exception, match="fewer than 5"):
        freeze_lower_layers(model, 5, "sft.train_layers")
    shutil.rmtree(tmp_path, ignore_errors=True)
