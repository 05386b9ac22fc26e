"""core.outputs.stage_outputs, the output contract of every stage: stale outputs go first, a
failure leaves none of them (but keeps the resumable shards), success writes the metrics and
removes the shards."""

from __future__ import annotations

import json

import pytest

from selfreward.core.io import write_jsonl
from selfreward.core.outputs import stage_outputs
from selfreward.core.shards import shard_dir
from selfreward.generation.engines.base import EngineStats


class Boom(Exception):
    pass


def _stale(tmp_path):
    out, hist, metrics = tmp_path / "out.jsonl", tmp_path / "hist.csv", tmp_path / "m.json"
    for path in (out, hist, metrics):
        path.write_text("stale\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("stale\n")
    shard_dir(out).mkdir()
    (shard_dir(out) / "shard-00000.jsonl").write_text("{}\n")
    return out, hist, metrics


def test_success_writes_the_metrics_last_and_drops_the_shards(tmp_path):
    out, hist, metrics = _stale(tmp_path)
    with stage_outputs(out, hist, tmp_path / "model", None, metrics=metrics,
                       resumable=[out]) as outputs:
        assert not any(p.exists() for p in (out, hist, metrics, tmp_path / "model"))
        assert shard_dir(out).is_dir()  # a rerun resumes them
        write_jsonl(out, [{"id": "a"}])
        outputs.metrics["rows"] = 1
    assert json.loads(metrics.read_text()) == {"rows": 1}
    assert out.read_text() == '{"id": "a"}\n' and not shard_dir(out).exists()


def test_a_failure_leaves_no_output_but_keeps_the_shards(tmp_path):
    out, hist, metrics = _stale(tmp_path)
    with pytest.raises(Boom), stage_outputs(out, hist, metrics=metrics, resumable=[out]):
        write_jsonl(out, [{"id": "a"}])  # written, then the stage fails
        hist.write_text("score,count\n")
        raise Boom
    assert not out.exists() and not hist.exists() and not metrics.exists()
    assert (shard_dir(out) / "shard-00000.jsonl").is_file()


def test_engine_counters_become_engine_metrics(tmp_path):
    class Engine:
        name = "hf"
        stats = EngineStats(prompts=3, generated_tokens=40, truncated_prompts=1, seconds=2.0)

    with stage_outputs(metrics=tmp_path / "m.json") as outputs:
        outputs.record_engine(Engine())
    from selfreward.core.machine import machine_info

    assert json.loads((tmp_path / "m.json").read_text()) == {
        "engine": "hf", "engine_prompts": 3, "engine_generated_tokens": 40,
        "engine_prompt_tokens": 0, "engine_prompt_tokens_x_samples": 0,
        "engine_truncated_prompts": 1, "engine_seconds": 2.0, "engine_tokens_per_second": 20.0,
        "machine": machine_info()}  # where the numbers were made (docs/reproducibility.md)
