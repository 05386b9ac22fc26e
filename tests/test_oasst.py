"""Open Assistant exports: JSON Lines, gzip, parquet and directories read the same messages; bad
input (missing field, parent cycle, unknown role, a rank that is not a number, …) is exit 2 with
file:line:field and nothing written; a dataset id without network is a clear exit-2 error."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import load_params
from selfreward.data.oasst import read_export

FIXTURE = Path(__file__).parent / "data" / "oasst_messages.jsonl"
ROWS = [json.loads(x) for x in FIXTURE.read_text().splitlines()]


def _fields(messages):
    return [(m.message_id, m.parent_id, m.role, m.text, m.lang, m.rank, m.deleted,
             m.review_result) for m in messages]


def test_jsonl_gzip_parquet_and_directory_read_the_same_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    gz = tmp_path / "export.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(FIXTURE.read_text())
    table_dir = tmp_path / "parquet"
    table_dir.mkdir()
    # Like the Hugging Face export: two splits, every column present, nulls where absent.
    columns = sorted({k for r in ROWS for k in r})
    for name, part in (("train-00000.parquet", ROWS[:30]), ("validation-00000.parquet",
                                                            ROWS[30:])):
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in part]),
                       table_dir / name)
    expected = _fields(read_export([str(FIXTURE)]))
    assert len(expected) == 42
    assert _fields(read_export([str(gz)])) == expected
    from_dir = read_export([str(table_dir)])
    assert sorted(_fields(from_dir)) == sorted(expected)
    assert from_dir[0].source == f"{table_dir / 'train-00000.parquet'}:1"
    assert {m.source for m in from_dir if m.message_id == "k0"} == {
        f"{table_dir / 'validation-00000.parquet'}:9"}


def test_float_rank_from_a_pandas_table_is_read_as_a_whole_number(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({**ROWS[1], "rank": 2.0}) + "\n" + json.dumps(ROWS[0]) + "\n")
    assert [m.rank for m in read_export([str(path)])] == [2, None]


def _bad(tmp_path, lineno: int, change) -> Path:
    rows = [dict(r) for r in ROWS]
    change(rows[lineno - 1])
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _without(key):
    return lambda row: row.pop(key)


def _set(key, value):
    return lambda row: row.update({key: value})


@pytest.mark.parametrize("lineno, change, message", [
    (9, _without("text"), "export.jsonl:9: field 'text': missing required field"),
    (3, _without("role"), "export.jsonl:3: field 'role': missing required field"),
    (1, _set("parent_id", "a5"), ("export.jsonl:1: field 'parent_id': parent_id cycle "
                                 "(a0 -> a5 -> a4 -> a1 -> a0)")),
    (5, _set("parent_id", "a4"), "field 'parent_id': parent_id cycle (a4 -> a4)"),
    (7, _set("role", "user"), ("export.jsonl:7: field 'role': unknown role 'user' "
                              "(expected prompter or assistant)")),
    (2, _set("rank", "first"), ("export.jsonl:2: field 'rank': rank must be a whole number >= 0 "
                               "or null, got 'first'")),
    (2, _set("rank", 1.5), "export.jsonl:2: field 'rank': rank must be a whole number"),
    (2, _set("deleted", "no"), "export.jsonl:2: field 'deleted': expected true, false or null"),
    (4, _set("message_id", "a1"), ("export.jsonl:4: field 'message_id': duplicate message_id "
                                  "'a1' (first at")),
    (6, lambda row: row.clear() or row.update({"message_tree_id": "t", "prompt": {}}),
     "export.jsonl:6: this is a message tree"),
])
def test_bad_export_exits_2_with_file_line_field_and_writes_nothing(tmp_path, lineno, change,
                                                                      message):
    export = _bad(tmp_path, lineno, change)
    out, metrics = tmp_path / "out" / "ift.jsonl", tmp_path / "out" / "ift.json"
    res = CliRunner().invoke(main, ["seed-ift", "--params", str(tmp_path / "p.yaml"),
                                    "--export", str(export), "--out", str(out),
                                    "--metrics", str(metrics)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.count("Error") == 1 and "Traceback" not in res.output
    assert not out.exists() and not metrics.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("lineno, change, message", [
    (3, _set("role", "moderator"), "export.jsonl:3: field 'role': unknown role 'moderator'"),
    (2, _set("rank", "2nd"), "export.jsonl:2: field 'rank': rank must be a whole number"),
])
def test_bad_export_stops_the_judge_command_too(tmp_path, lineno, change, message):
    """The real `selfreward` process: exit 2, one line naming file:line:field, no traceback;
    outputs a previous run left behind are gone, nothing new is written."""
    export = _bad(tmp_path, lineno, change)
    ift, out = tmp_path / "ift.jsonl", tmp_path / "out"
    ift.write_text('{"messages": [{"role": "user", "content": "Hi"}, '
                   '{"role": "assistant", "content": "Hello"}]}\n')
    out.mkdir()
    (out / "judgments.jsonl").write_text("stale\n")
    proc = subprocess.run([sys.executable, "-m", "selfreward.cli", "seed-judge",
                           "--params", str(tmp_path / "p.yaml"), "--export", str(export),
                           "--ift", str(ift), "--model", str(tmp_path / "no-model"),
                           "--out", str(out / "judgments.jsonl"),
                           "--metrics", str(out / "judge.json")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.iterdir())


@pytest.fixture(autouse=True)
def _params(tmp_path):
    (tmp_path / "p.yaml").write_text("oasst: {ift: {count: 2, seed: 2}}\n")


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_text(json.dumps(ROWS[0]) + '\n{"message_id": \n'),
     "x.jsonl:2: invalid JSON"),
    (lambda p: p.write_text("[1, 2]\n"), "x.jsonl:1: expected a JSON object"),
    (lambda p: p.write_text("\n"), "x.jsonl: no messages in the export"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08 not really gzip"), "x.jsonl.gz: cannot read"),
    (lambda p: p.write_text("{}"), "x.parquet: cannot read parquet"),
    (lambda p: p.write_text("a,b\n"), "x.csv: unsupported file type"),
])
def test_unreadable_files_exit_2(tmp_path, write, message):
    name = message.split(":")[0]
    path = tmp_path / name
    write(path)
    res = CliRunner().invoke(main, ["seed-ift", "--params", str(tmp_path / "p.yaml"),
                                    "--export", str(path), "--out", str(tmp_path / "o.jsonl"),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_parquet_without_a_required_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in ROWS[0].items() if k != "lang"}]),
                   path)
    with pytest.raises(UserError, match=r"x.parquet: field 'lang': missing column"):
        read_export([str(path)])


def test_dataset_id_without_network_is_a_clear_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on this machine; offline fails at once
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached copy to fall back on
    res = CliRunner().invoke(main, ["seed-ift", "--params", str(tmp_path / "p.yaml"),
                                    "--export", "OpenAssistant/oasst1",
                                    "--out", str(tmp_path / "o.jsonl"),
                                    "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 2, res.output
    assert "OpenAssistant/oasst1: not a local file or directory" in res.output
    assert "download the export" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl.gz: file not found"):
        read_export([str(tmp_path / "nope.jsonl.gz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jsonl, .jsonl.gz, .parquet file"):
        read_export([str(tmp_path / "empty")])


@pytest.mark.parametrize("text, message", [
    ("oasst: {eft: {max_score_share: 0}}\n", "field 'oasst.eft.max_score_share': must be in (0, 1]"),
    ("oasst: {eft: {eval_fraction: 1.0}}\n", "field 'oasst.eft.eval_fraction'"),
    ("oasst: {eft: {ties: sometimes}}\n", "field 'oasst.eft.ties': expected one of 'drop', 'allow'"),
    ("oasst: {judge: {min_replies: 1}}\n", "field 'oasst.judge.min_replies'"),
    ("oasst:\n  exports: {\"my export\": x.jsonl}\n", "p.yaml:2: field 'oasst.exports.my export'"),
    ("seed_data: {ift: 3}\n", "field 'seed_data.ift': expected string"),
    ("oasst:\n  exports: {o1: data/oasst/o1/train.parquet}\n",
     "p.yaml:2: field 'oasst.exports.o1': the export lies in data/oasst/o1/"),
])
def test_bad_oasst_params(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(UserError) as err:
        load_params(tmp_path / "p.yaml")
    assert message in str(err.value)


def test_shipped_profiles_validate():
    root = Path(__file__).resolve().parents[1]
    cpu, gpu = load_params(root / "params.yaml"), load_params(root / "params.gpu.yaml")
    assert cpu.oasst.exports == {} and cpu.seed_data.ift == "data/seed/ift.jsonl"
    assert gpu.oasst.exports and gpu.seed_data.ift.startswith("data/oasst/")
    assert gpu.oasst.ift.count == 3200
