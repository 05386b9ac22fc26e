"""Stage source_answers (pair sources spin, anchored, teacher): which model writes, who judges,
the empty output of self_judged, resuming after a crash; then pairs from its output."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fakes import ScriptedEngine
from test_dvc_deps import locked_repo  # noqa: F401  (fixture: a DVC repo with a lock)

from selfreward.config.params import EngineParams, JudgeParams, PairsParams, Params
from selfreward.core.shards import finished_shards
from selfreward.stages.pairs import run_pairs
from selfreward.stages.source_answers import run_source_answers

SEED = [{"messages": [{"role": "user", "content": f"Seed question {i}?"},
                      {"role": "assistant", "content": f"Seed answer {i}."}]} for i in range(3)]
MULTI = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                      {"role": "user", "content": "And?"}, {"role": "assistant", "content": "So"}]}


def _inputs(tmp_path):
    seed = tmp_path / "ift.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in [*SEED, MULTI]))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"New prompt {i}?"}) + "\n"
                               for i in range(3)))
    return str(seed), str(prompts)


def _run(tmp_path, params, model="m_t", anchor="m1", teacher="teacher"):
    seed, prompts = _inputs(tmp_path)
    out = tmp_path / "source_answers.jsonl"
    metrics = run_source_answers(params=params, model_dir=str(model), anchor_dir=str(anchor),
                                 teacher_dir=str(teacher), seed_path=seed, prompts_path=prompts,
                                 out_path=out, metrics_path=tmp_path / "m.json")
    return [json.loads(line) for line in out.read_text().splitlines()], metrics


@pytest.fixture
def scripted(monkeypatch):
    """Each model dir gets an engine whose answers and judge scores name it."""
    opened = []

    def make(model_dir, params, seed=0):
        opened.append(model_dir)
        return ScriptedEngine(lambda text, k, s: f"{model_dir} says {k}: {text[:12]}",
                              probs=lambda text: [0, 0, 0, 0, 0, 1] if "teacher says" in text
                              else [0, 1, 0, 0, 0, 0])

    monkeypatch.setattr("selfreward.generation.engines.make_engine", make)
    return opened


def test_self_judged_writes_an_empty_file_and_loads_no_model(tmp_path, scripted):
    rows, metrics = _run(tmp_path, Params())
    assert rows == [] and scripted == [] and metrics == {"source": "self_judged"}


def test_spin_answers_the_seed_prompts_with_the_current_model(tmp_path, scripted):
    rows, metrics = _run(tmp_path, Params(pairs=PairsParams(source="spin", source_samples=2)))
    assert scripted == ["m_t"]  # no judge
    assert [r["reference"] for r in rows] == [f"Seed answer {i}." for i in range(3)]
    assert rows[0]["responses"] == ["m_t says 0: Seed questio", "m_t says 1: Seed questio"]
    assert all(r["mean"] == [None, None] and r["source"] == "spin" for r in rows)
    assert metrics["multi_turn_skipped"] == 1 and metrics["answers"] == 6
    rows, _ = _run(tmp_path, Params(pairs=PairsParams(source="spin", spin_prompts=2)))
    assert len(rows) == 2


@pytest.mark.parametrize("source, writer, score", [("anchored", "m1", 1.0),
                                                   ("teacher", "teacher", 5.0)])
def test_anchor_and_teacher_answers_are_judged_by_the_current_model(tmp_path, scripted, source,
                                                                    writer, score):
    rows, metrics = _run(tmp_path, Params(pairs=PairsParams(source=source)))
    assert scripted == [writer, "m_t"]  # the source writes, M_t judges
    assert [r["id"] for r in rows] == ["p0", "p1", "p2"]
    assert all(r["responses"][0].startswith(f"{writer} says 0") for r in rows)
    assert all(r["mean"] == [score] and r["source"] == source for r in rows)
    assert metrics["judge_parse_rate"] == 1.0


def test_a_crash_resumes_from_the_finished_shards(tmp_path, monkeypatch):
    calls = []

    def make(model_dir, params, seed=0):
        engine = ScriptedEngine(lambda text, k, s: f"{model_dir}: {text}",
                                probs=lambda text: [0, 0, 1, 0, 0, 0])
        generate = engine.generate

        def counting(chats, sampling):
            calls.append(model_dir)
            if len(calls) == 3:
                raise RuntimeError("killed")
            return generate(chats, sampling)

        engine.generate = counting
        return engine

    monkeypatch.setattr("selfreward.generation.engines.make_engine", make)
    params = Params(pairs=PairsParams(source="anchored"), engine=EngineParams(shard_size=1))
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, params)
    out = tmp_path / "source_answers.jsonl"
    assert len(finished_shards(out)) == 2 and not out.exists()
    calls.clear()
    rows, metrics = _run(tmp_path, params)
    assert calls == ["m1"] and metrics["shards_resumed"] == 2 and len(rows) == 3


def test_tiny_models_end_to_end_teacher_pairs(tmp_path, tiny_model):
    """Real HF engines on tiny random checkpoints: the teacher answers, M_t judges (logprob),
    then the pairs stage joins them with M_t's own judged answers."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    params = Params(pairs=PairsParams(source="teacher", source_samples=2, min_margin=1e-6),
                    engine=EngineParams(name="hf", dtype="float32"),
                    judge=JudgeParams(mode="logprob"))
    params.responses.max_new_tokens = 6
    rows, _ = _run(tmp_path, params, model=tiny_model, teacher=teacher)
    assert len(rows) == 3 and all(len(r["responses"]) == 2 for r in rows)
    assert all(0 <= m <= 5 for r in rows for m in r["mean"])
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"],
                                             "responses": ["x", "y"], "mean": [0.0, 0.0]})
                                 + "\n" for r in rows))
    stats = run_pairs(params=params, judgments_path=str(judgments),
                      source_answers_path=str(tmp_path / "source_answers.jsonl"),
                      out_path=tmp_path / "pairs.jsonl", metrics_path=tmp_path / "p.json")
    assert stats["source"] == "teacher" and stats["pairs"] >= 1
    pair = json.loads((tmp_path / "pairs.jsonl").read_text().splitlines()[0])
    assert pair["chosen"][0]["content"] in rows[0]["responses"] + rows[1]["responses"] + \
        rows[2]["responses"]
    assert pair["rejected"][0]["content"] in ("x", "y")


@pytest.mark.parametrize("key, value, marked", [
    ("length_rho", "0.1", {"pairs"}),
    ("source", "spin", {"source_answers", "pairs"}),
    ("teacher", "models/m1", {"source_answers", "pairs"}),
    ("judge_share", "0.1", {"pairs"}),
])
def test_dvc_status_after_a_pairs_override(locked_repo, key, value, marked):  # noqa: F811
    """A real `dvc status` after `-S pairs.<key>=<value>` (params.yaml edited as `dvc exp run -S`
    does): exactly these stages see changed params, at every iteration (later stages rerun
    through their changed inputs)."""
    from dvc.repo import Repo

    params_file = locked_repo / "params.yaml"
    original = params_file.read_text()
    start = original.index("\npairs:")  # the key within the pairs section
    edited = original[:start] + re.sub(rf"^(  {key}: )\S+", rf"\g<1>{value}", original[start:],
                                       count=1, flags=re.MULTILINE)
    assert edited != original
    params_file.write_text(edited)
    try:
        with Repo(str(locked_repo)) as repo:
            status = repo.status()
    finally:
        params_file.write_text(original)
    changed = {name.rpartition("dvc.yaml:")[2] for name, changes in status.items()
               if any("params.yaml" in c.get("changed deps", {}) for c in changes
                      if isinstance(c, dict))}
    assert changed == {f"{stage}@{t}" for stage in marked for t in ("1", "2")}
