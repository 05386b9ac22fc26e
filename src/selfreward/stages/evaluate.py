"""Evaluation stages: judge agreement on held-out human scores, answers to held-out prompts, and
head-to-head win rates judged in both orders by a fixed judge (a local model or an endpoint).

- `run_eval_model`: one model's answers to the eval prompts (cached as a DVC output), their
  lengths, and its agreement with human scores as a judge (same judge code as the pipeline).
- `run_evaluate`: iteration t's metrics: M_t+1 vs M_t and vs M1, plus both models' summaries.
- `run_eval_judge`: agreement of any model with an EFT file or a {prompt, chosen, rejected} file.
"""

from __future__ import annotations

import json
import logging
import random
import re
import tempfile
from pathlib import Path

from ..endpoint import ChatEndpoint
from ..engines import Sampling, make_engine
from ..errors import UserError
from ..evaluation import combine_orders, judge_agreement, length_stats, pair_accuracy, win_rates
from ..io import atomic_dir, read_jsonl, remove_outputs, require, write_json, write_jsonl
from ..params import EngineParams, EvalParams, JudgeParams, Params
from ..prompting import template
from ..seed import JudgeExample, load_eft, load_prompts
from ..shards import fingerprint, finish, model_fingerprint, run_sharded
from .judge import judge_rows

log = logging.getLogger(__name__)

PAIRWISE_PREFIX = "Winner: "  # the assistant prefix the logprob pairwise judge scores from
_WINNER = re.compile(r"winner\s*[:=]?\s*\**\s*(?:response\s*)?([12])(?!\d)", re.IGNORECASE)
ANSWERS, EFT_SCORES, SUMMARY = "answers.jsonl", "eft_scores.jsonl", "summary.json"


# -- judge agreement ------------------------------------------------------------------------------
def score_with_judge(engine, prompts: list[str], responses: list[list[str]], jp: JudgeParams,
                     shard_size: int, work: Path) -> list[list[float | None]]:
    """Mean judge score of every response, through the pipeline's own `judge_rows`."""
    rows = [{"id": str(i), "prompt": p, "responses": r}
            for i, (p, r) in enumerate(zip(prompts, responses))]
    key = fingerprint(jp, [r["responses"] for r in rows], [r["prompt"] for r in rows])
    out, _ = judge_rows(engine, rows, jp, shard_size, work, key)
    finish(work)
    return [row["mean"] for row in out]


def eft_agreement(engine, examples: list[JudgeExample], jp: JudgeParams, shard_size: int,
                  work: Path) -> tuple[dict, list[dict]]:
    """Agreement with human scores on a grouped EFT set; also the per-example scores."""
    by_prompt: dict[tuple[str, str], list[int]] = {}
    for i, ex in enumerate(examples):  # one judge row per (group, prompt): the rubric sees one
        by_prompt.setdefault((ex.group, ex.prompt), []).append(i)
    keys = list(by_prompt)
    means = score_with_judge(engine, [k[1] for k in keys],
                             [[examples[i].response for i in by_prompt[k]] for k in keys],
                             jp, shard_size, work)
    model: list[float | None] = [None] * len(examples)
    for k, row in zip(keys, means):
        for i, m in zip(by_prompt[k], row):
            model[i] = m
    metrics = judge_agreement(model, [ex.score for ex in examples],
                              [ex.group for ex in examples])
    rows = [{"group": ex.group, "source": ex.source, "human": ex.score, "model": m}
            for ex, m in zip(examples, model)]
    return metrics, rows


def _text(value, file: str, line: int, key: str, role: str) -> str:
    """A pair field as text: a string, a message {role, content}, or a list of messages."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == role]
        if not texts or not isinstance(texts[-1], str) or not texts[-1].strip():
            raise UserError(f"no non-empty '{role}' message", file=file, line=line, field=key)
        return texts[-1]
    if isinstance(value, str) and value.strip():
        return value
    raise UserError("expected a non-empty string or chat messages", file=file, line=line,
                    field=key)


def load_preference_pairs(path: str | Path) -> list[dict]:
    """`{prompt, chosen, rejected}` rows (plain strings or TRL conversational), validated."""
    file = str(path)
    p = Path(path)
    if p.is_file() and not p.read_text(encoding="utf-8").strip():
        raise UserError("file is empty: expected one {prompt, chosen, rejected} object per line",
                        file=file, line=1)
    out = []
    for line, obj in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                raise UserError("missing required field", file=file, line=line, field=key)
        out.append({"line": line,
                    "prompt": _text(obj["prompt"], file, line, "prompt", "user"),
                    "chosen": _text(obj["chosen"], file, line, "chosen", "assistant"),
                    "rejected": _text(obj["rejected"], file, line, "rejected", "assistant")})
    return out


def pairs_agreement(engine, pairs: list[dict], jp: JudgeParams, shard_size: int,
                    work: Path) -> dict:
    """Pairwise accuracy of the judge on chosen/rejected pairs (ties counted separately)."""
    means = score_with_judge(engine, [p["prompt"] for p in pairs],
                             [[p["chosen"], p["rejected"]] for p in pairs], jp, shard_size, work)
    return pair_accuracy([(m[0], m[1]) for m in means])


def run_eval_judge(model_dir: str, params: Params, eft_path: str | None, pairs_path: str | None,
                   out_path: str | None) -> dict:
    """CLI entry: a model's agreement with an EFT file and/or a preference-pairs file."""
    if not eft_path and not pairs_path:
        raise UserError("give --eft FILE and/or --pairs FILE")
    examples = load_eft(eft_path) if eft_path else None
    pairs = load_preference_pairs(pairs_path) if pairs_path else None
    if out_path:
        remove_outputs(out_path)
    result: dict = {"model": model_dir, "judge_mode": params.judge.mode}
    engine = make_engine(model_dir, params.engine, seed=params.judge.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="selfreward-eval-judge-") as tmp:
            if examples is not None:
                result["eft"], _ = eft_agreement(engine, examples, params.judge,
                                                 params.engine.shard_size, Path(tmp) / "eft")
                result["eft_file"] = eft_path
            if pairs is not None:
                result["pairs"] = pairs_agreement(engine, pairs, params.judge,
                                                  params.engine.shard_size, Path(tmp) / "pairs")
                result["pairs_file"] = pairs_path
    finally:
        engine.close()
    if out_path:
        write_json(out_path, result)
    return result


# -- answers to held-out prompts --------------------------------------------------------------------
def select_prompts(rows: list[dict], max_prompts: int, seed: int) -> list[dict]:
    """A seeded subset of `max_prompts` rows in file order (0 or more than available = all)."""
    if max_prompts <= 0 or max_prompts >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_prompts))
    return [rows[i] for i in keep]


def generate_answers(engine, rows: list[dict], ep: EvalParams, count_tokens) -> list[dict]:
    """One answer per prompt (greedy when ep.temperature is 0), with its length."""
    chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    outs = engine.generate(chats, Sampling(n=1, temperature=ep.temperature, top_p=ep.top_p,
                                           max_new_tokens=ep.max_new_tokens, seed=ep.seed))
    return [{"id": r["id"], "prompt": r["prompt"], "answer": o[0], "words": len(o[0].split()),
             "tokens": count_tokens(o[0])} for r, o in zip(rows, outs)]


def _token_counter(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def run_eval_model(model_dir: str, params: Params, prompts_path: str, eft_path: str | None,
                   out_dir: str | Path) -> dict:
    """Stage entry: <out_dir>/answers.jsonl, eft_scores.jsonl and summary.json for one model."""
    rows = select_prompts(load_prompts(prompts_path), params.eval.max_prompts, params.eval.seed)
    examples = load_eft(eft_path) if eft_path else None
    remove_outputs(out_dir)
    engine = make_engine(model_dir, params.engine, seed=params.eval.seed)
    summary: dict = {"model": model_dir, "prompts": len(rows)}
    try:
        with atomic_dir(out_dir) as tmp:
            answers = generate_answers(engine, rows, params.eval, _token_counter(model_dir))
            write_jsonl(tmp / ANSWERS, answers)
            summary["length"] = length_stats([a["words"] for a in answers],
                                             [a["tokens"] for a in answers])
            if examples is not None:
                summary["judge_agreement"], scored = eft_agreement(
                    engine, examples, params.judge, params.engine.shard_size, tmp / EFT_SCORES)
                summary["judge_mode"] = params.judge.mode
                write_jsonl(tmp / EFT_SCORES, scored)
            summary["engine"] = engine.stats.as_dict()
            write_json(tmp / SUMMARY, summary)
    finally:
        engine.close()
    log.info("eval %s: length %s, judge agreement %s", model_dir, summary["length"],
             summary.get("judge_agreement"))
    return summary


def load_eval_dir(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(summary, answers by id) from a directory written by `run_eval_model`."""
    path = Path(path)
    if not (path / SUMMARY).is_file() or not (path / ANSWERS).is_file():
        raise UserError(f"not an eval directory (needs {SUMMARY} and {ANSWERS}); run "
                        "`selfreward eval-model` for this model first", file=str(path))
    summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    answers = {}
    file = str(path / ANSWERS)
    for line, obj in read_jsonl(path / ANSWERS):
        require(obj, "prompt", str, file=file, line=line)
        if not isinstance(obj.get("answer"), str):  # may be empty: a model can say nothing
            raise UserError("expected a string", file=file, line=line, field="answer")
        answers[require(obj, "id", str, file=file, line=line)] = obj
    return summary, answers


# -- head-to-head -----------------------------------------------------------------------------------
def pairwise_messages(prompt: str, response_1: str, response_2: str) -> list[dict]:
    """The user turn asking a judge which of two responses to `prompt` is better."""
    text = (template("pairwise_judge").replace("{prompt}", prompt.strip())
            .replace("{response_1}", response_1.strip()).replace("{response_2}", response_2.strip()))
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


def make_pairwise_judge(ep: EvalParams, engine_params: EngineParams, judge_dir: str | None):
    """The configured fixed judge and a description of it (for metrics, without secrets)."""
    if ep.judge_endpoint:
        endpoint = ChatEndpoint(ep.judge_endpoint, ep.endpoint_model, ep.api_key_env,
                                timeout=ep.endpoint_timeout, retries=ep.endpoint_retries,
                                concurrency=ep.endpoint_concurrency)
        return (EndpointPairwiseJudge(endpoint, ep.judge_max_new_tokens, ep.seed),
                {"kind": "endpoint", "url": endpoint.url, "model": ep.endpoint_model})
    judge_dir = judge_dir or ep.judge
    engine = make_engine(judge_dir, engine_params, seed=ep.seed)
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


def outcome_summary(records: list[dict]) -> dict:
    """Win/tie/loss for x plus position-bias and soft-preference diagnostics."""
    rates = win_rates([r["outcome"] for r in records])
    verdicts = [v for r in records for v in (r["verdict_x_first"], r["verdict_x_second"])]
    valid = [v for v in verdicts if v is not None]
    rates["no_verdict"] = len(verdicts) - len(valid)  # unparseable, or P("1") == P("2")
    rates["first_slot_rate"] = round(sum(1 for v in valid if v == 1) / len(valid), 4) if valid \
        else None
    soft = [r["p_x"] for r in records if "p_x" in r]
    if soft:
        rates["mean_p_x"] = round(sum(soft) / len(soft), 4)
    return rates


AGREEMENT_KEYS = ("pairwise_accuracy", "pairwise_tie_rate", "best_hit_rate", "exact_match",
                  "spearman", "kendall_tau")
LENGTH_KEYS = ("mean_words", "median_words", "mean_tokens", "median_tokens")


def _model_section(summary: dict) -> dict:
    """The headline numbers of one model's eval summary (all counts stay in summary.json)."""
    agreement = summary.get("judge_agreement") or {}
    length = summary.get("length") or {}
    return {"model": summary.get("model"),
            "judge_agreement": {k: agreement.get(k) for k in AGREEMENT_KEYS} if agreement
            else None,
            "length": {k: length.get(k) for k in LENGTH_KEYS}}


def run_evaluate(params: Params, iteration: str, model_eval: str, next_eval: str,
                 sft_eval: str, out_path: str | Path, metrics_path: str | Path,
                 judge_dir: str | None = None) -> dict:
    """Stage entry: M_t+1 vs M_t and vs M1 (both orders), plus both models' eval summaries."""
    remove_outputs(out_path, metrics_path)
    prev_summary, prev = load_eval_dir(model_eval)
    next_summary, nxt = load_eval_dir(next_eval)
    opponents = {"prev": prev}
    if Path(sft_eval).resolve() != Path(model_eval).resolve():
        opponents["sft"] = load_eval_dir(sft_eval)[1]
    items = [it for name, ans in opponents.items() for it in comparison_items(name, nxt, ans)]
    ep = params.eval
    judge, judge_info = make_pairwise_judge(ep, params.engine, judge_dir)
    judge_id = (judge_info if judge_info["kind"] == "endpoint"
                else {**judge_info, "fp": model_fingerprint(judge_info["model"])})
    key = fingerprint(ep, judge_id, template("pairwise_judge"), items)
    try:
        records, shard_stats = run_sharded(items, out_path, key, params.engine.shard_size,
                                           lambda chunk, _k: judge_both_orders(judge, chunk),
                                           desc="head-to-head (both orders)")
    finally:
        judge.close()
    vs = {name: outcome_summary([r for r in records if r["opponent"] == name])
          for name in opponents}
    vs.setdefault("sft", vs["prev"])  # iteration 1: M_t is M1
    metrics = {"iteration": iteration, "judge": judge_info, "prompts": len(nxt),
               "vs_prev": vs["prev"], "vs_sft": vs["sft"],
               "next": _model_section(next_summary), "prev": _model_section(prev_summary)}
    log.info("head-to-head shards: %s", shard_stats)
    if isinstance(judge, EndpointPairwiseJudge):
        metrics["endpoint_usage"] = dict(judge.endpoint.usage)
    write_jsonl(out_path, records)
    write_json(metrics_path, metrics)
    finish(out_path)
    log.info("iteration %s: vs M_t %s; vs M1 %s", iteration, vs["prev"], vs["sft"])
    return metrics
