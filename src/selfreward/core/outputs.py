"""What every stage does with its outputs (stages/__init__.py): stale ones removed before it
starts, each written atomically, none left behind when it fails (resumable shards excepted, so
that a rerun resumes), the metrics written last and the finished shards removed."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io import remove_outputs, write_json
from .shards import finish

if TYPE_CHECKING:  # a type only: stages that run no engine import this module too
    from ..generation.engines.base import Engine


class StageOutputs:
    """A running stage's metrics: filled by the stage, written when it succeeds."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def record_engine(self, engine: Engine) -> None:
        """The engine's name as `engine`, its counters (prompts, generated and truncated
        tokens, seconds, throughput) as `engine_*` metrics, and the machine it ran on."""
        from .machine import machine_info

        self.metrics["engine"] = engine.name
        self.metrics.update({f"engine_{key}": value
                             for key, value in engine.stats.as_dict().items()})
        self.metrics["machine"] = machine_info()


def _discard(path: Path) -> None:
    # Every rank of a multi-process training run cleans up after a failure: whatever another
    # rank removed first is gone already, and the original error must not be masked.
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_outputs(*paths: str | Path | None, metrics: str | Path | None = None,
                  resumable: Sequence[str | Path] = ()) -> Iterator[StageOutputs]:
    """Run a stage writing `paths` (None: an optional output not asked for) and `metrics`.

    Before the block: the stale outputs are removed. After it: `outputs.metrics` is written to
    `metrics` (when given) and the shards of each `resumable` output are removed. When the block
    fails, every output it wrote is removed; shards stay, so that a rerun resumes them.
    """
    outputs = [Path(path) for path in (*paths, metrics) if path is not None]
    remove_outputs(*outputs)
    stage = StageOutputs()
    try:
        yield stage
        if metrics is not None:
            write_json(metrics, stage.metrics)
    except BaseException:
        for path in outputs:
            _discard(path)
        raise
    for output in resumable:
        finish(output)
