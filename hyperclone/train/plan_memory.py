"""`hyperclone train --dry-run`: what a run will hold per process, before launching it.

Counts the parameters from the config alone (the model is built on the meta device) and gives, per process,
the bytes of fp32 weights, gradients and AdamW moments under DDP (a full replica each) and FSDP (a 1/N share),
so a user sees whether a grown model fits before asking for GPUs. Activations depend on the batch, sequence
length and activation checkpointing and are not counted.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.train.model_class import auto_class, freeze_outside_language_model
from hyperclone.train.parallel import bytes_estimate


def count_parameters(model_dir: Path) -> tuple[int, int]:
    """(all parameters, those that learn): an image-text model trains its language model only."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as err:
        raise HyperCloneError(f"cannot read the config in {model_dir}: {str(err).splitlines()[0]}") from None
    with torch.device("meta"):
        model = auto_class(config, model_dir).from_config(config)
    freeze_outside_language_model(model)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def human(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def dry_run_report(model_dir: Path, batch_tokens: int, seq_len: int, processes: int) -> str:
    params, learning = count_parameters(model_dir)
    frozen = f" ({learning:,} learn: the language model; the rest is frozen)" if learning != params else ""
    lines = [f"model        {model_dir}", f"parameters   {params:,}{frozen}",
             f"per step     {batch_tokens:,} tokens ({batch_tokens // seq_len:,} sequences of {seq_len}) over "
             f"{processes} process{'es' if processes != 1 else ''}",
             f"{'strategy':<10}{'weights':>14}{'gradients':>14}{'AdamW state':>14}{'total':>14}   per process"]
    for strategy in ("ddp", "fsdp"):
        est = bytes_estimate(params, processes, strategy, learning)
        lines.append(f"{strategy:<10}{human(est['weights']):>14}{human(est['gradients']):>14}{human(est['optimizer']):>14}"
                     f"{human(est['total']):>14}")
    lines.append("fp32 master weights, gradients and two AdamW moments (16 bytes per parameter), activations not "
                 "counted; fsdp also gathers one block at a time for its forward and backward.")
    return "\n".join(lines)
