"""prompts.source=pool and model (stages/prompts.py, data/prompt_pool.py): the team's pool, the
iterations' disjoint blocks, the overlap check (exit 2 naming both lines), the fixed writer."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import ScriptedEngine

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import EngineParams, Params, PromptsParams
from selfreward.data.prompt_pool import load_pool, normalize, pool_block
from selfreward.data.prompt_quality import quality_reason
from selfreward.generation import engines
from selfreward.stages.prompts import run_prompts

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "data" / "seed"
TEAM_POOL = SEED / "prompt_pool.jsonl"
REFERENCES = [SEED / "ift.jsonl", SEED / "eval_prompts.jsonl", SEED / "ifeval_prompts.jsonl"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_team_pool_is_large_clean_and_disjoint_from_seed_and_evaluation_prompts():
    rows = load_pool(TEAM_POOL, REFERENCES)  # raises on a duplicate or an overlap
    assert len(rows) >= 300
    assert len({normalize(r["prompt"]) for r in rows}) == len(rows)
    # requests, as the quality rules see them: a figure for docs/prompts.md, not a target
    rejected = [r["prompt"] for r in rows if quality_reason(r["prompt"])]
    assert len(rejected) / len(rows) < 0.05, rejected


def _pool_params(tmp_path, count=4, pool=TEAM_POOL, **extra) -> Params:
    return Params(prompts=PromptsParams(count=count, source="pool", pool=str(pool), **extra))


def _run_pool(params, tmp_path, iteration, excludes=REFERENCES[1:]):
    out = tmp_path / f"p{iteration}.jsonl"
    metrics = run_prompts(params=params, model_dir="unread", seed_paths=[str(REFERENCES[0])],
                          self_instruct_path=None, iteration=iteration, out_path=out,
                          metrics_path=tmp_path / f"m{iteration}.json",
                          exclude_paths=[str(p) for p in excludes])
    return _rows(out), metrics


def test_pool_blocks_are_seeded_and_disjoint_across_iterations(tmp_path):
    params = _pool_params(tmp_path, count=100)
    blocks = [_run_pool(params, tmp_path, t)[0] for t in ("1", "2", "3")]
    assert [len(b) for b in blocks] == [100, 100, 100]
    ids = [{r["id"] for r in b} for b in blocks]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(r["shots"] == [] for b in blocks for r in b)
    (tmp_path / "again").mkdir()
    again, metrics = _run_pool(params, tmp_path / "again", "2")
    assert again == blocks[1]  # the same seed gives the same block
    assert metrics["source"] == "pool" and metrics["kept"] == 100 and metrics["pool"] >= 300
    assert len(metrics["sample_kept"]) == 8 and metrics["sample_dropped"] == []
    assert set(metrics["sample_kept"]) <= {r["prompt"] for r in blocks[1]}
    other = pool_block(load_pool(TEAM_POOL), 2, 100, seed=1)
    assert [r["id"] for r in other] != [r["id"] for r in blocks[1]]


def test_last_short_block_warns_and_an_exhausted_pool_is_an_error(tmp_path, write_jsonl, caplog):
    topics = ["rivers in Spain", "birds of Kenya", "Danish pastries", "jazz drummers",
              "lakes in Canada"]
    pool = write_jsonl("pool.jsonl", [{"id": f"q{i}", "prompt": f"Name three {topic}."}
                                      for i, topic in enumerate(topics)])
    params = _pool_params(tmp_path, count=3, pool=pool)
    assert len(_run_pool(params, tmp_path, "2")[0]) == 2
    assert "only 2 pool prompts left" in caplog.text
    with pytest.raises(UserError, match="leave none for iteration 3"):
        _run_pool(params, tmp_path, "3")
    assert not (tmp_path / "p3.jsonl").exists() and not (tmp_path / "m3.json").exists()


@pytest.mark.parametrize("prompt, where", [
    ("Which language has the most native speakers?", "eval_prompts.jsonl:53"),   # reworded
    ("what is the difference between a virus and a bacterium", "ift.jsonl:88"),  # case, '?'
    (("Write a short note to a neighbour asking them to water your tomato plants while you "
     "are away. Include the keywords \"balcony\" and \"Thursday\"."), "ifeval_prompts.jsonl:1"),
])
def test_pool_overlapping_seed_or_evaluation_prompts_exits_2_naming_both(
        tmp_path, write_jsonl, prompt, where):
    rows = [{"id": "a", "prompt": "How do I fold a fitted sheet neatly?"},
            {"id": "b", "prompt": prompt}]
    pool = write_jsonl("pool.jsonl", rows)
    (tmp_path / "params.yaml").write_text(f"prompts: {{source: pool, pool: {pool}}}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "prompts", "--params", str(tmp_path / "params.yaml"), "--model", "unread",
        "--seed-data", str(REFERENCES[0]), "--exclude", str(REFERENCES[1]),
        "--exclude", str(REFERENCES[2]), "--iteration", "1",
        "--out", str(out / "prompts.jsonl"), "--metrics", str(out / "metrics.json")])
    assert result.exit_code == 2, result.output
    assert f"{pool}:2: field 'prompt'" in result.output and where in result.output
    assert not (out / "prompts.jsonl").exists() and not (out / "metrics.json").exists()


def test_pool_duplicates_and_malformed_rows_name_the_line(tmp_path, write_jsonl):
    pool = write_jsonl("pool.jsonl", [{"id": "a", "prompt": "Which planet has the most moons?"},
                                      {"id": "b", "prompt": "Which planet has most moons"}])
    with pytest.raises(UserError, match="same as line 1") as err:
        load_pool(pool)
    assert f"{pool}:2" in err.value.format_message() and err.value.exit_code == 2
    bad = write_jsonl("bad.jsonl", [{"id": "a", "prompt": "Fine prompt here?"}, {"id": "b"}])
    with pytest.raises(UserError, match="missing required field") as err:
        load_pool(bad)
    assert f"{bad}:2: field 'prompt'" in err.value.format_message()


def test_different_requests_on_one_template_are_not_the_same_prompt(write_jsonl):
    pool = write_jsonl("pool.jsonl", [
        {"id": "a", "prompt": "What is the difference between a manager and a leader?"},
        {"id": "b", "prompt": "What is the difference between a virus and a bacterium?"}])
    assert len(load_pool(pool)) == 2


def test_source_model_writes_with_prompts_model_not_m_t(tmp_path, monkeypatch):
    opened = []

    def make_engine(model_dir, params, seed=0):
        opened.append(model_dir)
        replies = iter(["Task 5: Explain how a kettle boils water quickly.",
                        "Task 5: I am a helpful assistant.",
                        "Task 5: Summarize this passage in one sentence.",
                        "Task 5: Name three rivers that flow through Germany."] * 10)
        return ScriptedEngine(lambda text, k, seed: next(replies))
    monkeypatch.setattr(engines, "make_engine", make_engine)
    params = Params(prompts=PromptsParams(count=2, max_attempts=8, seed_shots=2,
                                          generated_shots=0, source="model",
                                          model="models/writer"),
                    engine=EngineParams(name="hf", shard_size=4))
    metrics = run_prompts(params=params, model_dir="models/m1",
                          seed_paths=[str(REFERENCES[0])], self_instruct_path=None,
                          iteration="1", out_path=tmp_path / "p.jsonl",
                          metrics_path=tmp_path / "m.json")
    assert opened == ["models/writer"]
    assert [r["prompt"] for r in _rows(tmp_path / "p.jsonl")] == [
        "Explain how a kettle boils water quickly.", "Name three rivers that flow through Germany."]
    assert metrics["source"] == "model"
    assert metrics["rejected_self_talk"] == 1 and metrics["rejected_missing_material"] == 1
    assert sorted(d["reason"] for d in metrics["sample_dropped"]) == ["missing_material",
                                                                     "self_talk"]


def test_switching_to_the_pool_changes_the_prompts_stages_and_nothing_before(tmp_path):
    """What `dvc exp run -S prompts.source=pool` reruns: the real `dvc status` over a locked
    copy of the pipeline marks prompts@t for its params, and no stage upstream of it."""
    import shutil
    import subprocess
    import sys

    from test_dvc_deps import PKG, _placeholder_outputs, _run

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo)
    shutil.copytree(SEED, repo / "data" / "seed")
    shutil.copytree(PKG, repo / "src" / "selfreward",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(repo, "git", "init", "-q")
    _run(repo, dvc, "init", "-q")
    _run(repo, dvc, "config", "core.analytics", "false")
    _placeholder_outputs(repo)
    _run(repo, dvc, "commit", "-f", "-q")
    params = (repo / "params.yaml").read_text()
    assert "\n  source: generate " in params
    (repo / "params.yaml").write_text(params.replace("\n  source: generate ",
                                                     "\n  source: pool ", 1))
    done = subprocess.run([dvc, "status", "--json"], cwd=repo, capture_output=True, text=True,
                          check=True)
    status = json.loads(done.stdout)
    assert set(status) == {"prompts@1", "prompts@2"}, status
    for change in status.values():  # only the one param, no file dependency or output
        assert change == [{"changed deps": {"params.yaml": {"prompts": "modified"}}}], \
            status
