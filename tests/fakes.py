"""A deterministic engine for stage unit tests: replies come from a function of the chat."""

from __future__ import annotations

from collections.abc import Callable

from selfreward.generation.engines.base import EngineStats, Sampling


class ScriptedEngine:
    """Implements the Engine interface; `reply(chat_text, k, seed)` gives the k-th sample."""

    name = "scripted"

    def __init__(self, reply: Callable[[str, int, int], str],
                 probs: Callable[[str], list[float]] | None = None) -> None:
        self.reply, self.probs = reply, probs
        self.stats = EngineStats()
        self.calls: list[tuple[int, Sampling]] = []

    def generate(self, chats, sampling: Sampling):
        self.calls.append((len(chats), sampling))
        return [[self.reply(c[-1]["content"], k, sampling.seed) for k in range(sampling.n)]
                for c in chats]

    def digit_probs(self, chats, assistant_prefix):
        return [self.probs(c[-1]["content"]) for c in chats]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self):
        pass
