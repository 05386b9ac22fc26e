"""Every DPO-stage objective side by side, each a small function with its formula.

Notation, per pair i with prompt x, chosen y+ and rejected y-:
    logratio(y) = sum_t log pi(y_t | x, y_<t) - sum_t log pi_ref(y_t | x, y_<t)
    delta_i     = logratio(y+) - logratio(y-)
    s(z)        = -log sigmoid(beta * z)

TRL computes `sigmoid`, `sft` and `ld_alpha` itself (params dpo.loss_type, dpo.loss_weights,
dpo.ld_alpha; loss = sum_k weight_k * loss_k); the functions here restate them so that tests check
TRL's numbers against an independent computation, and hold what TRL does not have (CREAM's
per-pair label smoothing, the dual-level distillation sum). The trainer subclasses only choose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_sigmoid(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), per pair: s(delta) = -log sigmoid(beta * delta)."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def nll_token_mean(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """TRL's `sft` term: -mean of log pi over ALL chosen completion tokens of the batch (one
    scalar; a long answer weighs by its length)."""
    return -chosen_token_logps[chosen_mask.bool()].mean()


def nll_example_mean(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """Iterative RPO's NLL as Pang et al. (2024) write it, per pair:
    -sum_t log pi(y+_t) / |y+| (each answer normalised by its own length)."""
    mask = chosen_mask.to(chosen_token_logps.dtype)
    return -(chosen_token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def irpo(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
         chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor, beta: float,
         alpha: float) -> torch.Tensor:
    """Iterative RPO through TRL's list form (loss_type [sigmoid, sft], loss_weights [1, alpha]):
    mean_i s(delta_i) + alpha * NLL_token_mean (a scalar)."""
    return (dpo_sigmoid(chosen_logratios, rejected_logratios, beta).mean()
            + alpha * nll_token_mean(chosen_token_logps, chosen_mask))


def ld_logps(token_logps: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """LD-DPO (arXiv 2409.06411) sequence log-probabilities; rows [chosen..., rejected...].

    Per pair, l = min(|y+|, |y-|): logp(y) = sum_{t<=l} log pi(y_t) + alpha * sum_{t>l} log pi(y_t).
    alpha = 1 is plain DPO; alpha = 0 ignores the longer answer's tail beyond the shorter's length.
    """
    pos = mask.cumsum(-1)
    lengths = mask.sum(-1)
    chosen, rejected = lengths.chunk(2)
    shared = torch.minimum(chosen, rejected).repeat(2).unsqueeze(-1)
    head = (pos > 0) & (pos <= shared) & mask.bool()
    tail = (pos > shared) & mask.bool()
    return (token_logps * head).sum(-1) + alpha * (token_logps * tail).sum(-1)


def cream(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
          consistency: torch.Tensor, beta: float) -> torch.Tensor:
    """CREAM (Wang et al., ICLR 2025), per pair with consistency C_i in [0, 1]:
    C_i * s(delta_i) + (1 - C_i) * s(-delta_i), i.e. DPO label-smoothed by eps_i = 1 - C_i.
    C = 1 is DPO; C = 0 is DPO with chosen and rejected swapped."""
    delta = chosen_logratios - rejected_logratios
    return consistency * -F.logsigmoid(beta * delta) + (1 - consistency) * -F.logsigmoid(-beta * delta)


def kendall_tau(first: list[float], second: list[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties count in neither direction;
    0.0 when either scoring is constant)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} vs {len(second)} scores")
    concordant = discordant = ties_first = ties_second = 0
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            a, b = first[i] - first[j], second[i] - second[j]
            if a == 0 and b == 0:
                continue
            if a == 0:
                ties_first += 1
            elif b == 0:
                ties_second += 1
            elif (a > 0) == (b > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_first) * (concordant + discordant + ties_second)) ** 0.5
    return (concordant - discordant) / denom if denom else 0.0


def consistency_rate(tau: float) -> float:
    """CREAM's C = (tau + 1) / 2: 1 when both rankings agree, 0 when one reverses the other."""
    return (tau + 1) / 2


def distill_total(dpo_loss: torch.Tensor, kl: torch.Tensor, chosen: torch.Tensor, weight: float,
                  chosen_weight: float, rejected_weight: float) -> dict[str, torch.Tensor]:
    """Dual-level preference distillation: per completion token KL(teacher, student) `kl`, with
    `chosen` marking the tokens of chosen answers:
        L = L_DPO + weight * KL_all + alpha * KL_pos + gamma * KL_neg
    (alpha = chosen_weight, gamma = rejected_weight; each KL the mean over its tokens, 0 when the
    side has none). Returns every term and the total."""
    def mean(part: torch.Tensor) -> torch.Tensor:
        return part.mean() if part.numel() else kl.new_zeros(())

    terms = {"kl": mean(kl), "kl_chosen": mean(kl[chosen]), "kl_rejected": mean(kl[~chosen])}
    terms["loss"] = (dpo_loss + weight * terms["kl"] + chosen_weight * terms["kl_chosen"]
                     + rejected_weight * terms["kl_rejected"])
    return terms
