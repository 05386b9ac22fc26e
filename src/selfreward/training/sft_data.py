"""What SFT trains on: IFT turns, EFT judge turns rendered the way the judge will be asked, and
synthetic judge turns that teach relevance; each example is measured against max_length first.

A judge turn teaches something only if its score survives: TRL would silently truncate or drop an
example longer than `max_length`, so judge examples that do not fit are an error here, and the
counts per kind (kept, truncated) go to the SFT metrics.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass

from ..config.errors import UserError
from ..config.params import JudgeDataParams
from ..data.seed import Conversation, JudgeExample, user_prompt
from ..judge.rubric import judge_messages, judge_score_answer
from ..templates import fill, template

log = logging.getLogger(__name__)

JUDGE_KINDS = ("eft", "mismatched", "empty", "truncated", "matched")


@dataclass
class SftExample:
    kind: str  # "ift", or a judge kind: eft / mismatched / empty / truncated / matched
    prompt: list[dict]
    completion: list[dict]
    source: str
    group: str = ""  # examples that should share a batch: an EFT prompt's answers, twins


def judge_answer(justification: str, score: int) -> str:
    """The assistant turn a sample-mode judge should produce: justification, then `Score: n`."""
    return fill(template("judge_answer"), justification=justification.strip(),
                score=str(score)).strip()


def ift_examples(convs: list[Conversation]) -> list[SftExample]:
    return [SftExample("ift", c.prompt, c.completion, c.source, f"ift:{c.source}")
            for c in convs]


def eft_examples(examples: list[JudgeExample], fmt: str, rubric: str | None = None
                 ) -> list[SftExample]:
    """EFT judge turns: `score` = `Score: n` right away, `justification` = reasons first."""
    out = []
    for ex in examples:
        answers = []
        if fmt in ("score", "both"):
            answers.append(judge_score_answer(ex.score))
        if fmt in ("justification", "both"):
            answers.append(judge_answer(ex.justification, ex.score))
        out += [SftExample("eft", judge_messages(ex.prompt, ex.response, rubric),
                           [{"role": "assistant", "content": a}], ex.source, f"eft:{ex.group}")
                for a in answers]
    return out


def _judge_turn(kind: str, prompt: str, response: str, score: int, source: str,
                rubric: str | None, group: str) -> SftExample:
    return SftExample(kind, judge_messages(prompt, response, rubric),
                      [{"role": "assistant", "content": judge_score_answer(score)}], source,
                      group)


def _cut(text: str, rng: random.Random) -> str:
    """The first 30-60 % of an answer's words: cut off mid-way, as a length limit leaves it."""
    words = list(re.finditer(r"\S+", text))
    keep = max(1, int(len(words) * rng.uniform(0.3, 0.6)))
    return text[:words[keep - 1].end()]


def synthetic_judge_examples(convs: list[Conversation], params: JudgeDataParams,
                             rubric: str | None = None) -> list[SftExample]:
    """Balanced relevance/empty/cut-off judge turns from single-turn IFT answers (score-first).

    Every negative has a positive twin that differs only in what the label is about: the same
    answer under its own prompt (mismatched), or the same prompt with its whole answer (empty,
    truncated). Items are drawn without replacement while they last, so twins rarely repeat.
    """
    single = [c for c in convs if len(c.prompt) == 1 and c.completion[0]["content"].strip()]
    wanted = params.mismatched + params.empty + params.truncated
    if not wanted:
        return []
    if len(single) < 2:
        raise UserError("sft.judge_data needs at least 2 single-turn IFT examples",
                        field="sft.judge_data")
    rng = random.Random(params.seed)
    order: list[int] = []
    while len(order) < wanted:
        order += rng.sample(range(len(single)), len(single))
    picks = iter(order)
    out = []
    for kind, count in (("mismatched", params.mismatched), ("empty", params.empty),
                        ("truncated", params.truncated)):
        for n in range(count):
            i = next(picks)
            conv = single[i]
            prompt, answer = user_prompt(conv), conv.completion[0]["content"]
            twins = f"{kind}:{n}"
            out.append(_judge_turn("matched", prompt, answer, params.matched_score, conv.source,
                                   rubric, twins))
            if kind == "mismatched":
                j = rng.choice([k for k in range(len(single)) if k != i])
                out.append(_judge_turn(kind, user_prompt(single[j]), answer, 0, conv.source,
                                       rubric, twins))
            elif kind == "empty":
                out.append(_judge_turn(kind, prompt, "", 0, conv.source, rubric, twins))
            else:
                out.append(_judge_turn(kind, prompt, _cut(answer, rng), params.truncated_score,
                                       conv.source, rubric, twins))
    return out


def grouped_order(examples: list[SftExample], epochs: float, seed: int) -> list[SftExample]:
    """The training sequence for `batching: grouped`: each epoch shuffles whole groups (an EFT
    prompt's answers, a positive and its negative twin) and keeps each group together, so most
    batches hold examples that differ only in what their label is about.

    Contrast within a batch is what teaches a small judge relevance: a twin pair shares the
    answer and differs only in the prompt, so features of the answer alone cancel out.
    """
    groups: dict[str, list[SftExample]] = {}
    for ex in examples:
        groups.setdefault(ex.group or f"single:{id(ex)}", []).append(ex)
    names = list(groups)
    order: list[SftExample] = []
    for epoch in range(max(1, math.ceil(epochs))):
        rng = random.Random(seed * 1_000_003 + epoch)
        shuffled = names[:]
        rng.shuffle(shuffled)
        order += [ex for name in shuffled for ex in groups[name]]
    return order[:max(1, round(len(examples) * epochs))]


def example_tokens(tok, ex: SftExample) -> int:
    """Tokens of the whole rendered conversation, as the trainer will see it."""
    text = tok.apply_chat_template(ex.prompt + ex.completion, tokenize=False)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def check_lengths(tok, examples: list[SftExample], max_length: int) -> dict:
    """Counts per kind of examples kept whole and truncated; a judge turn that does not fit is an
    error (its score would be cut off or the example dropped)."""
    lengths = [example_tokens(tok, ex) for ex in examples]
    counts: dict[str, Counter] = {}
    too_long = []
    for ex, n in zip(examples, lengths):
        c = counts.setdefault(ex.kind, Counter())
        c["examples"] += 1
        c["tokens"] += n
        c["max_tokens"] = max(c["max_tokens"], n)
        if n > max_length:
            c["truncated"] += 1
            if ex.kind != "ift":
                too_long.append((n, ex))
    if too_long:
        n, ex = max(too_long, key=lambda t: t[0])
        raise UserError(f"{len(too_long)} judge examples are longer than sft.max_length="
                        f"{max_length} tokens (longest: {n} tokens, from {ex.source}); their "
                        f"score would be cut off. Raise sft.max_length to at least {n}",
                        field="sft.max_length")
    truncated_ift = counts.get("ift", Counter())["truncated"]
    if truncated_ift:
        log.warning("%d of %d IFT examples are longer than sft.max_length=%d and will be "
                    "truncated (their answers lose their end)", truncated_ift,
                    counts["ift"]["examples"], max_length)
    return {kind: {"examples": c["examples"], "kept_whole": c["examples"] - c["truncated"],
                   "truncated": c["truncated"], "tokens": c["tokens"],
                   "max_tokens": c["max_tokens"]} for kind, c in sorted(counts.items())}
