"""`selfreward`: one subcommand per pipeline stage (dvc.yaml calls them), plus a few tools.

A stage command only parses options and calls its entry function (stages/__init__.py: stage
`x_y`, command `x-y`, `stages.x_y.run_x_y`); each option's destination names the entry's keyword
argument, and `with_params` passes the loaded params as `params`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

from .config.params import load_params


def _path(flag: str, dest: str, help: str, *, required: bool = True, multiple: bool = False,
          **extra):
    """A path option stored under `dest`, the entry function's keyword argument."""
    return click.option(flag, dest, required=required, multiple=multiple, type=click.Path(),
                        help=help, **extra)


MODEL = _path("--model", "model_dir", "Checkpoint directory of the model.")
EXPORT = click.option("--export", "exports", multiple=True, required=True,
                      help="Open Assistant export (.jsonl, .jsonl.gz or .parquet file of flat "
                           "messages, a directory of them, or a dataset id); repeatable.")


def with_params(command):
    """Add `--params FILE`; pass the loaded, validated `Params` as `params` (bad: exit 2)."""

    @click.option("--params", "params_file", default="params.yaml", show_default=True,
                  type=click.Path(dir_okay=False), help="Params file (stage sections).")
    @functools.wraps(command)
    def load_then_run(*args, params_file: str, **kwargs):
        return command(*args, params=load_params(params_file), **kwargs)

    return load_then_run


def _relaunch(options: dict) -> None:
    """Re-run a training command under `accelerate launch` when params launch.* ask for it (its
    outputs are removed first); in the launched processes, go on."""
    from .training.launch import maybe_relaunch
    maybe_relaunch(options["params"].launch, cleanup=[options.get(key) for key in (
        "out_dir", "metrics_path", "plot_path")])


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
@with_params
@_path("--out", "out_dir", "Output checkpoint directory (M0).")
@_path("--metrics", "metrics_path", "Metrics JSON.")
def base(**options) -> None:
    """Make M0: the base model (params base.*: 'embedded' SmolLM2-135M-Instruct, a local HF
    directory, a .gguf file or a hub id) as a standard HF checkpoint in base.dtype."""
    from .stages.base import run_base
    run_base(**options)


# Seed data from Open Assistant as the paper built it: seed-ift, seed-sft, seed-judge, seed-eft.
@main.command("seed-ift")
@with_params
@EXPORT
@_path("--out", "out_path", "IFT JSONL to write (`messages`: user, assistant).")
@_path("--metrics", "metrics_path", "Metrics JSON (messages read, skipped per reason).")
def seed_ift(**options) -> None:
    """Seed IFT: first turns in oasst.lang, the rank-0 human reply only (params oasst.ift.*);
    deleted, failed-review, other-language and later-turn messages are skipped and counted."""
    from .stages.seed_ift import run_seed_ift
    run_seed_ift(**options)


@main.command("seed-sft")
@with_params
@MODEL
@_path("--ift", "ift_paths", "The built IFT file(s); repeatable.", multiple=True)
@_path("--out", "out_dir", "Output checkpoint directory (the EFT judge).")
@_path("--metrics", "metrics_path", "Metrics JSON.")
def seed_sft(**options) -> None:
    """The paper's SFT baseline: M0 fine-tuned on the built IFT only (params sft.*); it judges
    the EFT candidates (seed-judge)."""
    from .stages.seed_sft import run_seed_sft
    _relaunch(options)
    run_seed_sft(**options)


@main.command("seed-judge")
@with_params
@EXPORT
@_path("--ift", "ift_paths", "IFT file(s) whose prompts EFT must not use.", multiple=True)
@_path("--model", "model_dir", "Judge checkpoint (dvc.yaml: oasst.judge.model); not needed "
       "with oasst.judge.endpoint.", required=False)
@_path("--out", "out_path", "Judgments JSONL (replies, human ranks, K judgments each).")
@_path("--metrics", "metrics_path", "Metrics JSON (groups, parse rate).")
def seed_judge(**options) -> None:
    """K sampled judgments per reply of every EFT candidate group: a first-turn prompt outside
    the IFT set with >= oasst.judge.min_replies ranked replies (params oasst.judge.*, engine.*).
    Sharded and resumable: a rerun after a crash skips finished shards."""
    from .stages.seed_judge import run_seed_judge
    run_seed_judge(**options)


@main.command("seed-eft")
@with_params
@_path("--judgments", "judgments_path", "`seed-judge` output.")
@_path("--train", "train_path", "EFT-train JSONL to write.")
@_path("--eval", "eval_path", "EFT-eval JSONL to write (held-out prompt groups).")
@_path("--metrics", "metrics_path", "Metrics JSON (groups kept / disagreeing, histograms).")
@_path("--hist", "hist_path", "Score histogram CSV (DVC plot).", required=False)
def seed_eft(**options) -> None:
    """EFT: keep prompt groups whose scores order the replies as the human ranks do, split
    train/eval by group, cap the most common score in train (params oasst.eft.*)."""
    from .stages.seed_eft import run_seed_eft
    run_seed_eft(**options)


@main.command()
@with_params
@MODEL
@_path("--ift", "ift_paths", "IFT seed file(s); repeatable.", required=False, multiple=True)
@_path("--eft", "eft_paths", "EFT train file(s); repeatable.", required=False, multiple=True)
@_path("--self-instruct", "self_instruct_path", "The self-instruct stage's messages: extra IFT "
       "when sft.self_instruct.", required=False)
@_path("--out", "out_dir", "Output checkpoint directory (M1).")
@_path("--metrics", "metrics_path", "Metrics JSON.")
@_path("--plot", "plot_path", "Loss curve CSV (DVC plot).", required=False)
def sft(**options) -> None:
    """Supervised fine-tuning M0 -> M1 on seed IFT and EFT-train rendered through the judge
    template, so M1 learns to judge (params sft.*; LoRA merged before saving)."""
    from .stages.sft import run_sft
    _relaunch(options)
    run_sft(**options)


@main.command()
@with_params
@MODEL
@_path("--seed-data", "seed_paths", "Seed IFT file(s): few-shot user prompts.", multiple=True)
@_path("--self-instruct", "self_instruct_path", "The self-instruct stage's tasks: the source "
       "when prompts.source=self_instruct.", required=False)
@click.option("--iteration", default="1", show_default=True, help="Iteration t: with "
              "prompts.source=self_instruct, the t-th block of prompts.count tasks.")
@_path("--exclude", "exclude_paths", "Prompts a prompts.source=pool pool must not contain "
       "(eval, IFEval; the --seed-data prompts always); repeatable.", required=False,
       multiple=True)
@_path("--out", "out_path", "prompts.jsonl to write.")
@_path("--metrics", "metrics_path", "Metrics JSON (kept/rejected per reason).")
@_path("--ifeval", "ifeval_path", "IFEval prompts no training prompt may (nearly) equal "
       "(decontamination metric).", required=False)
def prompts(**options) -> None:
    """New user prompts written by M_t from few-shot examples (params prompts.*, engine.*), kept
    by the Self-Instruct filters (ROUGE-L against the pool, blacklist, length, duplicates) and
    the prompt-quality rules (prompts.quality); with prompts.source=model written by
    prompts.model instead; with self_instruct or pool, taken from the --self-instruct tasks or
    the prompts.pool file."""
    from .stages.prompts import run_prompts
    run_prompts(**options)


@main.command("self-instruct")
@with_params
@MODEL
@_path("--seed-tasks", "seed_paths", "Seed tasks in the Self-Instruct format; repeatable.",
       required=False, multiple=True, default=["data/seed/self_instruct_tasks.jsonl"],
       show_default=True)
@_path("--out", "out_tasks", "Tasks JSONL to write (Self-Instruct format).")
@_path("--messages", "out_messages", "SFT-ready JSONL to write (one row per instance).")
@_path("--metrics", "metrics_path", "Metrics JSON (kept, rejected/dropped per reason).")
@click.option("--if-enabled", is_flag=True,
              help="Write empty outputs unless self_instruct.enabled (the DVC stage's switch).")
def self_instruct(**options) -> None:
    """SELF-INSTRUCT: grow tasks with instances from seed tasks (params self_instruct.*)."""
    from .stages.self_instruct import run_self_instruct
    run_self_instruct(**options)


@main.command()
@with_params
@MODEL
@_path("--prompts", "prompts_path", "prompts.jsonl ({id, prompt}).")
@_path("--out", "out_path", "responses.jsonl to write.")
@_path("--metrics", "metrics_path", "Metrics JSON.")
def responses(**options) -> None:
    """Sample responses.n candidate answers per prompt with M_t (params responses.*, engine.*);
    sharded (engine.shard_size): a rerun after a crash resumes finished shards."""
    from .stages.responses import run_responses
    run_responses(**options)


@main.command()
@with_params
@MODEL
@_path("--responses", "responses_path", "responses.jsonl ({id, prompt, responses}).")
@_path("--out", "out_path", "judgments.jsonl to write.")
@_path("--metrics", "metrics_path", "Metrics JSON (parse rate, histogram, mean score).")
@_path("--hist", "hist_path", "Score histogram CSV (DVC plot).", required=False)
def judge(**options) -> None:
    """M_t judges its own candidates with the additive 5-point rubric (params judge.*).
    judge.mode=sample: judge.samples judgments sampled, 'Score: n' parsed, averaged;
    judge.mode=logprob: expected score from P('0'..'5') after 'Score: ' in one forward pass."""
    from .stages.judge import run_judge
    run_judge(**options)


@main.command("source-answers")
@with_params
@MODEL
@_path("--anchor", "anchor_dir", "M1: writes the rejected answers of pairs.source=anchored.")
@_path("--teacher", "teacher_dir", "The teacher of pairs.source=teacher (pairs.teacher).")
@_path("--seed-data", "seed_path", "Seed IFT file: the prompts and answers of spin.")
@_path("--prompts", "prompts_path", "The iteration's prompts.jsonl (anchored, teacher).")
@_path("--out", "out_path", "Source answers JSONL to write (judgment rows with `source`).")
@_path("--metrics", "metrics_path", "Metrics JSON.")
def source_answers(**options) -> None:
    """The answers pairs.source needs: spin, M_t's answers to the seed prompts; anchored, M1's
    answers to the iteration's prompts judged by M_t; teacher, the teacher's, judged by M_t;
    self_judged, an empty file (docs/pairs.md). Sharded and resumable."""
    from .stages.source_answers import run_source_answers
    run_source_answers(**options)


@main.command("meta-judge")
@with_params
@MODEL
@_path("--judgments", "judgments_path", "judgments.jsonl of judge.mode sample.")
@_path("--out", "out_path", "Judge-training pairs JSONL to write (source meta_judge).")
@_path("--metrics", "metrics_path", "Metrics JSON (parse rates, order agreement, pairs).")
def meta_judge(**options) -> None:
    """Meta-Rewarding: M_t compares its own sampled judgments of the most disputed responses in
    both orders (params meta_judge.*); Bradley-Terry picks the best and the worst judgment, a
    judge-training pair; an empty file unless meta_judge.enabled. Sharded and resumable."""
    from .stages.meta_judge import run_meta_judge
    run_meta_judge(**options)


@main.command()
@with_params
@_path("--judgments", "judgments_path", "judgments.jsonl.")
@_path("--source-answers", "source_answers_path", "The source_answers stage's output (read "
       "unless pairs.source=self_judged).", required=False)
@_path("--meta-judge", "meta_judge_path", "The meta_judge stage's judge-training pairs (read "
       "when pairs.judge_share > 0).", required=False)
@_path("--out", "out_path", "pairs.jsonl to write (TRL conversational preference format).")
@_path("--metrics", "metrics_path", "Metrics JSON (kept, dropped per reason, margins).")
def pairs(**options) -> None:
    """Preference pairs of pairs.source (self_judged: highest vs lowest mean score per prompt;
    spin, anchored, teacher: docs/pairs.md); ties (margin < pairs.min_margin) and prompts with
    < 2 valid scores dropped; pairs.length_rho (length control) and pairs.tie_break (random,
    shortest, longest) pick among near or equal scores."""
    from .stages.pairs import run_pairs
    run_pairs(**options)


@main.command()
@with_params
@MODEL
@_path("--pairs", "pairs_path", "pairs.jsonl.")
@_path("--out", "out_dir", "Output checkpoint directory (M_t+1).")
@_path("--metrics", "metrics_path", "Metrics JSON (loss, reward margins, accuracies).")
@_path("--plot", "plot_path", "Training curve CSV (DVC plot).", required=False)
@_path("--judgments", "judgments_path", "judgments.jsonl of the pairs (read by CREAM only, "
       "dpo.cream.enabled).", required=False)
def dpo(**options) -> None:
    """Train M_t+1 from M_t with DPO on the self-rewarded pairs (params dpo.*), reference M_t;
    optional LoRA (dpo.lora) merged before saving; dpo.distill.weight > 0 adds a token-level KL
    to the teacher dpo.distill.teacher on the chosen and the rejected answers."""
    from .stages.dpo import run_dpo
    _relaunch(options)
    run_dpo(**options)


@main.command("eval-model")
@with_params
@MODEL
@_path("--prompts", "prompts_path", "Held-out eval prompts ({id, prompt}).")
@_path("--eft", "eft_path", "Held-out EFT set (judge agreement).", required=False)
@_path("--judge", "fixed_judge", "Fixed judge scoring the answers pointwise (default: "
       "eval.judge; unused with eval.judge_endpoint).", required=False)
@_path("--out", "out_dir", "Output directory: answers, judge scores, summary.")
@_path("--metrics", "metrics_path", "Headline metrics JSON (DVC metrics).", required=False)
def eval_model(**options) -> None:
    """One model's answers to the eval prompts (eval.*) and its own figures: as a judge
    (judge.*) its agreement with the held-out EFT set, the relevance check and its self-scores;
    the fixed judge's pointwise rubric scores of its answers."""
    from .stages.eval_model import run_eval_model
    run_eval_model(**options)


@main.command()
@with_params
@click.option("--iteration", required=True, help="Iteration key t (M_t -> M_t+1).")
@_path("--model-eval", "model_eval", "eval-model dir of M_t.")
@_path("--next-eval", "next_eval", "eval-model dir of M_t+1.")
@_path("--sft-eval", "sft_eval", "eval-model dir of M1.")
@_path("--judge", "judge_dir", "Local judge checkpoint (default: eval.judge; unused with "
       "eval.judge_endpoint).", required=False)
@_path("--frozen-judge", "frozen_judge", "Checkpoint of M_t: scores M_t+1's answers for the "
       "frozen-judge reward gain.", required=False)
@_path("--ifeval-prev", "ifeval_prev", "`ifeval` answers of M_t (paired IFEval difference).",
       required=False)
@_path("--ifeval-next", "ifeval_next", "`ifeval` answers of M_t+1.", required=False)
@_path("--ifeval-sft", "ifeval_sft", "`ifeval` answers of M1.", required=False)
@_path("--out", "out_path", "Verdicts JSONL (every comparison, both orders).")
@_path("--metrics", "metrics_path", "Metrics JSON (movement, reward gain, win rates).")
def evaluate(**options) -> None:
    """Did M_t+1 move, and is it better? Answers changed, frozen-judge reward gain, fixed-judge
    gains, head-to-head vs M_t and M1 in both orders (params eval.*, judge.*; docs/evaluation.md)."""
    from .stages.evaluate import run_evaluate
    run_evaluate(**options)


@main.command()
@_path("--metrics-dir", "metrics_dir", "Metrics root (iter<N>/*.json).", required=False,
       default="metrics", show_default=True)
@_path("--out", "out_dir", "Directory for summary.md and the PNG charts.", required=False,
       default="reports", show_default=True)
@_path("--plots", "plots_dir", "Directory for the DVC plot CSVs across iterations.",
       required=False, default="plots/eval", show_default=True)
@_path("--ifeval-answers", "ifeval_answers", "The ifeval stages' answers (data/ifeval): IFEval "
       "by held-out type paired with M1.", required=False)
def report(**options) -> None:
    """Write reports/summary.md (tables per iteration) and charts from whatever metrics exist."""
    from .stages.report import run_report
    click.echo(str(run_report(**options)))


@main.command()
@with_params
@MODEL
@_path("--prompts", "prompts_path", "IFEval prompts JSONL (default: ifeval.prompts).",
       required=False)
@_path("--answers", "answers_path", "Answers JSONL with per-instruction verdicts.")
@_path("--metrics", "metrics_path", "Metrics JSON (accuracies, 95 % intervals, per type).")
def ifeval(**options) -> None:
    """IFEval: greedy answers (ifeval.*, engine.*) scored by the official checkers: prompt- and
    instruction-level accuracy, strict and loose, with 95 % intervals, per instruction type."""
    from .stages.ifeval import run_ifeval
    run_ifeval(**options)


@main.command()
@with_params
@MODEL
@_path("--prompts", "prompts_path", "IFEval-format prompts JSONL (default: verify.prompts).",
       required=False)
@_path("--out", "out_path", "Answers JSONL: N answers per prompt, judge scores, verdicts.")
@_path("--metrics", "metrics_path", "Metrics JSON (pass rates, selection gain, 95 % intervals).")
def verify(**options) -> None:
    """Verification gap: N sampled answers per prompt (responses.*, verify.*) checked by the
    official IFEval checkers and scored by the model's own judge (judge.*): does its top-scored
    answer pass more often than a random one?"""
    from .stages.verify import run_verify
    run_verify(**options)


@main.command("alpaca-outputs")
@with_params
@MODEL
@_path("--prompts", "prompts_path", "AlpacaEval instructions, JSON list or JSONL (default: "
       "alpaca_eval.prompts).", required=False)
@click.option("--generator", help="Generator name in the file (default: selfreward-<model dir>).")
@_path("--out", "out_path", "model_outputs.json to write.")
def alpaca_outputs(**options) -> None:
    """AlpacaEval 2.0: greedy answers to the 805 instructions (alpaca_eval.*, engine.*) as
    alpaca_eval's model_outputs.json; evaluate them with `selfreward alpaca-eval`."""
    from .stages.alpaca_outputs import run_alpaca_outputs
    click.echo(f"{run_alpaca_outputs(**options)} outputs -> {options['out_path']}")


@main.command("alpaca-eval")
@with_params
@_path("--model-outputs", "model_outputs_path", "model_outputs.json.")
@_path("--reference", "reference_path", "Reference outputs (default: alpaca_eval.reference, "
       "GPT-4 Turbo).", required=False)
@_path("--out", "out_dir", "Directory for alpaca_eval's annotations and leaderboard.")
@_path("--metrics", "metrics_path", "Metrics JSON (win rate, LC win rate, the paper's).")
def alpaca_eval(**options) -> None:
    """alpaca_eval's annotator (alpaca_eval.annotator: length-controlled GPT-4 Turbo): win rate
    and LC win rate next to the paper's. The API key comes from the env variable named by
    alpaca_eval.api_key_env; alpaca_eval.base_url: any OpenAI-compatible server."""
    from .stages.alpaca_eval import run_alpaca_eval
    click.echo(json.dumps(run_alpaca_eval(**options), indent=2))


@main.command("lm-eval")
@with_params
@MODEL
@_path("--out", "out_dir", "Directory for lm_eval's results and samples.")
@_path("--metrics", "metrics_path", "Metrics JSON: {task: {metric: value}}.")
def lm_eval(**options) -> None:
    """EleutherAI's lm-evaluation-harness on a checkpoint (params lm_eval.*, engine.*): backend
    vllm (GPU) or hf; the tasks' datasets come from the hub (or its cache)."""
    from .stages.lm_eval import run_lm_eval
    click.echo(json.dumps(run_lm_eval(**options), indent=2))


# -- tools a person runs by hand, not DVC stages (stages/__init__.py) -----------------------------
@main.command("eval-judge")
@with_params
@MODEL
@_path("--eft", "eft_path", "Grouped human-scored judge examples (prompt, response, score, "
       "group).", required=False)
@_path("--pairs", "pairs_path", "Preference pairs {prompt, chosen, rejected} (strings or chat "
       "messages).", required=False)
@_path("--out", "out_path", "Metrics JSON to write (also printed).", required=False)
def eval_judge(**options) -> None:
    """A model's agreement as a judge with human scores (--eft: pairwise accuracy, Spearman,
    relevance check...) or preference pairs (--pairs); params judge.*, engine.*."""
    from .judge.agreement import evaluate_judge
    click.echo(json.dumps(evaluate_judge(**options), indent=2))


@main.command("ifeval-data")
@_path("--out", "out_path", "input_data.jsonl to write (the official 541 prompts).")
@click.option("--revision", help="Dataset revision (commit) on the hub.")
def ifeval_data(out_path, revision) -> None:
    """Download the official IFEval prompts (google/IFEval; needs the Hugging Face hub)."""
    from .evaluation.ifeval import download_official
    click.echo(f"{download_official(out_path, revision)} prompts -> {out_path}")


@main.command("alpaca-data")
@_path("--out-dir", "out_dir", "Directory for alpaca_eval.json and the reference outputs.",
       required=False, default="data/alpaca_eval", show_default=True)
@click.option("--revision", help="Dataset revision (commit) on the hub.")
def alpaca_data(out_dir, revision) -> None:
    """Download the AlpacaEval instructions and GPT-4 Turbo reference outputs (needs the hub)."""
    from .evaluation.alpaca import download_alpaca_data
    for path in download_alpaca_data(out_dir, revision):
        click.echo(str(path))


@main.command("params-schema")
@click.option("--out", type=click.Path(dir_okay=False), help="JSON file (default: stdout).")
def params_schema(out) -> None:
    """JSON schema of params.yaml (types, bounds, choices, defaults, descriptions) for editors:
    `--out params.schema.json`, then `# yaml-language-server: $schema=params.schema.json` as
    params.yaml's first line (VS Code YAML extension or any yaml-language-server client)."""
    from .config.params import write_schema
    click.echo(write_schema(out))


if __name__ == "__main__":
    main()
