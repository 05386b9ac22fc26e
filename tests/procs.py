"""Running a stage command as a subprocess, and killing it part-way (resume tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# -- local OpenAI-compatible servers (endpoint judge, alpaca_eval annotator, seed-judge) -----------

class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler with a JSON reply helper."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send_json(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def local_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """`handler` served on 127.0.0.1 (a free port) in a thread; `requests`, `fail_next` and
    `lock` on the server for handlers to record and script replies."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.requests, srv.fail_next, srv.lock = [], [], threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
