"""DPO + token-level KL distillation to a teacher (dpo.distill): the loss, its wiring, its effect."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_tiny_model

from selfreward.config.params import BaseParams, DistillParams, DpoParams, Params
from selfreward.core.models import load_model
from selfreward.stages.dpo import run_dpo
from selfreward.training.distill import token_kl

ROOT = Path(__file__).resolve().parents[1]


def test_token_kl_by_hand():
    s = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    t = torch.log(torch.tensor([[0.8, 0.2], [0.9, 0.1]]))
    fwd = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # KL(teacher || student)
    rev = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # KL(student || teacher)
    assert token_kl(s, t).tolist() == pytest.approx([fwd, 0.0], abs=1e-6)
    assert token_kl(s, t, direction="reverse").tolist() == pytest.approx([rev, 0.0], abs=1e-6)
    # Temperature: softened distributions, scaled by T^2.
    soft = torch.softmax(torch.log(torch.tensor([0.5, 0.5])) / 2, -1)
    soft_t = torch.softmax(torch.log(torch.tensor([0.8, 0.2])) / 2, -1)
    want = 4 * float((soft_t * (soft_t.log() - soft.log())).sum())
    assert float(token_kl(s[:1], t[:1], temperature=2.0)) == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError):
        token_kl(s, t, direction="sideways")


PAIRS = [
    ("Name a colour.", "Blue is a calm colour of the sky.", "colour"),
    ("Give a fruit.", "An apple is a sweet fruit.", "no"),
    ("Say hello in French.", "Bonjour is hello in French.", "hi"),
    ("Count to three.", "One, two, three.", "three two one one"),
]


def write_pairs(path: Path) -> Path:
    with path.open("w") as fh:
        for prompt, chosen, rejected in PAIRS:
            fh.write(json.dumps({"prompt": [{"role": "user", "content": prompt}],
                                 "chosen": [{"role": "assistant", "content": chosen}],
                                 "rejected": [{"role": "assistant", "content": rejected}]}) + "\n")
    return path


def answer_kl(student_dir: Path, teacher_dir: Path) -> float:
    """Mean KL(teacher || student) over the answer tokens of every pair, computed independently."""
    student, tok = load_model(student_dir)
    teacher, _ = load_model(teacher_dir)
    total, count = 0.0, 0
    for prompt, *answers in PAIRS:
        head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        n_head = len(tok(head, add_special_tokens=False)["input_ids"])
        for answer in answers:
            ids = tok(head + answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                s, t = (m(input_ids=ids).logits[0, n_head - 1:-1] for m in (student, teacher))
            kl = token_kl(s, t)
            total, count = total + float(kl.sum()), count + kl.numel()
    return total / count


def dpo_params(weight: float, teacher: Path, **distill) -> DpoParams:
    return DpoParams(learning_rate=3e-3, final_learning_rate=3e-3, max_steps=8, batch_size=2,
                     max_length=128, beta=0.1,
                     distill=DistillParams(weight=weight, teacher=str(teacher), **distill))


def train_dpo(dpo: DpoParams, model, pairs, out: Path, metrics: Path, plot=None) -> dict:
    """The dpo stage with these dpo params, saving in float32."""
    return run_dpo(params=Params(dpo=dpo, base=BaseParams(dtype="float32")), model_dir=model,
                   pairs_path=str(pairs), out_dir=out, metrics_path=metrics, plot_path=plot)


@pytest.fixture(scope="module")
def teacher_model(tmp_path_factory) -> Path:
    """Same tokenizer as tiny_model, other random weights."""
    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "model", seed=1)


def test_teacher_equal_to_student_adds_nothing(tmp_path, tiny_model):
    """KL to an identical teacher is 0 at the first step (student and teacher positions align)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    teacher = shutil.copytree(tiny_model, tmp_path / "same")
    p = dpo_params(1.0, teacher)
    p.max_steps = 1
    metrics = train_dpo(p, tiny_model, pairs, tmp_path / "m2", tmp_path / "m.json",
                        tmp_path / "plot.csv")
    assert metrics["distill_kl_last"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["final_loss"] == pytest.approx(metrics["distill_dpo_loss_last"], abs=1e-5)
    assert metrics["final_loss"] == pytest.approx(math.log(2), abs=1e-4)  # DPO at step 0


def test_logits_come_from_the_model_so_granite_logits_scaling_is_applied(tmp_path, tiny_model):
    """Granite divides its logits by `logits_scaling`; the old hook rebuilt the student's logits
    from hidden states without it, so even a teacher identical to the student showed a KL."""
    from transformers import AutoTokenizer, GraniteConfig, GraniteForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model)
    config = GraniteConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           logits_scaling=4.0, tie_word_embeddings=True,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    student = tmp_path / "granite"
    GraniteForCausalLM(config).save_pretrained(student)
    tok.save_pretrained(student)
    teacher = shutil.copytree(student, tmp_path / "same")
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    p = dpo_params(1.0, teacher)
    p.max_steps = 1
    metrics = train_dpo(p, student, pairs, tmp_path / "m2", tmp_path / "m.json")
    assert metrics["distill_kl_last"] == pytest.approx(0.0, abs=1e-6)


def test_distillation_pulls_the_student_to_the_teacher(tmp_path, tiny_model, teacher_model):
    """Same data, seeds and steps: with the KL term the student ends nearer the teacher than with
    plain DPO, and the logged loss is DPO + weight * KL."""
    pairs = str(write_pairs(tmp_path / "pairs.jsonl"))
    before = answer_kl(tiny_model, teacher_model)
    plain = train_dpo(dpo_params(0.0, teacher_model), tiny_model, pairs, tmp_path / "plain",
                      tmp_path / "plain.json")
    distilled = train_dpo(dpo_params(2.0, teacher_model), tiny_model, pairs, tmp_path / "dist",
                          tmp_path / "dist.json", tmp_path / "dist.csv")
    after_plain = answer_kl(tmp_path / "plain", teacher_model)
    after_dist = answer_kl(tmp_path / "dist", teacher_model)
    assert "distill_kl_mean" not in plain
    assert distilled["distill_weight"] == 2.0 and distilled["steps"] == 8
    assert after_dist < 0.7 * before, (before, after_dist)
    assert after_dist < 0.8 * after_plain, (after_plain, after_dist)
    # The first logged KL is the untrained student's: the independent computation agrees.
    rows = (tmp_path / "dist.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    assert float(first["distill_kl"]) == pytest.approx(before, rel=0.05)
    assert float(first["loss"]) == pytest.approx(
        float(first["distill_dpo_loss"]) + 2.0 * float(first["distill_kl"]), rel=1e-4)
    assert float(first["distill_kl_chosen"]) > 0 and float(first["distill_kl_rejected"]) > 0


@pytest.fixture(scope="module")
def sharp_teacher(tmp_path_factory, teacher_model) -> Path:
    """The teacher with its final norm scaled 30x: peaked distributions, on which the KL's
    direction and temperature matter (between two near-uniform random models they barely do)."""
    from transformers import AutoModelForCausalLM

    out = shutil.copytree(teacher_model, tmp_path_factory.mktemp("sharp") / "model")
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    model.save_pretrained(out)
    return out


def chat_kl(student_dir: Path, teacher_dir: Path, temperature: float, direction: str) -> float:
    """Mean token KL over every pair's answer tokens as the chat template ends them (the tokens
    DPO trains on), computed independently of the trainer: one unpadded forward per answer."""
    student, tok = load_model(student_dir)
    teacher, _ = load_model(teacher_dir)
    total, count = 0.0, 0
    for prompt, *answers in PAIRS:
        chat = [{"role": "user", "content": prompt}]
        head = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        n_head = len(tok(head, add_special_tokens=False)["input_ids"])
        for answer in answers:
            text = tok.apply_chat_template(chat + [{"role": "assistant", "content": answer}],
                                           tokenize=False)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                s, t = (m(input_ids=ids).logits[0, n_head - 1:-1] for m in (student, teacher))
            kl = token_kl(s, t, temperature, direction)
            total, count = total + float(kl.sum()), count + kl.numel()
    return total / count


@pytest.mark.parametrize("direction, temperature", [("reverse", 2.0), ("forward", 0.5)])
def test_direction_and_temperature_reach_the_logged_kl(tmp_path, tiny_model, sharp_teacher,
                                                       direction, temperature):
    """The KL logged at the first step (all four pairs in one batch, untrained student) equals the
    independent computation for this direction and temperature, and not for the others: a
    trainer that ignored `direction` or `temperature` (or the T^2 scale) fails here."""
    pairs = str(write_pairs(tmp_path / "pairs.jsonl"))
    p = dpo_params(0.5, sharp_teacher, direction=direction, temperature=temperature)
    p.max_steps, p.batch_size = 1, 4
    metrics = train_dpo(p, tiny_model, pairs, tmp_path / "m2", tmp_path / "m.json",
                        tmp_path / "plot.csv")
    rows = (tmp_path / "plot.csv").read_text().splitlines()
    first = dict(zip(rows[0].split(","), map(float, rows[1].split(","))))
    expected = {(d, t): chat_kl(tiny_model, sharp_teacher, t, d)
                for d in ("forward", "reverse") for t in (temperature, 1.0)}
    assert first["distill_kl"] == pytest.approx(expected[direction, temperature], rel=1e-4)
    for setting, value in expected.items():  # the other settings are far from it
        if setting != (direction, temperature):
            assert abs(value - first["distill_kl"]) > 0.05 * value, (setting, expected)
    assert first["loss"] == pytest.approx(first["distill_dpo_loss"] + 0.5 * first["distill_kl"],
                                          rel=1e-5)
    assert metrics["steps"] == 1 and load_model(tmp_path / "m2")[0].num_parameters() > 0


def run_cli(tmp_path: Path, params: dict, model: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_pairs(tmp_path / "pairs.jsonl")
    return subprocess.run([sys.executable, "-m", "selfreward.cli", "dpo", "--model", model,
                           "--pairs", "pairs.jsonl", "--out", "m2", "--metrics", "m.json"],
                          check=False, cwd=tmp_path, capture_output=True, text=True)


def test_teacher_with_another_tokenizer_is_refused(tmp_path, tiny_model):
    other = shutil.copytree(tiny_model, tmp_path / "other")
    tok_file = other / "tokenizer.json"
    spec = json.loads(tok_file.read_text())
    spec["added_tokens"].append({**spec["added_tokens"][-1], "id": 49152,
                                 "content": "<|extra|>"})
    tok_file.write_text(json.dumps(spec))
    params = {"dpo": {"max_steps": 1, "batch_size": 2, "max_length": 64,
                      "distill": {"weight": 1.0, "teacher": str(other)}}}
    done = run_cli(tmp_path, params, str(tiny_model))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tokenizer differs" in done.stderr and "dpo.distill.teacher" in done.stderr
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m.json").exists()

    params["dpo"]["distill"]["teacher"] = str(tmp_path / "missing")
    done = run_cli(tmp_path, params, str(tiny_model))
    assert done.returncode == 2 and "no config.json" in done.stderr


def test_distill_params_are_validated(tmp_path, tiny_model):
    params = {"dpo": {"distill": {"weight": -1.0}}}
    done = run_cli(tmp_path, params, str(tiny_model))
    assert done.returncode == 2
    assert "params.yaml:3" in done.stderr and "dpo.distill.weight" in done.stderr
    params = {"dpo": {"distill": {"direction": "sideways"}}}
    done = run_cli(tmp_path, params, str(tiny_model))
    assert done.returncode == 2 and "dpo.distill.direction" in done.stderr


def test_with_lora_the_kl_term_reaches_the_adapters(tmp_path, tiny_model, teacher_model):
    """LoRA: the reference is the adapter-disabled model run through the same backbone; the KL
    must still use the student's (adapter-enabled) hidden states and send gradient to the
    adapters. Then a short run trains, merges and saves."""
    from datasets import Dataset
    from trl import DPOConfig

    from selfreward.config.params import LoraParams
    from selfreward.training.common import lora_config, trainer_kwargs
    from selfreward.training.distill import distill_trainer, load_teacher

    p = dpo_params(1.0, teacher_model)
    p.lora = LoraParams(enabled=True, r=8, alpha=16)
    rows = [json.loads(x) for x in write_pairs(tmp_path / "pairs.jsonl").read_text().splitlines()]
    model, tok = load_model(tiny_model, for_training=True)
    config = DPOConfig(**trainer_kwargs(p, str(tmp_path / "work")), beta=p.beta, max_length=128)
    trainer = distill_trainer(load_teacher(p.distill, tok), p.distill, model=model,
                              ref_model=None, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=tok, peft_config=lora_config(p.lora))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    grads = {}
    for weight in (0.0, 100.0):
        p.distill.weight = weight
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        grads[weight] = torch.cat([q.grad.flatten() for n, q in trainer.model.named_parameters()
                                   if "lora_" in n and q.grad is not None])
    assert grads[0.0].numel() > 0
    assert not torch.allclose(grads[0.0], grads[100.0])
    assert trainer._metrics["train"]["distill/kl"][-1] > 0

    p.distill.weight, p.max_steps = 1.0, 2
    metrics = train_dpo(p, tiny_model, tmp_path / "pairs.jsonl", tmp_path / "m2",
                        tmp_path / "m.json")
    assert metrics["steps"] == 2 and metrics["distill_kl_mean"] > 0
    merged, _ = load_model(tmp_path / "m2")
    assert not any("lora" in n for n, _ in merged.named_parameters())
