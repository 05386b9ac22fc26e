"""The successor losses of the dpo stage (issue 21, docs/losses.md): each objective by hand, then
through the real TRL trainer on tiny random models, compared with an independent computation."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import build_tiny_model

from selfreward.config.errors import UserError
from selfreward.config.params import (
    BaseParams,
    CreamParams,
    DistillParams,
    DpoParams,
    Params,
    load_params,
    trl_loss_types,
)
from selfreward.core.models import load_model
from selfreward.stages.dpo import run_dpo
from selfreward.training import losses
from selfreward.training.cream import pair_consistency, previous_model

PAIRS = [
    ("Name a colour.", "Blue is a calm colour of the sky on a clear day.", "colour"),
    ("Give a fruit.", "An apple.", "no, I will not name any fruit for you today."),
    ("Say hello in French.", "Bonjour is hello in French.", "hi"),
    ("Count to three.", "One, two, three.", "three two one one"),
]


def s(z: float, beta: float) -> float:
    return -math.log(1 / (1 + math.exp(-beta * z)))


# --- by hand ----------------------------------------------------------------------------------

def test_dpo_and_cream_by_hand():
    chosen, rejected = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    beta = 0.5
    dpo = losses.dpo_sigmoid(chosen, rejected, beta)
    assert dpo.tolist() == pytest.approx([s(0.5, beta), s(-3.0, beta)], abs=1e-6)
    # C = 1: DPO; C = 0: DPO with chosen and rejected swapped; in between: the mixture.
    assert losses.cream(chosen, rejected, torch.ones(2), beta).tolist() == pytest.approx(
        dpo.tolist(), abs=1e-6)
    assert losses.cream(chosen, rejected, torch.zeros(2), beta).tolist() == pytest.approx(
        losses.dpo_sigmoid(rejected, chosen, beta).tolist(), abs=1e-6)
    mixed = losses.cream(chosen, rejected, torch.tensor([0.75, 0.25]), beta)
    assert mixed.tolist() == pytest.approx(
        [0.75 * s(0.5, beta) + 0.25 * s(-0.5, beta), 0.25 * s(-3.0, beta) + 0.75 * s(3.0, beta)],
        abs=1e-6)


def test_kendall_tau_and_consistency_from_hand_ranked_lists():
    assert losses.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert losses.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped neighbour pair of 6 pairs: (5 - 1) / 6
    tau = losses.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6)
    assert losses.consistency_rate(tau) == pytest.approx(5 / 6)
    # tau-b with a tie in the first list: C=2 D=0 T_x=1 -> 2 / sqrt(3 * 2)
    assert losses.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert losses.kendall_tau([3, 3, 3], [1, 2, 3]) == 0.0
    assert losses.consistency_rate(-1.0) == 0.0 and losses.consistency_rate(1.0) == 1.0


def test_ld_alpha_one_is_plain_and_zero_ignores_the_longer_tail():
    # pair 0: chosen 2 tokens, rejected 4 tokens (rows [chosen, rejected], left-aligned masks)
    logps = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-0.5, -0.5, -3.0, -4.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert losses.ld_logps(logps, mask, 1.0).tolist() == pytest.approx([-3.0, -8.0])
    assert losses.ld_logps(logps, mask, 0.0).tolist() == pytest.approx([-3.0, -1.0])
    assert losses.ld_logps(logps, mask, 0.5).tolist() == pytest.approx([-3.0, -4.5])


def test_irpo_nll_token_mean_versus_per_example():
    logps = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert float(losses.nll_token_mean(logps, mask)) == pytest.approx(7 / 5)  # TRL's `sft`
    assert losses.nll_example_mean(logps, mask).tolist() == pytest.approx([1.0, 3.0])  # paper
    chosen, rejected = torch.tensor([0.2, 0.0]), torch.tensor([0.0, 0.4])
    got = losses.irpo(chosen, rejected, logps, mask, beta=0.1, alpha=2.0)
    assert float(got) == pytest.approx((s(0.2, 0.1) + s(-0.4, 0.1)) / 2 + 2 * 7 / 5, abs=1e-6)


def test_dual_level_weights_each_switch_their_own_term():
    kl = torch.tensor([1.0, 3.0, 10.0])
    chosen = torch.tensor([True, True, False])
    dpo = torch.tensor(0.5)
    alpha_only = losses.distill_total(dpo, kl, chosen, 0.0, 2.0, 0.0)
    assert float(alpha_only["loss"]) == pytest.approx(0.5 + 2.0 * 2.0)
    gamma_only = losses.distill_total(dpo, kl, chosen, 0.0, 0.0, 3.0)
    assert float(gamma_only["loss"]) == pytest.approx(0.5 + 3.0 * 10.0)
    single = losses.distill_total(dpo, kl, chosen, 1.0, 0.0, 0.0)
    assert float(single["loss"]) == pytest.approx(0.5 + 14 / 3)
    none_rejected = losses.distill_total(dpo, kl[:2], chosen[:2], 0.0, 0.0, 5.0)
    assert float(none_rejected["kl_rejected"]) == 0.0 and float(none_rejected["loss"]) == 0.5


# --- params -----------------------------------------------------------------------------------

def test_trl_loss_types_are_read_from_the_installed_trl():
    types = trl_loss_types()
    assert {"sigmoid", "sft", "ipo", "hinge", "sigmoid_norm"} <= set(types)
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert all(f"'{name}'" in help_text for name in types)


@pytest.mark.parametrize("text, field, words", [
    ("dpo:\n  loss_type: sigmod\n", "dpo.loss_type", "'sigmod'"),
    ("dpo:\n  loss_type: [sigmoid, sfft]\n", "dpo.loss_type", "valid: sigmoid, hinge"),
    ("dpo:\n  loss_type: []\n", "dpo.loss_type", "at least one"),
    ("dpo:\n  loss_type: [sigmoid, sft]\n  loss_weights: [1.0]\n", "dpo.loss_weights",
     "one weight per loss_type (2)"),
    ("dpo:\n  ld_alpha: 1.5\n", "dpo.ld_alpha", "in [0, 1]"),
    ("dpo:\n  cream: {enabled: true, rank_by: judge}\n", "dpo.cream.rank_by", "implicit_reward"),
    ("dpo:\n  ld_alpha: 0.5\n  cream: {enabled: true}\n", "dpo.cream.enabled", "ld_alpha: null"),
])
def test_bad_loss_params_name_the_key_and_the_valid_values(tmp_path, text, field, words):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_params(path)
    assert err.value.field == field and err.value.line is not None, str(err.value)
    assert words in str(err.value)


def test_irpo_params_load_and_the_cli_refuses_a_misspelt_type(tmp_path, tiny_model):
    path = tmp_path / "params.yaml"
    path.write_text("dpo:\n  loss_type: [sigmoid, sft]\n  loss_weights: [1, 0.5]\n"
                    "  ld_alpha: 0\n")
    p = load_params(path).dpo
    assert p.loss_type == ["sigmoid", "sft"] and p.loss_weights == [1.0, 0.5]
    assert p.ld_alpha == 0.0
    path.write_text("dpo:\n  batch_size: 2\n  loss_type: [sigmoid, spft]\n")
    (tmp_path / "pairs.jsonl").write_text("")
    done = subprocess.run([sys.executable, "-m", "selfreward.cli", "dpo", "--model",
                           str(tiny_model), "--pairs", "pairs.jsonl", "--out", "m2",
                           "--metrics", "m.json"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "params.yaml:3" in done.stderr and "dpo.loss_type" in done.stderr
    assert "'spft'" in done.stderr and "sigmoid_norm" in done.stderr
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m.json").exists()


# --- through TRL's trainer ------------------------------------------------------------------

def write_pairs(path: Path, ids: bool = False) -> Path:
    with path.open("w") as fh:
        for i, (prompt, chosen, rejected) in enumerate(PAIRS):
            row = {"prompt": [{"role": "user", "content": prompt}],
                   "chosen": [{"role": "assistant", "content": chosen}],
                   "rejected": [{"role": "assistant", "content": rejected}]}
            fh.write(json.dumps({"id": f"p{i}", **row} if ids else row) + "\n")
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """Same tokenizer as tiny_model, other random weights: a reference unlike the policy."""
    return build_tiny_model(tmp_path_factory.mktemp("other") / "model", seed=1)


def token_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log pi of every next token, completion mask), computed without TRL."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    ids = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:]
    return F.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0] * mask, mask


def trainer_for(tiny_model, other_model, tmp_path, cream=False, **config):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from selfreward.training.common import trainer_kwargs
    from selfreward.training.cream import cream_trainer

    p = DpoParams(batch_size=4, max_length=128, precision="fp32")
    model, tok = load_model(tiny_model, for_training=True)
    ref, _ = load_model(other_model)
    rows = [json.loads(x) for x in write_pairs(tmp_path / "pairs.jsonl").read_text().splitlines()]
    args = DPOConfig(**trainer_kwargs(p, str(tmp_path / "work")), beta=0.1, max_length=128,
                     precompute_ref_log_probs=cream, **config)
    if cream:
        for row, c in zip(rows, (1.0, 0.0, 0.25, 0.75)):
            row["consistency"] = c
        trainer = cream_trainer(0.1, model=model, ref_model=ref, args=args,
                                train_dataset=Dataset.from_list(rows), processing_class=tok)
    else:
        trainer = DPOTrainer(model=model, ref_model=ref, args=args,
                             train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # no dropout: the same numbers as the independent forward
    return trainer, ref, batch


def logratios(trainer, ref, batch, alpha=None):
    policy, mask = token_logps(trainer.model, batch)
    reference, _ = token_logps(ref, batch)
    if alpha is None:
        pol, rf = policy.sum(-1), reference.sum(-1)
    else:
        pol, rf = losses.ld_logps(policy, mask, alpha), losses.ld_logps(reference, mask, alpha)
    chosen, rejected = (pol - rf).chunk(2)
    return chosen, rejected, policy, mask


def test_irpo_through_trls_list_form_equals_dpo_plus_alpha_nll(tmp_path, tiny_model, other_model):
    trainer, ref, batch = trainer_for(tiny_model, other_model, tmp_path,
                                      loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.7])
    with torch.no_grad():
        got = float(trainer.compute_loss(trainer.model, batch))
    chosen, rejected, policy, mask = logratios(trainer, ref, batch)
    pc, _ = policy.chunk(2)
    mc, _ = mask.chunk(2)
    want = float(losses.irpo(chosen, rejected, pc, mc, beta=0.1, alpha=0.7))
    assert got == pytest.approx(want, rel=1e-4)
    plain = float(losses.dpo_sigmoid(chosen, rejected, 0.1).mean())
    assert abs(got - plain) > 0.1  # the sft term is there and large on a random model


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_ld_alpha_through_trl(tmp_path, tiny_model, other_model, alpha):
    trainer, ref, batch = trainer_for(tiny_model, other_model, tmp_path, ld_alpha=alpha)
    with torch.no_grad():
        got = float(trainer.compute_loss(trainer.model, batch))
    chosen, rejected, _, _ = logratios(trainer, ref, batch, alpha)
    assert got == pytest.approx(float(losses.dpo_sigmoid(chosen, rejected, 0.1).mean()), rel=1e-4)
    plain_c, plain_r, _, _ = logratios(trainer, ref, batch)
    plain = float(losses.dpo_sigmoid(plain_c, plain_r, 0.1).mean())
    if alpha == 1.0:
        assert got == pytest.approx(plain, rel=1e-4)
    else:  # the pairs differ in length: ignoring the tail changes the loss
        assert abs(got - plain) > 1e-3


def test_cream_trainer_uses_each_pairs_consistency(tmp_path, tiny_model, other_model):
    trainer, ref, batch = trainer_for(tiny_model, other_model, tmp_path, cream=True)
    consistency = batch["consistency"].clone()
    assert sorted(consistency.tolist()) == [0.0, 0.25, 0.75, 1.0]
    with torch.no_grad():
        got = float(trainer.compute_loss(trainer.model, batch))
    chosen, rejected, _, _ = logratios(trainer, ref, batch)
    want = float(losses.cream(chosen, rejected, consistency, 0.1).mean())
    assert got == pytest.approx(want, rel=1e-4)
    assert abs(got - float(losses.dpo_sigmoid(chosen, rejected, 0.1).mean())) > 1e-4
    assert trainer._metrics["eval"]["cream/c"][-1] == pytest.approx(0.5)  # eval mode above
    # and it trains: a gradient reaches the weights
    trainer.model.train()
    batch["consistency"] = consistency
    trainer.compute_loss(trainer.model, batch).backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in trainer.model.parameters())


# --- the dpo stage ----------------------------------------------------------------------------

def stage(tmp_path, tiny_model, dpo: DpoParams, name: str, **extra) -> tuple[dict, list[dict]]:
    params = Params(dpo=dpo, base=BaseParams(dtype="float32"), **extra.pop("params", {}))
    metrics = run_dpo(params=params, model_dir=tiny_model, out_dir=tmp_path / name,
                      metrics_path=tmp_path / f"{name}.json", plot_path=tmp_path / f"{name}.csv",
                      **extra)
    with open(tmp_path / f"{name}.csv") as fh:
        return metrics, list(csv.DictReader(fh))


def first_nll(model_dir) -> float:
    """TRL's sft term at step 0: mean -log pi over all chosen tokens of the first batch (all 4)."""
    model, tok = load_model(model_dir)
    total, count = 0.0, 0
    for prompt, chosen, _ in PAIRS:
        head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        full = tok.apply_chat_template([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": chosen}], tokenize=False)
        n_head = len(tok(head, add_special_tokens=False)["input_ids"])
        ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            lp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        token = lp.gather(-1, ids[0, 1:, None])[n_head - 1:, 0]
        total, count = total - float(token.sum()), count + token.numel()
    return total / count


def test_stage_irpo_logged_loss_is_dpo_plus_alpha_nll(tmp_path, tiny_model):
    """At step 0 the policy is its reference (DPO = log 2): the logged loss is log 2 + alpha *
    the chosen answers' NLL computed independently; an ignored loss_type logs log 2."""
    dpo = DpoParams(learning_rate=1e-3, final_learning_rate=1e-3, max_steps=2, batch_size=4,
                    max_length=128, precision="fp32", loss_type=["sigmoid", "sft"],
                    loss_weights=[1.0, 0.5])
    metrics, rows = stage(tmp_path, tiny_model, dpo, "irpo", pairs_path=str(
        write_pairs(tmp_path / "pairs.jsonl")))
    assert metrics["loss_type"] == ["sigmoid", "sft"] and metrics["loss_weights"] == [1.0, 0.5]
    nll = first_nll(tiny_model)
    assert float(rows[0]["loss"]) == pytest.approx(math.log(2) + 0.5 * nll, rel=2e-3), nll


def test_stage_dual_level_distillation_logs_each_term(tmp_path, tiny_model, other_model):
    pairs = str(write_pairs(tmp_path / "pairs.jsonl"))
    out = {}
    for name, a, g in (("alpha", 2.0, 0.0), ("gamma", 0.0, 3.0)):
        dpo = DpoParams(learning_rate=1e-3, final_learning_rate=1e-3, max_steps=1, batch_size=4,
                        max_length=128, precision="fp32", distill=DistillParams(
                            chosen_weight=a, rejected_weight=g, teacher=str(other_model)))
        metrics, rows = stage(tmp_path, tiny_model, dpo, name, pairs_path=pairs)
        first = rows[0]
        kc, kr = float(first["distill_kl_chosen"]), float(first["distill_kl_rejected"])
        assert kc > 0 and kr > 0 and kc != pytest.approx(kr)
        assert float(first["loss"]) == pytest.approx(
            float(first["distill_dpo_loss"]) + a * kc + g * kr, rel=1e-4)
        assert float(first["distill_kl_chosen_term"]) == pytest.approx(a * kc, rel=1e-5)
        assert float(first["distill_kl_rejected_term"]) == pytest.approx(g * kr, rel=1e-5)
        assert metrics["distill_chosen_weight"] == a and metrics["distill_rejected_weight"] == g
        out[name] = float(first["loss"]) - float(first["distill_dpo_loss"])
    assert out["alpha"] == pytest.approx(2.0 * kc, rel=1e-4)  # same first batch, same KLs
    assert out["gamma"] == pytest.approx(3.0 * kr, rel=1e-4)


def test_previous_model_follows_the_iterations():
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert set(p.iterations) == {"1", "2"}
    assert previous_model(p, "models/m1") == "models/m0"
    assert previous_model(p, "models/m2") == "models/m1"
    assert previous_model(p, "models/m3") == "models/m2"
    with pytest.raises(UserError):
        previous_model(p, "models/elsewhere")


def test_pair_consistency_from_implicit_reward(tmp_path, tiny_model, other_model):
    """The judge's scores agree with the implicit-reward ranking (C = 1) or reverse it (C = 0)."""
    current, tok = load_model(tiny_model)
    previous, _ = load_model(other_model)
    answers = ["Blue.", "The sky is blue today.", "Green, like grass in spring.", "Red"]
    from selfreward.training.cream import answer_logps

    reward = [a - b for a, b in zip(answer_logps(current, tok, "Name a colour.", answers, 128),
                                    answer_logps(previous, tok, "Name a colour.", answers, 128))]
    order = sorted(range(4), key=lambda i: reward[i])
    agree = [0.0] * 4
    for rank, i in enumerate(order):
        agree[i] = float(rank + 1)
    judgments = [{"id": "a", "prompt": "Name a colour.", "responses": answers, "mean": agree},
                 {"id": "b", "prompt": "Name a colour.", "responses": answers,
                  "mean": [5.0 - m for m in agree]},
                 {"id": "c", "prompt": "Name a colour.", "responses": answers + ["x"],
                  "mean": [*agree, None]}]
    pairs = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    values, metrics = pair_consistency(pairs, judgments, current, previous, tok, 128,
                                       "per_prompt", "j.jsonl")
    assert values == pytest.approx([1.0, 0.0, 1.0])
    assert metrics["cream_flip_share"] == pytest.approx(1 / 3)
    assert metrics["cream_c_min"] == 0.0 and metrics["cream_c_max"] == 1.0
    values, metrics = pair_consistency(pairs, judgments, current, previous, tok, 128, "mean",
                                       "j.jsonl")
    assert values == pytest.approx([2 / 3] * 3) and metrics["cream_flip_share"] == 0.0
    with pytest.raises(UserError, match="no row in the judgments"):
        pair_consistency([{"id": "zz"}], judgments, current, previous, tok, 128, "mean", "j")


def test_stage_cream_end_to_end(tmp_path, tiny_model, other_model):
    """The dpo stage with dpo.cream: C from the judgments and M_t-1 (models/m0 for models/m1),
    logged, in the metrics; the trained checkpoint is saved."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "m1")
    shutil.copytree(other_model, models / "m0")
    pairs = write_pairs(tmp_path / "pairs.jsonl", ids=True)
    with (tmp_path / "judgments.jsonl").open("w") as fh:
        for i, (prompt, chosen, rejected) in enumerate(PAIRS):
            fh.write(json.dumps({"id": f"p{i}", "prompt": prompt,
                                 "responses": [chosen, rejected, "maybe"],
                                 "mean": [4.0, 1.0, 2.0]}) + "\n")
    dpo = DpoParams(learning_rate=1e-3, final_learning_rate=1e-3, max_steps=2, batch_size=2,
                    max_length=128, precision="fp32", cream=CreamParams(enabled=True))
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        metrics, rows = stage(tmp_path, "models/m1", dpo, "cream", pairs_path=str(pairs),
                              judgments_path=str(tmp_path / "judgments.jsonl"))
        with pytest.raises(UserError, match="--judgments"):
            stage(tmp_path, "models/m1", dpo, "nojudge", pairs_path=str(pairs))
    finally:
        os.chdir(cwd)
    assert metrics["cream_previous"] == "models/m0" and metrics["steps"] == 2
    assert 0.0 <= metrics["cream_c_min"] <= metrics["cream_c_max"] <= 1.0
    assert "cream_c" in rows[0] and "cream_loss" in rows[0]
    assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["cream_loss"]), rel=1e-5)
    assert (tmp_path / "cream" / "config.json").is_file()


def test_params_yaml_documents_the_new_keys():
    text = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    data = yaml.safe_load(text)["dpo"]
    assert {"loss_type", "loss_weights", "ld_alpha", "cream"} <= set(data)
    assert {"chosen_weight", "rejected_weight"} <= set(data["distill"])
