"""Running a stage command as a subprocess, and killing it part-way (resume tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def run_json(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run a stage command that succeeds; return the metrics JSON it wrote (its last argument)."""
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(Path(cmd[-1]).read_text())


def kill_when(cmd: list[str], env: dict, ready: Callable[[], bool], timeout: float) -> None:
    """Start the command and SIGKILL it as soon as `ready()` holds (it must not finish first)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "finished before it could be interrupted"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
