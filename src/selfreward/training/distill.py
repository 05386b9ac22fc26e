"""DPO + token-level distillation on the answer tokens (training/losses.py: distill_total):

    loss = DPO + weight * KL_all + chosen_weight * KL_chosen + rejected_weight * KL_rejected

(dual-level: alpha = chosen_weight on the chosen answers' tokens, gamma = rejected_weight on the
rejected answers'; `weight` is the single-level mean over both).

The KL is taken at every completion token of both the chosen and the rejected answer of each
pair, against a frozen teacher that shares the student's tokenizer:

    forward (default): KL(p_teacher || p_student), the classic distillation target (mode covering)
    reverse:           KL(p_student || p_teacher) (mode seeking)

both on temperature-softened distributions and scaled by temperature**2 (Hinton et al.), averaged
over the completion tokens of the batch. The student's logits are those its own forward returns
(TRL's DPO forward computes log-probabilities through a fused LM head and builds no logits), so
every architecture's logit post-processing is applied by the model itself and no TRL internal is
relied on: the term costs one teacher forward and a second student forward with its backward.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..config.errors import UserError
from ..config.params import DistillParams
from .losses import distill_total


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
             direction: str = "forward") -> torch.Tensor:
    """Per-token KL between the softened distributions; [tokens, vocab] x2 -> [tokens]."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if direction == "forward":
        kl = (t.exp() * (t - s)).sum(-1)
    elif direction == "reverse":
        kl = (s.exp() * (s - t)).sum(-1)
    else:
        raise ValueError(f"unknown KL direction {direction!r} (forward or reverse)")
    return kl * temperature ** 2


def load_teacher(params: DistillParams, student_tok):
    """The frozen teacher; its tokenizer must be the student's (the KL is per vocabulary entry)."""
    from transformers import AutoTokenizer

    from ..core.models import load_model

    path = Path(params.teacher)
    if not (path / "config.json").is_file():
        raise UserError("distillation teacher is not a model checkpoint (no config.json); "
                        "convert one with `selfreward base --model <dir|hub id> --out <dir>`",
                        file=str(path), field="dpo.distill.teacher")
    teacher_tok = AutoTokenizer.from_pretrained(str(path))  # checked before loading weights
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise UserError(f"the teacher's tokenizer differs from the student's "
                        f"({len(teacher_tok)} vs {len(student_tok)} tokens); token-level KL "
                        "needs the same vocabulary", file=str(path), field="dpo.distill.teacher")
    teacher, _ = load_model(str(path), dtype="float32")
    teacher.requires_grad_(False)
    return teacher


def distill_trainer(teacher, params: DistillParams, **kwargs):
    """A TRL DPOTrainer whose loss adds the token-level KL terms to `teacher`."""
    from trl import DPOTrainer
    from trl.models import prepare_deepspeed, prepare_fsdp

    class DistillDPOTrainer(DPOTrainer):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            if self.is_deepspeed_enabled:
                self.teacher = prepare_deepspeed(teacher, self.accelerator)
            elif self.is_fsdp_enabled:
                self.teacher = prepare_fsdp(teacher, self.accelerator)
            else:
                self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            dpo_loss = out[0] if return_outputs else out
            mask = inputs["completion_mask"][:, 1:].bool()
            batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                     "use_cache": False}
            # The model's own forward (TRL's fused head is only used when asked for): its logits
            # carry every architecture's post-processing (scales, soft-capping) by construction.
            student_logits = model(**batch).logits[:, -mask.size(1) - 1:-1][mask]
            with torch.no_grad():
                teacher_logits = self.teacher(**batch).logits[:, :-1][mask]
            vocab = len(self.processing_class)  # padded LM-head rows are no token
            kl = token_kl(student_logits[:, :vocab], teacher_logits[:, :vocab], params.temperature,
                          params.direction)
            rows = torch.arange(mask.size(0), device=mask.device)[:, None].expand_as(mask)[mask]
            chosen = rows < mask.size(0) // 2  # the batch is [chosen..., rejected...]
            terms = distill_total(dpo_loss, kl, chosen, params.weight, params.chosen_weight,
                                  params.rejected_weight)
            loss = terms["loss"]
            mode = "train" if self.model.training else "eval"
            for name in ("kl", "kl_chosen", "kl_rejected"):
                value = self.accelerator.gather_for_metrics(terms[name].detach())
                self._metrics[mode][f"distill/{name}"].append(value.mean().item())
            for name, weight in (("kl_chosen", params.chosen_weight),
                                 ("kl_rejected", params.rejected_weight)):
                value = self.accelerator.gather_for_metrics(weight * terms[name].detach())
                self._metrics[mode][f"distill/{name}_term"].append(value.mean().item())
            self._metrics[mode]["distill/dpo_loss"].append(
                self.accelerator.gather_for_metrics(dpo_loss.detach()).mean().item())
            return (loss, out[1]) if return_outputs else loss

    return DistillDPOTrainer()
