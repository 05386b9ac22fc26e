"""Verifiable constraints in the loop (issue 23, docs/constraints.md): IFEval instructions drawn
from lm-eval's checker registry and appended to prompts, checker verdicts in pair selection
(gate, bonus), IFEval three ways (trained / held-out types) and the decontamination check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_CONFLICTS as CONFLICTS

from selfreward.config.errors import UserError
from selfreward.config.params import ConstraintsParams, PairsParams, Params, load_params
from selfreward.core.io import read_jsonl, write_jsonl
from selfreward.data.constraints import (
    constrain_prompts,
    contamination,
    phrase,
    training_types,
)
from selfreward.evaluation.ifeval import holdout_split, score_response, split_metrics
from selfreward.judge.verifiers import add_checks, load_checks, selection_rows
from selfreward.report.benchmarks import ifeval_split_lines, paired_split
from selfreward.stages.pairs import run_pairs
from selfreward.stages.prompts import run_prompts

ROOT = Path(__file__).resolve().parents[1]
# Every group but `language` (the default types): an answer in e.g. Bengali cannot be hand-built.
ALL_BUT_LANGUAGE = ConstraintsParams(count=1, types=[
    "keywords", "length_constraints", "detectable_content", "detectable_format", "combination",
    "startend", "change_case", "punctuation"], holdout=[])
PROMPT = "Write a short note about the harbour."


def rows(n: int = 12) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"{PROMPT} Number {i}.", "shots": []} for i in range(n)]


def test_constraints_are_reproducible_from_the_seed_and_change_with_it():
    params = ConstraintsParams(count=2, seed=3)
    first, metrics = constrain_prompts(rows(), params)
    again, _ = constrain_prompts(rows(), params)
    other, _ = constrain_prompts(rows(), ConstraintsParams(count=2, seed=4))
    assert first == again and first != other
    assert all(len(r["instruction_id_list"]) == 2 == len(r["kwargs"]) for r in first)
    # the phrasing of each class, with its drawn arguments, follows the original request
    assert all(r["prompt"].startswith(f"{PROMPT} Number {i}.\n\n") for i, r in enumerate(first))
    assert metrics["constraints_appended"] == 24 and metrics["constraint_types_left_out"] == {}
    assert constrain_prompts(rows(), ConstraintsParams(count=0))[0] == rows()


def test_held_out_types_never_appear_and_unknown_names_are_refused():
    out, metrics = constrain_prompts(rows(60), ConstraintsParams(count=3, holdout=[
        "detectable_format", "punctuation:no_comma"]))
    used = {i for r in out for i in r["instruction_id_list"]}
    assert len(used) >= 12 and metrics["constraint_types_used"].keys() == used
    assert not any(i.startswith("detectable_format:") or i == "punctuation:no_comma"
                   for i in used)
    with pytest.raises(UserError) as err:
        training_types(ConstraintsParams(count=1, holdout=["detectable_formats"]))
    assert err.value.field == "prompts.constraints.holdout"
    with pytest.raises(UserError):
        training_types(ConstraintsParams(count=1, types=["punctuation"],
                                         holdout=["punctuation"]))


def _times(word: str, count: int) -> str:
    return " ".join([word] * count)


def _count_for(relation: str, n: int, obey: bool) -> int:
    # "less than n" is obeyed by n - 1, "at least n" by n; breaking takes the other one
    return (n - 1 if relation == "less than" else n) if obey else (
        n if relation == "less than" else n - 1)


def build(instruction_id: str, kw: dict, obey: bool) -> str:
    """A hand-made answer that obeys (or breaks) one instruction with arguments `kw`."""
    kind = instruction_id.split(":")[1]
    if kind == "existence":
        return f"Notes: {' and '.join(kw['keywords'])}." if obey else "Notes: none."
    if kind == "frequency":
        return "Text " + _times(kw["keyword"], _count_for(kw["relation"], kw["frequency"], obey))
    if kind == "forbidden_words":
        return "Qqq zzz." if obey else "Qqq " + " ".join(kw["forbidden_words"]) + "."
    if kind == "letter_frequency":
        count = _count_for(kw["let_relation"], kw["let_frequency"], obey)
        return "0 " + _times(kw["letter"], count)
    if kind == "number_sentences":
        return _times("The cat sat.", _count_for(kw["relation"], kw["num_sentences"], obey))
    if kind == "number_paragraphs":
        return "\n***\n".join(["A paragraph."] * (kw["num_paragraphs"] + (not obey)))
    if kind == "number_words":
        return _times("word", _count_for(kw["relation"], kw["num_words"], obey))
    if kind == "nth_paragraph_first_word":
        paragraphs = ["Some text here."] * kw["num_paragraphs"]
        paragraphs[kw["nth_paragraph"] - 1] = (f"{kw['first_word']} starts." if obey else
                                               "Qqq starts.")
        return "\n\n".join(paragraphs)
    if kind == "number_placeholders":
        return _times("[slot]", kw["num_placeholders"] - (not obey))
    if kind == "postscript":
        return f"Body.\n\n{kw['postscript_marker']} see you." if obey else "Body."
    if kind == "number_bullet_lists":
        return "\n".join(["* item"] * (kw["num_bullets"] + (not obey)))
    if kind == "constrained_response":
        return "My answer is yes." if obey else "Perhaps."
    if kind == "number_highlighted_sections":
        return _times("*hot*", kw["num_highlights"] - (not obey))
    if kind == "multiple_sections":
        n = kw["num_sections"] - (not obey)
        return "\n".join(f"{kw['section_spliter']} {i}\ntext" for i in range(1, n + 1))
    if kind == "json_format":
        return '{"a": 1}' if obey else "a: 1"
    if kind == "title":
        return "<<Harbour>>\nText." if obey else "Harbour\nText."
    if kind == "two_responses":
        return "First answer.\n******\nSecond answer." if obey else "One answer."
    if kind == "repeat_prompt":
        return kw["prompt_to_repeat"] + " Answer." if obey else "Answer."
    if kind == "end_checker":
        return f"Text. {kw['end_phrase']}" if obey else f"{kw['end_phrase']} Text."
    if kind == "capital_word_frequency":
        count = _count_for(kw["capital_relation"], kw["capital_frequency"], obey)
        return "text " + _times("WORD", count)
    english = "the quick brown fox jumps over the lazy dog and runs away into the forest."
    if kind == "english_capital":
        return english.upper() if obey else english
    if kind == "english_lowercase":
        return english if obey else english.capitalize()
    if kind == "no_comma":
        return "No commas here." if obey else "One, two."
    if kind == "quotation":
        return '"Quoted text."' if obey else "Quoted text."
    raise AssertionError(f"no hand-made answer for {instruction_id}")


@pytest.mark.parametrize("instruction_id", training_types(ALL_BUT_LANGUAGE))
def test_every_appended_instruction_is_checked_by_its_own_checker(instruction_id):
    """For three seeded draws of each type: the phrased instruction with its drawn arguments is
    in IFEval's format; an answer built to obey passes strict and loose, one built to break
    fails strict."""
    assert len(training_types(ALL_BUT_LANGUAGE)) == 24
    for seed in range(3):
        description, kw = phrase(instruction_id, PROMPT, seed)
        row = {"key": 0, "prompt": f"{PROMPT}\n\n{description}",
               "instruction_id_list": [instruction_id], "kwargs": [kw]}
        json.dumps(row)  # a prompts.jsonl row
        good, bad = (score_response(row, build(instruction_id, kw, obey))
                     for obey in (True, False))
        assert good == {"strict": [True], "loose": [True]}, (kw, build(instruction_id, kw, True))
        assert bad["strict"] == [False], (kw, build(instruction_id, kw, False))


def test_nth_paragraph_draws_are_always_satisfiable():
    # lm-eval draws "paragraph 3 of 2"; such a draw is redrawn
    kws = [phrase("length_constraints:nth_paragraph_first_word", PROMPT, s)[1]
           for s in range(40)]
    assert all(k["nth_paragraph"] <= k["num_paragraphs"] for k in kws)


def test_prompts_stage_writes_ifeval_fields_decontamination_and_no_held_out_type(tmp_path):
    """Through the stage function (self-instruct source: no model): prompts.jsonl rows carry
    instruction_id_list and kwargs; a planted copy of an IFEval prompt is counted."""
    params = load_params(ROOT / "params.yaml").model_copy(deep=True)
    params.self_instruct.enabled = True
    params.prompts.source = "self_instruct"
    params.prompts.count = 20
    params.prompts.constraints = ConstraintsParams(count=2, types=[], holdout=["keywords"])
    ifeval = list(read_jsonl(ROOT / "data/seed/ifeval_prompts.jsonl"))
    tasks = [{"id": f"t{i}", "instruction": f"Describe harbour number {i} briefly.",
              "instances": [{"input": "", "output": "x"}], "is_classification": False}
             for i in range(19)]
    # a near-copy of an IFEval prompt: one word changed
    planted = ifeval[0][1]["prompt"].replace(" the ", " a ", 1)
    tasks.append({"id": "planted", "instruction": planted,
                  "instances": [{"input": "", "output": "x"}], "is_classification": False})
    write_jsonl(tmp_path / "tasks.jsonl", tasks)
    out, metrics = tmp_path / "prompts.jsonl", tmp_path / "m.json"
    run_prompts(params=params, model_dir="unused", seed_paths=[],
                self_instruct_path=tmp_path / "tasks.jsonl", iteration="1", out_path=out,
                metrics_path=metrics, ifeval_path=ROOT / "data/seed/ifeval_prompts.jsonl")
    written = [obj for _, obj in read_jsonl(out)]
    m = json.loads(metrics.read_text())
    assert len(written) == 20 and m["ifeval_contaminated"] == 1
    assert m["ifeval_prompts_checked"] == len(ifeval)
    assert sum(len(r["instruction_id_list"]) == 2 for r in written) >= 15
    for row in written:
        assert len(row["instruction_id_list"]) == len(row["kwargs"]) in (1, 2)
        if len(row["instruction_id_list"]) == 1:  # its conflicts leave no second type
            only = row["instruction_id_list"][0]
            assert all(t in CONFLICTS[only] or only in CONFLICTS.get(t, ()) for t in
                       training_types(params.prompts.constraints) if t != only)
        assert not any(i.startswith("keywords:") for i in row["instruction_id_list"])


def test_contamination_finds_exact_and_near_copies_only():
    ifeval = ["Write a poem about the sea in exactly four lines without any commas.",
              "List three reasons to learn Python. Use bullet points."]
    prompts = ["Write a poem about the sea in exactly four lines with no commas.",
               "List three reasons to learn Python. Use bullet points.",
               "Explain how a bicycle gear works."]
    assert contamination(prompts, ifeval) == [0, 1]


def _judged(i: int, means: list[float], verdicts: list[list[bool]]) -> dict:
    return {"id": f"q{i}", "prompt": "p", "responses": [f"answer {i}-{k}" for k in range(4)],
            "scores": [[m] for m in means], "parsed": [1] * 4, "mean": means,
            "instruction_id_list": ["a:b", "c:d"], "kwargs": [{}, {}],
            "checks": [{"strict": v, "loose": v} for v in verdicts]}


# Hand-made verdicts (2 constraints) and judge scores for 4 answers per prompt.
ROWS = [
    # the judge's best (3) fails a constraint, its worst (0) passes both
    _judged(0, [4.0, 1.0, 2.0, 3.0], [[True, False], [True, True], [True, True], [False, False]]),
    # all pass: gate finds no contrast, bonus adds the same to all
    _judged(1, [4.0, 1.0, 2.0, 3.0], [[True, True]] * 4),
    # agreement: the judge's best passes, its worst fails
    _judged(2, [4.5, 1.0, 2.0, 3.0], [[True, True], [False, False], [True, False], [True, True]]),
]


@pytest.mark.parametrize("mode, weight, picks, changed", [
    ("off", 1.0, {"q0": (0, 1), "q1": (0, 1), "q2": (0, 1)}, None),
    # gate: chosen = best-judged passing answer, rejected = worst-judged failing one
    ("gate", 1.0, {"q0": (2, 3), "q2": (0, 1)}, 2),
    # bonus 1.0: q0 = 4.5, 2.0, 3.0, 3.0 -> 0 vs 1 stays; weight 3: 5.5, 4.0, 5.0, 3.0 -> 0 vs 3
    ("bonus", 1.0, {"q0": (0, 1), "q1": (0, 1), "q2": (0, 1)}, 0),
    ("bonus", 3.0, {"q0": (0, 3), "q1": (0, 1), "q2": (0, 1)}, 1),
])
def test_gate_and_bonus_pick_on_hand_made_verdicts(tmp_path, mode, weight, picks, changed):
    path = tmp_path / "judgments.jsonl"
    write_jsonl(path, ROWS)
    params = Params(pairs=PairsParams(verifiers=mode, verifier_weight=weight))
    out, metrics_path = tmp_path / "pairs.jsonl", tmp_path / "pairs.json"
    metrics = run_pairs(params=params, judgments_path=str(path), out_path=out,
                        metrics_path=metrics_path)
    pairs = {obj["id"]: obj for _, obj in read_jsonl(out)}
    got = {i: tuple(int(p[side][0]["content"].rsplit("-", 1)[1]) for side in ("chosen",
                                                                              "rejected"))
           for i, p in pairs.items()}
    assert got == picks
    assert metrics["pass_rate_answers"] == 0.6667  # 8 of 12 pass both
    chosen_pass = [all(ROWS[int(i[1])]["checks"][c]["strict"]) for i, (c, _) in picks.items()]
    assert metrics["pass_rate_chosen"] == round(sum(chosen_pass) / len(chosen_pass), 4)
    assert metrics.get("verifier_pairs_changed") == changed
    if mode == "gate":
        assert metrics["pass_rate_chosen"] == 1.0 and metrics["pass_rate_rejected"] == 0.0
        assert metrics["verifier_no_contrast"] == 1 and metrics["verifier_pairs_removed"] == 1


def test_bonus_score_is_judge_plus_weight_times_share_passed():
    scored, _ = selection_rows(ROWS, {r["id"]: r["checks"] for r in ROWS},
                               PairsParams(verifiers="bonus", verifier_weight=2.0))
    assert scored[0]["mean"] == [5.0, 3.0, 4.0, 3.0] and ROWS[0]["mean"] == [4.0, 1.0, 2.0, 3.0]


def test_malformed_checks_name_file_line_and_field(tmp_path):
    bad = {**ROWS[0], "checks": [{"strict": [True], "loose": [True]}] * 4}  # 1 of 2 verdicts
    path = tmp_path / "judgments.jsonl"
    write_jsonl(path, [ROWS[1], bad])
    with pytest.raises(UserError) as err:
        load_checks(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, "checks")
    assert err.value.exit_code == 2


def test_judge_stage_checks_constrained_answers():
    kw = [{"num_placeholders": 1}, {}]
    responses = [{"id": "a", "prompt": "Say hi.", "responses": ["hi [name]", "Hi, [name]",
                                                                "hi"],
                  "instruction_id_list": ["detectable_content:number_placeholders",
                                          "punctuation:no_comma"], "kwargs": kw},
                 {"id": "b", "prompt": "Say bye.", "responses": ["bye", "bye!", "ok"]}]
    judged = [{"id": r["id"], "prompt": r["prompt"], "responses": r["responses"],
               "mean": [1.0, 2.0, 3.0]} for r in responses]
    out, metrics = add_checks(judged, responses)
    assert [c["strict"] for c in out[0]["checks"]] == [[True, True], [True, False],
                                                       [False, True]]
    assert "checks" not in out[1] and out[0]["kwargs"] == kw
    assert metrics == {"constrained_prompts": 1, "answers_checked": 3,
                       "pass_rate_strict": 0.3333, "pass_rate_loose": 0.3333}


# A hand-made IFEval table: types, and whether M1 / M2 followed every instruction (loose).
TABLE = [
    (["punctuation:no_comma"], True, True),
    (["punctuation:no_comma", "startend:quotation"], False, True),
    (["detectable_format:title"], False, True),
    (["detectable_format:title", "punctuation:no_comma"], False, False),
    (["language:response_language"], True, False),  # not in types: `all` only
]


def _answers(column: int) -> list[dict]:
    return [{"key": k, "instruction_id_list": ids, "strict": [row[column]] * len(ids),
             "loose": [row[column]] * len(ids)} for k, (ids, *row) in
            enumerate((ids, m1, m2) for ids, m1, m2 in TABLE)]


def test_ifeval_three_way_split_on_a_hand_made_table(tmp_path):
    m1, m2 = _answers(0), _answers(1)
    holdout, types = ["detectable_format"], ["punctuation", "startend", "detectable_format"]
    assert holdout_split(m2, holdout, types) == {"all": [0, 1, 2, 3, 4], "trained": [0, 1],
                                                 "held_out": [2, 3]}
    split = split_metrics(m2, m2, holdout, types, samples=200)
    assert [split[s]["prompts"] for s in ("all", "trained", "held_out")] == [5, 2, 2]
    assert split["trained"]["prompt_level_loose"]["accuracy"] == 1.0
    assert split["held_out"]["prompt_level_loose"]["accuracy"] == 0.5
    paired = paired_split(m1, m2, holdout, types)
    assert paired["trained"]["gain"] == 0.5 and paired["held_out"]["gain"] == 0.5
    assert paired["all"]["gain"] == 0.2 and paired["all"]["n"] == 5
    # the report's table, from the ifeval metrics and answer files
    for name, answers in (("m1", m1), ("m2", m2)):
        write_jsonl(tmp_path / "data" / "models" / f"{name}.jsonl", answers)
        (tmp_path / "metrics" / "ifeval" / "models").mkdir(parents=True, exist_ok=True)
        (tmp_path / "metrics" / "ifeval" / "models" / f"{name}.json").write_text(json.dumps(
            {"model": f"models/{name}", "holdout": holdout, "trained_types": types,
             "splits": split_metrics(answers, answers, holdout, types, samples=200)}))
    lines = ifeval_split_lines(tmp_path / "metrics", tmp_path / "data")
    table = "\n".join(lines)
    assert "held out of training: detectable_format" in table
    m2_row = next(line for line in lines if line.startswith("| M2 |"))
    assert "100.0 [100.0–100.0] (n=2); +50.0" in m2_row and "(n=5); +20.0" in m2_row
    assert "+" not in next(line for line in lines if line.startswith("| M1 |"))


def test_constraints_rerun_from_prompts_on_and_nothing_before(tmp_path):
    """`dvc exp run -S prompts.constraints.count=1 -S pairs.verifiers=gate`: a real `dvc status`
    over a locked copy of the pipeline marks the prompts and pairs stages of every iteration
    (their params changed; responses, judge and dpo follow from their outputs), and none of
    base, sft, self_instruct or the evaluation of M0 and M1 (ifeval reads only the types)."""
    import shutil
    import subprocess
    import sys

    import yaml
    from dvc.repo import Repo

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo)
    shutil.copytree(ROOT / "data" / "seed", repo / "data" / "seed")
    shutil.copytree(ROOT / "src" / "selfreward", repo / "src" / "selfreward",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"],
                [dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    with Repo(str(repo)) as dvc_repo:
        outs = [Path(out.fs_path) for stage in dvc_repo.index.stages for out in stage.outs]
    for path in outs:  # placeholder outputs, so that a lock can be recorded
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder.txt").write_text("x\n")
    subprocess.run([dvc, "commit", "-f", "-q"], cwd=repo, check=True, capture_output=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prompts"]["constraints"]["count"] = 1
    params["pairs"]["verifiers"] = "gate"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with Repo(str(repo)) as dvc_repo:
        marked = {name.rpartition("dvc.yaml:")[2] for name in dvc_repo.status()}
    iterations = sorted(params["iterations"])
    assert marked == {f"{stage}@{t}" for stage in ("prompts", "pairs")
                      for t in iterations}


def test_bad_constraints_in_responses_are_user_errors():
    row = {"id": "a", "prompt": "Say hi.", "responses": ["hi"],
           "instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]}
    with pytest.raises(UserError) as err:
        add_checks([{**row, "mean": [1.0]}], [row])
    assert "unknown instruction id 'punctuation:no_semicolon'" in str(err.value.message)
    assert err.value.exit_code == 2
