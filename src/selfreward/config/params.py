"""params.yaml -> typed, validated config (pydantic v2). Errors name the file, line and key."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ..core.io import read_text
from .errors import ParamsError, UserError, from_validation_error


def _yaml_number(value: Any) -> Any:
    # YAML 1.1 reads 1e-6 (no dot) as a string; accept numeric strings for floats only.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _str_keys(value: Any) -> Any:
    # An unquoted `1:` is an int key in YAML; iteration, export and model names are strings.
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _yaml_off(value: Any) -> Any:
    # YAML 1.1 reads an unquoted `off` as false.
    return "off" if value is False else value


def _model_names(names: list[str]) -> list[str]:
    if any(not re.fullmatch(r"m\d+", n) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"must list distinct model names m0, m1, … (models/<name>), got {names}")
    return names


YAML_NUMBER = BeforeValidator(_yaml_number)  # last in Annotated: the schema keeps the bounds
Number = Annotated[float, YAML_NUMBER]
Positive = Annotated[float, Field(gt=0), YAML_NUMBER]
NonNegative = Annotated[float, Field(ge=0), YAML_NUMBER]
Share = Annotated[float, Field(ge=0, le=1), YAML_NUMBER]
Seed = Annotated[int, Field(ge=0, description="random seed")]
# A negative temperature would be read as greedy by the engines: refused instead.
Temperature = Annotated[float, Field(ge=0, description="sampling temperature (0 = greedy)"),
                        YAML_NUMBER]
TopP = Annotated[float, Field(gt=0, le=1, description="nucleus sampling: probability mass kept"),
                 YAML_NUMBER]
MaxNewTokens = Annotated[int, Field(gt=0, description="tokens generated per call at most")]
Score = Annotated[int, Field(ge=0, le=5)]
Names = Annotated[dict[str, str], BeforeValidator(_str_keys)]
ModelNames = Annotated[list[str], AfterValidator(_model_names), Field(
    description="models to evaluate by name (m0, m1, … = models/<name>); [] = stages off")]
Dtype = Literal["bfloat16", "float16", "float32"]


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors and values keep their YAML types."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class LoraParams(Section):
    """LoRA adapters (PEFT) instead of training the weights themselves."""

    enabled: bool = Field(False, description="train LoRA adapters instead of the weights")
    r: PositiveInt = Field(16, description="adapter rank")
    alpha: PositiveInt = Field(32, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: Share = Field(0.05, description="dropout on the adapter inputs")
    target_modules: str | list[str] = Field("all-linear", description="modules given adapters")


class BaseParams(Section):
    """Stage base: M0 as a standard Hugging Face checkpoint."""

    model: str = Field("embedded", description="embedded SmolLM2-135M | HF dir | .gguf | hub id")
    dtype: Dtype = Field("bfloat16", description="checkpoint dtype on disk")
    revision: str | None = Field(None, description="hub revision of base.model (null = default)")


class TrainParams(Section):
    """Shared by SFT and DPO."""

    learning_rate: Positive = Field(5.5e-6, description="peak learning rate")
    final_learning_rate: NonNegative = Field(1.1e-6, description="cosine decay floor")
    warmup_ratio: Share = Field(0.0, description="share of the steps spent warming up")
    epochs: Positive = Field(1.0, description="passes over the data (unless max_steps)")
    max_steps: int = Field(-1, ge=-1, description="optimizer steps; -1 = full epochs")
    batch_size: PositiveInt = Field(8, description="examples per process and step")
    grad_accum: PositiveInt = Field(1, description="gradient accumulation steps")
    max_length: PositiveInt = Field(512, description="tokens per example at most")
    weight_decay: NonNegative = Field(0.0, description="AdamW weight decay")
    seed: Seed = 0
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory")
    save_steps: NonNegativeInt = Field(0, description="checkpoint every N steps (0 = never)")
    # The master weights stay float32 either way.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="autocast; auto = bf16 where CUDA or the CPU has it natively")
    train_layers: NonNegativeInt = Field(0, description="train the top N blocks only (0 = all)")
    lora: LoraParams = Field(LoraParams(), description="LoRA adapters")


class JudgeDataParams(Section):
    """Synthetic judge turns from the IFT answers (training/sft_data.py): each negative comes with
    its balancing positive, so only the prompt-answer match separates the labels."""

    mismatched: NonNegativeInt = Field(0, description="answers under another prompt (score 0)")
    empty: NonNegativeInt = Field(0, description="empty answers (score 0)")
    truncated: NonNegativeInt = Field(0, description="answers cut off mid-way (truncated_score)")
    matched_score: Score = Field(4, description="score of the balancing positives (0-5)")
    truncated_score: Score = Field(2, description="score of a truncated answer (0-5)")
    seed: Seed = 0


class SftParams(TrainParams):
    """Stage sft: M0 -> M1 on IFT and EFT (judge) examples."""

    self_instruct: bool = Field(False, description="also train on the self_instruct messages")
    eft_format: Literal["score", "justification", "both"] = Field(
        "score", description="EFT completion: `Score: n` (logprob judge) | reasons, then score")
    judge_data: JudgeDataParams = Field(JudgeDataParams(), description="synthetic judge turns")
    # token = TRL's mean over the batch's label tokens (long answers dominate); example = each
    # example's mean, so a judge turn's one digit counts as much as a 100-token answer.
    loss_normalization: Literal["token", "example"] = Field(
        "token", description="loss mean over tokens | over examples")
    # Contrast inside a batch (an EFT prompt's answers, a judge turn and its twin) is what
    # teaches a small judge relevance.
    batching: Literal["random", "grouped"] = Field(
        "random", description="shuffled examples | whole groups kept in one batch")


def trl_loss_types() -> list[str]:
    """The DPO loss types the installed TRL knows, read from its DPOTrainer source (no import:
    params load stays fast); TRL 1.16's list when TRL is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    source = Path(spec.origin).parent / "trainer" / "dpo_trainer.py" if spec and spec.origin else None
    if source is not None and source.is_file():
        found = re.findall(r'loss_type == "(\w+)"', read_text(source))
        if found:
            return list(dict.fromkeys(found))
    return ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
            "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]


class CreamParams(Section):
    """CREAM (Wang et al. 2025): per-pair label smoothing by ranking consistency (docs/losses.md)."""

    enabled: bool = Field(False, description="loss = C*DPO(y+, y-) + (1-C)*DPO(y-, y+)")
    # implicit_reward: sum log pi_Mt(y|x) - sum log pi_Mt-1(y|x), against the loop judge's scores.
    rank_by: Literal["implicit_reward"] = Field(
        "implicit_reward", description="second ranking of the N answers (judge: not built yet)")
    consistency: Literal["per_prompt", "mean"] = Field(
        "per_prompt", description="each pair its own C | the mean C for every pair")


class DistillParams(Section):
    """Optional teacher distillation added to the DPO loss (training/distill.py)."""

    weight: NonNegative = Field(0.0, description="loss = DPO + weight * token KL; 0 = plain DPO")
    # Dual-level: alpha * KL on the chosen answers' tokens + gamma * KL on the rejected ones'.
    chosen_weight: NonNegative = Field(0.0, description="alpha: weight of the chosen-side KL")
    rejected_weight: NonNegative = Field(0.0, description="gamma: weight of the rejected-side KL")
    teacher: str = Field("models/m0", description="teacher checkpoint dir (student's tokenizer)")
    temperature: Positive = Field(1.0, description="softmax temperature of the KL")
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="KL(teacher||student) | KL(student||teacher)")


class DpoParams(TrainParams):
    """Stage dpo: M_t -> M_t+1 on the preference pairs, reference model M_t."""

    learning_rate: Positive = Field(1e-6, description="peak learning rate")
    final_learning_rate: NonNegative = Field(1e-7, description="cosine decay floor")
    batch_size: PositiveInt = Field(16, description="pairs per process and step")
    beta: Positive = Field(0.1, description="DPO beta: strength of the pull to the reference")
    # loss = sum_i loss_weights[i] * loss_type[i] (TRL); [sigmoid, sft] = Iterative RPO.
    loss_type: str | list[str] = Field("sigmoid", description="TRL DPO loss type(s)")
    loss_weights: list[Annotated[float, Field(ge=0), YAML_NUMBER]] | None = Field(
        None, description="one weight per loss_type (null = all 1.0)")
    ld_alpha: Annotated[float | None, YAML_NUMBER] = Field(
        None, ge=0, le=1, description="LD-DPO: weight of the longer answer's tail (null = off)")
    cream: CreamParams = Field(CreamParams(), description="CREAM consistency regularization")
    distill: DistillParams = Field(DistillParams(), description="teacher distillation")

    @model_validator(mode="after")
    def _losses(self) -> DpoParams:
        types = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        valid = trl_loss_types()
        if not types:
            raise ParamsError("loss_type", f"needs at least one of: {', '.join(valid)}")
        for name in types:
            if name not in valid:
                raise ParamsError("loss_type", f"unknown TRL loss type {name!r} (valid: "
                                  f"{', '.join(valid)})", near="loss_type")
        if len(set(types)) != len(types):
            raise ParamsError("loss_type", f"lists a loss type twice: {types}")
        if self.loss_weights is not None and len(self.loss_weights) != len(types):
            raise ParamsError("loss_weights", f"needs one weight per loss_type ({len(types)}), "
                              f"got {len(self.loss_weights)}")
        if self.cream.enabled:
            if types != ["sigmoid"] or self.ld_alpha is not None:
                raise ParamsError("cream.enabled", "CREAM replaces the sigmoid DPO loss: set "
                                  "loss_type: sigmoid and ld_alpha: null", near="cream")
            if self.distill.weight or self.distill.chosen_weight or self.distill.rejected_weight:
                raise ParamsError("cream.enabled", "CREAM and distillation do not combine yet: "
                                  "set the dpo.distill weights to 0", near="cream")
        return self


class EngineParams(Section):
    """The generation engine of prompts, responses, judge and evaluation."""

    name: Literal["auto", "hf", "vllm"] = Field("auto", description="auto = vllm on CUDA, else hf")
    dtype: Literal["auto", Dtype] = Field("auto", description="auto = bf16 where native, else fp32")
    batch_size: PositiveInt = Field(16, description="HF engine: sequences per generate batch")
    score_batch_size: PositiveInt = Field(16, description="HF engine: sequences per judge pass")
    max_model_len: PositiveInt = Field(2048, description="context length (prompt + answer)")
    tensor_parallel_size: PositiveInt = Field(1, description="vLLM: GPUs per model")
    gpu_memory_utilization: Number = Field(0.85, gt=0, le=1, description="vLLM: GPU memory share")
    enable_prefix_caching: bool = Field(True, description="vLLM: reuse shared prompt prefixes")
    shard_size: PositiveInt = Field(64, description="items per resumable shard")


# data/prompt_quality.py QUALITY_RULES, in its order (tests/test_prompt_quality.py checks); not
# imported, so that config/ depends on no other package module.
QualityRule = Literal["template_leak", "self_talk", "missing_material", "few_content_words",
                      "not_request"]
QUALITY_RULES: tuple[str, ...] = typing.get_args(QualityRule)

# Self-Instruct's keyword filter: tasks a text-only model cannot do.
BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
             "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


class InstructionFilterParams(Section):
    """Few-shot instruction writing and the Self-Instruct filters (prompts, self_instruct)."""

    seed_shots: NonNegativeInt = Field(6, description="seed examples per few-shot prompt")
    generated_shots: NonNegativeInt = Field(2, description="generated examples per prompt")
    rouge_threshold: Share = Field(0.7, description="rejected at ROUGE-L F1 >= this to the pool")
    min_words: NonNegativeInt = Field(3, description="shortest instruction kept, in words")
    max_words: NonNegativeInt = Field(150, description="longest instruction kept, in words")
    blacklist: list[str] = Field(BLACKLIST, description="keywords that reject an instruction")
    quality: list[QualityRule] = Field(
        list(QUALITY_RULES), description="prompt-quality rules applied after the Self-Instruct "
        "filters (data/prompt_quality.py, docs/prompts.md); [] = none")
    min_content_words: NonNegativeInt = Field(
        2, le=50, description="rule few_content_words: fewest words outside the stop-word list")
    seed: Seed = 0

    @model_validator(mode="after")
    def _words(self) -> InstructionFilterParams:
        if self.max_words < self.min_words:
            raise ParamsError("max_words", f"must be >= min_words ({self.min_words}), "
                              f"got {self.max_words}")
        return self


# IFEval's group of format types: the largest group of the official prompts (the narrowest
# held-out interval), and checkable whatever the answer-length cap (unlike length_constraints),
# so a held-out failure says something about generalisation, not truncation (docs/constraints.md).
HOLDOUT = ["detectable_format"]


class ConstraintsParams(Section):
    """Verifiable instructions appended to each kept prompt (data/constraints.py), drawn from
    the IFEval checker registry of lm-eval; entries of types/holdout are instruction ids
    (`punctuation:no_comma`) or whole groups (`punctuation`)."""

    count: int = Field(0, ge=0, le=5, description="instructions appended per prompt (0 = off)")
    types: list[str] = Field([], description="ids or groups to draw from ([] = every type)")
    holdout: list[str] = Field(HOLDOUT, description="ids or groups never used in training, "
                               "reported apart in IFEval")
    seed: Seed = 0


class PromptsParams(InstructionFilterParams):
    """Stage prompts: new user prompts written by M_t (or taken from self_instruct)."""

    count: PositiveInt = Field(16, description="prompts to keep")
    max_attempts: PositiveInt = Field(96, description="generation calls at most")
    temperature: Temperature = 0.6
    top_p: TopP = 0.9
    max_new_tokens: MaxNewTokens = 64
    source: Literal["generate", "self_instruct", "pool", "model"] = Field(
        "generate", description="M_t writes them | the t-th block of the self_instruct tasks | "
        "the t-th block of prompts.pool | the fixed prompts.model writes them")
    pool: str = Field("data/seed/prompt_pool.jsonl", min_length=1, description="JSONL of "
                      "{id, prompt} requests for source pool (a DVC dependency)")
    model: str = Field("models/m0", min_length=1, description="checkpoint that writes the "
                       "prompts with source model (a DVC dependency)")
    constraints: ConstraintsParams = Field(ConstraintsParams(),
                                           description="verifiable instructions appended")


class SelfInstructParams(InstructionFilterParams):
    """SELF-INSTRUCT bootstrap of tasks with instances (stages/self_instruct.py)."""

    enabled: bool = Field(False, description="the DVC stage does its work only when true")
    count: PositiveInt = Field(16, description="instructions to keep (step 1)")
    max_attempts: PositiveInt = Field(64, description="instruction-generation calls at most")
    temperature: Temperature = 0.7
    top_p: TopP = 0.5
    max_new_tokens: MaxNewTokens = 256
    instance_temperature: Temperature = Field(0.0, description="0 = greedy instances (paper)")
    instance_max_new_tokens: MaxNewTokens = 300
    max_instances: PositiveInt = Field(5, description="instances kept per task")
    quality: list[QualityRule] = Field(
        [r for r in QUALITY_RULES if r != "missing_material"],
        description="prompt-quality rules after the Self-Instruct filters; missing_material is "
        "off by default here: a task's instances carry the material its instruction refers to")


class ResponsesParams(Section):
    """Stage responses: N candidate answers per prompt."""

    n: PositiveInt = Field(4, description="candidates per prompt (paper: 4)")
    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    max_new_tokens: MaxNewTokens = 128
    seed: Seed = 0

    @field_validator("n")
    @classmethod
    def _pair(cls, count: int) -> int:
        if count < 2:
            raise ValueError("need at least 2 candidates per prompt to form a pair")
        return count


class JudgeParams(Section):
    """Stage judge: M_t scores each candidate with the additive 5-point rubric."""

    mode: Literal["logprob", "sample"] = Field(
        "logprob", description="expected score of one pass | K sampled judgments (paper)")
    template: str | None = Field(None, description="rubric file with {prompt} and {response}; "
                                 "null = templates/judge.txt")
    samples: PositiveInt = Field(3, description="K judgments per answer (sample mode)")
    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    max_new_tokens: MaxNewTokens = 160
    seed: Seed = 0


class PairsParams(Section):
    """Stage pairs (docs/pairs.md): a chosen and a rejected answer per prompt, from the source
    `source`; stage source_answers writes the answers spin, anchored and teacher need."""

    source: Literal["self_judged", "spin", "anchored", "teacher"] = Field(
        "self_judged", description="self_judged: M_t's best vs worst | spin: seed answer vs "
        "M_t's | anchored: M_t's best vs M1's worst | teacher: the teacher's best vs M_t's worst")
    min_margin: Positive = Field(0.1, description="least score gap of a pair: > 0, ties dropped")
    length_rho: Annotated[float, Field(ge=0, le=0.5), YAML_NUMBER] = Field(
        0.0, description="length control rho: chosen = the shortest scoring in the top rho of "
        "the score range, rejected = the longest in the bottom rho (0 = plain max/min)")
    min_valid: PositiveInt = Field(2, description="valid scores a prompt needs")
    # A fixed length rule puts a length bias into the DPO data.
    tie_break: Literal["random", "shortest", "longest"] = Field(
        "random", description="among equal top or lowest scores: random (seeded) or by length")
    seed: Seed = 0
    source_samples: PositiveInt = Field(
        1, description="answers per prompt the source model writes (spin, anchored, teacher)")
    spin_prompts: NonNegativeInt = Field(
        0, description="spin: seeded subset of the seed IFT prompts M_t answers (0 = all)")
    teacher: str = Field("models/m0", description="teacher checkpoint dir (source teacher)")
    judge_share: Annotated[float, Field(ge=0, lt=0.5), YAML_NUMBER] = Field(
        0.0, description="meta-judge pairs' share of the DPO data at most (0 = none; a warning "
        "above 0.15)")

    verifiers: Annotated[Literal["off", "gate", "bonus"], BeforeValidator(_yaml_off)] = Field(
        "off", description="constrained prompts in pairs: off | gate (chosen passes every "
        "constraint, rejected fails one) | bonus (score + verifier_weight x share passed)")
    verifier_weight: NonNegative = Field(1.0, description="bonus: points for all constraints")

class MetaJudgeParams(Section):
    """Stage meta_judge (docs/pairs.md): M_t compares its own sampled judgments pairwise."""

    enabled: bool = Field(False, description="the stage writes an empty file unless true")
    template: str | None = Field(None, description="meta-judge prompt file with {prompt}, "
                                 "{response}, {judgment_1}, {judgment_2}; null = packaged")
    responses: PositiveInt = Field(16, description="the responses whose sampled judgments "
                                   "disagree most, compared pairwise")
    mode: Literal["logprob", "generate"] = Field(
        "logprob", description="P('1') vs P('2') after 'Winner: ' | greedy text parsed")
    max_new_tokens: MaxNewTokens = 160
    seed: Seed = 0


class EndpointSettings(Section):
    """How to reach an OpenAI-compatible endpoint (eval, oasst.judge)."""

    endpoint_model: str = Field("gpt-4o", description="model name at the endpoint")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="NAME of the key's env variable")
    endpoint_timeout: Positive = Field(60.0, description="seconds per request")
    endpoint_retries: NonNegativeInt = Field(3, description="retries of a failed request")
    endpoint_concurrency: PositiveInt = Field(4, description="requests in flight")


class EvalParams(EndpointSettings):
    """Evaluation: answers to held-out prompts, head-to-head judging, judge agreement."""

    max_prompts: NonNegativeInt = Field(16, description="seeded subset of eval prompts; 0 = all")
    max_new_tokens: MaxNewTokens = 96
    temperature: Temperature = 0.0
    top_p: TopP = 1.0
    seed: Seed = 0
    judge: str = Field("models/m1", description="fixed local pairwise judge checkpoint")
    pairwise_mode: Literal["logprob", "generate"] = Field(
        "logprob", description="local judge: P('1') vs P('2') | parse 'Winner: n'")
    pairwise_template: str | None = Field(
        None, description="pairwise prompt file; null = templates/pairwise_judge.txt")
    judge_max_new_tokens: MaxNewTokens = 160
    judge_endpoint: str | None = Field(None, description="OpenAI-compatible base URL to judge")


class IfevalParams(Section):
    """IFEval stages (docs/evaluation.md): greedy answers scored by the official checkers."""

    prompts: str = Field("data/seed/ifeval_prompts.jsonl", description="IFEval prompts JSONL")
    max_prompts: NonNegativeInt = Field(0, description="seeded subset (0 = all)")
    max_new_tokens: MaxNewTokens = 128
    bootstrap: NonNegativeInt = Field(1000, description="resamples for the 95 % intervals")
    seed: Seed = 0


class VerifyParams(Section):
    """Stage verify (docs/evaluation.md): the generation-verification gap of each model, its N
    sampled answers (responses.n, temperature, top_p) to IFEval-format prompts checked by the
    official checkers and scored by its own judge (judge.*)."""

    prompts: str = Field("data/seed/ifeval_prompts.jsonl",
                         description="IFEval-format prompts JSONL (key, prompt, instruction_id_list,"
                         " kwargs)")
    max_prompts: NonNegativeInt = Field(32, description="seeded subset (0 = all)")
    max_new_tokens: MaxNewTokens = Field(
        96, description="answer cap (IFEval length instructions need room; responses' own cap "
        "is for the loop)")
    bootstrap: NonNegativeInt = Field(1000, description="resamples of prompts for the 95 % "
                                      "intervals")
    seed: Seed = 0


class AlpacaEvalParams(Section):
    """AlpacaEval 2.0 (pipelines/external_evals/dvc.yaml): model_outputs.json and the annotator."""

    prompts: str = Field("data/alpaca_eval/alpaca_eval.json", description="the 805 instructions")
    reference: str = Field("data/alpaca_eval/alpaca_eval_gpt4_baseline.json",
                           description="GPT-4 Turbo reference outputs")
    max_prompts: NonNegativeInt = Field(0, description="first N prompts (0 = all 805)")
    max_new_tokens: MaxNewTokens = 2048
    annotator: str = Field("weighted_alpaca_eval_gpt4_turbo", description="alpaca_eval annotator")
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the key's env variable")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL (null = OpenAI)")
    models: ModelNames = []


class LmEvalParams(Section):
    """`selfreward lm-eval` (pipelines/external_evals/dvc.yaml): EleutherAI's harness on models/mN."""

    tasks: list[str] = Field(["ifeval", "arc_easy", "arc_challenge", "hellaswag", "mmlu"],
                             description="harness tasks")
    backend: Literal["vllm", "hf"] = Field("hf", description="harness model backend")
    batch_size: str = Field("auto", description="harness batch size ('auto' or a number)")
    limit: NonNegativeInt = Field(0, description="examples per task (0 = all)")
    apply_chat_template: bool = Field(True, description="prompt through the chat template")
    model_args: str = Field("", description="extra lm_eval --model_args")
    seed: Seed = 0
    models: ModelNames = []


class LaunchParams(Section):
    """How `sft` and `dpo` run: in-process, or through `accelerate launch` (core/launch.py)."""

    strategy: Literal["ddp", "zero3", "fsdp"] = Field("ddp", description="accelerate config")
    num_processes: int = Field(1, ge=1, description="processes over all machines")
    num_machines: int = Field(1, ge=1, description="nodes")
    machine_rank: NonNegativeInt = Field(0, description="this node's rank (or env variable)")
    main_process_ip: str | None = Field(None, description="rank-0 node's address")
    main_process_port: int = Field(29500, ge=1, le=65535, description="rank-0 node's TCP port")

    @model_validator(mode="after")
    def _nodes(self) -> LaunchParams:
        if self.num_processes % self.num_machines:
            raise ParamsError("num_processes", f"{self.num_processes} processes do not split "
                              f"evenly over {self.num_machines} machines (num_processes is the "
                              "total over all machines)")
        if self.machine_rank >= self.num_machines:
            raise ParamsError("machine_rank", f"must be in [0, {self.num_machines - 1}]")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ParamsError("main_process_ip", "needed when num_machines > 1 (the rank-0 "
                              "node's address)")
        return self


class IterationSpec(Section):
    """One self-rewarding iteration: M_t -> M_t+1."""

    model: str = Field(description="checkpoint dir of M_t")
    next: str = Field(description="checkpoint dir of M_t+1 (a new one)")


class SeedDataParams(Section):
    """The seed files sft, prompts and the evaluation read (dvc.yaml interpolates these)."""

    ift: str = Field("data/seed/ift.jsonl", description="IFT seed JSONL")
    eft_train: str = Field("data/seed/eft_train.jsonl", description="EFT train JSONL")
    eft_eval: str = Field("data/seed/eft_eval.jsonl", description="held-out EFT JSONL")


class OasstIftParams(Section):
    """Stage seed_ift: first turns, highest-ranked (rank 0) human reply only."""

    count: NonNegativeInt = Field(3200, description="first turns kept (paper: 3,200); 0 = all")
    seed: Seed = 0


class OasstJudgeParams(EndpointSettings):
    """Stage seed_judge: which prompts become EFT candidate groups, and how they are judged."""

    model: str = Field("models/seed_sft_oasst1", description="judge checkpoint")
    min_replies: int = Field(2, ge=2, description="ranked replies a prompt needs to be ordered")
    max_groups: NonNegativeInt = Field(0, description="seeded subset of the groups; 0 = all")
    samples: PositiveInt = Field(3, description="K sampled judgments per reply")
    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    max_new_tokens: MaxNewTokens = 512
    seed: Seed = 0
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL to judge")


class OasstEftParams(Section):
    """Stage seed_eft: agreement with the human ranking, train/eval split, rebalancing."""

    ties: Literal["drop", "allow"] = Field("drop", description="equal scores for ranked replies")
    max_score_share: Number = Field(1.0, gt=0, le=1, description="cap on the top score's share")
    eval_fraction: Number = Field(0.25, gt=0, lt=1, description="held-out share of the groups")
    seed: Seed = 0


class OasstParams(Section):
    """Seed data built from Open Assistant exports (data/oasst.py, data/oasst_seed.py)."""

    exports: Names = Field({}, description="name -> export file, dir or dataset id")
    lang: str = Field("en", description="language of the first turns kept")
    ift: OasstIftParams = Field(OasstIftParams(), description="stage seed_ift")
    judge: OasstJudgeParams = Field(OasstJudgeParams(), description="stage seed_judge")
    eft: OasstEftParams = Field(OasstEftParams(), description="stage seed_eft")

    @model_validator(mode="after")
    def _exports(self) -> OasstParams:
        for name, source in self.exports.items():  # a DVC stage suffix and a directory name
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ParamsError(f"exports.{name}", "names may use letters, digits, _ and - only")
            outputs = f"data/oasst/{name}"  # where dvc.yaml writes the built seed data
            if os.path.normpath(source) == outputs or source.startswith(outputs + "/"):
                raise ParamsError(f"exports.{name}", f"the export lies in {outputs}/, where the "
                                  "seed stages write their outputs: put it elsewhere")
        return self


class Params(Section):
    """params.yaml: one section per stage (dvc.yaml lists what each stage reads)."""

    base: BaseParams = Field(BaseParams(), description="stage base")
    sft: SftParams = Field(SftParams(), description="stage sft")
    engine: EngineParams = Field(EngineParams(), description="generation engine")
    prompts: PromptsParams = Field(PromptsParams(), description="stage prompts")
    self_instruct: SelfInstructParams = Field(SelfInstructParams(), description="self_instruct")
    responses: ResponsesParams = Field(ResponsesParams(), description="stage responses")
    judge: JudgeParams = Field(JudgeParams(), description="stage judge")
    pairs: PairsParams = Field(PairsParams(), description="stage pairs")
    meta_judge: MetaJudgeParams = Field(MetaJudgeParams(), description="stage meta_judge")
    dpo: DpoParams = Field(DpoParams(), description="stage dpo")
    eval: EvalParams = Field(EvalParams(), description="evaluation stages")
    launch: LaunchParams = Field(LaunchParams(), description="how sft and dpo run")
    ifeval: IfevalParams = Field(IfevalParams(), description="IFEval stages")
    verify: VerifyParams = Field(VerifyParams(), description="verification-gap stages")
    alpaca_eval: AlpacaEvalParams = Field(AlpacaEvalParams(), description="AlpacaEval stages")
    lm_eval: LmEvalParams = Field(LmEvalParams(), description="lm-eval stages")
    iterations: Annotated[dict[str, IterationSpec], BeforeValidator(_str_keys)] = Field(
        {}, description="t -> {model: M_t dir, next: M_t+1 dir}, chained from models/m1")
    models: Names = Field({"m0": "models/m0", "m1": "models/m1"},
                          description="name -> checkpoint dir of every model the pipeline makes")
    seed_data: SeedDataParams = Field(SeedDataParams(), description="seed files")
    oasst: OasstParams = Field(OasstParams(), description="Open Assistant seed data")

    @model_validator(mode="after")
    def _cross_section(self) -> Params:
        for key, used in (("sft.self_instruct", self.sft.self_instruct),
                          ("prompts.source", self.prompts.source == "self_instruct")):
            if used and not self.self_instruct.enabled:
                raise ParamsError(key, "uses the self_instruct stage's output, but "
                                  "self_instruct.enabled is false")
        if self.meta_judge.enabled and self.judge.mode != "sample":
            raise ParamsError("meta_judge.enabled", "compares sampled judgments: needs "
                              "judge.mode: sample")
        if self.pairs.verifiers != "off" and self.pairs.source != "self_judged":
            raise ParamsError("pairs.verifiers", "checks M_t's judged answers: needs "
                              "pairs.source: self_judged")
        made, last = {"models/m0": "models.m0", "models/m1": "models.m1"}, "models/m1"
        for t, it in self.iterations.items():  # each from the model the one before made
            if it.model != last:
                raise ParamsError(f"iterations.{t}.model", f"must be {last}: the iterations "
                                  "chain, M1 first")
            if it.next in made:
                raise ParamsError(f"iterations.{t}.next", (
                    f"equals iterations.{t}.model ({it.model})" if it.next == it.model else
                    f"{it.next} is made earlier in the pipeline") + ": M_t+1 needs a new dir")
            made[it.next], last = f"iterations.{t}.next", it.next
        # dvc.yaml runs the per-model stages `foreach: ${models}`: one per checkpoint made.
        for name in ("m0", "m1"):
            if self.models.get(name) != f"models/{name}":
                raise ParamsError(f"models.{name}", f"must be models/{name}")
        seen: set[str] = set()
        for name, path in self.models.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ParamsError(f"models.{name}", "names may use letters, digits, _ and - only")
            if path in seen or path not in made:
                raise ParamsError(f"models.{name}", f"{path} is listed twice" if path in seen else
                                  f"{path} is no checkpoint the pipeline makes ({', '.join(made)})")
            seen.add(path)
        for path, key in made.items():
            if path not in seen:
                raise ParamsError("models", f"no entry for {path} ({key}): add "
                                  f"`{Path(path).name}: {path}`", near=key)
        return self


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            lines[key] = k.start_mark.line + 1
            lines.update(_key_lines(v, key + "."))
    return lines


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
    """Load and validate params.yaml; any bad key or value is a UserError naming its line."""
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
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(node) if node else {}
        raise from_validation_error(exc, Params, data, str(path), lines) from None


def write_schema(out: str | None = None) -> str:
    """The JSON schema of params.yaml: written atomically to `out` (then a line saying so), or
    returned as text."""
    import json

    from ..core.io import write_json

    schema = Params.model_json_schema()
    if not out:
        return json.dumps(schema, indent=2)
    write_json(out, schema)
    return f"params schema -> {out}"
