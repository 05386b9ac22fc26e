"""AlpacaEval 2.0: the instructions, alpaca_eval's `model_outputs.json` records, and its
annotator run on them (length-controlled win rate against GPT-4 Turbo, judged by GPT-4 Turbo
through an OpenAI-compatible endpoint); stages alpaca_outputs and alpaca_eval run them.

The annotator is alpaca_eval's own command in a child process. The API key goes to it only
through that process's environment (never on a command line, in a file, a log or a metric).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..config.errors import UserError
from ..config.params import AlpacaEvalParams
from ..core.io import atomic_file
from ..report.paper import PAPER_WIN_RATE

log = logging.getLogger(__name__)

HUB_DATASET = "tatsu-lab/alpaca_eval"
PROMPTS_FILE, REFERENCE_FILE = "alpaca_eval.json", "alpaca_eval_gpt4_baseline.json"
DATA_HINT = ("on a machine with network run `selfreward alpaca-data --out-dir data/alpaca_eval` "
             f"(files {PROMPTS_FILE} and {REFERENCE_FILE} of the Hugging Face dataset "
             f"{HUB_DATASET}), or copy them there")


def load_alpaca_rows(path: str | Path, what: str = "alpaca_eval.prompts") -> list[dict]:
    """AlpacaEval rows ({instruction, dataset, ...}) from a JSON list or a JSONL file."""
    file = str(path)
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found; {DATA_HINT}", file=file, field=what)
    text = p.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            items = list(enumerate(json.loads(text), start=1))
            where = "item"
        else:
            items = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1)
                     if line.strip()]
            where = "line"
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON ({exc.msg})", file=file, line=exc.lineno) from None
    if not items:
        raise UserError("no rows", file=file)
    rows = []
    for n, obj in items:
        if not isinstance(obj, dict):
            raise UserError(f"{where} {n}: expected an object", file=file,
                            line=n if where == "line" else None)
        instruction = obj.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise UserError(f"{where} {n}: expected a non-empty string", file=file,
                            line=n if where == "line" else None, field="instruction")
        rows.append(obj)
    return rows


def model_outputs(rows: list[dict], answers: list[str], generator: str) -> list[dict]:
    """alpaca_eval's model_outputs records: instruction, output, generator, dataset."""
    return [{"instruction": r["instruction"], "output": a, "generator": generator,
             "dataset": r.get("dataset", "alpaca_eval")} for r, a in zip(rows, answers)]


def write_alpaca_json(path: str | Path, records: list[dict]) -> None:
    """Records as the JSON list alpaca_eval reads (model_outputs.json, the instructions),
    written atomically."""
    with atomic_file(path) as fh:
        json.dump(records, fh, ensure_ascii=False, indent=2)
        fh.write("\n")


def download_alpaca_data(out_dir: str | Path, revision: str | None = None) -> list[Path]:
    """The 805 instructions and the GPT-4 Turbo reference outputs from the hub (needs network).

    Plain file downloads: the dataset's loading script no longer runs under `datasets` >= 4.
    """
    from huggingface_hub import hf_hub_download

    out = []
    for name in (PROMPTS_FILE, REFERENCE_FILE):
        try:
            cached = hf_hub_download(HUB_DATASET, name, repo_type="dataset", revision=revision)
        except (OSError, ValueError) as exc:
            raise UserError(f"could not download {name} of {HUB_DATASET} ({type(exc).__name__}: "
                            f"{exc}); copy the file into {out_dir} instead") from None
        target = Path(out_dir) / name
        write_alpaca_json(target, load_alpaca_rows(cached))
        out.append(target)
    return out


def annotator_command(params: AlpacaEvalParams, model_outputs_path: str, reference_path: str,
                      out_dir: str) -> list[str]:
    """The alpaca_eval command line (no secret on it)."""
    return [sys.executable, "-m", "alpaca_eval.main", "evaluate",
            "--model_outputs", model_outputs_path, "--reference_outputs", reference_path,
            "--annotators_config", params.annotator, "--output_path", out_dir,
            "--precomputed_leaderboard", "None", "--is_cache_leaderboard", "False",
            # the annotation cache and the LC model's weights: in the output dir / nowhere,
            # not inside the installed package
            "--caching_path", str(Path(out_dir) / "annotations_cache.json"),
            "--metric_kwargs", "{'save_weights_dir': None}"]


def annotator_env(params: AlpacaEvalParams) -> dict[str, str]:
    """The child's environment: the key from params.api_key_env under the name the openai client
    reads, the endpoint when one is set."""
    key = os.environ.get(params.api_key_env)
    if not key:
        raise UserError(f"environment variable {params.api_key_env} (the annotator's API key) is "
                        "not set: export it to run the AlpacaEval annotator",
                        field="alpaca_eval.api_key_env")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEYS",)}
    env["OPENAI_API_KEY"] = key
    env["IS_ALPACA_EVAL_2"] = "True"
    if params.base_url:
        env["OPENAI_BASE_URL"] = env["OPENAI_API_BASE"] = params.base_url
    return env


def _leaderboard_row(out_dir: Path, annotator: str, generator: str) -> dict:
    path = out_dir / annotator / "leaderboard.csv"
    if not path.is_file():
        raise UserError(f"alpaca_eval wrote no {path}", file=str(path))
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("") == generator or row.get("name") == generator:
                return row
    raise UserError(f"no row for {generator} in {path}", file=str(path))


def _number(value: str | None) -> float | None:
    try:
        return round(float(value), 4) if value not in (None, "") else None
    except ValueError:
        return None


def annotate(params: AlpacaEvalParams, model_outputs_path: str | Path,
             reference_path: str | Path, out_dir: str | Path) -> dict:
    """Run alpaca_eval's annotator into `out_dir` (which must exist); its win rate and LC win
    rate for the generator of `model_outputs_path`, next to the paper's win rate."""
    outputs = load_alpaca_rows(model_outputs_path, "--model-outputs")
    load_alpaca_rows(reference_path, "alpaca_eval.reference")
    generator = outputs[0].get("generator") or "model"
    env = annotator_env(params)
    cmd = annotator_command(params, str(model_outputs_path), str(reference_path), str(out_dir))
    log.info("alpaca_eval: %s", " ".join(cmd))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:].replace(env["OPENAI_API_KEY"], "***")
        raise UserError(f"alpaca_eval failed (exit {done.returncode}):\n{tail}")
    row = _leaderboard_row(Path(out_dir), params.annotator, generator)
    label = generator.rsplit("-", 1)[-1].upper()
    return {"generator": generator, "annotator": params.annotator,
            "endpoint": params.base_url or "openai", "instances": len(outputs),
            "win_rate": _number(row.get("win_rate")),
            "length_controlled_winrate": _number(row.get("length_controlled_winrate")),
            "standard_error": _number(row.get("standard_error")),
            "avg_length": _number(row.get("avg_length")),
            "paper_win_rate": PAPER_WIN_RATE.get(label)}
