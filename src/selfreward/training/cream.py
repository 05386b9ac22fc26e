"""CREAM (Wang et al., ICLR 2025, arXiv 2410.12735): consistency-regularized DPO.

Per prompt the N answers are ranked twice: by the loop's judge (the scores of M_t that made the
pair, judgments.jsonl) and by the implicit reward M_t carries from the step that made it,
    r(y) = sum_t log pi_{M_t}(y_t | x, y_<t) - sum_t log pi_{M_t-1}(y_t | x, y_<t)
(M_t-1 = the model M_t was trained from: M0 for M1, M_t-1 of the iterations after). Kendall tau
of the two rankings gives C = (tau + 1) / 2, and the pair's loss is losses.cream: DPO
label-smoothed by 1 - C. `dpo.cream.consistency: mean` gives every pair the mean C.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config.errors import UserError
from ..config.params import Params
from .losses import consistency_rate, cream, kendall_tau

log = logging.getLogger(__name__)


def previous_model(params: Params, model_dir: str | Path) -> str:
    """M_t-1: the checkpoint `model_dir` (M_t) was trained from (iterations chain from M1 = sft
    of M0)."""
    model_dir = str(Path(model_dir))
    for it in params.iterations.values():
        if str(Path(it.next)) == model_dir:
            return it.model
    if model_dir == str(Path(params.models["m1"])):
        return params.models["m0"]
    raise UserError(f"cannot tell which model {model_dir} was trained from (not models/m1 nor "
                    "any iterations.*.next): CREAM ranks by the implicit reward against it",
                    field="dpo.cream.enabled")


@torch.no_grad()
def answer_logps(model, tokenizer, prompt: str, answers: list[str], max_length: int) -> list[float]:
    """sum log pi(answer | prompt) of each answer, the prompt in the chat template (as TRL)."""
    head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=True)
    head = list(head["input_ids"] if isinstance(head, dict) or hasattr(head, "keys") else head)
    out = []
    for answer in answers:
        ids = head + tokenizer(answer, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        ids = ids[:max_length]
        if len(ids) <= len(head):
            out.append(0.0)
            continue
        x = torch.tensor([ids], device=model.device)
        logps = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
        token = logps.gather(-1, x[0, 1:, None])[:, 0]
        out.append(float(token[len(head) - 1:].sum()))
    return out


def pair_consistency(pairs: list[dict], judgments: list[dict], current, previous, tokenizer,
                     max_length: int, mode: str, judgments_path: str) -> tuple[list[float], dict]:
    """C of each pair (by its `id`) and the metrics: C's distribution, share it would flip."""
    by_id = {row["id"]: row for row in judgments}
    taus = {}
    for pair in pairs:
        row = by_id.get(pair.get("id"))
        if row is None:
            raise UserError(f"pair {pair.get('id')!r} has no row in the judgments",
                            file=judgments_path, field="id")
        if row["id"] in taus:
            continue
        kept = [i for i, m in enumerate(row["mean"]) if m is not None]
        answers = [row["responses"][i] for i in kept]
        now = answer_logps(current, tokenizer, row["prompt"], answers, max_length)
        before = answer_logps(previous, tokenizer, row["prompt"], answers, max_length)
        taus[row["id"]] = kendall_tau([row["mean"][i] for i in kept],
                                      [a - b for a, b in zip(now, before)])
    per_pair = [consistency_rate(taus[pair["id"]]) for pair in pairs]
    if mode == "mean":
        mean = sum(per_pair) / len(per_pair) if per_pair else 1.0
        per_pair = [mean] * len(per_pair)
    values = sorted(per_pair)
    n = len(values)
    metrics = {"cream_c_mean": round(sum(values) / n, 6) if n else None,
               "cream_c_min": round(values[0], 6) if n else None,
               "cream_c_median": round(values[n // 2], 6) if n else None,
               "cream_c_max": round(values[-1], 6) if n else None,
               # C < 0.5: the smoothed loss prefers the rejected answer, i.e. flips the pair.
               "cream_flip_share": round(sum(c < 0.5 for c in values) / n, 6) if n else None,
               "cream_consistency": mode}
    return per_pair, metrics


def cream_trainer(beta: float, **kwargs):
    """A TRL DPOTrainer whose loss is losses.cream with each pair's `consistency` column.

    TRL precomputes the reference log-probs (args.precompute_ref_log_probs must be true); the
    policy's come from the forward TRL runs anyway (recorded, not repeated), so TRL's own metrics
    stay as they are and only the loss is replaced.
    """
    from trl import DPOTrainer

    class CreamDPOTrainer(DPOTrainer):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            if not self.precompute_ref_logps:
                raise ValueError("CREAM needs precompute_ref_log_probs=True")
            self._set_signature_columns_if_needed()
            self._signature_columns.append("consistency")
            collate = self.data_collator

            def with_consistency(examples):
                values = [ex.pop("consistency") for ex in examples]
                batch = collate(examples)
                batch["consistency"] = torch.tensor(values, dtype=torch.float32)
                return batch

            self.data_collator = with_consistency

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            consistency = inputs.pop("consistency")
            recorded = {}

            def forward(**kw):
                recorded.setdefault("out", model(**kw))
                return recorded["out"]

            out = super().compute_loss(forward, inputs, return_outputs, num_items_in_batch)
            mask = inputs["completion_mask"][:, 1:]
            token_logps = recorded["out"].log_probs[:, -mask.size(1):]
            logps = (token_logps * mask).sum(-1)
            chosen, rejected = logps.chunk(2)
            per_pair = cream(chosen - inputs["ref_chosen_logps"],
                             rejected - inputs["ref_rejected_logps"],
                             consistency.to(logps.device, logps.dtype), beta)
            loss = per_pair.mean()
            mode = "train" if self.model.training else "eval"
            for name, value in (("loss", loss.detach()), ("c", consistency.mean())):
                value = self.accelerator.gather_for_metrics(value.to(logps.device))
                self._metrics[mode][f"cream/{name}"].append(value.mean().item())
            return (loss, out[1]) if return_outputs else loss

    return CreamDPOTrainer()
