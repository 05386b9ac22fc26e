"""End to end: each successor loss is one `dvc exp run -S …` away (docs/losses.md) and reruns
only the stages it touches: dpo@1 and what reads M2, never prompts, responses, judge or pairs."""

from __future__ import annotations

import json
import re

import yaml
from test_pipeline import TINY_PARAMS, _merge, make_repo, repro, run

# One iteration: M1 -> M2.
ONE_ITERATION = _merge(TINY_PARAMS, {"dpo": {"distill": {"weight": 0.0}}})
ONE_ITERATION["iterations"] = {"1": {"model": "models/m1", "next": "models/m2"}}
ONE_ITERATION["models"] = {"m0": "models/m0", "m1": "models/m1", "m2": "models/m2"}

VARIANTS = {
    "irpo": ["dpo.loss_type=[sigmoid,sft]", "dpo.loss_weights=[1.0,1.0]"],
    "ld_dpo": ["dpo.ld_alpha=0.0"],
    "cream": ["dpo.cream.enabled=true"],
    "dual_distill": ["dpo.distill.chosen_weight=0.5", "dpo.distill.rejected_weight=0.1"],
}
TOUCHED = {"dpo@1", "eval_model@m2", "ifeval@m2", "verify@m2", "evaluate@1", "report"}


def test_each_variant_is_one_exp_run_and_reruns_only_dpo_and_what_reads_m2(tmp_path,
                                                                           scripted_model):
    repo = make_repo(tmp_path, scripted_model, ONE_ITERATION)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # make_repo merges mappings key by key: drop params.yaml's second iteration and M3
    params["iterations"], params["models"] = ONE_ITERATION["iterations"], ONE_ITERATION["models"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro(repo)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    base = json.loads((repo / "metrics/iter1/dpo.json").read_text())
    for name, overrides in VARIANTS.items():
        out = run(repo, "dvc", "exp", "run", "-n", name,
                  *[arg for o in overrides for arg in ("-S", o)])
        ran = set(re.findall(r"Running stage '([^']+)'", out))
        assert ran == TOUCHED, (name, sorted(ran))
        dpo = json.loads((repo / "metrics/iter1/dpo.json").read_text())
        assert dpo["steps"] == base["steps"] == 2
        if name == "irpo":
            assert dpo["loss_type"] == ["sigmoid", "sft"] and dpo["loss_weights"] == [1.0, 1.0]
        elif name == "ld_dpo":
            assert dpo["ld_alpha"] == 0.0
        elif name == "cream":
            assert dpo["cream_previous"] == "models/m0" and 0 <= dpo["cream_c_mean"] <= 1
        else:
            assert dpo["distill_chosen_weight"] == 0.5 and dpo["distill_kl_chosen_mean"] > 0
        # back to the baseline for the next variant
        run(repo, "git", "checkout", "--", ".")
        run(repo, "dvc", "checkout", "--force")
    assert repro(repo) == []  # the baseline is intact
