"""Open Assistant exports (oasst1, oasst2) in the flat message format, validated with file:line
errors, and the first conversational turns the seed-data builders draw from.

One message per row: `message_id`, `parent_id` (null or absent for a tree's first prompt),
`message_tree_id`, `role` (prompter | assistant), `text`, `lang`, `rank` (0 = the replies' best by
human ranking; null when unranked), `deleted`, `review_result`. Sources: `.jsonl`, `.jsonl.gz`,
`.parquet` files, a directory of them, or a `datasets` id (needs the network).
"""

from __future__ import annotations

import gzip
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config.errors import UserError
from ..core.io import parse_json_line

log = logging.getLogger(__name__)

ROLES = ("prompter", "assistant")
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
COLUMNS = ("message_id", "parent_id", "message_tree_id", "role", "text", "lang", "rank",
           "deleted", "review_result")
REQUIRED = ("message_id", "role", "text", "lang")
_DATASET_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# Why a message is not used, checked in this order; every message read lands in exactly one
# bucket (or is used), so the counts add up to `messages_read`.
SKIP_REASONS = ("orphaned", "multi_turn_skipped", "other_language", "deleted", "failed_review",
                "empty_text", "root_not_prompter", "prompt_skipped", "reply_not_assistant")


@dataclass
class Message:
    message_id: str
    parent_id: str | None
    role: str
    text: str
    lang: str | None
    rank: int | None
    deleted: bool
    review_result: bool | None
    file: str  # where it was read, for error messages
    line: int

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class FirstTurn:
    """A tree's opening prompt and the usable assistant replies to it, in export order."""

    message_id: str
    text: str
    source: str
    replies: list[Message] = field(default_factory=list)


def prompt_key(text: str) -> str:
    """What makes two prompts the same prompt: their words, ignoring case and spacing."""
    return " ".join(text.split()).casefold()


# -- reading ---------------------------------------------------------------------------------------
def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, text in enumerate(fh, start=1):
                if text.strip():
                    yield lineno, parse_json_line(text, path, lineno)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:  # e.g. a cut .gz download
        raise UserError(f"cannot read: {exc}", file=str(path)) from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        present = [c for c in COLUMNS if c in schema.names]
        for name in REQUIRED:
            if name not in present:
                raise UserError("missing column", file=str(path), field=name)
        rows = pq.read_table(path, columns=present).to_pylist()
    except (OSError, pa.ArrowException) as exc:  # e.g. not a parquet file, a cut download
        raise UserError(f"cannot read parquet: {exc}", file=str(path)) from None
    yield from enumerate(rows, start=1)  # "line" = 1-based row number


def _dataset_rows(name: str) -> Iterator[tuple[str, int, dict]]:
    try:
        import datasets

        loaded = datasets.load_dataset(name)
    # datasets raises many types (ConnectionError offline, FileNotFoundError, ValueError, hub
    # errors); all of them mean the same to the user: this id could not be loaded here.
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"not a local file or directory, and loading it as a dataset id through "
                        f"`datasets` failed ({first}). On a machine without network, download "
                        "the export elsewhere (docs/data.md, Open Assistant) and pass "
                        "the file", file=name) from None
    for split in sorted(loaded):  # e.g. oasst1's train and validation together
        for row, obj in enumerate(loaded[split], start=1):
            yield f"{name}[{split}]", row, obj


def export_files(source: str) -> list[Path]:
    """The export files a source names: the file itself, or the supported files in a directory."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(FILE_SUFFIXES))
        if not files:
            raise UserError(f"no {', '.join(FILE_SUFFIXES)} file in this directory", file=source)
        return files
    if not path.name.endswith(FILE_SUFFIXES):
        raise UserError(f"unsupported file type (expected {', '.join(FILE_SUFFIXES)})",
                        file=source)
    return [path]


def _rows(source: str) -> Iterator[tuple[str, int, dict]]:
    path = Path(source)
    if not path.exists():
        if _DATASET_ID.match(source) and not source.endswith(FILE_SUFFIXES):
            yield from _dataset_rows(source)
            return
        raise UserError("file not found", file=source)
    for file in export_files(source):
        reader = _parquet_rows if file.name.endswith(".parquet") else _jsonl_rows
        for line, obj in reader(file):
            yield str(file), line, obj


def _optional(obj: dict, key: str, kind: type, file: str, line: int):
    value = obj.get(key)
    if value is None or (kind is bool and isinstance(value, bool)) or \
            (kind is str and isinstance(value, str)):
        return value
    name = {"bool": "true, false or null", "str": "a string or null"}[kind.__name__]
    raise UserError(f"expected {name}, got {type(value).__name__} ({value!r})", file=file,
                    line=line, field=key)


def _rank(obj: dict, file: str, line: int) -> int | None:
    value = obj.get("rank")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None  # unranked (pandas-written parquet stores a missing rank as NaN)
    # a float rank like 2.0 comes from tables whose rank column had nulls
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"rank must be a whole number >= 0 or null, got {value!r}", file=file,
                        line=line, field="rank")
    return value


def _message(obj: dict, file: str, line: int) -> Message:
    if "message_id" not in obj and "prompt" in obj and "message_tree_id" in obj:
        raise UserError("this is a message tree (a *.trees.jsonl export); use the flat "
                        "*.messages.jsonl(.gz) or parquet export", file=file, line=line)
    for key in REQUIRED:
        if key not in obj:
            raise UserError("missing required field", file=file, line=line, field=key)
    message_id = obj["message_id"]
    if not isinstance(message_id, str) or not message_id:
        raise UserError(f"expected a non-empty string, got {message_id!r}", file=file, line=line,
                        field="message_id")
    role = obj["role"]
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (expected prompter or assistant)", file=file,
                        line=line, field="role")
    if not isinstance(obj["text"], str):
        raise UserError(f"expected a string, got {type(obj['text']).__name__}", file=file,
                        line=line, field="text")
    _optional(obj, "message_tree_id", str, file, line)  # validated; trees come from parent links
    return Message(message_id=message_id,
                   parent_id=_optional(obj, "parent_id", str, file, line),
                   role=role, text=obj["text"], lang=_optional(obj, "lang", str, file, line),
                   rank=_rank(obj, file, line),
                   deleted=bool(_optional(obj, "deleted", bool, file, line)),
                   review_result=_optional(obj, "review_result", bool, file, line),
                   file=file, line=line)


def read_export(sources: list[str]) -> list[Message]:
    """Every message of the given exports, validated (file:line:field errors, exit code 2)."""
    if not sources:
        raise UserError("no Open Assistant export given (--export FILE|DIR|DATASET_ID)")
    messages: list[Message] = []
    seen: dict[str, str] = {}
    for source in sources:
        for file, line, obj in _rows(source):
            msg = _message(obj, file, line)
            if msg.message_id in seen:
                raise UserError(f"duplicate message_id {msg.message_id!r} (first at "
                                f"{seen[msg.message_id]})", file=file, line=line,
                                field="message_id")
            seen[msg.message_id] = msg.source
            messages.append(msg)
    if not messages:
        raise UserError("no messages in the export", file=", ".join(sources))
    log.info("read %d Open Assistant messages from %s", len(messages), ", ".join(sources))
    return messages


# -- trees -----------------------------------------------------------------------------------------
def _positions(messages: list[Message]) -> dict[str, tuple[int, str] | None]:
    """Depth (0 = the tree's prompt) and root id of every message; None when an ancestor is
    missing from the export. A parent_id cycle is an error naming a message on it."""
    by_id = {m.message_id: m for m in messages}
    where: dict[str, tuple[int, str] | None] = {}
    for m in messages:
        chain: list[Message] = []
        on_chain: set[str] = set()
        cur = m
        while cur.message_id not in where:
            if cur.message_id in on_chain:
                loop = " -> ".join([c.message_id for c in chain] + [cur.message_id])
                raise UserError(f"parent_id cycle ({loop})", file=cur.file, line=cur.line,
                                field="parent_id")
            chain.append(cur)
            on_chain.add(cur.message_id)
            if cur.parent_id is None:
                top: tuple[int, str] | None = (-1, cur.message_id)
                break
            parent = by_id.get(cur.parent_id)
            if parent is None:
                top = None
                break
            cur = parent
        else:
            top = where[cur.message_id]
        for node in reversed(chain):  # from the top of the chain down to m
            top = None if top is None else (top[0] + 1, top[1])
            where[node.message_id] = top
    return where


def _skip_reason(message: Message, lang: str) -> str | None:
    if message.lang != lang:
        return "other_language"
    if message.deleted:
        return "deleted"
    if message.review_result is False:
        return "failed_review"
    if not message.text.strip():
        return "empty_text"
    return None


def first_turns(messages: list[Message], lang: str) -> tuple[list[FirstTurn], dict]:
    """Usable first-turn prompts in `lang` with their usable assistant replies, and the counts:
    each message read is used or skipped for exactly one reason (SKIP_REASONS, in order)."""
    where = _positions(messages)
    counts: Counter = Counter()
    turns: dict[str, FirstTurn] = {}
    for m in messages:  # prompts first: a reply's fate depends on its prompt's
        pos = where[m.message_id]
        if pos is None or pos[0] != 0:
            continue
        reason = _skip_reason(m, lang) or (None if m.role == "prompter" else "root_not_prompter")
        if reason:
            counts[reason] += 1
        else:
            turns[m.message_id] = FirstTurn(m.message_id, m.text.strip(), m.source)
    for m in messages:
        pos = where[m.message_id]
        if pos is not None and pos[0] == 0:
            continue
        if pos is None:
            reason = "orphaned"
        elif pos[0] >= 2:
            reason = "multi_turn_skipped"
        else:
            reason = _skip_reason(m, lang)
            if reason is None and pos[1] not in turns:
                reason = "prompt_skipped"
            if reason is None and m.role != "assistant":
                reason = "reply_not_assistant"
        if reason:
            counts[reason] += 1
        else:
            turns[pos[1]].replies.append(m)
    kept, seen = [], set()
    for turn in turns.values():  # the same question asked in two trees is one prompt
        key = prompt_key(turn.text)
        if key in seen:
            counts["duplicate_prompts"] += 1
            continue
        seen.add(key)
        kept.append(turn)
    roots = sum(1 for pos in where.values() if pos is not None and pos[0] == 0)
    stats = {"messages_read": len(messages), "trees": roots, "lang": lang,
             **{r: counts[r] for r in SKIP_REASONS},
             "prompts_used": len(turns), "replies_used": sum(len(t.replies) for t in turns.values()),
             "duplicate_prompts": counts["duplicate_prompts"], "prompts": len(kept)}
    log.info("Open Assistant: %d messages, %d trees, %d usable %s first-turn prompts; skipped %s",
             len(messages), roots, len(kept), lang,
             {r: counts[r] for r in SKIP_REASONS if counts[r]})
    return kept, stats
