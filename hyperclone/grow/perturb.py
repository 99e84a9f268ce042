"""Symmetry breaking that gives up exactness on purpose (`hyperclone grow --perturb`).

After a weight matrix is grown exactly, it is moved toward a fresh initialisation:

* ``mix:R`` (G_stack's fresh-init mixing, arXiv 2405.15319): W <- (1 - R) W_grown + R W_init
* ``shrink:LAMBDA,SIGMA`` (shrink and perturb, Ash & Adams, arXiv 1910.08475): W <- LAMBDA W_grown + SIGMA W_init

W_init is drawn as the family's own initialisation draws a matrix (transformers' ``_init_weights``: normal with
mean 0 and std ``initializer_range`` from the config, 0.02 when the config has none), from a generator seeded by
the growth seed and the tensor's name, so a growth is reproducible tensor by tensor. Only matrices (rank >= 2:
projections, embeddings) move; norm weights, biases and integer tables (DeepSeek-V4's hash routing) are kept as grown,
and so are a multimodal checkpoint's vision tower and projector (the std: the top-level config's initializer_range, as
transformers' _init_weights reads it, else the text config's). The result no longer computes the source's function:
hyperclone.json records function_preserving false and the perturbation.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError

KINDS = ("mix", "shrink")
DEFAULT_INIT_STD = 0.02  # transformers' PretrainedConfig.initializer_range default


@dataclass(frozen=True)
class Perturbation:
    keep: float  # multiplies the grown weight
    sigma: float  # multiplies a fresh draw of the family's initialisation

    def apply(self, grown: torch.Tensor, name: str, init_std: float, seed: int) -> torch.Tensor:
        """The perturbed tensor (a new one, in grown's dtype); tensors of rank < 2 and integer tables (DeepSeek-V4's
        hash routing) are returned unchanged."""
        if grown.ndim < 2 or not grown.is_floating_point():
            return grown
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(b"perturb:" + name.encode()))
        fresh = torch.randn(grown.shape, generator=generator, dtype=torch.float32).mul_(init_std)
        return (grown.float() * self.keep + fresh * self.sigma).to(grown.dtype)


def parse_perturbation(text: str | None) -> Perturbation | None:
    """"mix:0.2" or "shrink:0.8,0.01" as a Perturbation; None for None; a one-line error otherwise."""
    if text is None:
        return None
    kind, _, args = str(text).partition(":")
    try:
        values = [float(v) for v in args.split(",")] if args else []
    except ValueError:
        values = None
    if kind == "mix" and values is not None and len(values) == 1 and 0 < values[0] <= 1:
        return Perturbation(keep=1.0 - values[0], sigma=values[0])
    if kind == "shrink" and values is not None and len(values) == 2 and 0 < values[0] <= 1 and values[1] >= 0:
        return Perturbation(keep=values[0], sigma=values[1])
    raise HyperCloneError(f"--perturb must be mix:R with 0 < R <= 1 or shrink:LAMBDA,SIGMA with 0 < LAMBDA <= 1 "
                          f"and SIGMA >= 0, got {text!r}")


def init_std(raw_config: dict[str, Any]) -> float:
    """The std the family's initialisation draws matrices with (initializer_range, OPT's init_std)."""
    for key in ("initializer_range", "init_std"):
        value = raw_config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_INIT_STD
