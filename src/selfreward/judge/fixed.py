"""The fixed evaluation judge (eval.judge, or eval.judge_endpoint) scoring answers pointwise with
the pipeline's rubric: one answer at a time, so there is no slot for it to be biased towards."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..config.params import Params
from ..core.shards import model_fingerprint
from ..generation.engines import open_engine
from .endpoint import ChatEndpoint
from .pointwise import score_with_judge
from .rubric import judge_messages, judge_template
from .scores import parse_score


def make_endpoint(params: Params) -> ChatEndpoint:
    """The OpenAI-compatible endpoint of eval.* (key read from the env variable it names)."""
    return ChatEndpoint.from_settings(params.eval.judge_endpoint, params.eval,
                                      "eval.judge_endpoint")


class LocalPointwiseJudge:
    """A local checkpoint scoring with the judge stage's own code (judge.* params)."""

    def __init__(self, model_dir: str, params: Params) -> None:
        self.params = params
        self.model = model_fingerprint(model_dir)
        self._engine = contextlib.ExitStack()
        self.engine = self._engine.enter_context(
            open_engine(model_dir, params.engine, seed=params.judge.seed))

    def score(self, prompts: list[str], answers: list[str], shards_for: Path
              ) -> list[float | None]:
        means = score_with_judge(self.engine, prompts, [[a] for a in answers], self.params.judge,
                                 self.params.engine.shard_size, shards_for, self.model)
        return [m[0] for m in means]

    def close(self) -> None:
        self._engine.close()


class EndpointPointwiseJudge:
    """An endpoint answering the judge template; the last `Score: n` of its reply is parsed."""

    def __init__(self, endpoint: ChatEndpoint, max_new_tokens: int, seed: int,
                 rubric: str) -> None:
        self.endpoint, self.max_new_tokens, self.seed = endpoint, max_new_tokens, seed
        self.rubric = rubric

    def score(self, prompts: list[str], answers: list[str], shards_for: Path
              ) -> list[float | None]:
        chats = [judge_messages(prompt, answer, self.rubric)
                 for prompt, answer in zip(prompts, answers)]
        texts = self.endpoint.complete_many(chats, max_tokens=self.max_new_tokens,
                                            seed=self.seed)
        return [parse_score(t) for t in texts]

    def close(self) -> None:
        pass


def make_pointwise_judge(params: Params, judge_dir: str | None = None):
    """(judge, description without secrets): the endpoint when eval.judge_endpoint is set, else
    the local checkpoint `judge_dir` (default eval.judge). Close it after use."""
    eval_params = params.eval
    if eval_params.judge_endpoint:
        endpoint = make_endpoint(params)
        return (EndpointPointwiseJudge(endpoint, eval_params.judge_max_new_tokens,
                                       eval_params.seed, judge_template(params.judge.template)),
                {"kind": "endpoint", "url": endpoint.url, "model": eval_params.endpoint_model})
    judge_dir = judge_dir or eval_params.judge
    return LocalPointwiseJudge(judge_dir, params), {"kind": "local", "model": judge_dir}
