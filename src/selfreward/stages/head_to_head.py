"""Stage `evaluate` (iteration t): did M_t+1 move, and is it better?

- answers changed: share of held-out prompts whose greedy answer differs, M_t -> M_t+1;
- frozen-judge reward gain: judge M_t's score of M_t+1's answers minus its score of M_t's own
  answers, paired by prompt, with a bootstrap 95 % interval (what DPO optimised for);
- fixed-judge pointwise scores (eval.judge, one answer at a time): M_t+1 minus M_t and M1;
- head-to-head vs M_t and vs M1, judged in both orders by the fixed judge: a verdict that flips
  with the order is a tie; win rates with bootstrap intervals and the judge's position bias.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..endpoint import ChatEndpoint
from ..engines import Sampling, make_engine
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
from ..prompting import fill, template
from ..shards import fingerprint, finish, model_fingerprint, run_sharded
from .eval_answers import FIXED_SCORES, RELEVANCE, load_eval_dir, load_scores, model_section
from .fixed_judge import LocalPointwiseJudge, make_endpoint

log = logging.getLogger(__name__)

PAIRWISE_PREFIX = "Winner: "  # the assistant prefix the logprob pairwise judge scores from
_WINNER = re.compile(r"winner\s*[:=]?\s*\**\s*(?:response\s*)?([12])(?!\d)", re.IGNORECASE)


def pairwise_messages(prompt: str, response_1: str, response_2: str) -> list[dict]:
    """The user turn asking a judge which of two responses to `prompt` is better."""
    text = fill(template("pairwise_judge"), prompt=prompt.strip(), response_1=response_1.strip(),
                response_2=response_2.strip())
    return [{"role": "user", "content": text}]


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

    def close(self) -> None:
        self.engine.close()


class EndpointPairwiseJudge:
    """An OpenAI-compatible chat endpoint as pairwise judge (greedy, reply parsed)."""

    def __init__(self, endpoint: ChatEndpoint, max_new_tokens: int, seed: int) -> None:
        self.endpoint, self.max_new_tokens, self.seed = endpoint, max_new_tokens, seed

    def judge(self, chats: list[list[dict]]) -> list[dict]:
        texts = self.endpoint.complete_many(chats, max_tokens=self.max_new_tokens, seed=self.seed)
        return [{"verdict": parse_winner(t), "p_first": None, "raw": t} for t in texts]

    def close(self) -> None:
        pass


def make_pairwise_judge(params: Params, judge_dir: str | None):
    """The configured fixed judge and a description of it (for metrics, without secrets)."""
    ep = params.eval
    if ep.judge_endpoint:
        endpoint = make_endpoint(params)
        return (EndpointPairwiseJudge(endpoint, ep.judge_max_new_tokens, ep.seed),
                {"kind": "endpoint", "url": endpoint.url, "model": ep.endpoint_model})
    judge_dir = judge_dir or ep.judge
    engine = make_engine(judge_dir, params.engine, seed=ep.seed)
    return (LocalPairwiseJudge(engine, ep.pairwise_mode, ep.judge_max_new_tokens, ep.seed),
            {"kind": "local", "model": judge_dir, "mode": ep.pairwise_mode})


def judge_both_orders(judge, items: list[dict]) -> list[dict]:
    """Judge each {prompt, x, y} with x shown first, then with x second; combine the verdicts."""
    chats = []
    for it in items:
        chats.append(pairwise_messages(it["prompt"], it["x"], it["y"]))
        chats.append(pairwise_messages(it["prompt"], it["y"], it["x"]))
    verdicts = judge.judge(chats)
    out = []
    for k, it in enumerate(items):
        first, second = verdicts[2 * k], verdicts[2 * k + 1]
        rec = {**it, "verdict_x_first": first["verdict"], "verdict_x_second": second["verdict"],
               "outcome": combine_orders(first["verdict"], second["verdict"])}
        if first["p_first"] is not None and second["p_first"] is not None:
            rec["p_x"] = round((first["p_first"] + 1 - second["p_first"]) / 2, 6)
        if "raw" in first:
            rec["raw_x_first"], rec["raw_x_second"] = first.get("raw"), second.get("raw")
        out.append(rec)
    return out


def comparison_items(opponent: str, x: dict[str, dict], y: dict[str, dict]) -> list[dict]:
    """Items pitting x's answer against y's for every prompt both answered."""
    ids = [i for i in x if i in y]
    if len(ids) < max(len(x), len(y)):
        log.warning("head-to-head vs %s: only %d shared prompts (%d vs %d answers)", opponent,
                    len(ids), len(x), len(y))
    if not ids:
        raise UserError(f"no eval prompt was answered by both models (vs {opponent}); "
                        "regenerate the eval answers with the same eval params")
    return [{"opponent": opponent, "id": i, "prompt": x[i]["prompt"], "x": x[i]["answer"],
             "y": y[i]["answer"]} for i in ids]


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
                      nxt: dict[str, dict], work: Path) -> dict:
    """Judge M_t (`judge_dir`) on M_t+1's answers vs its own, paired by prompt."""
    before = load_scores(model_eval, RELEVANCE, key="own_score")  # M_t judging its answers
    ids = [i for i in nxt if i in prev and i in before]
    judge = LocalPointwiseJudge(judge_dir, params)
    try:
        after = judge.score([nxt[i]["prompt"] for i in ids], [nxt[i]["answer"] for i in ids],
                            work)
    finally:
        judge.close()
    return {"judge": judge_dir, **paired_gain([before[i] for i in ids], after, params.eval.seed)}


def fixed_judge_gain(x_eval: str, y_eval: str, seed: int) -> dict:
    """Fixed-judge pointwise score of x's answers minus y's, paired by prompt."""
    x, y = load_scores(x_eval, FIXED_SCORES), load_scores(y_eval, FIXED_SCORES)
    ids = [i for i in x if i in y]
    return paired_gain([y[i] for i in ids], [x[i] for i in ids], seed)


def run_evaluate(params: Params, iteration: str, model_eval: str, next_eval: str,
                 sft_eval: str, out_path: str | Path, metrics_path: str | Path,
                 judge_dir: str | None = None, frozen_judge: str | None = None) -> dict:
    """Stage entry: iteration t's movement (answers changed, frozen-judge reward gain), the
    fixed judge's pointwise and head-to-head verdicts, and both models' eval summaries."""
    remove_outputs(out_path, metrics_path)
    prev_summary, prev = load_eval_dir(model_eval)
    next_summary, nxt = load_eval_dir(next_eval)
    ep = params.eval
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
    metrics["fixed_judge_gain"] = {"vs_prev": fixed_judge_gain(next_eval, model_eval, ep.seed)}
    metrics["fixed_judge_gain"]["vs_sft"] = (metrics["fixed_judge_gain"]["vs_prev"] if sft_is_prev
                                             else fixed_judge_gain(next_eval, sft_eval, ep.seed))
    items = [it for name, ans in opponents.items() for it in comparison_items(name, nxt, ans)]
    judge, judge_info = make_pairwise_judge(params, judge_dir)
    judge_id = (judge_info if judge_info["kind"] == "endpoint"
                else {**judge_info, "fp": model_fingerprint(judge_info["model"])})
    key = fingerprint(ep, judge_id, template("pairwise_judge"), items)
    try:
        records, shard_stats = run_sharded(items, out_path, key, params.engine.shard_size,
                                           lambda chunk, _k: judge_both_orders(judge, chunk),
                                           desc="head-to-head (both orders)")
    finally:
        judge.close()
    vs = {name: outcome_summary([r for r in records if r["opponent"] == name], ep.seed)
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
