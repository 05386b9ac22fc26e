"""DPO + token-level distillation: loss = DPO + weight * KL(teacher, student) on the answer tokens.

The KL is taken at every completion token of both the chosen and the rejected answer of each
pair, against a frozen teacher that shares the student's tokenizer:

    forward (default): KL(p_teacher || p_student), the classic distillation target (mode covering)
    reverse:           KL(p_student || p_teacher) (mode seeking)

both on temperature-softened distributions and scaled by temperature**2 (Hinton et al.), averaged
over the completion tokens of the batch. The student's logits come from the hidden states of the
DPO forward pass itself (a hook on the backbone), so distillation costs one teacher forward and an
LM-head projection of the answer tokens, not a second student forward.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..params import DistillParams


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


def load_teacher(p: DistillParams, student_tok):
    """The frozen teacher; its tokenizer must be the student's (the KL is per vocabulary entry)."""
    from transformers import AutoTokenizer

    from ..models import load_model

    path = Path(p.teacher)
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


def _lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on selected hidden states, with the config's logit scale / soft-capping."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    cfg = model.config.get_text_config()
    head = model.get_output_embeddings()
    with maybe_gather_lm_head_ctx(head.weight, head.bias):
        weight, bias = head.weight, head.bias
        if hasattr(weight, "full_tensor"):  # an FSDP2 DTensor
            weight = weight.full_tensor()
            bias = bias.full_tensor() if bias is not None else None
        logits = F.linear(hidden.to(weight.dtype), weight, bias)
    scale = getattr(cfg, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def distill_trainer(teacher, p: DistillParams, **kwargs):
    """A TRL DPOTrainer whose loss adds weight * token-level KL to `teacher`."""
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
            student = self.accelerator.unwrap_model(self.model)
            if hasattr(student, "get_base_model"):
                student = student.get_base_model()
            self._student = student
            self._hidden: torch.Tensor | None = None
            self._capture = False
            # The DPO forward runs the backbone first with gradients (the student), then the
            # reference without: keep the first hidden states seen after _capture is set.
            student.base_model.register_forward_hook(self._keep_hidden)

        def _keep_hidden(self, module, args, output) -> None:
            if self._capture:
                self._hidden = output.last_hidden_state
                self._capture = False

        def _compute_loss(self, model, inputs, return_outputs):
            self._capture, self._hidden = True, None
            out = super()._compute_loss(model, inputs, return_outputs)
            hidden, self._hidden, self._capture = self._hidden, None, False
            if hidden is None:
                raise RuntimeError("distillation: the student's hidden states were not captured")
            dpo_loss = out[0] if return_outputs else out
            mask = inputs["completion_mask"][:, 1:].bool()
            student_logits = _lm_logits(self._student, hidden[:, -mask.size(1) - 1:-1][mask])
            with torch.no_grad():
                t_out = self.teacher(input_ids=inputs["input_ids"],
                                     attention_mask=inputs["attention_mask"], use_cache=False)
                teacher_logits = t_out.logits[:, :-1][mask]
            vocab = len(self.processing_class)  # padded LM-head rows are no token
            kl = token_kl(student_logits[:, :vocab], teacher_logits[:, :vocab], p.temperature,
                          p.direction)
            loss = dpo_loss + p.weight * kl.mean()
            mode = "train" if self.model.training else "eval"
            rows = torch.arange(mask.size(0), device=mask.device)[:, None].expand_as(mask)[mask]
            chosen = rows < mask.size(0) // 2  # the batch is [chosen..., rejected...]
            for name, sel in (("kl", slice(None)), ("kl_chosen", chosen), ("kl_rejected", ~chosen)):
                part = kl.detach()[sel]
                value = self.accelerator.gather_for_metrics(part.mean() if part.numel() else
                                                            kl.new_zeros(()))
                self._metrics[mode][f"distill/{name}"].append(value.mean().item())
            self._metrics[mode]["distill/dpo_loss"].append(
                self.accelerator.gather_for_metrics(dpo_loss.detach()).mean().item())
            return (loss, out[1]) if return_outputs else loss

    return DistillDPOTrainer()
