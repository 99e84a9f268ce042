"""AdamW moments a run saves and a run can start from.

A run saves its final moments keyed by parameter name (``final/moments.pt``, ``TrainConfig.save_moments``).
A run started with ``moments_from`` puts the moments found in that folder into its fresh AdamW state; they must
have the model's shapes. Moments of a small model are grown for the model grown from it by the growth side
(``hyperclone grow --moments-from RUN/final`` writes them beside the grown weights, see
hyperclone.grow.moments), so training never needs the growth engine.
"""

from __future__ import annotations

from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.train.options import RESETS


def optimizer_moments(model, optimizer) -> dict[str, dict[str, Any]]:
    """{param name: {"step", "exp_avg", "exp_avg_sq"}} of an AdamW optimizer over model's parameters."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        st = optimizer.state.get(p)
        if st and "exp_avg" in st:
            out[name] = {"step": float(st["step"]), "exp_avg": st["exp_avg"].detach().cpu().clone(),
                         "exp_avg_sq": st["exp_avg_sq"].detach().cpu().clone()}
    return out


def apply_moments(model, optimizer, moments: dict[str, dict[str, Any]], reset: str = "none") -> int:
    """Put moments into a fresh AdamW optimizer's state (shapes must match); `reset` zeroes one of them.

    reset: none | first (exp_avg = 0: forget the small model's direction, keep its per-coordinate step
    sizes; zeroing exp_avg_sq instead would blow up the first steps). Returns how many parameters got moments.
    """
    if reset not in RESETS:
        raise HyperCloneError(f"--moments-reset must be one of {', '.join(RESETS)}, not {reset!r}")
    n = 0
    for name, p in model.named_parameters():
        if name not in moments:
            continue
        m = moments[name]
        if tuple(m["exp_avg"].shape) != tuple(p.shape):
            raise HyperCloneError(f"moments for {name} have shape {tuple(m['exp_avg'].shape)}, the parameter "
                                  f"{tuple(p.shape)}: moments of a small model must be grown with it "
                                  "(hyperclone grow --moments-from RUN/final)")
        exp_avg = m["exp_avg"].to(p.device, p.dtype)
        exp_avg_sq = m["exp_avg_sq"].to(p.device, p.dtype)
        if reset == "first":
            exp_avg = torch.zeros_like(exp_avg)
        optimizer.state[p] = {"step": torch.tensor(float(m["step"])), "exp_avg": exp_avg.clone(),
                              "exp_avg_sq": exp_avg_sq.clone()}
        n += 1
    if n == 0:
        raise HyperCloneError("none of the carried-over moments matches a parameter of the model")
    return n

