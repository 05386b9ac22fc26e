"""Head-to-head judging: which of two answers to a prompt is better, asked in both orders (a
verdict that flips with the order is a tie). A local checkpoint (logprob: P("1") vs P("2") after
"Winner: ", or greedy generation parsed) or an OpenAI-compatible endpoint."""

from __future__ import annotations

import contextlib
import re

from ..config.params import Params
from ..evaluation.metrics import combine_orders
from ..generation.engines import Sampling, open_engine
from ..templates import fill, user_template
from .endpoint import ChatEndpoint
from .fixed import make_endpoint

PAIRWISE_PREFIX = "Winner: "  # the assistant prefix the logprob pairwise judge scores from


PAIRWISE_FIELDS = ("prompt", "response_1", "response_2")


_WINNER = re.compile(r"winner\s*[:=]?\s*\**\s*(?:response\s*)?([12])(?!\d)", re.IGNORECASE)


def pairwise_template(path: str | None = None) -> str:
    """The head-to-head prompt: the file at `path` (eval.pairwise_template), or the packaged
    templates/pairwise_judge.txt; it must contain {prompt}, {response_1} and {response_2}."""
    return user_template(path, "pairwise_judge", PAIRWISE_FIELDS, "eval.pairwise_template")


def pairwise_messages(prompt: str, response_1: str, response_2: str,
                      text: str | None = None) -> list[dict]:
    """The user turn asking a judge which of two responses to `prompt` is better (`text`: the
    pairwise template; default the packaged one)."""
    content = fill(text if text is not None else pairwise_template(), prompt=prompt.strip(),
                   response_1=response_1.strip(), response_2=response_2.strip())
    return [{"role": "user", "content": content}]


def parse_winner(text: str) -> int | None:
    """The last `Winner: 1|2` in a judge's reply, or None."""
    found = _WINNER.findall(text)
    return int(found[-1]) if found else None


class LocalPairwiseJudge:
    """A fixed local model as pairwise judge: logprob (P('1') vs P('2') after 'Winner: ') or
    greedy generation parsed for 'Winner: n'."""

    def __init__(self, engine, mode: str, max_new_tokens: int, seed: int) -> None:
        self.engine, self.mode, self.max_new_tokens, self.seed = engine, mode, max_new_tokens, seed

    def judge(self, chats: list[list[dict]]) -> list[dict]:
        """Per chat: verdict (1, 2 or None), p_first = P(response 1 better) when known, raw text."""
        if not chats:
            return []
        if self.mode == "logprob":
            out = []
            for probs in self.engine.digit_probs(chats, PAIRWISE_PREFIX):
                p1, p2 = probs[1], probs[2]
                verdict = 1 if p1 > p2 else 2 if p2 > p1 else None
                out.append({"verdict": verdict,
                            "p_first": round(p1 / (p1 + p2), 6) if p1 + p2 > 0 else None})
            return out
        texts = self.engine.generate(chats, Sampling(n=1, temperature=0.0,
                                                     max_new_tokens=self.max_new_tokens,
                                                     seed=self.seed))
        return [{"verdict": parse_winner(t[0]), "p_first": None, "raw": t[0]} for t in texts]


class EndpointPairwiseJudge:
    """An OpenAI-compatible chat endpoint as pairwise judge (greedy, reply parsed)."""

    def __init__(self, endpoint: ChatEndpoint, max_new_tokens: int, seed: int) -> None:
        self.endpoint, self.max_new_tokens, self.seed = endpoint, max_new_tokens, seed

    def judge(self, chats: list[list[dict]]) -> list[dict]:
        texts = self.endpoint.complete_many(chats, max_tokens=self.max_new_tokens, seed=self.seed)
        return [{"verdict": parse_winner(t), "p_first": None, "raw": t} for t in texts]


def make_pairwise_judge(params: Params, judge_dir: str | None, stack: contextlib.ExitStack):
    """The configured fixed judge and a description of it (for metrics, without secrets); a
    local judge's engine closes with `stack`."""
    eval_params = params.eval
    if eval_params.judge_endpoint:
        endpoint = make_endpoint(params)
        return (EndpointPairwiseJudge(endpoint, eval_params.judge_max_new_tokens,
                                      eval_params.seed),
                {"kind": "endpoint", "url": endpoint.url, "model": eval_params.endpoint_model})
    judge_dir = judge_dir or eval_params.judge
    engine = stack.enter_context(open_engine(judge_dir, params.engine, seed=eval_params.seed))
    return (LocalPairwiseJudge(engine, eval_params.pairwise_mode,
                               eval_params.judge_max_new_tokens, eval_params.seed),
            {"kind": "local", "model": judge_dir, "mode": eval_params.pairwise_mode})


def judge_both_orders(judge, items: list[dict], text: str | None = None) -> list[dict]:
    """Judge each {prompt, x, y} with x (the candidate's answer) shown first, then second;
    combine the two verdicts. `text`: the pairwise template."""
    chats = []
    for item in items:
        chats.append(pairwise_messages(item["prompt"], item["x"], item["y"], text))
        chats.append(pairwise_messages(item["prompt"], item["y"], item["x"], text))
    verdicts = judge.judge(chats)
    out = []
    for k, item in enumerate(items):
        first, second = verdicts[2 * k], verdicts[2 * k + 1]
        rec = {**item, "verdict_x_first": first["verdict"],
               "verdict_x_second": second["verdict"],
               "outcome": combine_orders(first["verdict"], second["verdict"])}
        if first["p_first"] is not None and second["p_first"] is not None:
            rec["p_x"] = round((first["p_first"] + 1 - second["p_first"]) / 2, 6)
        if "raw" in first:
            rec["raw_x_first"], rec["raw_x_second"] = first.get("raw"), second.get("raw")
        out.append(rec)
    return out
