"""End to end: `dvc repro sft` in a temp git+DVC repo builds the seed data from an Open Assistant
export (the hand-written fixture plus generated two-reply trees) with a tiny model -- seed_ift,
seed_sft (the IFT-only SFT that judges), seed_judge, seed_eft -- and sft trains on the result.
Changing an oasst.eft param reruns seed_eft and sft only, never the judgment pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_pipeline import TINY_PARAMS, _merge, make_repo, repro, run

FIXTURE = Path(__file__).parent / "data" / "oasst_messages.jsonl"
OUT = "data/oasst/fix"

SEED_PARAMS = _merge(TINY_PARAMS, {
    "seed_data": {"ift": f"{OUT}/ift.jsonl", "eft_train": f"{OUT}/eft_train.jsonl",
                  "eft_eval": f"{OUT}/eft_eval.jsonl"},
    "engine": {"batch_size": 64},  # the judge pass: 2 batches instead of 10
    "oasst": {"exports": {"fix": "data/oasst/export.jsonl"},
              "ift": {"count": 6, "seed": 0},
              # the scripted tiny model writes a few words, then "Score: d" with a random digit
              "judge": {"model": "models/seed_sft_fix", "samples": 2, "max_new_tokens": 32},
              "eft": {"ties": "allow", "max_score_share": 0.5, "eval_fraction": 0.25}},
})


def _export_lines() -> str:
    """The fixture, plus 16 English trees with two ranked replies so that a random judge keeps
    enough prompt groups to split (each agrees with the human order with probability ~7/12)."""
    lines = FIXTURE.read_text()
    for i in range(16):
        root = f"t{i}"
        lines += json.dumps({"message_id": root, "text": f"Give me fact number {i} about the "
                             "ocean.", "role": "prompter", "lang": "en"}) + "\n"
        for rank, text in enumerate((f"Ocean fact {i}: it covers most of the planet.",
                                     "Water is wet.")):
            lines += json.dumps({"message_id": f"{root}r{rank}", "parent_id": root, "text": text,
                                 "role": "assistant", "lang": "en", "rank": rank}) + "\n"
    return lines


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_stages_then_sft_in_dvc_repro(tmp_path, scripted_model):
    repo = make_repo(tmp_path, scripted_model, SEED_PARAMS)
    (repo / "data" / "oasst").mkdir(parents=True)
    (repo / "data" / "oasst" / "export.jsonl").write_text(_export_lines())
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "export")

    ran = repro(repo, "sft")
    assert sorted(ran) == sorted(["base", "seed_ift@fix", "seed_sft@fix", "seed_judge@fix",
                                  "seed_eft@fix", "self_instruct", "sft"])  # self_instruct: off
    assert ran.index("seed_sft@fix") < ran.index("seed_judge@fix") < ran.index("seed_eft@fix")
    assert ran[-1] == "sft"

    metrics = {name: json.loads((repo / f"metrics/seed/fix/{name}.json").read_text())
               for name in ("ift", "judge", "eft")}
    assert metrics["ift"]["messages_read"] == 42 + 48 and metrics["ift"]["ift_examples"] == 6
    assert metrics["judge"]["groups_judged"] == metrics["judge"]["eft_candidate_groups"] > 10
    assert metrics["judge"]["parse_rate"] > 0.8 and metrics["judge"]["engine"] == "hf"
    eft = metrics["eft"]
    assert eft["groups"] == metrics["judge"]["groups_judged"]
    assert eft["groups_agreeing"] + eft["groups_disagreeing"] + eft["groups_unscored"] == \
        eft["groups"]
    assert eft["train_groups"] >= 1 and eft["eval_groups"] >= 1
    # The counts per reason are DVC metrics: `dvc metrics show` lists them.
    shown, _ = json.JSONDecoder().raw_decode(run(
        repo, "dvc", "metrics", "show", "--json", *(f"metrics/seed/fix/{n}.json" for n in
                                                    ("ift", "judge", "eft"))))
    shown = {path: m["data"] for path, m in shown[""]["data"].items()}
    assert {k: shown["metrics/seed/fix/ift.json"][k] for k in (
        "messages_read", "trees", "other_language", "deleted", "failed_review",
        "multi_turn_skipped")} == {"messages_read": 90, "trees": 27, "other_language": 4,
                                   "deleted": 2, "failed_review": 1, "multi_turn_skipped": 3}
    assert shown["metrics/seed/fix/eft.json"]["groups_disagreeing"] == eft["groups_disagreeing"]
    assert shown["metrics/seed/fix/eft.json"]["rebalanced_away"] == eft["rebalanced_away"]
    # The IFT-only SFT is a real checkpoint and trained on the built IFT only.
    seed_sft = json.loads((repo / "metrics/seed/fix/sft.json").read_text())
    assert (seed_sft["ift_examples"], seed_sft["eft_examples"]) == (6, 0)

    ift, train, held = (_rows(repo / OUT / f) for f in
                        ("ift.jsonl", "eft_train.jsonl", "eft_eval.jsonl"))
    assert len(ift) == 6 and len(train) == eft["train_examples"] and len(held) == \
        eft["eval_examples"]
    prompts = [{r["messages"][0]["content"] for r in ift}, {r["prompt"] for r in train},
               {r["prompt"] for r in held}]
    assert not prompts[0] & prompts[1] and not prompts[0] & prompts[2]
    assert not prompts[1] & prompts[2]
    assert all(set(r) >= {"prompt", "response", "justification", "score", "group", "human_rank"}
               for r in train + held)

    # sft consumed exactly these files (params seed_data -> dvc.yaml).
    sft = json.loads((repo / "metrics/sft.json").read_text())
    assert (sft["ift_examples"], sft["eft_examples"]) == (6, len(train))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {f"{OUT}/ift.jsonl", f"{OUT}/eft_train.jsonl"} <= {d["path"] for d in
                                                            lock["sft"]["deps"]}
    dry = run(repo, "dvc", "repro", "--dry", "eval_model@m1")
    assert f"--eft {OUT}/eft_eval.jsonl" in dry
    assert not list(repo.rglob("*.shards"))

    # The cheap stage reruns alone: the judgments are reused; sft reruns if EFT-train changed.
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "run")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["oasst"]["eft"]["max_score_share"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = repro(repo, "sft")
    after = json.loads((repo / "metrics/seed/fix/eft.json").read_text())
    assert ran == ["seed_eft@fix"] + (["sft"] if _rows(repo / OUT / "eft_train.jsonl") != train
                                      else [])
    top = after["rebalanced_score"]
    assert after[f"hist_train_{top}"] / after["train_examples"] <= 0.2 + 1e-9
    assert after["groups_agreeing"] == eft["groups_agreeing"]
    assert "seed_judge@fix" not in run(repo, "dvc", "status")


# -- dvc.yaml deps of the seed stages ------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
# tests/test_dvc_deps.py checks every stage's deps (these included) against the import closure of
# its command; here: the seed stages run the modules named after them.
@pytest.mark.parametrize("stage", ["seed_ift", "seed_judge", "seed_eft"])
def test_seed_stages_run_their_own_stage_module(stage):
    from test_dvc_deps import required_files, stages

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    command = stages(params)[f"dvc.yaml:{stage}"]["command"]
    assert f"src/selfreward/stages/{stage}.py" in required_files(command, params)


def stage_cmd(stage: str) -> str:
    """The command of a foreach stage in the project's dvc.yaml, as written (${...} unresolved)."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]["cmd"]


def stage_deps(stage: str) -> list[str]:
    """The deps of a foreach stage in the project's dvc.yaml, as written (${...} unresolved)."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]["deps"]
