"""Gated DeltaNet mixers (Qwen3.5, Qwen3-Next): linear attention whose heads grow by copies, as attention heads do.

A gated DeltaNet layer (transformers' Qwen3_5GatedDeltaNet, Qwen3NextGatedDeltaNet) projects the residual stream to
K key heads and V value heads (V a multiple of K: value head h reads key head h // (V / K), as grouped-query
attention's query heads read their KV head), runs a depthwise causal convolution over the [q | k | v] channels,
L2-normalises each query and key head, and runs one delta-rule recurrence per value head with its own decay
(A_log, dt_bias, the `a` row) and write strength (the `b` row). The output is normalised per value head by a gated
RMSNorm over the head's own width (z gates it) and read back by out_proj.

Every step is per head, so a copied head computes its source head's output exactly: the key heads are copied with
their query and key slices and conv channels, the value heads with their value and z slices, conv channels, a/b
rows, A_log and dt_bias, and every value head stays in a copy of its source key head's group (gqa_head_maps with
the key heads as the groups). out_proj divides each value head's columns among its copies. Head widths are kept;
both head counts grow by the hidden size's factor (or to a --to config's counts). Uneven copies are exact too: the
norm never mixes heads.

Kimi Linear's Kimi Delta Attention (KimiLinearDeltaAttention) is the same per-head recurrence with one head count for
keys and values (its table names linear_num_heads for both: every head its own group) and a decay per channel: its
q/k/v projections and their three convolutions, the forget gate's up-projection and dt_bias (lin_v: per channel),
A_log and b_proj (lin_v_heads) and the output gate's up-projection move with their head; the low-rank gates'
down-projections keep their rank (lin_v_dim) and read the residual stream.

Axis kinds (hyperclone.grow.families):
  lin_qk      key heads x key head width: the query or the key section of in_proj_qkv and of the conv channels
  lin_v       value heads x value head width: the value section, in_proj_z, out_proj's input
  lin_v_heads one position per value head: in_proj_b, in_proj_a, A_log, dt_bias
  lin_v_dim   a value head's width: the gated norm's weight (kept)
  lin_qkvz    Qwen3-Next's fused in_proj_qkvz, laid out per key head: [q, k, its value heads' v, their z]
  lin_ba      Qwen3-Next's fused in_proj_ba, per key head: [its value heads' b, their a]
Pure functions: nothing here reads files.
"""

from __future__ import annotations

from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import AxisMap, block_map, gqa_head_maps, tile_map
from hyperclone.grow.families import LINEAR_SLOTS


def source_linear_dims(family_keys: dict[str, str], get: Any) -> dict[str, int]:
    """The gated DeltaNet widths from the config (empty for families without the mixer), checked."""
    if "lin_k_heads" not in family_keys:
        return {}
    values = {slot: get(slot) for slot in LINEAR_SLOTS}
    for slot, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HyperCloneError(f"config.json: {family_keys[slot]} must be a positive integer, got {value!r}")
    if values["lin_v_heads"] % values["lin_k_heads"]:
        raise HyperCloneError(f"config.json: {values['lin_v_heads']} linear-attention value heads "
                              f"({family_keys['lin_v_heads']}) are not divisible by {values['lin_k_heads']} key "
                              f"heads ({family_keys['lin_k_heads']})")
    return values


def grown_linear_heads(family_keys: dict[str, str], k_heads: int, v_heads: int, old_hidden: int, hidden: int,
                       requested: tuple[int, int] | None) -> tuple[int, int]:
    """The grown (key heads, value heads): the source's times the hidden size's factor, or a --to config's; every
    source head must keep at least one copy inside its group."""
    if requested is None:
        if k_heads * hidden % old_hidden or v_heads * hidden % old_hidden:
            raise HyperCloneError(f"{k_heads} key and {v_heads} value heads of linear attention grown with the hidden "
                                  f"size ({old_hidden} -> {hidden}) would not be whole numbers; give a hidden size "
                                  f"that keeps them whole")
        requested = (k_heads * hidden // old_hidden, v_heads * hidden // old_hidden)
    new_k, new_v = requested
    if new_k < k_heads or new_v < v_heads:
        raise HyperCloneError(f"cannot shrink the linear-attention heads from {k_heads}/{v_heads} to {new_k}/{new_v} "
                              "(key/value): growth only adds")
    if new_v % new_k:
        raise HyperCloneError(f"{new_v} linear-attention value heads do not divide into {new_k} key heads "
                              f"({family_keys['lin_v_heads']} / {family_keys['lin_k_heads']})")
    try:
        gqa_head_maps(v_heads, k_heads, new_v, new_k)
    except ValueError as exc:
        raise HyperCloneError(f"linear attention: {exc}") from None
    return new_k, new_v


def linear_attention_maps(k_heads: int, v_heads: int, k_dim: int, v_dim: int, new_k: int,
                          new_v: int) -> dict[str, AxisMap]:
    """The map of every gated DeltaNet axis kind (see the module doc)."""
    v_map, k_map = gqa_head_maps(v_heads, k_heads, new_v, new_k)
    return {"lin_qk": block_map(k_map, tile_map(k_dim, k_dim)),
            "lin_v": block_map(v_map, tile_map(v_dim, v_dim)),
            "lin_v_heads": v_map,
            "lin_v_dim": tile_map(v_dim, v_dim),
            "lin_qkvz": grouped_map(k_map, v_map, ((k_dim, False), (k_dim, False), (v_dim, True), (v_dim, True))),
            "lin_ba": grouped_map(k_map, v_map, ((1, True), (1, True)))}


def grouped_map(k_map: AxisMap, v_map: AxisMap, sections: tuple[tuple[int, bool], ...]) -> AxisMap:
    """A projection fused per key head (Qwen3-Next): each key head's block holds its sections in order; a section
    (width, per value head) is one slice of that width for the key head, or, per value head, one slice for each of
    the group's value heads. New block j is the copy k_map[j]'s block, its value-head slices those of the value
    heads v_map places in group j (copies of heads of the source block's own group, gqa_head_maps)."""
    group, new_group = v_map.src_size // k_map.src_size, v_map.size // k_map.size
    stride = sum(width * (group if per_v else 1) for width, per_v in sections)
    indices = []
    for j in range(k_map.size):
        source = int(k_map.index[j])
        offset = source * stride
        for width, per_v in sections:
            if not per_v:
                indices.append(offset + torch.arange(width))
                offset += width
                continue
            for slot in range(j * new_group, (j + 1) * new_group):
                head = int(v_map.index[slot]) - source * group  # its place in the source group
                indices.append(offset + head * width + torch.arange(width))
            offset += group * width
    index = torch.cat(indices)
    return AxisMap(index, torch.ones(index.numel(), dtype=torch.float64), k_map.src_size * stride)
