"""Resumable sharded work: each shard is written atomically as it finishes; a rerun skips it.

A shard's seed depends only on its index (`item_seed`), so a resumed run produces the same rows
as an uninterrupted one. Shards live in `<output>.shards/` (git- and DVC-ignored) from the first
finished shard until the stage writes its final output. Their key records what made them (code,
params, templates, inputs, model, engine): a rerun under anything else discards them and says
what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from tqdm.auto import tqdm

from .io import atomic_file, dumps_line, write_json

if TYPE_CHECKING:  # a type only: training stages hash with this module but run no engine
    from ..generation.engines.base import EngineStats

log = logging.getLogger(__name__)


# What each part of a shard key stands for, for the message that says why shards were discarded.
KEY_PARTS = {"code": "code", "params": "params", "templates": "template text",
             "inputs": "inputs", "model": "model", "engine": "engine settings",
             "layout": "shard layout"}


def item_seed(seed: int, index: int) -> int:
    """The seed of shard, round or item `index` of a stage seeded with `seed`: distinct per index
    and the same in every run, so a resumed shard repeats an uninterrupted run."""
    return seed * 100_003 + index


def _plain(obj: Any) -> Any:
    # A params model hashes by its content (its fields' values), like the dict it was read from.
    return obj.model_dump(mode="json") if isinstance(obj, BaseModel) else str(obj)


def fingerprint(*parts: Any) -> str:
    """A short hash of everything that determines a stage's output (config, inputs, model)."""
    blob = json.dumps(parts, sort_keys=True, default=_plain).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@cache
def code_fingerprint(package: Path = Path(__file__).parents[1]) -> str:
    """A hash of every Python source file of the package: shards made by other code are redone."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def shard_key(*, params: Any, inputs: Any, templates: Sequence[str] = (), model: str = "",
              engine: Any = None) -> dict[str, str]:
    """The key of a stage's shards: one hash per part (KEY_PARTS), so that a mismatch names it.

    `params` are those that shape the output, `templates` the texts the prompts are made from.
    """
    return {"code": code_fingerprint(), "params": fingerprint(params),
            "templates": fingerprint(list(templates)), "inputs": fingerprint(inputs),
            "model": model, "engine": fingerprint(engine)}


def model_fingerprint(model_dir: str | Path) -> str:
    """Cheap identity of a checkpoint: names, sizes and mtimes of its files."""
    p = Path(model_dir)
    return fingerprint(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                              for f in p.iterdir() if f.is_file()) if p.is_dir() else str(p))


def shard_dir(output: str | Path) -> Path:
    """Where the shards of `output` live until it is complete."""
    return Path(str(output) + ".shards")


def finished_shards(output: str | Path) -> list[Path]:
    """The shard files of `output` written so far, in order (a rerun checks each)."""
    return sorted(shard_dir(output).glob("[0-9]*.jsonl"))


class ShardStore:
    """Shard files for one output, invalidated when any part of the key changes.

    The folder is made with the first saved shard, so a stage that fails before finishing one
    leaves nothing behind; a folder without shards (an older run's) is removed.
    """

    def __init__(self, output: str | Path, key: str | dict[str, str], layout: Any = None) -> None:
        """`layout`: what decides which items each shard holds (e.g. the shard size)."""
        self.dir = shard_dir(output)
        self.key = {**(key if isinstance(key, dict) else {"key": key}),
                    **({"layout": fingerprint(layout)} if layout is not None else {})}
        self.resumed = 0
        self.discarded = 0
        if not self.dir.exists():
            return
        shards = finished_shards(output)
        try:
            old = json.loads((self.dir / "meta.json").read_text())["key"]
        except (OSError, ValueError, KeyError):
            old = None
        if shards and old != self.key:
            changed = ([KEY_PARTS.get(k, k) for k in self.key if old.get(k) != self.key[k]]
                       if isinstance(old, dict) else ["an unreadable key"])
            log.warning("discarding %d shard(s) in %s: made with other %s", len(shards),
                        self.dir, ", ".join(changed))
        if not shards or old != self.key:
            shutil.rmtree(self.dir)

    def path(self, index: int) -> Path:
        return self.dir / f"{index:05d}.jsonl"

    def load(self, index: int, expected: int | list | None = None) -> list[dict] | None:
        """Rows of a finished shard, or None if absent or corrupt (a corrupt one is deleted).

        `expected` is the row count or the shard's items (then each row's `id` is checked too,
        where both carry one); a shard that fails any check is redone, never merged.
        """
        path = self.path(index)
        if not path.exists():
            return None
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
            if lines[-1] != "":
                raise ValueError("partial last line")
            rows = [json.loads(line) for line in lines[:-1]]
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError("a line is not a JSON object")
            if isinstance(expected, int) and len(rows) != expected:
                raise ValueError(f"{len(rows)} rows, expected {expected}")
            if isinstance(expected, list):
                _check_rows(rows, expected)
        except (OSError, ValueError) as exc:
            log.warning("discarding corrupt shard %s (%s); redoing it", path, exc)
            path.unlink(missing_ok=True)
            self.discarded += 1
            return None
        self.resumed += 1
        return rows

    def save(self, index: int, rows: list[dict]) -> None:
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            write_json(self.dir / "meta.json", {"key": self.key})
        with atomic_file(self.path(index)) as fh:
            for row in rows:
                fh.write(dumps_line(row))

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_rows(rows: list[dict], items: list) -> None:
    """Raise ValueError unless rows match items one to one (count, and ids where present)."""
    if len(rows) != len(items):
        raise ValueError(f"{len(rows)} rows, expected {len(items)}")
    for row, item in zip(rows, items):
        if isinstance(item, dict) and "id" in item and row.get("id", item["id"]) != item["id"]:
            raise ValueError(f"row id {row.get('id')!r} where {item['id']!r} was expected")


def run_sharded(items: Sequence[Any], output: str | Path, key: str | dict[str, str],
                shard_size: int, process: Callable[[list[Any], int], list[dict]], desc: str,
                stats: EngineStats | None = None) -> tuple[list[dict], dict]:
    """Apply `process(chunk, shard_index)` shard by shard, resuming finished shards.

    `process` must return one row per item. Returns all rows in order and resume statistics.
    With the engine's `stats`, the progress bar shows generated tokens/s next to items/s.
    """
    # Shard k holds items [k*size, (k+1)*size): another size or item count is another layout.
    store = ShardStore(output, key, layout=(shard_size, len(items)))
    rows: list[dict] = []
    chunks = [list(items[i:i + shard_size]) for i in range(0, len(items), shard_size)]
    tokens0, t0 = (stats.generated_tokens if stats else 0), time.perf_counter()
    with tqdm(total=len(items), desc=desc, unit="item") as bar:
        for k, chunk in enumerate(chunks):
            done = store.load(k, expected=chunk)
            if done is None:
                done = process(chunk, k)
                try:
                    _check_rows(done, chunk)
                except ValueError as exc:
                    raise RuntimeError(f"shard {k}: {exc}") from None
                store.save(k, done)
            rows.extend(done)
            bar.update(len(chunk))
            if stats is not None:
                rate = (stats.generated_tokens - tokens0) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(tok_s=f"{rate:.0f}")
    result = {"shards": len(chunks), "shards_resumed": store.resumed,
              "shards_discarded": store.discarded}
    if store.resumed or store.discarded:
        log.info("%s: resumed %d of %d shards, discarded %d corrupt", desc, store.resumed,
                 len(chunks), store.discarded)
    return rows, result


def finish(output: str | Path) -> None:
    """Remove the shard directory once the final output is written."""
    shutil.rmtree(shard_dir(output), ignore_errors=True)
