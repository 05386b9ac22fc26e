"""The SFT loss over labelled positions only: equal to the model's own loss (token mean), and the
per-example mean that gives a one-token judge turn the weight of a long answer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfreward.core.models import load_model
from selfreward.training.completion_loss import completion_loss


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 400, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 3:11] = ids[0, 3:11]  # a long completion (8 tokens)
    labels[1, 10:12] = ids[1, 10:12]  # a short one (2 tokens), e.g. a score
    # row 2 has no label at all: it must not count
    mask = torch.ones_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_token_mean_equals_the_models_own_loss(tiny_model):
    model, _ = load_model(tiny_model, "float32")
    batch = _batch()
    ours = completion_loss(model, batch)
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_per_example_mean_by_hand(tiny_model):
    model, _ = load_model(tiny_model, "float32")
    batch = _batch()
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    per_row = []
    for r in (0, 1):
        keep = labels[r] != -100
        per_row.append(F.cross_entropy(logits[r][keep], labels[r][keep]))
    expected = torch.stack(per_row).mean()
    ours = completion_loss(model, batch, per_example=True)
    assert torch.allclose(ours, expected, atol=1e-5)
    # the two normalisations differ exactly by how they weigh the short row
    token = completion_loss(model, batch)
    assert not torch.allclose(ours, token)
    ours.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
