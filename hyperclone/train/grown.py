"""What a run does differently when it trains a grown model or learns from a small one: the optimizer's start
(carried AdamW moments, asymmetric continuation's copy factors), the distillation teacher, and the copy
divergence logged at every evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyperclone.common.copies import CopyLayout, activation_divergence, copy_divergence, read_copies
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import load_moments
from hyperclone.train import asymmetric, parallel
from hyperclone.train.inputs import check_model_dir
from hyperclone.train.moments import apply_moments

DIVERGENCE_SEQS = 4  # validation sequences whose hidden states measure a grown model's copy divergence


def start_optimizer(cfg, model: torch.nn.Module, model_dir: Path, optimizer: torch.optim.Optimizer,
                    fresh: bool) -> dict[str, torch.Tensor]:
    """Asymmetric continuation's per-element copy factors ({} without --copies-lr or --moments-reset copies),
    and, for a fresh run with --moments-from, the carried moments in the optimizer (zeroed outside copy block 0
    with --moments-reset copies)."""
    factors: dict[str, torch.Tensor] = {}
    if cfg.copies_lr is not None or cfg.moments_reset == "copies":
        layout = read_copies(model_dir)
        if layout is None or not layout.maps:
            raise HyperCloneError(f"--copies-lr and --moments-reset copies need a grown model: {model_dir} "
                                  "has no copies.json with its copy maps (grow it with this hyperclone)")
        factors = asymmetric.copy_factors(model, layout)
        if not factors:
            raise HyperCloneError(f"--copies-lr and --moments-reset copies: {model_dir}/copies.json names none of the "
                                  "model's parameters (a copy layout written for another model class)")
    if fresh and cfg.moments_from is not None:
        reset = "none" if cfg.moments_reset == "copies" else cfg.moments_reset
        apply_moments(model, optimizer, load_moments(Path(cfg.moments_from)), reset)
        if cfg.moments_reset == "copies":
            asymmetric.zero_copy_moments(optimizer, model, factors)
    return factors


def load_teacher(path: Path, config, attn: str | None, device: torch.device) -> torch.nn.Module:
    """The distillation teacher, whole on every process (it is the small model), forward only; its vocabulary
    must fit in the model's."""
    teacher_vocab = check_model_dir(path).get_text_config().vocab_size  # an image-text model's language model's
    if teacher_vocab > config.get_text_config().vocab_size:
        raise HyperCloneError(f"--teacher {path} has a vocabulary of {teacher_vocab}, more than the model's "
                              f"{config.get_text_config().vocab_size}: distillation needs the same tokens")
    teacher = parallel.load_config_model(path, attn, meta=False).to(device)
    return teacher.eval().requires_grad_(False)


def divergence(model: torch.nn.Module, layout: CopyLayout, rows: torch.Tensor, autocast) -> dict[str, Any]:
    """How far a grown model's copies have drifted apart: in the weights (per tensor group, "copy_divergence")
    and in the hidden states of `rows` (validation sequences; per layer, "activation_divergence")."""
    found: dict[str, Any] = {"copy_divergence": copy_divergence(model.state_dict(), layout.axes)}
    if layout.residual is not None:
        model.eval()
        with torch.no_grad(), autocast():
            states = model(input_ids=rows, use_cache=False, output_hidden_states=True).hidden_states
        model.train()
        found["activation_divergence"] = activation_divergence(list(states), layout.residual)
    return found
