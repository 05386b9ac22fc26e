"""A small OpenAI-compatible chat-completions client (stdlib only) for an external judge.

The API key comes from the environment variable *named* by a param (e.g. OPENAI_API_KEY). It
is sent only in the Authorization header and kept out of logs, errors, metrics and outputs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .engines.base import EngineStats, Sampling
from .errors import UserError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ChatEndpoint:
    """POST {base_url}/chat/completions; retries rate limits and server errors with backoff."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *,
                 timeout: float = 60.0, retries: int = 3, concurrency: int = 4,
                 backoff: float = 1.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"must be an http(s) URL, got {base_url!r}", field="eval.judge_endpoint")
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self._key: str | None = None
        if api_key_env:
            self._key = os.environ.get(api_key_env) or None
            if self._key is None:
                raise UserError(f"environment variable {api_key_env} (the API key for "
                                "eval.judge_endpoint) is not set; export it, or set "
                                "eval.api_key_env: null for a server without a key",
                                field="eval.api_key_env")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency = max(1, concurrency)
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0}
        self._lock = threading.Lock()  # usage is updated from worker threads

    def __repr__(self) -> str:  # never show the key
        return f"ChatEndpoint(url={self.url!r}, model={self.model!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = self._scrub(exc.read().decode("utf-8", "replace")[:300])
                if exc.code not in RETRY_STATUS or attempt == self.retries:
                    raise UserError(f"judge endpoint {self.url} answered HTTP {exc.code}: "
                                    f"{detail}", field="eval.judge_endpoint") from None
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise UserError(f"judge endpoint {self.url} unreachable: "
                                    f"{self._scrub(str(getattr(exc, 'reason', exc)))}",
                                    field="eval.judge_endpoint") from None
                reason = type(exc).__name__
            except json.JSONDecodeError:
                raise UserError(f"judge endpoint {self.url} returned invalid JSON",
                                field="eval.judge_endpoint") from None
            with self._lock:
                self.usage["retries"] += 1
            delay = self.backoff * 2 ** attempt
            log.warning("judge endpoint: %s, retry %d/%d in %.1fs", reason, attempt + 1,
                        self.retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0,
                 seed: int | None = None) -> str:
        """The assistant's reply to one chat."""
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens}
        if seed is not None:
            body["seed"] = seed
        reply = self._post(body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"judge endpoint {self.url} returned no choices[0].message.content",
                            field="eval.judge_endpoint") from None
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        with self._lock:
            self.usage["requests"] += 1
            for k in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(k), int):
                    self.usage[k] += usage[k]
        return content or ""

    def complete_many(self, chats: list[list[dict]], *, max_tokens: int,
                      temperature: float = 0.0, seed: int | None = None) -> list[str]:
        """Replies to many chats, `concurrency` requests at a time, in input order."""
        if not chats:
            return []
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda c: self.complete(c, max_tokens=max_tokens,
                                                         temperature=temperature, seed=seed),
                                 chats))


class EndpointEngine:
    """A ChatEndpoint behind the generation-engine interface, so stage code written for local
    engines (e.g. judge_rows in sample mode) runs against the endpoint unchanged."""

    name = "endpoint"

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint
        self.stats = EngineStats()

    def generate(self, chats: list[list[dict]], sampling: Sampling) -> list[list[str]]:
        """`sampling.n` replies per chat (top_p is not sent: not every server takes it)."""
        start = time.perf_counter()
        # Sample k of every chat carries its own seed: a server that honours `seed` would
        # otherwise return the same judgment n times.
        per_sample = [self.endpoint.complete_many(chats, max_tokens=sampling.max_new_tokens,
                                                  temperature=sampling.temperature,
                                                  seed=sampling.seed + k)
                      for k in range(sampling.n)]
        self.stats.prompts += len(chats)
        self.stats.seconds += time.perf_counter() - start
        return [[per_sample[k][i] for k in range(sampling.n)] for i in range(len(chats))]

    def digit_probs(self, chats: list[list[dict]], assistant_prefix: str) -> list[list[float]]:
        raise UserError("an endpoint judge writes sampled judgments only: use sample mode")

    def close(self) -> None:
        pass
