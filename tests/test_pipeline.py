"""End-to-end: real `dvc repro` of the whole pipeline (T=2) in a temp git+DVC repo, tiny model.

Also checks DVC's incremental behaviour: a second repro runs nothing; changing judge.samples
reruns exactly judge/pairs/dpo of iteration 1 and everything downstream of M2; changing
sft.learning_rate reruns only sft (when reproducing the sft target).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "sft": {"max_steps": 2, "batch_size": 2, "max_length": 512, "learning_rate": 1e-3,
            "train_layers": 1},  # the tiny model has 2 blocks; DPO trains all (0)
    "engine": {"name": "hf", "batch_size": 8, "shard_size": 4, "max_model_len": 1024},
    "prompts": {"count": 4, "max_attempts": 12, "max_new_tokens": 24, "seed_shots": 2,
                "generated_shots": 1,
                "quality": []},  # the scripted model writes word salad, never a request
    "responses": {"n": 3, "max_new_tokens": 16},
    "judge": {"mode": "sample", "samples": 2, "max_new_tokens": 16},
    "pairs": {"min_margin": 0.1},
    "dpo": {"batch_size": 2, "max_length": 128, "learning_rate": 1e-3, "max_steps": 2,
            "train_layers": 0,
            "distill": {"weight": 0.5, "teacher": "models/m0"}},  # DPO + KL to M0
    "eval": {"max_prompts": 3, "max_new_tokens": 16},
    "ifeval": {"max_prompts": 6, "max_new_tokens": 16, "bootstrap": 50},
    "verify": {"max_prompts": 3, "max_new_tokens": 8, "bootstrap": 50},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def make_repo(tmp: Path, base_model: Path, overrides: dict) -> Path:
    """A fresh git + DVC repo holding the project's dvc.yaml, seed data and stage sources."""
    repo = tmp / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines")  # `dvc repro` reads every dvc.yaml
    shutil.copytree(ROOT / "data" / "seed", repo / "data" / "seed")
    shutil.copytree(ROOT / "src" / "selfreward", repo / "src" / "selfreward",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = _merge(params, overrides)
    params["base"]["model"] = str(base_model)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "t@example.com")
    run(repo, "git", "config", "user.name", "t")
    run(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the project's cache links
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "init")
    return repo


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["HF_HUB_OFFLINE"] = "1"
    return e


def run(repo: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def repro(repo: Path, *targets: str) -> list[str]:
    """Run `dvc repro` and return the stages that actually ran, in order."""
    out = run(repo, "dvc", "repro", *targets)
    return re.findall(r"Running stage '([^']+)'", out)


def set_param(repo: Path, section: str, key: str, value) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_full_pipeline_then_incremental_reruns(tmp_path, scripted_model):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    repo = make_repo(tmp_path, scripted_model, TINY_PARAMS)
    ran = repro(repo)
    stages = run(repo, "dvc", "stage", "list", "--name-only").split()
    assert sorted(ran) == sorted(stages)
    assert {"eval_model@m0", "evaluate@1", "evaluate@2", "report"} <= set(stages)
    assert {f"{stage}@m{k}" for stage in ("eval_model", "ifeval", "verify")
            for k in range(4)} <= set(stages)
    verify_m2 = json.loads((repo / "metrics/verify/models/m2.json").read_text())
    assert verify_m2["strict"]["prompts"] == 3 and verify_m2["strict"]["answers"] == 9
    ifeval_m3 = json.loads((repo / "metrics/ifeval/models/m3.json").read_text())
    assert ifeval_m3["prompts"] == 6 and ifeval_m3["model"] == "models/m3"
    assert (repo / "reports" / "summary.md").exists()
    # the evaluation measured movement and reward gain, with M0 as the baseline
    ev = json.loads((repo / "metrics/iter1/eval.json").read_text())
    assert ev["answers_changed"]["prompts"] == 3 and ev["reward_gain"]["n"] == 3
    assert ev["reward_gain"]["judge"] == "models/m1"
    assert ev["reward_gain"]["length_controlled"]["n"] == 3
    assert ev["ifeval_paired"]["vs_prev"]["prompts"] == 6
    assert "## Does the judge see what it rewards?" in (repo / "reports/summary.md").read_text()
    m0 = json.loads((repo / "metrics/models/m0.json").read_text())
    assert m0["relevance"]["pairs"] == 3 and m0["fixed_judge"]["model"] == "models/m1"
    dpo = json.loads((repo / "metrics/iter1/dpo.json").read_text())
    # every layer trains; rows of the (tied) embedding for tokens absent from the pairs get no
    # gradient, so well under 100 % of the weights change; float32 keeps every update
    assert dpo["update"]["changed_share"] > 0.2 and dpo["update"]["update_kept"] == 1.0
    assert dpo["update"]["warning"] is None
    sft = json.loads((repo / "metrics/sft.json").read_text())
    assert 0 < sft["update"]["changed_share"] < dpo["update"]["changed_share"]  # top block only
    summary = (repo / "reports" / "summary.md").read_text()
    assert "## Did the model move?" in summary and "M0 (`models/m0`)" in summary
    for t in ("1", "2"):
        for name in ("prompts", "responses", "judge", "pairs", "dpo"):
            assert f"{name}@{t}" in ran
    assert ran.index("dpo@1") < ran.index("prompts@2")

    # Real checkpoints: AutoModelForCausalLM opens them; SFT and DPO moved the weights.
    for m in ("m0", "m1", "m2", "m3"):
        assert AutoModelForCausalLM.from_pretrained(repo / "models" / m) is not None
    w = {m: load_file(repo / "models" / m / "model.safetensors") for m in ("m0", "m1", "m2")}
    top, bottom = "model.layers.1.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert not w["m0"][top].equal(w["m1"][top]) and w["m0"][bottom].equal(w["m1"][bottom])
    assert not w["m1"][bottom].equal(w["m2"][bottom])  # DPO: train_layers 0 = every block

    # Outputs follow the data contracts.
    j = [json.loads(x) for x in (repo / "data/iter1/judgments.jsonl").read_text().splitlines()]
    assert all(len(r["scores"]) == 3 and all(len(k) == 2 for k in r["scores"]) for r in j)
    pairs = [json.loads(x) for x in (repo / "data/iter1/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    metrics = json.loads((repo / "metrics/iter2/judge.json").read_text())
    assert metrics["parse_rate"] > 0.9 and metrics["engine"] == "hf"
    assert not list(repo.rglob("*.shards")) and not list(repo.rglob(".*.tmp"))
    # Checkpoints exist once on disk: the workspace file is a hard link to the DVC cache.
    assert (repo / "models/m2/model.safetensors").stat().st_nlink == 2
    # DPO ran with the distillation term; the teacher is a recorded dependency of dpo@t.
    dpo = json.loads((repo / "metrics/iter1/dpo.json").read_text())
    assert dpo["distill_weight"] == 0.5 and dpo["distill_kl_mean"] > 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "models/m0" in [d["path"] for d in lock["dpo@2"]["deps"]]

    # Nothing changed: nothing runs.
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "run")
    assert repro(repo) == []

    # Verifiable constraints (docs/constraints.md): rerun from prompts on, nothing before; the
    # IFEval fields reach prompts.jsonl, the verdicts judgments.jsonl, the pass rates the pairs.
    set_param(repo, "prompts", "constraints", {"count": 1, "types": [],
                                               "holdout": ["detectable_format"], "seed": 0})
    set_param(repo, "pairs", "verifiers", "bonus")
    ran = repro(repo)
    # source_answers@t reads the iteration's prompts and meta_judge@t its judgments; the IFEval
    # of every model reruns because its all/trained/held-out split reads the constraint types
    assert sorted(ran) == sorted([
        *(f"{name}@{t}" for name in ("prompts", "responses", "judge", "source_answers",
                                     "meta_judge", "pairs", "dpo")
          for t in ("1", "2")),
        "eval_model@m2", "eval_model@m3", "verify@m2", "verify@m3", "evaluate@1", "evaluate@2",
        "ifeval@m0", "ifeval@m1", "ifeval@m2", "ifeval@m3", "report"])
    prompts = [json.loads(x) for x in
               (repo / "data/iter1/prompts.jsonl").read_text().splitlines()]
    assert all(len(r["instruction_id_list"]) == 1 for r in prompts)
    assert not any(r["instruction_id_list"][0].startswith("detectable_format") for r in prompts)
    j = [json.loads(x) for x in (repo / "data/iter1/judgments.jsonl").read_text().splitlines()]
    assert all(len(r["checks"]) == 3 for r in j)
    pairs_metrics = json.loads((repo / "metrics/iter1/pairs.json").read_text())
    assert 0 <= pairs_metrics["pass_rate_answers"] <= 1 and "verifier_pairs_changed" in pairs_metrics
    assert "held_out" in json.loads((repo / "metrics/ifeval/models/m3.json").read_text())["splits"]
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "constraints")

    # judge.samples feeds judge@1 and everything that depends on its output; the evaluation
    # stages read the judge params too (judge agreement): eval_model of every model; the
    # verification gap of every model (its own judge); IFEval of the new M2 and M3 only.
    # source_answers@t reads the judge params (it judges the anchor's and the teacher's
    # answers) and meta_judge@t the judgments: both write an empty file here.
    set_param(repo, "judge", "samples", 3)
    ran = repro(repo)
    assert sorted(ran) == sorted([
        "judge@1", "source_answers@1", "meta_judge@1", "pairs@1", "dpo@1",
        "prompts@2", "responses@2", "judge@2", "source_answers@2", "meta_judge@2", "pairs@2",
        "dpo@2",
        "eval_model@m0", "eval_model@m1", "eval_model@m2", "eval_model@m3", "evaluate@1",
        "evaluate@2", "ifeval@m2", "ifeval@m3", "verify@m0", "verify@m1", "verify@m2",
        "verify@m3", "report"])

    # Only sft reads sft.learning_rate: reproducing sft reruns it alone.
    set_param(repo, "sft", "learning_rate", 2e-3)
    assert repro(repo, "sft") == ["sft"]
    status = run(repo, "dvc", "status")
    assert "prompts@1" in status  # downstream of the new M1 is now stale
