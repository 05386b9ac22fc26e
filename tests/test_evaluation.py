"""Evaluation: metric functions against hand-computed values, position-swap logic, judge
agreement through the pipeline's judge code, eval-judge input errors, and the eval stages on the
tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import EngineParams, JudgeParams, load_params
from selfreward.data.seed import select_prompts
from selfreward.evaluation.iteration import comparison_items
from selfreward.evaluation.metrics import (
    best_hit_rate,
    combine_orders,
    exact_match,
    group_pairs,
    judge_agreement,
    kendall_tau_b,
    length_stats,
    pair_accuracy,
    rankdata,
    spearman,
    win_rates,
)
from selfreward.generation.engines import make_engine
from selfreward.generation.engines.base import expected_score
from selfreward.judge.agreement import evaluate_judge, load_preference_pairs
from selfreward.judge.pairwise import judge_both_orders, parse_winner
from selfreward.judge.rubric import JUDGE_PREFIX, judge_messages
from selfreward.stages.eval_model import run_eval_model
from selfreward.stages.evaluate import run_evaluate

HUMAN = [5, 3, 1, 4, 2, 0]
GROUPS = ["a", "a", "a", "b", "b", "b"]


# -- metric functions ----------------------------------------------------------------------------
def test_group_pairs_only_within_group_and_different_scores():
    pairs = group_pairs([5, 3, 3, 4], ["a", "a", "a", "b"])
    assert sorted(pairs) == [(0, 1), (0, 2)]  # the tied 3s form no pair; b has one item


def test_perfect_judge():
    model = [h / 2 + 0.1 for h in HUMAN]  # any increasing function of the human score
    m = judge_agreement(model, HUMAN, GROUPS)
    assert m["pairwise_pairs"] == 6 and m["pairwise_agree"] == 6
    assert m["pairwise_accuracy"] == 1.0 and m["pairwise_tie_rate"] == 0.0
    assert m["best_hit_rate"] == 1.0
    assert m["spearman"] == pytest.approx(1.0) and m["kendall_tau"] == pytest.approx(1.0)


def test_inverted_judge():
    model = [5 - h for h in HUMAN]
    m = judge_agreement(model, HUMAN, GROUPS)
    assert m["pairwise_accuracy"] == 0.0 and m["pairwise_disagree"] == 6
    assert m["best_hit_rate"] == 0.0
    assert m["spearman"] == pytest.approx(-1.0) and m["kendall_tau"] == pytest.approx(-1.0)
    # 5-h equals h only at h=2.5: no exact matches
    assert m["exact_match"] == 0.0


def test_model_ties_counted_separately():
    # group a: human 5,3,1 -> model 4,4,0: (5,3) tie, (5,1) agree, (3,1) agree
    m = judge_agreement([4, 4, 0], [5, 3, 1], ["a"] * 3)
    assert (m["pairwise_agree"], m["pairwise_tie"], m["pairwise_disagree"]) == (2, 1, 0)
    assert m["pairwise_accuracy"] == round(2 / 3, 4)
    assert m["pairwise_accuracy_no_ties"] == 1.0
    # the model's top score is shared by the human-best (5) and a 3: half credit
    assert m["best_hit_rate"] == 0.5


def test_unscored_items():
    acc = pair_accuracy([(3.0, None), (2.0, 1.0), (None, None)])
    assert acc["unscored"] == 2 and acc["agree"] == 1 and acc["accuracy"] == round(1 / 3, 4)
    assert best_hit_rate([None, None], [5, 1], ["g", "g"]) == 0.0


def test_exact_match_rounds_half_up():
    assert exact_match([4.6, 2.4, None, 3.5], [5, 3, 1, 4]) == 0.5


def test_rank_correlations_with_ties_hand_computed():
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    assert rankdata(x) == [1.0, 2.5, 2.5, 4.0]
    # Pearson of ranks: sxy = 4.5, sxx = 4.5, syy = 5
    assert spearman(x, y) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    # 5 concordant, 0 discordant, 1 pair tied in x only
    assert kendall_tau_b(x, y) == pytest.approx(5 / math.sqrt(6 * 5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant side: undefined


def test_win_rates_and_length_stats():
    r = win_rates(["win", "win", "tie", "loss"])
    assert (r["win_pct"], r["tie_pct"], r["loss_pct"]) == (50.0, 25.0, 25.0)
    assert r["win_rate"] == 0.625
    with pytest.raises(ValueError):
        win_rates(["draw"])
    s = length_stats([10, 0, 30], [12, 0, 40])
    assert s["mean_words"] == round(40 / 3, 2) and s["median_words"] == 10.0
    assert s["median_tokens"] == 12.0 and s["empty"] == 1


# -- position swap ---------------------------------------------------------------------------------
@pytest.mark.parametrize("first,second,outcome", [
    (1, 2, "win"),    # x preferred as response 1 and as response 2
    (2, 1, "loss"),   # y preferred in both orders
    (1, 1, "tie"),    # always the first slot: flips with the order
    (2, 2, "tie"),
    (None, 2, "tie"),
    (1, None, "tie"),
])
def test_combine_orders(first, second, outcome):
    assert combine_orders(first, second) == outcome


class ContentJudge:
    """Prefers the response containing 'GOOD'; falls back to a fixed slot (position bias)."""

    def __init__(self, fallback: int) -> None:
        self.fallback, self.chats = fallback, []

    def judge(self, chats):
        self.chats += chats
        out = []
        for chat in chats:
            text = chat[0]["content"]
            r1 = text.split("<response_1>")[1].split("</response_1>")[0]
            r2 = text.split("<response_2>")[1].split("</response_2>")[0]
            v = 1 if "GOOD" in r1 and "GOOD" not in r2 else \
                2 if "GOOD" in r2 and "GOOD" not in r1 else self.fallback
            out.append({"verdict": v, "p_first": 0.9 if v == 1 else 0.1})
        return out


def test_judge_both_orders_swaps_positions():
    items = [{"id": "w", "prompt": "q", "x": "GOOD answer", "y": "meh"},
             {"id": "l", "prompt": "q", "x": "meh", "y": "GOOD one"},
             {"id": "t", "prompt": "q", "x": "meh", "y": "also meh"}]
    judge = ContentJudge(fallback=1)
    recs = judge_both_orders(judge, items)
    assert [r["outcome"] for r in recs] == ["win", "loss", "tie"]
    # the second chat of each item shows x as response 2
    assert "<response_2>GOOD answer</response_2>" in judge.chats[1][0]["content"]
    assert "<response_1>meh</response_1>" in judge.chats[1][0]["content"]
    assert recs[0]["p_x"] == pytest.approx(0.9) and recs[2]["p_x"] == pytest.approx(0.5)


def test_parse_winner_and_prompt_selection():
    assert parse_winner("Response 2 is clearer.\nWinner: 2") == 2
    assert parse_winner("**Winner:** Response 1") == 1
    assert parse_winner("Winner: 12") is None and parse_winner("no verdict") is None
    rows = [{"id": str(i), "prompt": f"p{i}"} for i in range(10)]
    sub = select_prompts(rows, 4, seed=0)
    assert len(sub) == 4 and sub == select_prompts(rows, 4, seed=0)
    assert [r["id"] for r in sub] == sorted((r["id"] for r in sub), key=int)  # file order
    assert select_prompts(rows, 0, 0) == rows and select_prompts(rows, 99, 0) == rows


def test_comparison_items_needs_shared_prompts():
    x = {"1": {"prompt": "a", "answer": "A"}}
    with pytest.raises(UserError, match="no eval prompt"):
        comparison_items("prev", x, {"2": {"prompt": "b", "answer": "B"}})


# -- eval-judge input errors ---------------------------------------------------------------------------
def test_pairs_file_missing_field(tmp_path, write_jsonl):
    path = write_jsonl("pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                       {"prompt": "q", "chosen": "a"}])
    params = tmp_path / "params.yaml"
    params.write_text("judge: {mode: logprob}\n")
    res = CliRunner().invoke(main, ["eval-judge", "--params", str(params), "--model",
                                    str(tmp_path), "--pairs", str(path)])
    assert res.exit_code == 2
    assert f"{path}:2" in res.output and "rejected" in res.output


def test_pairs_file_empty_and_bad_types(tmp_path, write_jsonl):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=r"empty\.jsonl:1"):
        load_preference_pairs(empty)
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    res = CliRunner().invoke(main, ["eval-judge", "--params", str(params), "--model",
                                    str(tmp_path), "--pairs", str(empty)])
    assert res.exit_code == 2 and f"{empty}:1" in res.output
    bad = write_jsonl("bad.jsonl", [{"prompt": "q", "chosen": 3, "rejected": "b"}])
    with pytest.raises(UserError, match=r"bad\.jsonl:1: field 'chosen'"):
        load_preference_pairs(bad)
    conv = write_jsonl("conv.jsonl", [{"prompt": [{"role": "user", "content": "q"}],
                                       "chosen": [{"role": "assistant", "content": "a"}],
                                       "rejected": [{"role": "assistant", "content": "b"}]}])
    assert load_preference_pairs(conv)[0] == {"line": 1, "prompt": "q", "chosen": "a",
                                              "rejected": "b"}


def test_eval_params_validated(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  max_prompts: 8\n  judge_endpont: http://x\n")
    with pytest.raises(UserError, match=r"params\.yaml:3: field 'eval\.judge_endpont'"):
        load_params(params)
    params.write_text("eval:\n  pairwise_mode: vibes\n")
    with pytest.raises(UserError, match="eval.pairwise_mode"):
        load_params(params)


# -- with the tiny model ---------------------------------------------------------------------------------
EFT_ROWS = [{"group": g, "prompt": f"Question {g}?", "response": f"Answer {k} to {g}.",
             "justification": "ok", "score": s}
            for g in ("g1", "g2") for k, s in enumerate((5, 2, 0))]


def _params(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("engine: {name: hf, batch_size: 8, shard_size: 4}\n"
                    "eval: {max_prompts: 3, max_new_tokens: 6}\n" + extra)
    return path


def test_eval_judge_uses_pipeline_judge(tiny_model, tmp_path, write_jsonl):
    eft = write_jsonl("eft.jsonl", EFT_ROWS)
    pairs = write_jsonl("pairs.jsonl", [{"prompt": r["prompt"], "chosen": r["response"],
                                         "rejected": "no"} for r in EFT_ROWS[:3]])
    p = load_params(_params(tmp_path))
    out = tmp_path / "agree.json"
    res = evaluate_judge(params=p, model_dir=str(tiny_model), eft_path=str(eft),
                         pairs_path=str(pairs), out_path=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))  # intervals: lists
    eft_m = res["eft"]
    assert eft_m["pairwise_pairs"] == 6 and eft_m["items"] == 6 and eft_m["scored"] == 6
    assert sum(eft_m[f"pairwise_{k}"] for k in ("agree", "disagree", "tie", "unscored")) == 6
    assert res["pairs"]["pairs"] == 3
    # the same scores as the judge stage's logprob path, computed directly
    engine = make_engine(str(tiny_model), EngineParams(name="hf"))
    probs = engine.digit_probs([judge_messages(r["prompt"], r["response"]) for r in EFT_ROWS],
                               JUDGE_PREFIX)
    direct = [expected_score(pr) for pr in probs]
    expected = judge_agreement(direct, [r["score"] for r in EFT_ROWS],
                               [r["group"] for r in EFT_ROWS])
    assert eft_m["pairwise_agree"] == expected["pairwise_agree"]
    assert eft_m["mean_model_score"] == pytest.approx(expected["mean_model_score"], abs=1e-3)
    assert JudgeParams().mode == "logprob"


def test_eval_model_and_evaluate_tiny(tiny_model, tmp_path, write_jsonl):
    from conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "m2", seed=1)
    prompts = write_jsonl("prompts.jsonl", [{"id": f"e{i}", "prompt": f"Tell me about {w}."}
                                            for i, w in enumerate(["cats", "rain", "tea", "ice"])])
    eft = write_jsonl("eft.jsonl", EFT_ROWS)
    p = load_params(_params(tmp_path))
    s1 = run_eval_model(params=p, model_dir=str(tiny_model), prompts_path=str(prompts),
                        eft_path=str(eft), out_dir=tmp_path / "ev1", fixed_judge=str(tiny_model),
                        metrics_path=tmp_path / "m1.json")
    s2 = run_eval_model(params=p, model_dir=str(other), prompts_path=str(prompts),
                        eft_path=str(eft), out_dir=tmp_path / "ev2", fixed_judge=str(tiny_model))
    answers = [json.loads(x) for x in (tmp_path / "ev1/answers.jsonl").read_text().splitlines()]
    assert s1["prompts"] == 3 and len(answers) == 3  # eval.max_prompts subset
    assert all(a["tokens"] <= 6 for a in answers)
    assert s1["length"]["responses"] == 3 and s1["judge_agreement"]["items"] == 6
    # the share of answers cut by eval.max_new_tokens (6 in _params)
    assert s1["length"]["max_new_tokens"] == 6
    assert s1["length"]["at_cap"] == sum(a["tokens"] >= 6 for a in answers)
    assert s1["length"]["at_cap_share"] == round(s1["length"]["at_cap"] / 3, 4)
    assert not list((tmp_path / "ev1").glob("*.shards"))
    # relevance: 3 prompts, each own answer vs another prompt's answer, scored by the model
    rel = [json.loads(x) for x in (tmp_path / "ev1/relevance.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rel] == [a["id"] for a in answers]
    assert all(r["other_id"] != r["id"] for r in rel) and s1["relevance"]["pairs"] == 3
    assert s1["relevance"]["agree"] == sum(r["own_score"] > r["other_score"] for r in rel)
    # M1 is its own fixed judge: its fixed-judge scores are its self-scores
    fixed = [json.loads(x) for x in (tmp_path / "ev1/fixed_judge_scores.jsonl").read_text()
             .splitlines()]
    assert [f["score"] for f in fixed] == [r["own_score"] for r in rel]
    assert s1["fixed_judge"]["mean"] == s1["self_score"]["mean"]
    headline = json.loads((tmp_path / "m1.json").read_text())
    assert headline["relevance"]["pairs"] == 3 and headline["model"] == str(tiny_model)
    # another model's answers judged by the fixed judge (the tiny M1), not by themselves
    fixed2 = [json.loads(x) for x in (tmp_path / "ev2/fixed_judge_scores.jsonl").read_text()
              .splitlines()]
    answers2 = [json.loads(x) for x in (tmp_path / "ev2/answers.jsonl").read_text().splitlines()]
    engine = make_engine(str(tiny_model), EngineParams(name="hf"))
    probs = engine.digit_probs([judge_messages(a["prompt"], a["answer"]) for a in answers2],
                               JUDGE_PREFIX)
    assert [f["score"] for f in fixed2] == pytest.approx([expected_score(pr) for pr in probs],
                                                         abs=1e-5)

    # iteration 2 shape: M_t (ev2) differs from M1 (ev1); the tiny M1 is the fixed judge; the
    # ifeval stage's answers of M_t / M_t+1 (hand-made verdicts) give the paired differences
    def ifeval_answers(name: str, strict: list[bool]) -> str:
        return str(write_jsonl(name, [{"key": k, "prompt": "p", "answer": "a",
                                       "instruction_id_list": ["x"], "strict": [v],
                                       "loose": [True]} for k, v in enumerate(strict)]))

    m = run_evaluate(params=p, iteration="2", model_eval=str(tmp_path / "ev2"),
                     next_eval=str(tmp_path / "ev2"), sft_eval=str(tmp_path / "ev1"),
                     out_path=tmp_path / "verdicts.jsonl", metrics_path=tmp_path / "eval.json",
                     judge_dir=str(tiny_model), frozen_judge=str(other),
                     ifeval_prev=ifeval_answers("if_prev.jsonl", [False, False, True, False]),
                     ifeval_next=ifeval_answers("if_next.jsonl", [True, False, True, True]),
                     ifeval_sft=ifeval_answers("if_sft.jsonl", [True, True, True, True]))
    recs = [json.loads(x) for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and {r["opponent"] for r in recs} == {"prev", "sft"}
    # M_t+1 against identical answers: both orders show the same chat, so the same slot wins
    # and the verdict flips with the order: every such comparison is a tie
    assert all(r["outcome"] == "tie" for r in recs if r["opponent"] == "prev")
    assert m["vs_prev"]["tie"] == 3 and m["vs_sft"]["n"] == 3
    assert m["vs_sft"]["win"] + m["vs_sft"]["tie"] + m["vs_sft"]["loss"] == 3
    assert m["judge"] == {"kind": "local", "model": str(tiny_model), "mode": "logprob"}
    assert m["next"]["judge_agreement"]["spearman"] == s2["judge_agreement"]["spearman"]
    assert m["prev"]["length"]["mean_tokens"] == s2["length"]["mean_tokens"]
    assert json.loads((tmp_path / "eval.json").read_text())["vs_prev"] == m["vs_prev"]
    assert not (tmp_path / "verdicts.jsonl.shards").exists()
    # M_t+1 = M_t here: nothing changed, and the frozen judge gives both answer sets the same
    # scores (its self-scores were computed in eval-model, the "after" ones now)
    assert m["answers_changed"] == {"prompts": 3, "changed": 0, "share": 0.0}
    assert m["reward_gain"]["n"] == 3 and m["reward_gain"]["gain"] == pytest.approx(0, abs=1e-5)
    assert m["fixed_judge_gain"]["vs_prev"]["gain"] == 0
    assert m["vs_prev"]["position_bias"]["biased"] is True  # identical answers: pure slot choice
    assert m["vs_prev"]["win_rate_ci"] == [0.5, 0.5]
    # the same answers: a zero gain at equal length too (no length difference: no slope)
    lc = m["reward_gain"]["length_controlled"]
    assert lc["n"] == 3 and lc["intercept"] == pytest.approx(0, abs=1e-5) and lc["slope"] is None
    assert m["fixed_judge_gain"]["vs_sft"]["length_controlled"]["n"] == 3
    paired = m["ifeval_paired"]
    assert paired["vs_prev"]["prompt_level_strict"]["diff"] == 0.5
    assert paired["vs_sft"]["prompt_level_strict"]["diff"] == -0.25
    assert paired["vs_prev"]["prompt_level_loose"]["ci95"] == [0.0, 0.0]


def _eval_dir(path: Path, answers: dict[str, str], fixed: list[float],
              own: list[float] | None = None) -> Path:
    """An eval directory as `eval-model` writes it, with hand-set fixed-judge and self scores."""
    path.mkdir()
    (path / "summary.json").write_text(json.dumps({"model": path.name}))
    rows = [{"id": i, "prompt": PROMPTS[i], "answer": a} for i, a in answers.items()]
    (path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "fixed_judge_scores.jsonl").write_text("".join(
        json.dumps({"id": i, "score": s}) + "\n" for i, s in zip(answers, fixed)))
    (path / "relevance.jsonl").write_text("".join(
        json.dumps({"id": i, "own_score": s}) + "\n" for i, s in zip(answers, own or fixed)))
    return path


PROMPTS = {"e0": "Tell me about cats.", "e1": "Why does it rain?", "e2": "How is tea made?"}


def test_evaluate_gains_are_signed_after_minus_before(tiny_model, tmp_path):
    """Different answers with known scores: the fixed-judge gain vs M_t and vs M1 and the
    frozen-judge reward gain are M_t+1 minus the other, with their signs (swapping before and
    after, or M_t and M1, fails here; the identical-answers case above cannot tell)."""
    nxt_answers = {"e0": "Cats are small furry pets that purr.",
                   "e1": "Water vapour condenses into drops that fall.",
                   "e2": "Steep dried leaves in hot water."}
    # the frozen judge (M_t = the tiny model) on M_t+1's answers, computed directly
    engine = make_engine(str(tiny_model), EngineParams(name="hf"))
    probs = engine.digit_probs([judge_messages(PROMPTS[i], a) for i, a in nxt_answers.items()],
                               JUDGE_PREFIX)
    after = [expected_score(p) for p in probs]
    # M_t's self-scores of its own answers: 0.5, 1.0 and 1.5 below those -> reward gain +1.0
    own = [a - d for a, d in zip(after, (0.5, 1.0, 1.5))]
    sft = _eval_dir(tmp_path / "ev_m1", {i: "no" for i in PROMPTS}, [1.0, 1.0, 1.0])
    prev = _eval_dir(tmp_path / "ev_m2", {i: "I do not know." for i in PROMPTS},
                     [2.0, 2.0, 2.0], own)
    nxt = _eval_dir(tmp_path / "ev_m3", nxt_answers, [4.0, 3.0, 2.0])
    m = run_evaluate(params=load_params(_params(tmp_path)), iteration="2",
                     model_eval=str(prev), next_eval=str(nxt), sft_eval=str(sft),
                     out_path=tmp_path / "verdicts.jsonl", metrics_path=tmp_path / "eval.json",
                     judge_dir=str(tiny_model), frozen_judge=str(tiny_model))
    vs_prev, vs_sft = m["fixed_judge_gain"]["vs_prev"], m["fixed_judge_gain"]["vs_sft"]
    assert (vs_prev["gain"], vs_prev["mean_before"], vs_prev["mean_after"]) == (1.0, 2.0, 3.0)
    assert (vs_prev["improved"], vs_prev["worsened"]) == (2, 0)
    assert (vs_sft["gain"], vs_sft["mean_before"], vs_sft["improved"]) == (2.0, 1.0, 3)
    assert m["reward_gain"]["gain"] == pytest.approx(1.0, abs=1e-3)
    assert m["reward_gain"]["mean_after"] == pytest.approx(sum(after) / 3, abs=1e-3)
    assert m["reward_gain"]["improved"] == 3 and m["reward_gain"]["ci_low"] > 0
    assert m["answers_changed"]["changed"] == 3
    # and the other way round: M_t+1 worse than M_t by the same amounts, a negative gain
    m = run_evaluate(params=load_params(_params(tmp_path)), iteration="2",
                     model_eval=str(nxt), next_eval=str(prev), sft_eval=str(sft),
                     out_path=tmp_path / "verdicts2.jsonl", metrics_path=tmp_path / "eval2.json",
                     judge_dir=str(tiny_model))
    assert m["fixed_judge_gain"]["vs_prev"]["gain"] == -1.0
    assert m["fixed_judge_gain"]["vs_sft"]["gain"] == 1.0
