"""JSON Lines reading with file:line errors, and atomic writes (temp file + rename)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..config.errors import UserError


def read_text(path: str | Path, *, field: str | None = None) -> str:
    """A UTF-8 text file's content; bytes that are not UTF-8 are a UserError naming the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise UserError(f"invalid UTF-8 (byte 0x{data[exc.start]:02x} at column "
                        f"{exc.start - line_start + 1}); save the file as UTF-8", file=str(path),
                        line=data.count(b"\n", 0, exc.start) + 1, field=field) from None


def parse_json_line(text: str, path: str | Path, lineno: int) -> dict:
    """One JSON Lines line as an object; UserError naming file and line otherwise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON ({exc.msg} at column {exc.colno})",
                        file=str(path), line=lineno) from None
    if not isinstance(obj, dict):
        raise UserError(f"expected a JSON object, got {type(obj).__name__}",
                        file=str(path), line=lineno)
    return obj


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """Read a JSONL file into (line number, object) pairs; blank lines are skipped.

    Raises UserError naming the file and line for a missing/empty file, bad JSON or a non-object.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", file=str(path))
    rows: list[tuple[int, dict]] = []
    # Split on "\n" only: a JSON string may hold U+2028, which str.splitlines would cut at.
    for lineno, text in enumerate(read_text(path).split("\n"), start=1):
        if text.strip():
            rows.append((lineno, parse_json_line(text, path, lineno)))
    if not rows:
        raise UserError("file is empty (no JSON lines)", file=str(path))
    return rows


def require(obj: dict, key: str, kind: type | tuple[type, ...], *, file: str, line: int) -> Any:
    """Return obj[key], raising a file:line:field UserError if it is missing or of the wrong type."""
    if key not in obj:
        raise UserError("missing required field", file=file, line=line, field=key)
    value = obj[key]
    # bool is an int subclass; a score of `true` is a mistake, not a 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise UserError(f"expected {_kind_name(kind)}, got bool", file=file, line=line, field=key)
    if not isinstance(value, kind):
        raise UserError(f"expected {_kind_name(kind)}, got {type(value).__name__}",
                        file=file, line=line, field=key)
    if isinstance(value, str) and not value.strip():
        raise UserError("must be a non-empty string", file=file, line=line, field=key)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "string", "dict": "object", "list": "array"}.get(k.__name__, k.__name__)
                       for k in kinds)


def dumps_line(obj: Any) -> str:
    """One canonical JSON line (stable key order as given, UTF-8, no NaN)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a plain open() would follow the umask, and so must we.
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomically write rows as JSON Lines; returns the number of rows."""
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty JSON (DVC metrics files)."""
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """Atomically write a small CSV (DVC plots files)."""
    with atomic_file(path) as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; mkdir would follow the umask
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_outputs(*paths: str | Path) -> None:
    """Delete stale outputs before a stage runs so a failure never leaves an old file behind."""
    for p in map(Path, paths):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
