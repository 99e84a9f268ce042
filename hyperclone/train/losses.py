"""The training objectives: next-token cross-entropy, and the distillation anchor's mix of cross-entropy and
KL to a teacher's next-token distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, alpha: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """((1 - alpha) CE + alpha KL(p_teacher || p_model), CE), both means over the tokens, in float32. Where the
    teacher's vocabulary is narrower than the model's (a padded embedding), the model's extra logits count in
    its softmax and the teacher gives them probability 0."""
    flat = logits.float().view(-1, logits.size(-1))
    ce = F.cross_entropy(flat, y.reshape(-1))
    if alpha == 0:
        return ce, ce
    log_p = F.log_softmax(flat, dim=-1)[:, : teacher_logits.size(-1)]
    log_t = F.log_softmax(teacher_logits.float().view(-1, teacher_logits.size(-1)), dim=-1)
    kl = (log_t.exp() * (log_t - log_p)).sum(-1).mean()
    return (1 - alpha) * ce + alpha * kl, ce
