"""The GPU profile, rehearsed on CPU: `dvc repro` of params.gpu.yaml end to end in a temp git + DVC
repo, with the size-only overrides of tests/data/gpu_rehearsal.yaml and nothing else changed --
sample-mode judge with justification-first EFT, SELF-INSTRUCT feeding the prompts, seed data from
the Open Assistant stages (the test fixture as the export), a 2-process launch with the profile's
strategy (fsdp) on CPU/gloo, the endpoint judge of the evaluation (a local server), the hf engine
(what engine `auto` picks without CUDA; vLLM where .venv-vllm exists, see below).

Then each other launch strategy that torch and accelerate run on CPU retrains one DPO stage.
`make rehearse-gpu` runs this file and writes the token counts of docs/gpu.md's cost sheet
(SELFREWARD_REHEARSAL_OUT=<dir>: the rehearsal's metrics/ and params.yaml are copied there).
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from procs import JsonHandler, local_server
from test_pipeline import ROOT, repro, run
from test_seed_pipeline import _export_lines

OVERRIDES = Path(__file__).parent / "data" / "gpu_rehearsal.yaml"
ALLOWED_KINDS = {"size", "environment"}  # anything else is a finding (see the overrides file)
KEY_ENV = "SELFREWARD_REHEARSAL_KEY"


def load_overrides() -> dict:
    return yaml.safe_load(OVERRIDES.read_text())


def get_key(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def set_key(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value


def leaves(params, prefix: str = "") -> dict:
    """{dotted key: value} of every non-mapping value."""
    if not isinstance(params, dict):
        return {prefix: params}
    out = {}
    for key, value in params.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def rehearsal_params(fill: dict) -> dict:
    """params.gpu.yaml with the overrides applied ('@name' values taken from `fill`)."""
    params = yaml.safe_load((ROOT / "params.gpu.yaml").read_text())
    for key, entry in load_overrides().items():
        value = entry["value"]
        if isinstance(value, str) and value.startswith("@"):
            value = fill[value[1:]]
        set_key(params, key, value)
    return params


def test_every_override_is_a_listed_size_or_environment_change_of_an_existing_key():
    gpu = yaml.safe_load((ROOT / "params.gpu.yaml").read_text())
    overrides = load_overrides()
    assert overrides, "no overrides listed"
    for key, entry in overrides.items():
        assert set(entry) == {"value", "kind", "reason"}, key
        assert entry["kind"] in ALLOWED_KINDS, (
            f"{key}: kind {entry['kind']!r} is a finding -- fix params.gpu.yaml or the code")
        assert len(entry["reason"].split()) >= 4, f"{key}: give the reason"
        assert not isinstance(get_key(gpu, key), dict), f"{key}: override single keys only"
        assert entry["value"] != get_key(gpu, key), f"{key}: not an override"
    fill = {"tiny_model": "/tiny", "endpoint": "http://127.0.0.1:1/v1", "port": 29999}
    changed = {k for k, v in leaves(rehearsal_params(fill)).items()
               if leaves(gpu).get(k, object()) != v}
    assert changed == set(overrides)
    # The rehearsal params validate as the project's Params.
    from selfreward.config.params import Params

    Params.model_validate(rehearsal_params(fill))


class FakeJudge(JsonHandler):
    """OpenAI-compatible chat completions: head-to-head -> 'Winner: 1', pointwise -> a score."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.requests.append({"auth": self.headers.get("Authorization"),
                                         "pairwise": "<response_1>" in text})
        content = ("Response 1 is better.\nWinner: 1" if "<response_1>" in text
                   else "It answers the question.\nScore: 4")
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 8}}
        self.send_json(200, json.dumps(reply).encode())


def make_rehearsal_repo(tmp: Path, params: dict) -> Path:
    """A fresh git + DVC repo with the project's pipeline, seed data, sources and `params`."""
    repo = tmp / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines")
    shutil.copytree(ROOT / "data" / "seed", repo / "data" / "seed")
    shutil.copytree(ROOT / "src" / "selfreward", repo / "src" / "selfreward",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The export exactly where the profile names it (oasst.exports is not overridden): the Open
    # Assistant fixture plus generated two-reply trees, gzipped as the real download is.
    export = repo / params["oasst"]["exports"]["oasst1"]
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_bytes(gzip.compress(_export_lines().encode()))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "t@example.com")
    run(repo, "git", "config", "user.name", "t")
    run(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "init")
    return repo


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, scripted_model):
    """The rehearsal's repo after a full `dvc repro`, the stages that ran, the fake endpoint."""
    os.environ[KEY_ENV] = "sk-rehearsal-not-a-secret"  # inherited by the dvc subprocess
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 ranks on 2 cores
    with local_server(FakeJudge) as srv:
        fill = {"tiny_model": str(scripted_model),
                "endpoint": f"http://127.0.0.1:{srv.server_address[1]}/v1",
                "port": 29000 + os.getpid() % 400}
        params = rehearsal_params(fill)
        params["eval"]["api_key_env"] = KEY_ENV
        params["oasst"]["judge"]["api_key_env"] = KEY_ENV
        repo = make_rehearsal_repo(tmp_path_factory.mktemp("rehearsal"), params)
        ran = repro(repo)
        out = os.environ.get("SELFREWARD_REHEARSAL_OUT")
        if out:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(repo / "metrics", Path(out) / "metrics")
            shutil.copy(repo / "params.yaml", Path(out) / "params.yaml")
        yield {"repo": repo, "ran": ran, "requests": list(srv.requests), "fill": fill}
    os.environ.pop(KEY_ENV, None)


def _metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / name).read_text())


@pytest.mark.slow  # ~10 min on 2 busy cores: 30 stages, 4 two-process launches
def test_gpu_profile_runs_end_to_end(rehearsal):
    repo, ran = rehearsal["repo"], rehearsal["ran"]
    stages = run(repo, "dvc", "stage", "list", "--name-only").split()
    assert sorted(ran) == sorted(stages)
    assert {"seed_ift@oasst1", "seed_sft@oasst1", "seed_judge@oasst1", "seed_eft@oasst1",
            "self_instruct", "sft", "dpo@2", "evaluate@2", "report"} <= set(ran)
    # Only the listed keys differ from the GPU profile (the api_key_env NAMES aside: a test
    # variable instead of OPENAI_API_KEY, so that no real key can leak into a request).
    gpu = leaves(yaml.safe_load((ROOT / "params.gpu.yaml").read_text()))
    used = leaves(yaml.safe_load((repo / "params.yaml").read_text()))
    assert {k for k in used if used[k] != gpu.get(k)} == set(load_overrides()) | {
        "eval.api_key_env", "oasst.judge.api_key_env"}

    # Seed data from Open Assistant: built, and what sft trained on.
    ift = _metrics(repo, "seed/oasst1/ift.json")
    eft = _metrics(repo, "seed/oasst1/eft.json")
    assert ift["ift_examples"] > 0 and eft["train_examples"] > 0 and eft["eval_examples"] > 0
    sft = _metrics(repo, "sft.json")
    assert (sft["ift_examples"], sft["eft_examples"]) == (ift["ift_examples"],
                                                          eft["train_examples"])
    # SELF-INSTRUCT on; prompts@t are its t-th block of tasks.
    si = _metrics(repo, "self_instruct.json")
    assert si["tasks"] >= 8 if "tasks" in si else si["instructions_kept"] >= 8
    blocks = [{json.loads(x)["id"] for x in (repo / f"data/iter{t}/prompts.jsonl").read_text()
               .splitlines()} for t in ("1", "2")]
    assert len(blocks[0]) == len(blocks[1]) == 4 and not blocks[0] & blocks[1]
    # The sample-mode judge: K=3 judgments per response, parsed.
    for t in ("1", "2"):
        judge = _metrics(repo, f"iter{t}/judge.json")
        assert judge["parse_rate"] > 0.9 and judge["engine"] == "hf"
        rows = [json.loads(x) for x in (repo / f"data/iter{t}/judgments.jsonl").read_text()
                .splitlines()]
        assert all(len(r["scores"]) == 4 and all(len(k) == 3 for k in r["scores"]) for r in rows)
        assert all(r["raw"] for r in rows)  # the justifications the judge wrote
    # Every training stage ran under a 2-process launch and kept its float32 update.
    for name in ("seed/oasst1/sft.json", "sft.json", "iter1/dpo.json", "iter2/dpo.json"):
        m = _metrics(repo, name)
        assert m["num_processes"] == 2 and m["steps"] >= 1, name
        assert m["update"]["changed_share"] > 0 and m["update"]["update_kept"] == 1.0, name
    # The evaluation judged through the (local) endpoint: pointwise and head-to-head.
    kinds = {r["pairwise"] for r in rehearsal["requests"]}
    assert kinds == {True, False}
    assert all(r["auth"] == "Bearer sk-rehearsal-not-a-secret" for r in rehearsal["requests"])
    assert (repo / "reports" / "summary.md").exists()
    assert not list(repo.rglob("*.shards")) and not list(repo.rglob(".*.tmp"))


@pytest.mark.slow
def test_cost_sheet_counts_the_rehearsal_and_scales_it_to_the_profile(rehearsal):
    """benchmarks/gpu_cost.py on the rehearsal's metrics: the calls per stage follow the
    profile's counts (prompts x N responses, K judgments each), tokens read and trained > 0."""
    spec = importlib.util.spec_from_file_location("gpu_cost", ROOT / "benchmarks/gpu_cost.py")
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    repo = rehearsal["repo"]
    gpu = yaml.safe_load((ROOT / "params.gpu.yaml").read_text())
    used = yaml.safe_load((repo / "params.yaml").read_text())
    gen = {r["stage"]: r for r in cost.generation_rows(repo, gpu, used)}
    count, n, k = gpu["prompts"]["count"], gpu["responses"]["n"], gpu["judge"]["samples"]
    for t in ("1", "2"):
        assert gen[f"prompts@{t}"]["calls"] == 0  # SELF-INSTRUCT tasks: nothing generated
        assert (gen[f"responses@{t}"]["calls"], gen[f"responses@{t}"]["samples"]) == (count, n)
        judge = gen[f"judge@{t}"]
        assert (judge["calls"], judge["samples"]) == (count * n, k)
        assert judge["read"] == pytest.approx(k * judge["read_once"], rel=1e-3)
        assert judge["generated"] == count * n * k * gpu["judge"]["max_new_tokens"]
    assert gen["self_instruct"]["calls"] > 0 and gen["seed_judge@oasst1"]["read"] > 0
    assert {f"ifeval@m{i}" for i in range(4)} <= set(gen)
    train = {r["stage"]: r for r in cost.training_rows(repo, gpu)}
    assert set(train) == {"seed_sft@oasst1", "sft", "dpo@1", "dpo@2"}
    assert all(r["tokens"] > 0 for r in train.values())
    est = cost.hours(list(gen.values()), list(train.values()))
    assert set(est) == set(cost.MODELS)
    assert all(0 < h < 1e5 for per in est.values() for h in per.values())
    assert est["70B"]["sft"] > est["7B"]["sft"] > est["1.7B"]["sft"]
    assert gen["self_instruct"]["unit"].startswith("attempts")
    assert "| **total** |" in cost.render(list(gen.values()), list(train.values()), est)


def _strategies() -> list:
    out = [pytest.param("ddp", id="ddp")]
    reason = "DeepSpeed is not installed (the gpu image lacks it too: docs/scaling.md)"
    out.append(pytest.param("zero3", id="zero3", marks=pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None, reason=reason)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", _strategies())
def test_other_strategies_retrain_dpo(rehearsal, strategy):
    """The profile's fsdp ran above; each other strategy CPU can run retrains dpo@1 alone."""
    repo = rehearsal["repo"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    before = copy.deepcopy(params)
    params["launch"]["strategy"] = strategy
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert repro(repo, "--single-item", "dpo@1") == ["dpo@1"]
        m = _metrics(repo, "iter1/dpo.json")
        assert m["num_processes"] == 2 and m["steps"] >= 1
        assert m["update"]["changed_share"] > 0 and m["update"]["update_kept"] == 1.0
    finally:
        (repo / "params.yaml").write_text(yaml.safe_dump(before, sort_keys=False))
