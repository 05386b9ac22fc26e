"""A small OpenAI-compatible chat-completions client (stdlib only) for an external judge.

The API key comes from the environment variable *named* by a param (e.g. OPENAI_API_KEY). It
is sent only in the Authorization header and kept out of logs, errors, metrics and outputs.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..config.errors import UserError
from ..generation.engines.base import EngineStats, Sampling

if TYPE_CHECKING:
    from ..config.params import EndpointSettings

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_DELAY = 60.0  # seconds: the longest wait between two attempts, Retry-After included


def retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def retry_delay(attempt: int, backoff: float, wait: float | None,
                rng: random.Random) -> float:
    """Seconds before retry `attempt` + 1: what the server's Retry-After asks for, else
    exponential backoff with jitter, uniform in [b/2, b] for b = backoff * 2**attempt, so that
    clients throttled together do not retry in step; at most MAX_DELAY."""
    if wait is not None:
        return min(wait, MAX_DELAY)
    ceiling = min(backoff * 2 ** attempt, MAX_DELAY)
    return rng.uniform(ceiling / 2, ceiling)


class ChatEndpoint:
    """POST {base_url}/chat/completions; retries rate limits and server errors with exponential
    backoff and jitter, or after the time a `Retry-After` header asks for."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *,
                 timeout: float = 60.0, retries: int = 3, concurrency: int = 4,
                 backoff: float = 1.0, url_key: str = "eval.judge_endpoint") -> None:
        # errors name the params key the URL came from (eval.judge_endpoint,
        # oasst.judge.endpoint) and its section's api_key_env
        self.url_key = url_key
        key_field = url_key.rsplit(".", 1)[0] + ".api_key_env"
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"must be an http(s) URL, got {base_url!r}", field=url_key)
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self._key: str | None = None
        if api_key_env:
            self._key = os.environ.get(api_key_env) or None
            if self._key is None:
                raise UserError(f"environment variable {api_key_env} (the API key for "
                                f"{url_key}) is not set; export it, or set "
                                f"{key_field}: null for a server without a key",
                                field=key_field)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency = max(1, concurrency)
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0}
        self._lock = threading.Lock()  # usage is updated from worker threads
        self._random = random.Random()  # jitter: unseeded, so clients spread out

    @classmethod
    def from_settings(cls, url: str, settings: EndpointSettings, url_key: str) -> ChatEndpoint:
        """The endpoint at `url` with a params section's settings (key read from the env
        variable it names); `url_key` is where the URL came from, for error messages."""
        return cls(url, settings.endpoint_model, settings.api_key_env,
                   timeout=settings.endpoint_timeout, retries=settings.endpoint_retries,
                   concurrency=settings.endpoint_concurrency, url_key=url_key)

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
                                    f"{detail}", field=self.url_key) from None
                reason = f"HTTP {exc.code}"
                wait = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise UserError(f"judge endpoint {self.url} unreachable: "
                                    f"{self._scrub(str(getattr(exc, 'reason', exc)))}",
                                    field=self.url_key) from None
                reason, wait = type(exc).__name__, None
            except json.JSONDecodeError:
                raise UserError(f"judge endpoint {self.url} returned invalid JSON",
                                field=self.url_key) from None
            with self._lock:
                self.usage["retries"] += 1
            delay = retry_delay(attempt, self.backoff, wait, self._random)
            log.warning("judge endpoint: %s, retry %d/%d in %.1fs%s", reason, attempt + 1,
                        self.retries, delay, " (Retry-After)" if wait is not None else "")
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
                            field=self.url_key) from None
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
