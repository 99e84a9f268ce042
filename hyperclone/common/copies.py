"""Which grown positions are copies of one source unit, and how far the copies have drifted apart.

`hyperclone grow` writes ``copies.json`` beside the grown weights: for every grown tensor of rank >= 2 the
axis along which it holds copies of source units (rows of a projection that emits a grown axis, embedding
columns) and, per position on that axis, the source position it copies (-1: a position holding a mean, no
copy). Identical maps are stored once; a plain tile map (position k copies k mod d) is stored as its source size.

It also stores the map of the residual stream's hidden axis (`residual`), so that ``activation_divergence`` can
compare the copies of every hidden unit in the model's hidden states: the functional question. With the
default zero-sum noise the copies of a weight row differ from the start (weight cosine about 0.5 at 0 dB) while
the units they compute are exactly equal, until training makes the copied inputs differ.

``copy_divergence`` compares, in a state dict, every copy of a unit with copy 0 of the same unit (the slice
at the first position that copies it): the cosine similarity of the two slices and the norm of their
difference relative to copy 0's norm, averaged over all such pairs of a tensor group (the tensor name with its
layer index replaced by ``*``). Cosine 1 and relative difference 0 mean the copies are still the same neuron;
the training loop logs both at every evaluation of a grown run (metrics.jsonl, ``copy_divergence``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

COPIES_FILE = "copies.json"
_LAYER = re.compile(r"\.\d+\.")


@dataclass(frozen=True)
class CopyLayout:
    axes: list[CopyAxis]
    residual: torch.Tensor | None  # int64 [grown hidden]: source hidden position of each position (-1: none)
    # every grown tensor (norm weights too): the source position of each position, per axis
    maps: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)

    def original_masks(self) -> dict[str, torch.Tensor]:
        """{tensor name: bool mask of copy block 0}: the elements that are the first copy of their source
        element along every axis (the small model's own block; SPARKLING's "original")."""
        return {name: original_mask(maps) for name, maps in self.maps.items()}


@dataclass(frozen=True)
class CopyAxis:
    """Tensor `name` holds copies along `axis`: position k copies source position index[k] (-1: no copy)."""

    name: str
    axis: int
    index: torch.Tensor  # int64


def group_of(name: str) -> str:
    """"model.layers.3.mlp.up_proj.weight" -> "layers.*.mlp.up_proj.weight"."""
    return _LAYER.sub(".*.", name).removeprefix("model.")


def encode(layout: CopyLayout) -> dict[str, Any]:
    maps: list[Any] = []
    keys: dict[tuple[int, ...], int] = {}

    def map_id(index: torch.Tensor) -> int:
        idx = index.tolist()
        key = tuple(idx)
        if key not in keys:
            src = max(idx) + 1
            tile = idx == [k % src for k in range(len(idx))]
            keys[key] = len(maps)
            maps.append({"tile": src, "size": len(idx)} if tile else {"index": idx})
        return keys[key]

    tensors = {a.name: {"axis": a.axis, "map": map_id(a.index)} for a in layout.axes}
    residual = None if layout.residual is None else map_id(layout.residual)
    grown = {name: [map_id(index) for index in per_axis] for name, per_axis in layout.maps.items()}
    return {"format": 1, "maps": maps, "tensors": tensors, "residual": residual, "grown": grown}


def decode(raw: dict[str, Any]) -> CopyLayout:
    maps = [torch.arange(m["size"]) % m["tile"] if "tile" in m else torch.tensor(m["index"], dtype=torch.int64)
            for m in raw["maps"]]
    axes = [CopyAxis(name, int(t["axis"]), maps[int(t["map"])]) for name, t in raw["tensors"].items()]
    grown = {name: tuple(maps[int(i)] for i in ids) for name, ids in raw.get("grown", {}).items()}
    return CopyLayout(axes, None if raw.get("residual") is None else maps[int(raw["residual"])], grown)


def write_copies(folder: Path, layout: CopyLayout) -> None:
    (Path(folder) / COPIES_FILE).write_text(json.dumps(encode(layout)) + "\n")


def read_copies(model_dir: str | Path) -> CopyLayout | None:
    """The copy layout of a grown folder, or None (not grown by hyperclone, or grown before copies.json)."""
    path = Path(model_dir) / COPIES_FILE
    return decode(json.loads(path.read_text())) if path.is_file() else None


def _first_copy(index: torch.Tensor) -> torch.Tensor:
    """[new]: the position of copy 0 of each position's source unit (itself for copy 0; -1 for no copy)."""
    valid = index >= 0
    first = torch.full((int(index.max()) + 1 if valid.any() else 1,), index.numel(), dtype=torch.int64)
    positions = torch.arange(index.numel())
    first.scatter_reduce_(0, index[valid], positions[valid], reduce="amin")
    return torch.where(valid, first[index.clamp(min=0)], torch.full_like(index, -1))


def original_mask(maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Bool mask over a tensor whose axes have these index maps: True where the element is copy 0 of its
    source element along every axis (positions holding a mean, -1, are never original)."""
    mask = torch.ones((), dtype=torch.bool)
    for index in maps:
        first = _first_copy(index)
        axis_orig = (index >= 0) & (first == torch.arange(index.numel()))
        mask = mask.unsqueeze(-1) & axis_orig
    return mask


def pair_stats(tensor: torch.Tensor, axis: int, index: torch.Tensor) -> tuple[float, float, int]:
    """(sum of cosines, sum of relative difference norms, pairs) over every copy k > 0 against copy 0."""
    rows = tensor.detach().float().movedim(axis, 0).reshape(tensor.shape[axis], -1)
    first = _first_copy(index)
    later = torch.nonzero((first >= 0) & (first != torch.arange(index.numel()))).flatten()
    if later.numel() == 0:
        return 0.0, 0.0, 0
    a, b = rows[first[later]], rows[later]
    na = a.norm(dim=1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    rel = (b - a).norm(dim=1) / na.clamp(min=1e-12)
    return float(cos.sum()), float(rel.sum()), int(later.numel())


def copy_divergence(state: dict[str, torch.Tensor], axes: list[CopyAxis]) -> dict[str, dict[str, Any]]:
    """Per tensor group: mean cosine similarity and mean relative difference norm of copies against copy 0,
    and the number of pairs. Tensors missing from `state` (tied weights stored once) are skipped."""
    sums: dict[str, list[float]] = {}
    for a in axes:
        if a.name not in state:
            continue
        cos, rel, n = pair_stats(state[a.name], a.axis, a.index)
        if n:
            acc = sums.setdefault(group_of(a.name), [0.0, 0.0, 0])
            acc[0] += cos
            acc[1] += rel
            acc[2] += n
    return {g: {"cos": round(c / n, 6), "rel_diff": round(r / n, 6), "pairs": int(n)}
            for g, (c, r, n) in sorted(sums.items())}


def activation_divergence(hidden_states: list[torch.Tensor], residual: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Per hidden state ("h0" the embeddings' output, "h<i>" after block i; [..., grown hidden] each): mean
    cosine similarity and mean relative difference norm of every copy of the hidden units against copy 0,
    per token. The units a grown model computes are exact copies while cosine is 1."""
    first = _first_copy(residual)
    later = torch.nonzero((first >= 0) & (first != torch.arange(residual.numel()))).flatten()
    out: dict[str, dict[str, Any]] = {}
    if later.numel() == 0:
        return out
    for i, h in enumerate(hidden_states):
        h = h.detach().float().reshape(-1, h.shape[-1])
        b = h[:, later]
        a = h[:, first[later]]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
        rel = (b - a).norm(dim=1) / a.norm(dim=1).clamp(min=1e-12)
        out[f"h{i}"] = {"cos": round(float(cos.mean()), 6), "rel_diff": round(float(rel.mean()), 6),
                        "units": int(later.numel())}
    return out
