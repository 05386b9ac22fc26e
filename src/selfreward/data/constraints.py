"""Verifiable constraints for training prompts (issue 23): IFEval instructions appended to the
prompts the loop writes, drawn from the checker registry of lm-eval's `ifeval` task (the code
evaluation/ifeval.py scores with), and the decontamination check against IFEval's prompts.

Each instruction is phrased by its own checker class: `build_description()` without arguments
draws them at random (lm-eval's classes use the global `random`), so the draw runs under a
generator seeded by (constraints.seed, prompt id) and the global state is restored afterwards.
The drawn arguments are written in IFEval's format (`instruction_id_list`, `kwargs`), so the
same checkers verify the answers later.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator

from ..config.errors import UserError
from ..config.params import ConstraintsParams
from ..evaluation.ifeval import check_instruction, checkers
from ..evaluation.ifeval import instruction_group as group
from ..evaluation.ifeval import named_in as matches
from .rouge import RougeLPool

# Arguments some types cannot draw and the prompt itself supplies.
FROM_PROMPT = {"prompt_to_repeat"}
# ROUGE-L F1 at or above which a training prompt counts as a near-copy of an IFEval prompt
# (the project's Self-Instruct filter threshold).
CONTAMINATION_THRESHOLD = 0.7
MAX_DRAWS = 20


def _check_names(names: list[str], registry: dict, field: str) -> None:
    known = set(registry) | {group(k) for k in registry}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown instruction ids or groups {unknown} (groups: "
                        f"{', '.join(sorted({group(k) for k in registry}))})", field=field)


def training_types(params: ConstraintsParams) -> list[str]:
    """Instruction ids the loop may append: `types` ([] = all) minus `holdout`; unknown names
    are a UserError naming the params key."""
    _, registry = checkers()
    _check_names(params.types, registry, "prompts.constraints.types")
    _check_names(params.holdout, registry, "prompts.constraints.holdout")
    ids = [k for k in sorted(registry) if not params.types or matches(k, params.types)]
    ids = [k for k in ids if not matches(k, params.holdout)]
    if params.count and not ids:
        raise UserError("no instruction type left to draw: every type of prompts.constraints."
                        "types is in prompts.constraints.holdout", field="prompts.constraints")
    return ids


@contextlib.contextmanager
def _global_random(seed: int) -> Iterator[None]:
    # lm-eval's classes draw from the module-level generator; keep the caller's state intact.
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _satisfiable(instruction_id: str, kwargs: dict) -> bool:
    # lm-eval draws nth_paragraph and num_paragraphs independently, and may ask for "less than 1
    # sentences": instructions no answer can obey are redrawn.
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        return kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]
    for key in ("num_sentences", "num_words"):
        if kwargs.get("relation") == "less than" and kwargs.get(key, 2) < 2:
            return False
    return True


def phrase(instruction_id: str, prompt: str, seed: int) -> tuple[str, dict] | str:
    """(description, kwargs) of one instruction with arguments drawn under `seed`, or why the
    type cannot be used (it needs data the prompt lacks)."""
    _, registry = checkers()
    checker = registry[instruction_id](instruction_id)
    takes = set(checker.get_instruction_args_keys())
    given = {k: prompt for k in takes & FROM_PROMPT}
    rng = random.Random(seed)
    for _ in range(MAX_DRAWS):
        with _global_random(rng.getrandbits(64)):
            try:
                description = checker.build_description(**given)
            except ValueError as exc:
                return f"needs {sorted(takes - FROM_PROMPT)}: {exc}"
            kwargs = dict(checker.get_instruction_args() or {})
        problem = check_instruction(instruction_id, kwargs)
        if problem:
            return problem
        if _satisfiable(instruction_id, kwargs):
            return description, kwargs
    return f"no satisfiable arguments in {MAX_DRAWS} draws"


def usable_types(params: ConstraintsParams) -> tuple[list[str], dict[str, str]]:
    """The training types that can be phrased for any prompt, and the left-out ones with why."""
    usable, left_out = [], {}
    for instruction_id in training_types(params):
        got = phrase(instruction_id, "An example request.", params.seed)
        if isinstance(got, str):
            left_out[instruction_id] = got
        else:
            usable.append(instruction_id)
    return usable, left_out


def draw_ids(types: list[str], count: int, rng: random.Random) -> list[str]:
    """`count` distinct types without IFEval's conflicting combinations (fewer if none is left)."""
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    chosen: list[str] = []
    pool = list(types)
    while len(chosen) < count and pool:
        pick = rng.choice(pool)
        chosen.append(pick)
        banned = set(INSTRUCTION_CONFLICTS.get(pick, ())) | {pick}
        pool = [t for t in pool if t not in banned and pick not in
                INSTRUCTION_CONFLICTS.get(t, ())]
    return chosen


def constrain(row: dict, types: list[str], params: ConstraintsParams) -> dict:
    """The row with `count` instructions appended to its prompt, and IFEval's
    `instruction_id_list` and `kwargs`; reproducible from (seed, row id)."""
    rng = random.Random(f"{params.seed}:{row['id']}")
    ids, kwargs, sentences = [], [], []
    for instruction_id in draw_ids(types, params.count, rng):
        got = phrase(instruction_id, row["prompt"], rng.getrandbits(64))
        if isinstance(got, str):  # usable_types phrased it once: a per-prompt failure is rare
            continue
        ids.append(instruction_id)
        sentences.append(got[0].strip())
        kwargs.append(got[1])
    prompt = row["prompt"].rstrip() + "\n\n" + " ".join(sentences) if sentences else row["prompt"]
    return {**row, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}


def constrain_prompts(rows: list[dict], params: ConstraintsParams) -> tuple[list[dict], dict]:
    """Every row constrained (count > 0) and the metrics: types used, left out (and why)."""
    if params.count == 0:
        return rows, {"constraints_per_prompt": 0}
    types, left_out = usable_types(params)
    if not types:
        raise UserError(f"no usable instruction type (left out: {left_out})",
                        field="prompts.constraints.types")
    out = [constrain(row, types, params) for row in rows]
    used = Counter(i for row in out for i in row["instruction_id_list"])
    return out, {"constraints_per_prompt": params.count,
                 "constraint_types_available": len(types),
                 "constraint_types_left_out": left_out,
                 "constraint_holdout": list(params.holdout),
                 "constraints_appended": sum(used.values()),
                 "constraint_types_used": dict(sorted(used.items()))}


def contamination(prompts: list[str], ifeval_prompts: list[str],
                  threshold: float = CONTAMINATION_THRESHOLD) -> list[int]:
    """Indices of training prompts equal or nearly equal (ROUGE-L F1 >= threshold, the fast
    filter of data/rouge.py) to an IFEval prompt."""
    pool = RougeLPool(threshold, ifeval_prompts)
    exact = {p.strip() for p in ifeval_prompts}
    return [i for i, p in enumerate(prompts)
            if p.strip() in exact or pool.first_match(p) is not None]
