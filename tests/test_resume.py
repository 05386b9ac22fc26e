"""Resumable sharded generation: shard bookkeeping in-process, then SIGKILL + rerun of the real
`selfreward responses` / `selfreward judge` commands, compared byte for byte with a clean run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fakes import ScriptedEngine
from procs import kill_when, run_json

from selfreward.config.params import EngineParams, JudgeParams, Params, PromptsParams
from selfreward.core.shards import (
    ShardStore,
    code_fingerprint,
    fingerprint,
    finished_shards,
    run_sharded,
    shard_dir,
    shard_key,
)
from selfreward.generation.engines.base import EngineStats

# -- run_sharded in-process ------------------------------------------------------------------


def _items(n: int) -> list[dict]:
    return [{"id": f"p{i}", "x": i} for i in range(n)]


def _work(calls: list[int], fail_at: int | None = None):
    def work(chunk: list[dict], k: int) -> list[dict]:
        if k == fail_at:
            raise KeyboardInterrupt("simulated crash")
        calls.append(k)
        return [{"id": it["id"], "y": it["x"] * 10 + k} for it in chunk]

    return work


def test_finished_shards_are_skipped_after_a_crash(tmp_path):
    out, items = tmp_path / "out.jsonl", _items(7)
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        run_sharded(items, out, "k", 2, _work(calls, fail_at=2), desc="t")
    assert calls == [0, 1]
    calls.clear()
    rows, stats = run_sharded(items, out, "k", 2, _work(calls), desc="t")
    assert calls == [2, 3]
    assert stats == {"shards": 4, "shards_resumed": 2, "shards_discarded": 0}
    clean, _ = run_sharded(items, tmp_path / "clean.jsonl", "k", 2, _work([]), desc="t")
    assert rows == clean


def test_partial_last_line_is_discarded_and_redone(tmp_path):
    out, items = tmp_path / "out.jsonl", _items(6)
    run_sharded(items, out, "k", 2, _work([]), desc="t")
    shard = Path(str(out) + ".shards") / "00001.jsonl"
    good = shard.read_text()
    shard.write_text(good[:-7])  # cut inside the last row
    calls: list[int] = []
    rows, stats = run_sharded(items, out, "k", 2, _work(calls), desc="t")
    assert calls == [1] and stats["shards_discarded"] == 1 and stats["shards_resumed"] == 2
    assert shard.read_text() == good
    assert [r["id"] for r in rows] == [it["id"] for it in items]


@pytest.mark.parametrize("damage", ["drop_row", "wrong_id", "not_json", "not_object"])
def test_other_corrupt_shards_are_redone(tmp_path, damage):
    out, items = tmp_path / "out.jsonl", _items(4)
    run_sharded(items, out, "k", 2, _work([]), desc="t")
    shard = Path(str(out) + ".shards") / "00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    broken = {"drop_row": lines[:1],
              "wrong_id": [lines[0].replace('"p0"', '"p9"'), lines[1]],
              "not_json": ["{oops\n", lines[1]],
              "not_object": ["[1, 2]\n", lines[1]]}[damage]
    shard.write_text("".join(broken))
    calls: list[int] = []
    rows, stats = run_sharded(items, out, "k", 2, _work(calls), desc="t")
    assert calls == [0] and stats["shards_discarded"] == 1
    assert rows[0] == {"id": "p0", "y": 0}


def test_other_key_or_layout_discards_all_shards(tmp_path):
    out, items = tmp_path / "out.jsonl", _items(6)
    run_sharded(items, out, "k", 2, _work([]), desc="t")
    for key, size in [("other", 2), ("other", 3)]:
        calls: list[int] = []
        _, stats = run_sharded(items, out, key, size, _work(calls), desc="t")
        assert stats["shards_resumed"] == 0 and len(calls) == stats["shards"]


def test_work_must_return_one_row_per_item(tmp_path):
    with pytest.raises(RuntimeError, match="shard 0"):
        run_sharded(_items(2), tmp_path / "o.jsonl", "k", 2, lambda chunk, k: chunk[:1], "t")
    # Nothing was saved for the bad shard.
    assert not (tmp_path / "o.jsonl.shards" / "00000.jsonl").exists()


def test_meta_without_key_resets_the_store(tmp_path):
    out = tmp_path / "o.jsonl"
    store = ShardStore(out, "k")
    store.save(0, [{"id": "a"}])
    (store.dir / "meta.json").write_text("{broken")
    assert ShardStore(out, "k").load(0) is None


def test_progress_bar_shows_items_and_tokens_per_second(tmp_path, capsys):
    stats = EngineStats()

    def work(chunk: list[dict], k: int) -> list[dict]:
        time.sleep(0.05)
        stats.generated_tokens += 100
        return [{"id": it["id"]} for it in chunk]

    run_sharded(_items(4), tmp_path / "o.jsonl", "k", 1, work, desc="gen", stats=stats)
    err = capsys.readouterr().err
    assert "item/s" in err and "tok_s=" in err


# -- resume keys: what made a shard ----------------------------------------------------------


class Crash(Exception):
    pass


def _crashing_engine(calls: list, crash_at: int | None, **kw) -> ScriptedEngine:
    """A scripted engine that raises on its `crash_at`-th call (0-based)."""
    engine = ScriptedEngine(lambda text, k, seed: f"Score: {(len(text) + k) % 6}", **kw)
    generate = engine.generate

    def counting(chats, sampling):
        calls.append(len(chats))
        if len(calls) - 1 == crash_at:
            raise Crash("simulated failure")
        return generate(chats, sampling)

    engine.generate = counting
    return engine


def _run_judge(tmp_path, monkeypatch, params: JudgeParams, crash_at: int | None):
    from selfreward.stages.judge import run_judge

    calls: list = []
    engine = _crashing_engine(calls, crash_at)
    monkeypatch.setattr("selfreward.generation.engines.make_engine", lambda *a, **k: engine)
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Q{i}?",
                                             "responses": ["a", "b"]}) + "\n"
                                 for i in range(3)))
    out = tmp_path / "judgments.jsonl"
    try:
        run_judge(params=Params(judge=params, engine=EngineParams(shard_size=1)),
                  model_dir="no-model", responses_path=str(responses), out_path=out,
                  metrics_path=tmp_path / "judge.json")
    except Crash:
        pass
    return calls, out


def test_a_template_edit_discards_the_shards_and_says_so(tmp_path, monkeypatch, caplog):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {response} as an answer to {prompt}.")
    params = JudgeParams(mode="sample", samples=1, template=str(rubric))
    calls, out = _run_judge(tmp_path, monkeypatch, params, crash_at=2)
    assert len(finished_shards(out)) == 2
    rubric.write_text("Rate {response} as an answer to {prompt}, strictly.")
    from selfreward.templates import user_template

    user_template.cache_clear()  # a new process would read the edited file
    calls, out = _run_judge(tmp_path, monkeypatch, params, crash_at=None)
    assert calls == [2, 2, 2]  # every shard judged again
    assert "discarding 2 shard(s)" in caplog.text and "template text" in caplog.text
    assert out.exists() and not shard_dir(out).exists()


def test_other_params_or_code_discard_the_shards(tmp_path, caplog):
    key = shard_key(params=JudgeParams(), inputs=[1, 2])
    for changed, words in ((shard_key(params=JudgeParams(samples=5), inputs=[1, 2]), "params"),
                           ({**key, "code": "0" * 16}, "code")):
        store = ShardStore(tmp_path / "o.jsonl", key)
        store.save(0, [{"id": "a"}])
        caplog.clear()
        assert ShardStore(tmp_path / "o.jsonl", changed).load(0) is None
        assert f"made with other {words}" in caplog.text


def _run_stage(tmp_path, monkeypatch, stage: str, *, model: str, engine: EngineParams,
               inputs: list[dict], crash_at: int | None) -> tuple[list, Path]:
    """Run the real `responses` or `judge` stage over a scripted engine (one item per shard)."""
    from selfreward.stages.judge import run_judge
    from selfreward.stages.responses import run_responses

    calls: list = []
    scripted = _crashing_engine(calls, crash_at)
    monkeypatch.setattr("selfreward.generation.engines.make_engine", lambda *a, **k: scripted)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in inputs))
    out, metrics = tmp_path / "out.jsonl", tmp_path / "m.json"
    try:
        if stage == "judge":
            run_judge(params=Params(judge=JudgeParams(mode="sample", samples=1), engine=engine),
                      model_dir=model, responses_path=str(source), out_path=out,
                      metrics_path=metrics)
        else:
            run_responses(params=Params(engine=engine), model_dir=model,
                          prompts_path=str(source), out_path=out, metrics_path=metrics)
    except Crash:
        pass
    return calls, out


@pytest.mark.parametrize("stage", ["responses", "judge"])
@pytest.mark.parametrize("part, words", [("model", "model"), ("engine", "engine settings"),
                                         ("inputs", "inputs")])
def test_another_model_engine_or_input_discards_the_stage_shards(tmp_path, monkeypatch, caplog,
                                                                 stage, part, words):
    """Each part of a stage's shard key counts: shards made from another checkpoint, engine
    setting or input file (same ids, other text) are redone, and the log says which part."""
    models = []
    for name, size in (("m1", 1), ("m2", 2)):  # two checkpoints: other files, other fingerprint
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"w" * size)
        models.append(str(tmp_path / name))
    rows = [{"id": f"p{i}", "prompt": f"Q{i}?", "responses": ["a", "b"]} for i in range(3)]
    first = {"model": models[0], "engine": EngineParams(shard_size=1), "inputs": rows}
    second = {**first, part: {"model": models[1],
                              "engine": EngineParams(shard_size=1, max_model_len=1024),
                              "inputs": [{**rows[0], "prompt": "Q0, reworded?"}, *rows[1:]]}[part]}
    calls, out = _run_stage(tmp_path, monkeypatch, stage, **first, crash_at=2)
    assert len(finished_shards(out)) == 2
    caplog.clear()
    calls, out = _run_stage(tmp_path, monkeypatch, stage, **second, crash_at=None)
    assert len(calls) == 3  # every shard made again, none merged
    assert "discarding 2 shard(s)" in caplog.text and f"made with other {words}" in caplog.text
    assert json.loads((tmp_path / "m.json").read_text())["shards_resumed"] == 0
    # and the control: the same model, engine and input resume the finished shards
    _run_stage(tmp_path, monkeypatch, stage, **second, crash_at=1)
    caplog.clear()
    calls, _ = _run_stage(tmp_path, monkeypatch, stage, **second, crash_at=None)
    assert len(calls) == 2 and "discarding" not in caplog.text


def test_params_models_hash_by_their_content_in_any_process():
    """Shard keys hash pydantic params by their fields' values (model_dump), not their repr."""
    from selfreward.config.params import DistillParams, DpoParams

    assert fingerprint(JudgeParams()) == fingerprint(JudgeParams().model_dump())
    assert fingerprint(JudgeParams(samples=5)) != fingerprint(JudgeParams())
    nested = DpoParams(distill=DistillParams(weight=0.5))
    assert fingerprint(nested) == fingerprint(nested.model_dump())
    assert fingerprint(nested) != fingerprint(DpoParams())
    code = ("from selfreward.config.params import JudgeParams; "
            "from selfreward.core.shards import fingerprint; print(fingerprint(JudgeParams()))")
    other = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
             for seed in ("1", "2")]
    assert other == [fingerprint(JudgeParams())] * 2


def test_code_fingerprint_follows_every_source_file(tmp_path):
    import shutil

    import selfreward

    package = tmp_path / "selfreward"
    shutil.copytree(Path(selfreward.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(package)
    assert before == code_fingerprint(Path(selfreward.__file__).parent)
    with (package / "stages" / "judge.py").open("a") as fh:
        fh.write("\n# changed\n")
    assert code_fingerprint.__wrapped__(package) != before


def test_a_packaged_template_edit_discards_prompt_rounds(tmp_path, monkeypatch, caplog,
                                                          write_jsonl):
    """prompts: the generation template is part of the key (another packaged text = redo)."""
    from selfreward.stages import prompts as stage

    seed = write_jsonl("ift.jsonl", [{"prompt": f"Seed task number {i} about {w}?",
                                      "response": "ok"} for i, w in enumerate("abcdef")])
    params = PromptsParams(count=6, max_attempts=6, seed_shots=2, generated_shots=0)
    out = tmp_path / "prompts.jsonl"

    def run(crash_at):
        calls: list = []
        engine = _crashing_engine(calls, crash_at)
        engine.reply = lambda text, k, seed: f"Describe the colour number {len(text)} in detail."
        monkeypatch.setattr("selfreward.generation.engines.make_engine", lambda *a, **k: engine)
        try:
            stage.run_prompts(params=Params(prompts=params, engine=EngineParams(shard_size=2)),
                              model_dir="no-model", seed_paths=[str(seed)],
                              self_instruct_path=None, iteration="1", out_path=out,
                              metrics_path=tmp_path / "m.json")
        except Crash:
            pass
        return calls

    run(crash_at=1)
    assert len(finished_shards(out)) == 1
    original = stage.template
    monkeypatch.setattr(stage, "template", lambda name: original(name) + "\nBe brief.")
    assert run(crash_at=None)[0] == 2 and "template text" in caplog.text


def test_a_stage_failing_before_its_first_shard_leaves_no_shard_folder(tmp_path, monkeypatch):
    calls, out = _run_judge(tmp_path, monkeypatch, JudgeParams(mode="sample", samples=1),
                            crash_at=0)
    assert calls == [2] and not shard_dir(out).exists() and not out.exists()
    # a folder holding only meta.json, left by an older version, is removed on the next run
    shard_dir(out).mkdir()
    (shard_dir(out) / "meta.json").write_text('{"key": "old"}')
    ShardStore(out, "k")
    assert not shard_dir(out).exists()


# -- the real commands, killed with SIGKILL half-way ------------------------------------------

N_ITEMS = 6


def _params(tmp_path: Path) -> Path:
    params = {"engine": {"name": "hf", "batch_size": 4, "shard_size": 1, "max_model_len": 512},
              "responses": {"n": 2, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 24,
                            "seed": 3},
              "judge": {"mode": "sample", "samples": 2, "temperature": 1.0, "top_p": 0.95,
                        "max_new_tokens": 12, "seed": 5}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _command(stage: str, params: Path, model: Path, inp: Path, out: Path) -> list[str]:
    flag = {"responses": "--prompts", "judge": "--responses"}[stage]
    return [sys.executable, "-m", "selfreward.cli", stage, "--params", str(params),
            "--model", str(model), flag, str(inp), "--out", str(out),
            "--metrics", str(out.with_suffix(".metrics.json"))]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(cmd: list[str]) -> dict:
    return run_json(cmd, _env(), timeout=300)


def _kill_half_way(cmd: list[str], out: Path) -> int:
    """Start the command, SIGKILL it once half its shards are written; return how many exist."""
    kill_when(cmd, _env(), lambda: len(finished_shards(out)) >= N_ITEMS // 2, timeout=300)
    return len(finished_shards(out))


def _resume_matches_clean_run(stage: str, tmp_path: Path, model: Path, inp: Path) -> dict:
    tmp_path.mkdir()
    params = _params(tmp_path)
    clean = tmp_path / "clean" / f"{stage}.jsonl"
    clean.parent.mkdir()
    clean_metrics = _run(_command(stage, params, model, inp, clean))

    out = tmp_path / "killed" / f"{stage}.jsonl"
    out.parent.mkdir()
    cmd = _command(stage, params, model, inp, out)
    written = _kill_half_way(cmd, out)
    assert N_ITEMS // 2 <= written < N_ITEMS and not out.exists()
    # A torn write of the last finished shard: it must be redone, not merged.
    last = finished_shards(out)[-1]
    last.write_bytes(last.read_bytes()[:-5])

    metrics = _run(cmd)
    assert out.read_bytes() == clean.read_bytes()
    assert metrics["shards_resumed"] == written - 1 and metrics["shards_discarded"] == 1
    assert not Path(str(out) + ".shards").exists()
    assert clean_metrics["shards_resumed"] == 0
    return {"clean": clean_metrics, "resumed": metrics, "written": written, "out": clean}


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    topics = ["tides", "bread", "volcanoes", "chess", "rainbows", "bees"]
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Explain {t} briefly."}) + "\n"
                            for i, t in enumerate(topics[:N_ITEMS])))
    return path


def test_killed_responses_and_judge_resume_byte_identical(tmp_path, tiny_model, prompts_file):
    res = _resume_matches_clean_run("responses", tmp_path / "r", tiny_model, prompts_file)
    # Only the prompts of redone shards went through the engine again.
    redone = N_ITEMS - (res["written"] - 1)
    assert res["resumed"]["engine_prompts"] == redone
    assert res["clean"]["engine_prompts"] == N_ITEMS
    rows = [json.loads(line) for line in res["out"].read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N_ITEMS)]
    assert all(len(r["responses"]) == 2 for r in rows)

    judged = _resume_matches_clean_run("judge", tmp_path / "j", tiny_model, res["out"])
    redone = N_ITEMS - (judged["written"] - 1)
    assert judged["resumed"]["engine_prompts"] == 2 * redone  # 2 responses per item
    rows = [json.loads(line) for line in judged["out"].read_text().splitlines()]
    assert all(len(r["scores"]) == 2 and len(r["raw"]) == 2 for r in rows)
