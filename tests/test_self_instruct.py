"""SELF-INSTRUCT stage: parsing, the four steps with a deterministic engine, filters, errors."""

from __future__ import annotations

import json
import os
import random
import re
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import ScriptedEngine

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import (
    EngineParams,
    Params,
    PromptsParams,
    SelfInstructParams,
    load_params,
)
from selfreward.data.filters import INSTANCE_DROPS, INSTRUCTION_REJECTIONS
from selfreward.data.prompt_quality import QUALITY_RULES
from selfreward.data.seed import load_ift, load_seed_tasks
from selfreward.data.self_instruct_text import (
    parse_classification,
    parse_instances,
    parse_instructions,
)
from selfreward.generation import engines
from selfreward.stages.prompts import run_prompts
from selfreward.stages.self_instruct import run_self_instruct

ROOT = Path(__file__).resolve().parents[1]
TEAM_SEED_TASKS = ROOT / "data" / "seed" / "self_instruct_tasks.jsonl"


# --- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("Write a poem about cats.\n10. Explain tides.\n11.\n12) Sort the numbers\n\nThat is all",
     ["Write a poem about cats.", "Explain tides.", "", "Sort the numbers"]),
    ("Here are more tasks:\n9. Plan a picnic.\n10. Name three rivers.",
     ["Plan a picnic.", "Name three rivers."]),
    ("Sure!\n\n9. Plan a picnic.", ["Plan a picnic."]),
    ("Describe a\n  long task\n10. x", ["Describe a long task", "x"]),
    ("no numbers at all\n\nlater text", ["no numbers at all"]),
    ("", []),
])
def test_parse_instructions(reply, expected):
    assert parse_instructions(reply) == expected


def test_parse_instances_input_first_output_first_and_no_input():
    reply = ("Example 1\nInput: 25 C\nOutput: 77 F\nExample 2\nInput: 0 C\nOutput: 32 F\n\n"
             "Task: something else\nOutput: ignored")
    assert parse_instances(reply, False) == [{"input": "25 C", "output": "77 F"},
                                             {"input": "0 C", "output": "32 F"}]
    assert parse_instances("Output: Drink water.", False) == [{"input": "", "output":
                                                               "Drink water."}]
    # As in the original code: no 'Output:' means the text is the output of an input-less task.
    assert parse_instances("The dragon slept.", False) == [{"input": "", "output":
                                                            "The dragon slept."}]
    assert parse_instances("Example 1\nInput: no output here", False) == [{"input": "",
                                                                           "output": ""}]
    assert parse_instances("Input: a\nOutput: b\nInput: c\nOutput: d", False) == [
        {"input": "a", "output": "b"}]
    reply = "Class label: Spam\nInput: WIN NOW\nClass label: Not spam\nInput: see you\nClass label: X"
    assert parse_instances(reply, True) == [{"input": "WIN NOW", "output": "Spam"},
                                            {"input": "see you", "output": "Not spam"},
                                            {"input": "", "output": "X"}]
    assert [parse_classification(x) for x in (" Yes.", "no", "Maybe")] == [True, False, None]


# --- a deterministic engine that exercises every step and every filter rule ---------------------

VOCAB = ["budget", "garden", "river", "kitchen", "winter", "letter", "planet", "station",
         "market", "candle", "forest", "bridge", "doctor", "travel", "energy", "silver", "coffee",
         "mountain", "window", "paper", "health", "music", "yellow", "ocean", "cloud", "stone",
         "apple", "table", "summer", "ladder", "violin", "harbour", "pencil", "lantern", "meadow",
         "tunnel", "castle", "feather", "rocket", "saddle", "thunder", "velvet", "walnut",
         "beacon", "canyon", "glacier", "orchard", "pepper", "quarry", "ribbon", "shelter",
         "timber", "vessel", "wagon", "zephyr", "anchor", "basket", "cedar"]
# Instance behaviour per mode word (the word is part of the generated instruction).
MODES = {"plainly": "valid", "abundantly": "over_limit", "conflictingly": "conflict",
         "inputless": "no_input", "sloppily": "invalid_mix", "hopelessly": "all_invalid"}
RULE_HITTERS = ["", "Sort it.", " ".join(["word"] * 160), '"Quoted tasks start with punctuation',
                "Écrivez un poème sur la mer", "Draw a picture of a lighthouse at night"]


def _last(pattern: str, text: str) -> str:
    return re.findall(pattern, text)[-1].strip()


def _generation_reply(text: str) -> str:
    shots = re.findall(r"^\d+\. (.*)$", text, re.MULTILINE)
    rng = random.Random(zlib.crc32(text.encode()))
    items = []
    for mode in MODES:
        words = rng.sample(VOCAB, 7)
        verb = "Classify" if mode in ("plainly", "conflictingly") else "Describe"
        lead = "Ponder then" if mode == "inputless" else verb
        items.append(f"{lead} the {' '.join(words)} {mode}.")
    items += RULE_HITTERS
    items.append(shots[0] + " please")  # near-duplicate of a shot
    items.append(shots[1].upper())  # the same tokens as a shot: exact duplicate
    rng.shuffle(items)
    first, *rest = items
    return first + "\n" + "\n".join(f"{i}. {x}" for i, x in enumerate(rest, start=10))


def _instances_reply(text: str, output_first: bool) -> str:
    instruction = _last(r"Task: (.*)", text)
    mode = next((MODES[w] for w in MODES if w in instruction), "valid")
    if output_first:
        if mode == "conflict":
            return "Class label: Yes\nInput: the same text\nClass label: No\nInput: the same text"
        return "Class label: Positive\nInput: I love it.\nClass label: Negative\nInput: Awful."
    examples = {
        "valid": [("two plus two", "four"), ("three plus one", "four as well")],
        "over_limit": [(f"item {i}", f"answer {i}") for i in range(8)],
        "conflict": [("same input", "one answer"), ("same input", "another answer")],
        "no_input": [("", "A plain answer with no input.")],
        "invalid_mix": [("echo", "echo"), ("blank", ""), ("Consider this:", "fine"),
                        ("ok input", "ok output"), ("ok input", "ok output")],
        "all_invalid": [("x", ""), ("same", "same")],
    }[mode]
    out = []
    for k, (inp, outp) in enumerate(examples, start=1):
        out.append(f"Example {k}\n" + (f"Input: {inp}\n" if inp else "") + f"Output: {outp}")
    return "\n".join(out)


def fake_reply(text: str, k: int, seed: int) -> str:
    if text.startswith("Come up with a series of tasks"):
        return _generation_reply(text)
    if text.startswith("Can the following task"):
        instruction = _last(r"Task: (.*)\nIs it classification\?", text)
        if instruction.startswith("Ponder"):
            return "Hmm, hard to say."
        return "Yes" if instruction.startswith("Classify") else "No"
    if text.startswith("Come up with examples"):
        return _instances_reply(text, output_first=False)
    if text.startswith("Given the classification task"):
        return _instances_reply(text, output_first=True)
    raise AssertionError(f"unexpected prompt: {text[:80]!r}")


def _run(tmp_path, monkeypatch, seed_path, settings: SelfInstructParams, engine=None):
    engine = engine or ScriptedEngine(fake_reply)
    monkeypatch.setattr(engines, "make_engine", lambda *a, **k: engine)
    out = tmp_path / "si"
    params = Params(self_instruct=settings, engine=EngineParams(name="hf", shard_size=4))
    metrics = run_self_instruct(params=params, model_dir="no-model", seed_paths=[str(seed_path)],
                                out_tasks=out / "tasks.jsonl", out_messages=out / "messages.jsonl",
                                metrics_path=out / "metrics.json")
    return out, metrics, engine


def _check_outputs(out: Path, metrics: dict, seed_instructions: set[str]) -> list[dict]:
    from datasets import load_dataset

    tasks = load_dataset("json", data_files=str(out / "tasks.jsonl"), split="train")
    msgs = load_dataset("json", data_files=str(out / "messages.jsonl"), split="train")
    assert len(tasks) == metrics["tasks_kept"] > 0
    assert len(msgs) == metrics["instances_kept"] == sum(len(t["instances"]) for t in tasks)
    assert set(tasks.column_names) >= {"id", "instruction", "instances", "is_classification"}
    for task in tasks:
        assert 1 <= len(task["instances"]) <= 5
        assert task["instruction"] not in seed_instructions
        for inst in task["instances"]:
            assert inst["output"] and inst["input"] != inst["output"]
            assert not inst["input"].endswith(":") and not inst["output"].endswith(":")
    # The task file is valid seed input again, and the messages file is valid SFT data.
    assert len(load_seed_tasks(out / "tasks.jsonl")) == len(tasks)
    assert len(load_ift(out / "messages.jsonl")) == len(msgs)
    assert json.loads((out / "metrics.json").read_text())["tasks_kept"] == len(tasks)
    assert not list(out.glob("*.shards"))
    return list(tasks)


def test_official_seed_tasks_all_four_steps_every_rule(tmp_path, monkeypatch, official_seed_tasks):
    seeds = load_seed_tasks(official_seed_tasks)
    assert len(seeds) == 175
    # the Self-Instruct steps as the paper has them: the prompt-quality rules (which would drop
    # the scripted "Ponder then ..." instructions that exercise the unparsed classification)
    # have their own cases in test_prompt_quality
    p = SelfInstructParams(enabled=True, count=30, max_attempts=40, quality=[])
    out, metrics, engine = _run(tmp_path, monkeypatch, official_seed_tasks, p)
    tasks = _check_outputs(out, metrics, {t.instruction for t in seeds})
    assert metrics["instructions_kept"] == 30 and metrics["seed_tasks"] == 175
    for reason in INSTRUCTION_REJECTIONS:  # the Self-Instruct rules; the prompt-quality
        if reason in QUALITY_RULES:         # rules have their own cases (test_prompt_quality)
            continue
        assert metrics[f"rejected_{reason}"] >= 1, reason
    for reason in INSTANCE_DROPS:
        assert metrics[f"dropped_{reason}"] >= 1, reason
    assert metrics["classification_tasks"] >= 1 and metrics["classify_unparsed"] >= 1
    assert any(t["is_classification"] for t in tasks) and not all(t["is_classification"]
                                                                   for t in tasks)
    assert any(inst["input"] == "" for t in tasks for inst in t["instances"])
    # 8 shots per generation: 6 seed + 2 generated once two instructions are kept.
    shot_lists = [t["shots"] for t in tasks]
    assert all(len(s) == 8 for s in shot_lists)
    assert any(sum(x.startswith("si-") for x in s) == 2 for s in shot_lists)
    # Steps 2 and 3 ask once per kept instruction.
    assert sum(n for n, _ in engine.calls) == metrics["attempts"] + 2 * metrics["instructions_kept"]
    print("fake engine on the 175 official seed tasks:",
          {k: v for k, v in metrics.items() if not k.startswith("engine")})


def test_team_seed_tasks_meet_the_format():
    tasks = load_seed_tasks(TEAM_SEED_TASKS)
    assert 30 <= len(tasks) <= 60
    assert 8 <= sum(t.is_classification for t in tasks) < len(tasks) // 2
    assert any(not inst["input"] for t in tasks for inst in t.instances)
    assert len({t.instruction.lower() for t in tasks}) == len(tasks)


def test_resume_after_a_crash_gives_the_same_output(tmp_path, monkeypatch):
    p = SelfInstructParams(enabled=True, count=12, max_attempts=20, seed_shots=4)
    ref, _, _ = _run(tmp_path / "ref", monkeypatch, TEAM_SEED_TASKS, p)

    calls = {"n": 0}

    def crashing(text, k, seed):
        calls["n"] += 1
        if calls["n"] > 14:  # after the instruction rounds, during classification
            raise RuntimeError("killed")
        return fake_reply(text, k, seed)

    with pytest.raises(RuntimeError):
        _run(tmp_path, monkeypatch, TEAM_SEED_TASKS, p, ScriptedEngine(crashing))
    assert not (tmp_path / "si" / "tasks.jsonl").exists()
    engine = ScriptedEngine(fake_reply)
    out, metrics, _ = _run(tmp_path, monkeypatch, TEAM_SEED_TASKS, p, engine)
    assert metrics["generation_rounds_resumed"] >= 1 and metrics["classify_shards_resumed"] >= 1
    assert (out / "tasks.jsonl").read_bytes() == (ref / "tasks.jsonl").read_bytes()
    assert (out / "messages.jsonl").read_bytes() == (ref / "messages.jsonl").read_bytes()
    assert sum(n for n, _ in engine.calls) < metrics["attempts"] + 2 * metrics["instructions_kept"]


def test_prompts_stage_takes_disjoint_blocks_of_tasks(tmp_path, monkeypatch):
    out, _, _ = _run(tmp_path, monkeypatch, TEAM_SEED_TASKS,
                     SelfInstructParams(enabled=True, count=12, max_attempts=20))
    params = Params(prompts=PromptsParams(count=3, source="self_instruct"),
                    self_instruct=SelfInstructParams(enabled=True))

    def prompts_of(iteration: str, out_path: Path, metrics_path: Path) -> dict:
        return run_prompts(params=params, model_dir="unread", seed_paths=[],
                           self_instruct_path=out / "tasks.jsonl", iteration=iteration,
                           out_path=out_path, metrics_path=metrics_path)

    blocks = []
    for t in ("1", "2"):
        prompts_of(t, tmp_path / f"p{t}.jsonl", tmp_path / f"m{t}.json")
        blocks.append([json.loads(x) for x in (tmp_path / f"p{t}.jsonl").read_text().split("\n")
                       if x])
    assert [len(b) for b in blocks] == [3, 3]
    sample = json.loads((tmp_path / "m1.json").read_text())["sample_kept"]
    assert sorted(sample) == sorted(r["prompt"] for r in blocks[0])  # 3 < 8: all of them
    assert not {r["id"] for r in blocks[0]} & {r["id"] for r in blocks[1]}
    tasks = {t.id: t for t in load_seed_tasks(out / "tasks.jsonl")}
    assert all(r["prompt"].startswith(tasks[r["id"]].instruction) for b in blocks for r in b)
    with pytest.raises(UserError, match="raise self_instruct.count"):
        prompts_of("99", tmp_path / "p.jsonl", tmp_path / "m.json")
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "m.json").exists()


# --- the command: errors, the DVC switch --------------------------------------------------------

def _invoke(tmp_path, seed_file: Path, *extra: str, params: str = "self_instruct: {enabled: true}"):
    (tmp_path / "params.yaml").write_text(params + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "self-instruct", "--params", str(tmp_path / "params.yaml"), "--model", "no-model",
        "--seed-tasks", str(seed_file), "--out", str(out / "tasks.jsonl"),
        "--messages", str(out / "messages.jsonl"), "--metrics", str(out / "metrics.json"),
        *extra])
    return result, out


GOOD_TASK = {"instruction": "Name a colour.", "instances": [{"input": "", "output": "Blue"}],
             "is_classification": False}


@pytest.mark.parametrize("bad, line, field", [
    ({"instances": [{"input": "", "output": "x"}]}, 2, "instruction"),
    ({"instruction": "Do it.", "instances": {"input": "", "output": "x"}}, 2, "instances"),
    ({"instruction": "Do it.", "instances": []}, 2, "instances"),
    ({"instruction": "Do it.", "instances": ["x"]}, 2, "instances[0]"),
    ({**GOOD_TASK, "is_classification": "yes"}, 2, "is_classification"),
])
def test_malformed_seed_tasks_exit_2_with_file_line(tmp_path, write_jsonl, bad, line, field):
    seed = write_jsonl("seed.jsonl", [GOOD_TASK, bad])
    result, out = _invoke(tmp_path, seed)
    assert result.exit_code == 2, result.output
    assert f"{seed}:{line}: field '{field}'" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_disabled_stage_writes_empty_outputs_without_a_model(tmp_path):
    result, out = _invoke(tmp_path, TEAM_SEED_TASKS, "--if-enabled", params="prompts: {count: 3}")
    assert result.exit_code == 0, result.output
    assert (out / "tasks.jsonl").read_text() == "" == (out / "messages.jsonl").read_text()
    assert json.loads((out / "metrics.json").read_text()) == {"enabled": False}


@pytest.mark.parametrize("text, key", [
    ("sft: {self_instruct: true}", "sft.self_instruct"),
    ("prompts: {source: self_instruct}", "prompts.source"),
    ("self_instruct: {max_instances: 0}", "self_instruct.max_instances"),
])
def test_params_that_need_self_instruct(tmp_path, text, key):
    path = tmp_path / "params.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UserError, match=re.escape(f"field '{key}'")):
        load_params(path)


# --- the embedded SmolLM2 for real --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", [int(s) for s in
                                  os.environ.get("SELFREWARD_REAL_SEEDS", "0").split(",")])
def test_embedded_model_runs_every_step_and_the_counts_add_up(tmp_path, seed):
    """The real 135M model through all four steps, asserting what the code guarantees, not
    what the model happens to sample: step 1 keeps instructions (every seed tried keeps 5-6 of 6),
    every instruction kept is either a task or counted as dropped, every kept task obeys the
    filters, and the outputs load as seed tasks and as SFT messages. Whether any task survives
    the instance filters is the model's coin (seeds 0, 1, 2 kept 1, 0, 0 tasks), so it is not
    asserted. The engine runs in float32 so that CPUs with and without native bf16 sample the
    same tokens. SELFREWARD_REAL_SEEDS=0,1,2 runs it under several seeds."""
    from selfreward.config.params import BaseParams
    from selfreward.core.io import write_jsonl as write_rows
    from selfreward.generation.engines import open_engine
    from selfreward.stages.base import run_base
    from selfreward.stages.self_instruct import self_instruct, task_messages

    model = tmp_path / "m0"
    run_base(params=Params(base=BaseParams()), out_dir=model,
             metrics_path=tmp_path / "base.json")
    p = SelfInstructParams(enabled=True, count=6, max_attempts=4, max_new_tokens=96,
                           instance_max_new_tokens=64, temperature=0.7, top_p=0.9, seed=seed)
    seeds = load_seed_tasks(TEAM_SEED_TASKS)
    out = tmp_path / "si"
    with open_engine(str(model), EngineParams(name="hf", dtype="float32", batch_size=8,
                                              shard_size=8), seed=seed) as engine:
        tasks, metrics = self_instruct(engine, p, seeds, out / "tasks.jsonl", "k", 8)
    print(f"embedded SmolLM2-135M, seed {seed}:", metrics)
    assert 1 <= metrics["instructions_kept"] <= p.count
    assert metrics["attempts"] <= p.max_attempts
    assert metrics["instructions_kept"] == (metrics["tasks_kept"]
                                            + metrics["dropped_task_no_instances"]
                                            + metrics["dropped_task_conflicting_outputs"])
    assert metrics["tasks_kept"] == len(tasks)
    assert metrics["instances_kept"] == sum(len(t["instances"]) for t in tasks)
    seed_texts = {t.instruction for t in seeds}
    for task in tasks:
        assert task["instruction"] not in seed_texts
        assert 1 <= len(task["instances"]) <= p.max_instances
        for inst in task["instances"]:
            assert inst["output"] and inst["input"] != inst["output"]
            assert not inst["input"].endswith(":") and not inst["output"].endswith(":")
    if tasks:  # what a run with tasks writes loads as seed tasks and as SFT data
        write_rows(out / "kept.jsonl", tasks)
        write_rows(out / "messages.jsonl", task_messages(tasks))
        assert len(load_seed_tasks(out / "kept.jsonl")) == len(tasks)
        assert len(load_ift(out / "messages.jsonl")) == metrics["instances_kept"]
