"""Asymmetric continuation of a grown model (SPARKLING, arXiv 2602.02472): copy block 0 of every grown tensor
(the small model's own elements, hyperclone.common.copies.original_mask) continues the small model's training
(its AdamW moments kept with ``--moments-reset copies``, the base learning rate), while the other copies start
from zero moments and a learning rate that rises from the base to rho x the base over the first
``copies_warmup`` of the steps, then stays at rho x the base schedule.

AdamW's step is linear in the learning rate (p <- p (1 - lr wd) - lr u, u the bias-corrected m / (sqrt(v) + eps)
of this step, which does not depend on lr), so a per-element learning rate lr x f is exactly
p_before + f (p_after - p_before) for the step taken at lr: ``scale_update`` does that after the optimizer step.
"""

from __future__ import annotations

import torch

from hyperclone.common.copies import CopyLayout


def copy_factors(model, layout: CopyLayout) -> dict[str, torch.Tensor]:
    """{parameter name: float mask, 0 on copy block 0 and 1 on every other copy} for the grown parameters."""
    masks = layout.original_masks()
    out = {}
    for name, p in model.named_parameters():
        if name in masks and tuple(masks[name].shape) == tuple(p.shape):
            out[name] = (~masks[name]).to(p.device, torch.float32)
    return out


def copies_multiplier(step: int, total: int, rho: float, warmup: float) -> float:
    """The learning-rate multiplier of the copies at optimizer step `step` (0-based): 1 -> rho linearly over
    round(warmup * total) steps (at least one), rho after."""
    steps = max(1, round(warmup * total))
    return 1.0 + (rho - 1.0) * min(1.0, (step + 1) / steps)


def snapshot(model, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if name in factors}


@torch.no_grad()
def scale_update(model, before: dict[str, torch.Tensor], factors: dict[str, torch.Tensor], mult: float) -> None:
    """p <- before + (1 + (mult - 1) x factor) (p - before): the copies' step taken at mult x the learning rate."""
    for name, p in model.named_parameters():
        if name in before:
            scale = 1.0 + (mult - 1.0) * factors[name]
            p.copy_(before[name] + scale.to(p.dtype) * (p - before[name]))


def zero_copy_moments(optimizer, model, factors: dict[str, torch.Tensor]) -> None:
    """--moments-reset copies: the carried moments of every element outside copy block 0 set to zero."""
    for name, p in model.named_parameters():
        state = optimizer.state.get(p)
        if name in factors and state:
            keep = (1.0 - factors[name]).to(p.dtype)
            state["exp_avg"].mul_(keep)
            state["exp_avg_sq"].mul_(keep)
