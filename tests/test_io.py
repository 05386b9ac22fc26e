"""Atomic writes (core/io.py): the written files and folders keep the mode the umask gives."""

from __future__ import annotations

import os
import stat

import pytest

from selfreward.core.io import atomic_dir, atomic_file, write_csv, write_json, write_jsonl


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_follow_the_umask(tmp_path, umask):
    # mkstemp makes 0600 files: a report a web server or a colleague cannot read (issue 25, 13).
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what an ordinary open() gives under this umask
    expected = 0o666 & ~umask
    assert _mode(plain) == expected
    write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    write_json(tmp_path / "m.json", {"a": 1})
    write_csv(tmp_path / "p.csv", ["a"], [[1]])
    with atomic_file(tmp_path / "chart.png", "wb") as fh:
        fh.write(b"\x89PNG")
    for name in ("rows.jsonl", "m.json", "p.csv", "chart.png"):
        assert _mode(tmp_path / name) == expected, name


def test_atomic_dir_follows_the_umask(tmp_path, umask):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _mode(tmp_path / "model") == _mode(plain) == 0o777 & ~umask
