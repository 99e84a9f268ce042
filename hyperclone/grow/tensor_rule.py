"""The tensor rule of growth: one recipe applied to one source tensor, a pure function (the streaming engine
calls it per tensor, the moments rule per AdamW state), and `--perturb`'s move toward a fresh init."""

from __future__ import annotations

import zlib
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import NoisePool, gather, grow_matrix, scale_norm_weight
from hyperclone.grow.families import emitted_axis
from hyperclone.grow.perturb import Perturbation, init_std
from hyperclone.grow.plan import GrowthSpec, Recipe
from hyperclone.grow.segment import SegmentRecipe, cut


def grow_tensor(recipe: Recipe, tensor: torch.Tensor, spec: GrowthSpec, noise_pool: NoisePool | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one recipe to its source tensor (pure: the result depends only on its arguments).

    `out`: a preallocated contiguous tensor of the output's shape and dtype that linear, zero and emit
    recipes write into (and return); norms return a new tensor. The result has the recipe's dtype (the
    source's, or float32 under --dtype float32 and where 16 bits cannot hold the growth exactly)."""
    if isinstance(recipe, SegmentRecipe):  # a fine-grained expert: cut from its whole grown expert (segment.py)
        return cut(grow_tensor(recipe.whole(), tensor, spec, noise_pool), recipe, out)
    if tensor.dtype != recipe.dtype:
        tensor = tensor.to(recipe.dtype)
    if recipe.kind == "zero":
        return torch.zeros(recipe.out_shape, dtype=tensor.dtype) if out is None else out.zero_()
    if recipe.kind == "fill":  # an identity block's layer_scalar (Gemma 4): the block's output times 1
        return torch.ones(recipe.out_shape, dtype=tensor.dtype) if out is None else out.fill_(1)
    if recipe.kind == "router":  # a new MoE router: seeded normal of std recipe.scale (hyperclone.grow.upcycle)
        generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + zlib.crc32(recipe.out_name.encode()))
        values = torch.randn(recipe.out_shape, generator=generator).mul_(recipe.scale).to(tensor.dtype)
        return values if out is None else out.copy_(values)
    if recipe.kind == "norm":
        (amap,) = recipe.maps
        grown = gather(tensor, 0, amap, apply_scale=False)  # norm weights are gathered, never scaled by s_k
        if recipe.zero_mean_positions and bool((amap.index < 0).any()):
            grown = grown.clone()
            grown[amap.index < 0] = 0
        if recipe.divide_by_map_scale:
            grown = (grown.float() / amap.scale.float()).to(tensor.dtype)
        return scale_norm_weight(grown, recipe.scale, recipe.norm_offset)
    if recipe.kind == "emit":
        moved = [dim for dim, amap in enumerate(recipe.maps) if not amap.is_identity()]
        if out is not None and len(moved) == 1:  # embeddings: one grown axis, written straight into out
            grown = gather(tensor, moved[0], recipe.maps[moved[0]], out=out)
        else:
            grown = tensor
            for dim, amap in enumerate(recipe.maps):
                grown = gather(grown, dim, amap)
            grown = grown if out is None else out.copy_(grown)
        if recipe.scale == 1.0:
            return grown
        # in place in the weight's dtype rounds as the float32 product does (torch computes it in float32)
        return grown.mul_(recipe.scale) if grown is out else (grown.float() * recipe.scale).to(tensor.dtype)
    contracts = (1, 2) if tensor.ndim == 3 else (0, 1)
    if tensor.ndim not in (2, 3) or recipe.contract not in contracts:
        raise HyperCloneError(f"{recipe.src_name}: a linear recipe needs a matrix or a stack of expert matrices")
    out_map, in_map = recipe.maps[emitted_axis(tensor.ndim, recipe.contract)], recipe.maps[recipe.contract]
    generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + zlib.crc32(recipe.out_name.encode()))
    if tensor.ndim == 3:  # every expert's matrix on its own, the experts kept (one generator)
        if not recipe.maps[0].is_identity():
            raise HyperCloneError(f"{recipe.src_name}: the experts of a stacked expert tensor are kept")
        grown = torch.empty(recipe.out_shape, dtype=tensor.dtype) if out is None else out
        for expert in range(tensor.shape[0]):
            if recipe.contract == 2:  # [experts, out, in]
                grow_matrix(tensor[expert], out_map, in_map, spec.mode, spec.snr_db, generator, noise_pool,
                            out=grown[expert])
            else:  # [experts, in, out] (GPT-OSS): each expert's [in, out] grown as its transpose
                grown[expert] = grow_matrix(tensor[expert].t(), out_map, in_map, spec.mode, spec.snr_db, generator,
                                            noise_pool).t()
        return grown
    matrix = tensor if recipe.contract == 1 else tensor.t()
    if recipe.contract == 1:
        grown = grow_matrix(matrix, out_map, in_map, spec.mode, spec.snr_db, generator, noise_pool, out=out)
    else:
        grown = grow_matrix(matrix, out_map, in_map, spec.mode, spec.snr_db, generator, noise_pool).t()
        grown = grown.contiguous() if out is None else out.copy_(grown)
    if recipe.scale == 1.0:  # a factor of the hidden size the model applies after the layer (hidden_power)
        return grown
    return grown.mul_(recipe.scale) if grown is out else (grown.float() * recipe.scale).to(tensor.dtype)


def perturbed(grown: torch.Tensor, target: torch.Tensor | None, name: str, perturbation: Perturbation | None,
              raw_config: dict[str, Any], seed: int) -> torch.Tensor:
    """grow --perturb: the grown tensor moved toward a fresh init (into its output buffer when it has one)."""
    if perturbation is None:
        return grown
    moved = perturbation.apply(grown, name, init_std(raw_config), seed)
    return grown.copy_(moved) if grown is target else moved
