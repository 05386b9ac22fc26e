"""Stage `evaluate` (iteration t): did M_t+1 move, and is it better?

- answers changed: share of held-out prompts whose greedy answer differs, M_t -> M_t+1;
- frozen-judge reward gain: judge M_t's score of M_t+1's answers minus its score of M_t's own
  answers, paired by prompt, with a bootstrap 95 % interval (what DPO optimised for);
- fixed-judge pointwise scores (eval.judge, one answer at a time): M_t+1 minus M_t and M1;
- head-to-head vs M_t and vs M1, judged in both orders by the fixed judge: a verdict that flips
  with the order is a tie; win rates with bootstrap intervals and the judge's position bias.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from ..endpoint import ChatEndpoint
from ..engines import Sampling, engine_key, open_engine
from ..errors import UserError
from ..evaluation import (
    answers_changed,
    combine_orders,
    paired_gain,
    position_bias,
    win_rate_ci,
    win_rates,
)
from ..io import remove_outputs, write_json, write_jsonl
from ..params import Params
from ..shards import finish, model_fingerprint, run_sharded, shard_key
from ..templates import fill, user_template
from .eval_answers import FIXED_SCORES, RELEVANCE, load_eval_dir, load_scores, model_section
from .fixed_judge import LocalPointwiseJudge, make_endpoint

log = logging.getLogger(__name__)

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


def comparison_items(opponent: str, candidate: dict[str, dict],
                     other: dict[str, dict]) -> list[dict]:
    """Items pitting the candidate's answer (x) against the opponent's (y) for every prompt both
    answered (both: answers by prompt id)."""
    ids = [i for i in candidate if i in other]
    if len(ids) < max(len(candidate), len(other)):
        log.warning("head-to-head vs %s: only %d shared prompts (%d vs %d answers)", opponent,
                    len(ids), len(candidate), len(other))
    if not ids:
        raise UserError(f"no eval prompt was answered by both models (vs {opponent}); "
                        "regenerate the eval answers with the same eval params")
    return [{"opponent": opponent, "id": i, "prompt": candidate[i]["prompt"],
             "x": candidate[i]["answer"], "y": other[i]["answer"]} for i in ids]


def outcome_summary(records: list[dict], seed: int = 0) -> dict:
    """Win/tie/loss for x with the win rate's bootstrap interval, plus position-bias and
    soft-preference diagnostics."""
    outcomes = [r["outcome"] for r in records]
    rates = win_rates(outcomes)
    rates["win_rate_ci"] = win_rate_ci(outcomes, seed)
    verdicts = [v for r in records for v in (r["verdict_x_first"], r["verdict_x_second"])]
    valid = [v for v in verdicts if v is not None]
    rates["no_verdict"] = len(verdicts) - len(valid)  # unparseable, or P("1") == P("2")
    rates["first_slot_rate"] = round(sum(1 for v in valid if v == 1) / len(valid), 4) if valid \
        else None
    both = [r for r in records if r["verdict_x_first"] is not None
            and r["verdict_x_second"] is not None]
    flips = sum(1 for r in both if r["verdict_x_first"] == r["verdict_x_second"])
    rates["position_bias"] = position_bias(rates["first_slot_rate"], len(valid),
                                           round(flips / len(both), 4) if both else None)
    soft = [r["p_x"] for r in records if "p_x" in r]
    if soft:
        rates["mean_p_x"] = round(sum(soft) / len(soft), 4)
    return rates


def frozen_judge_gain(judge_dir: str, params: Params, model_eval: str, prev: dict[str, dict],
                      nxt: dict[str, dict], shards_for: Path) -> dict:
    """Judge M_t (`judge_dir`) on M_t+1's answers vs its own, paired by prompt."""
    before = load_scores(model_eval, RELEVANCE, key="own_score")  # M_t judging its answers
    ids = [i for i in nxt if i in prev and i in before]
    with contextlib.closing(LocalPointwiseJudge(judge_dir, params)) as judge:
        after = judge.score([nxt[i]["prompt"] for i in ids], [nxt[i]["answer"] for i in ids],
                            shards_for)
    return {"judge": judge_dir, **paired_gain([before[i] for i in ids], after, params.eval.seed)}


def fixed_judge_gain(candidate_eval: str, other_eval: str, seed: int) -> dict:
    """Fixed-judge pointwise score of the candidate's answers minus the other's, by prompt."""
    candidate = load_scores(candidate_eval, FIXED_SCORES)
    other = load_scores(other_eval, FIXED_SCORES)
    ids = [i for i in candidate if i in other]
    return paired_gain([other[i] for i in ids], [candidate[i] for i in ids], seed)


def run_evaluate(params: Params, iteration: str, model_eval: str, next_eval: str,
                 sft_eval: str, out_path: str | Path, metrics_path: str | Path,
                 judge_dir: str | None = None, frozen_judge: str | None = None) -> dict:
    """Stage entry: iteration t's movement (answers changed, frozen-judge reward gain), the
    fixed judge's pointwise and head-to-head verdicts, and both models' eval summaries."""
    remove_outputs(out_path, metrics_path)
    prev_summary, prev = load_eval_dir(model_eval)
    next_summary, nxt = load_eval_dir(next_eval)
    eval_params = params.eval
    metrics: dict = {"iteration": iteration, "prompts": len(nxt),
                     "answers_changed": answers_changed(
                         {i: a["answer"] for i, a in prev.items()},
                         {i: a["answer"] for i, a in nxt.items()})}
    if frozen_judge:
        metrics["reward_gain"] = frozen_judge_gain(frozen_judge, params, model_eval, prev, nxt,
                                                   Path(str(out_path) + ".gain"))
    opponents = {"prev": prev}
    sft_is_prev = Path(sft_eval).resolve() == Path(model_eval).resolve()
    if not sft_is_prev:
        opponents["sft"] = load_eval_dir(sft_eval)[1]
    gains = {"vs_prev": fixed_judge_gain(next_eval, model_eval, eval_params.seed)}
    gains["vs_sft"] = (gains["vs_prev"] if sft_is_prev
                       else fixed_judge_gain(next_eval, sft_eval, eval_params.seed))
    metrics["fixed_judge_gain"] = gains
    items = [item for name, answers in opponents.items()
             for item in comparison_items(name, nxt, answers)]
    text = pairwise_template(eval_params.pairwise_template)
    with contextlib.ExitStack() as stack:
        judge, judge_info = make_pairwise_judge(params, judge_dir, stack)
        local = judge_info["kind"] == "local"
        key = shard_key(params=eval_params, templates=[text], inputs=items,
                        model=model_fingerprint(judge_info["model"]) if local else "",
                        engine={**judge_info, **(engine_key(params.engine) if local else {})})
        records, shard_stats = run_sharded(
            items, out_path, key, params.engine.shard_size,
            lambda chunk, _k: judge_both_orders(judge, chunk, text),
            desc="head-to-head (both orders)")
    vs = {name: outcome_summary([r for r in records if r["opponent"] == name], eval_params.seed)
          for name in opponents}
    vs.setdefault("sft", vs["prev"])  # iteration 1: M_t is M1
    metrics.update({"judge": judge_info, "vs_prev": vs["prev"], "vs_sft": vs["sft"],
                    "next": model_section(next_summary), "prev": model_section(prev_summary)})
    log.info("head-to-head shards: %s", shard_stats)
    if isinstance(judge, EndpointPairwiseJudge):
        metrics["endpoint_usage"] = dict(judge.endpoint.usage)
    write_jsonl(out_path, records)
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("iteration %s: answers changed %s, reward gain %s; vs M_t %s; vs M1 %s", iteration,
             metrics["answers_changed"], metrics.get("reward_gain"), vs["prev"], vs["sft"])
    return metrics
