"""How far training moved a model: the saved checkpoint compared with its input, tensor by tensor.

A run that trains but saves (nearly) its input back is a silent failure: e.g. a bfloat16 save
rounds away updates smaller than half its spacing (~4e-5 at a weight of 0.01). These figures go
into the stage's metrics, and a warning into the log and the report.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MIN_CHANGED_SHARE = 0.01  # below this share of changed weights the save is "nearly identical"
MIN_KEPT = 0.5  # below this share of the in-memory update surviving the save, warn


def checkpoint_tensors(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for a single-file or sharded checkpoint."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: model_dir / file for name, file in weight_map.items()}
    from safetensors import safe_open

    out = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            out.update({name: file for name in f.keys()})  # noqa: SIM118 (no __iter__)
    return out


def _read(files: dict[str, Path], name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(files[name]), framework="pt") as f:
        return f.get_tensor(name)


def checkpoint_update(input_dir: str | Path, saved_dir: str | Path,
                      trained: dict[str, torch.Tensor] | None = None) -> dict:
    """Share of weights changed, RMS and relative size of the update, as saved on disk.

    `trained` (the in-memory float32 weights, optional) adds what the save kept of the update:
    `update_kept` = projection of the saved update on the in-memory one (1.0 = all of it).
    `changed_share_bf16` is what an engine running in bfloat16 sees change.
    """
    before, after = checkpoint_tensors(input_dir), checkpoint_tensors(saved_dir)
    total = changed = changed_bf16 = changed_mem = 0
    sq = sq_input = sq_mem = dot = 0.0
    max_abs = 0.0
    missing = []
    for name in after:
        if name not in before:
            missing.append(name)
            continue
        old = _read(before, name).double()
        new = _read(after, name).double()
        delta = new - old
        total += old.numel()
        changed += int((delta != 0).sum())
        changed_bf16 += int((old.bfloat16() != new.bfloat16()).sum())
        sq += float((delta * delta).sum())
        sq_input += float((old * old).sum())
        max_abs = max(max_abs, float(delta.abs().max())) if delta.numel() else max_abs
        if trained is not None and name in trained:
            mem = trained[name].detach().to("cpu", torch.float64) - old
            changed_mem += int((mem != 0).sum())
            sq_mem += float((mem * mem).sum())
            dot += float((mem * delta).sum())
    if missing:
        log.warning("%d saved tensors have no counterpart in %s (e.g. %s)", len(missing),
                    input_dir, missing[0])
    out = {"params_compared": total,
           "changed_share": round(changed / total, 6) if total else None,
           "changed_share_bf16": round(changed_bf16 / total, 6) if total else None,
           "update_rms": float(f"{math.sqrt(sq / total):.6g}") if total else None,
           "update_max_abs": float(f"{max_abs:.6g}"),
           "relative_update": float(f"{math.sqrt(sq / sq_input):.6g}") if sq_input else None}
    if trained is not None and total:
        out["changed_share_in_memory"] = round(changed_mem / total, 6)
        out["update_rms_in_memory"] = float(f"{math.sqrt(sq_mem / total):.6g}")
        out["update_kept"] = round(dot / sq_mem, 6) if sq_mem else None
    out["warning"] = update_warning(out)
    return out


def update_warning(update: dict) -> str | None:
    """A sentence when the saved checkpoint is (nearly) its input, else None."""
    share, kept = update.get("changed_share"), update.get("update_kept")
    if share is None:
        return None
    if share == 0:
        return "the saved checkpoint is identical to its input: training changed nothing"
    if share < MIN_CHANGED_SHARE:
        return (f"the saved checkpoint is nearly identical to its input: only {100 * share:.2f} %"
                " of the weights changed")
    if kept is not None and kept < MIN_KEPT:
        return (f"the save kept only {100 * kept:.1f} % of the trained update (checkpoint dtype "
                "too coarse for the step size: save float32)")
    return None
