"""Masked Structural Growth (MSG, Yao et al., arXiv 2305.02869): where the small model's weights go in
the target-shape model, and which growth stage every new position, head and layer belongs to.

A growth is a sequence of stages. Stage 0 is the small model; stage k (k >= 1) grows the shape of
stage k-1 by a `GrowthSpec` (resolved by hyperclone's planner, so width factors and absolute sizes
work as for `hyperclone grow`) and ramps its masks from 0 to 1 over `ramp` optimizer steps starting at
`start`. The model is built once at the final shape; each position of each grown axis is owned by the
first stage whose shape contains it:

- hidden size, MLP width: stage k owns positions [size_{k-1}, size_k) (old positions come first);
- KV heads: stage k owns KV positions [K_{k-1}, K_k);
- query heads: with G = H/K query heads per KV head in the final shape, position p = j*G + r is query
  head r of KV group j and is owned by the first stage with K_k > j and G_k > r, so every stage's
  active heads form a valid GQA layout (each query head reads a KV head active no later than itself).
  This needs the group size G_k not to shrink from stage to stage;
- layers: new layers are identity-at-start blocks placed by `hyperclone.grow.plan.layer_plan` (spread
  evenly, or after the layers `GrowthSpec.insert_after` names).

head_dim never changes (a new head is a whole new head), so RoPE and the attention scale stay valid.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.families import Family, TensorRule, get_family
from hyperclone.grow.plan import Dims, GrowthSpec, layer_plan, source_dims, target_dims

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt_neox", "gpt2")
CONFIG_KEY = "msg_growth"  # config.json key holding a Layout while masks are live; removed when folded

RAMP_FRAC = 0.1  # default share of a run over which an MSG stage ramps its masks from 0 to 1


@dataclass(frozen=True)
class Stage:
    """One growth stage: the shape change relative to the previous stage, and its mask ramp."""

    spec: GrowthSpec
    start: int = 0  # optimizer step at which this stage's masks leave 0
    ramp: int = 100  # steps until they reach 1 (0: at once)


@dataclass
class Layout:
    """Everything the masks need, JSON-serialisable (stored in config.json while masks are live)."""

    model_type: str
    dims: list[dict[str, Any]]  # per stage, stage 0 = the small model
    starts: list[int]  # per stage (stage 0's entry is unused)
    ramps: list[int]
    layer_stage: list[int]  # per final layer: 0 = a small-model layer, k = added by stage k
    old_layer: list[int | None]  # per final layer: the small-model layer it holds, else None
    type_layer: list[int]  # per final layer: the small-model layer whose per-layer config (layer_types) it takes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return get_family(self.model_type)

    @property
    def n_stages(self) -> int:
        return len(self.dims) - 1

    def dim(self, stage: int, name: str) -> int:
        return int(self.dims[stage][name])

    @property
    def final(self) -> dict[str, Any]:
        return self.dims[-1]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Layout:
        return cls(**raw)

    # ------------------------------------------------------------------ stage of every position

    def axis_stage(self, name: str) -> torch.Tensor:
        """Owning stage of each position of the hidden ("hidden") or MLP ("ffn") axis."""
        owner = torch.zeros(self.dim(-1, name), dtype=torch.long)
        for k in range(self.n_stages, 0, -1):
            owner[: self.dim(k, name)] = k
        owner[: self.dim(0, name)] = 0
        return owner

    def head_stage(self) -> torch.Tensor:
        """Owning stage of each query-head position of the final shape."""
        heads, kv = self.dim(-1, "heads"), self.dim(-1, "kv_heads")
        group = heads // kv
        owner = torch.full((heads,), -1, dtype=torch.long)
        for k in range(self.n_stages, -1, -1):
            g_k, kv_k = self.dim(k, "heads") // self.dim(k, "kv_heads"), self.dim(k, "kv_heads")
            for j in range(kv_k):
                owner[j * group : j * group + g_k] = k
        return owner

    def old_head_positions(self) -> torch.Tensor:
        """Final query-head position of each small-model query head."""
        group = self.dim(-1, "heads") // self.dim(-1, "kv_heads")
        g0 = self.dim(0, "heads") // self.dim(0, "kv_heads")
        return torch.tensor([(i // g0) * group + i % g0 for i in range(self.dim(0, "heads"))], dtype=torch.long)

    def ramp_value(self, stage: int, step: int) -> float:
        """Mask value of `stage` at optimizer step `step`: 0 before start, linear, 1 after the ramp."""
        if stage == 0:
            return 1.0
        start, ramp = self.starts[stage], self.ramps[stage]
        if ramp <= 0:
            return 1.0 if step >= start else 0.0
        return float(min(1.0, max(0.0, (step - start) / ramp)))

    def ramp_end(self) -> int:
        """First step at which every mask is 1."""
        return max((self.starts[k] + max(self.ramps[k], 0) for k in range(1, self.n_stages + 1)), default=0)

    # ------------------------------------------------------------------ where the small weights go

    def old_positions(self, kind: str, size: int) -> torch.Tensor:
        """Positions of the final tensor axis of kind `kind` (final length `size`) that hold the small model's."""
        hd = self.dim(0, "head_dim")
        if kind in ("hidden", "ffn"):
            return torch.arange(self.dim(0, kind))
        if kind in ("q", "attn"):
            return (self.old_head_positions()[:, None] * hd + torch.arange(hd)).reshape(-1)
        if kind in ("k", "v"):
            return torch.arange(self.dim(0, "kv_heads") * hd)
        if kind == "qkv_interleaved":  # GPT-NeoX [heads, 3, head_dim], heads outermost
            return (self.old_head_positions()[:, None] * 3 * hd + torch.arange(3 * hd)).reshape(-1)
        if kind in ("vocab", "positions", "head_dim"):
            return torch.arange(size)
        raise HyperCloneError(f"MSG does not support axis kind {kind!r}")

    def section_size(self, kind: str) -> int:
        """Final length of one section of a fused axis."""
        hd = self.dim(-1, "head_dim")
        return {"q": self.dim(-1, "heads") * hd, "attn": self.dim(-1, "heads") * hd,
                "k": self.dim(-1, "kv_heads") * hd, "v": self.dim(-1, "kv_heads") * hd}[kind]

    def axis_positions(self, kinds: tuple[str, ...], size: int) -> torch.Tensor:
        if len(kinds) == 1:
            return self.old_positions(kinds[0], size)
        parts, offset = [], 0
        for kind in kinds:
            parts.append(self.old_positions(kind, self.section_size(kind)) + offset)
            offset += self.section_size(kind)
        if offset != size:
            raise HyperCloneError(f"fused axis {'+'.join(kinds)} has {size} positions, expected {offset}")
        return torch.cat(parts)


def _dims_dict(dims: Dims) -> dict[str, Any]:
    return {k: v for k, v in asdict(dims).items()}


def make_layout(family: Family, config: Any, stages: list[Stage]) -> Layout:
    """Resolve the stages against the small model's config, refusing what MSG cannot grow."""
    if family.model_type not in SUPPORTED:
        raise HyperCloneError(f"MSG supports {', '.join(SUPPORTED)}; not {family.model_type}")
    if not stages:
        raise HyperCloneError("MSG needs at least one growth stage")
    dims = [source_dims(family, config)]
    # per final layer: (owning stage, small layer or None, small layer whose per-layer config it takes)
    layers: list[tuple[int, int | None, int]] = [(0, i, i) for i in range(dims[0].layers)]
    for k, stage in enumerate(stages, start=1):
        if stage.spec.depth_mode != "identity":
            raise HyperCloneError("MSG adds layers as masked identity blocks; depth_mode must be 'identity'")
        if stage.ramp < 0 or stage.start < 0:
            raise HyperCloneError("MSG stage start and ramp must be non-negative")
        prev = dims[-1]
        new = target_dims(family, prev, stage.spec)
        if new.head_dim != prev.head_dim:
            raise HyperCloneError("MSG keeps head_dim: grow the number of heads instead")
        if new.heads // new.kv_heads < prev.heads // prev.kv_heads:
            raise HyperCloneError(f"MSG cannot shrink the query heads per KV head ({prev.heads}/{prev.kv_heads} "
                                  f"-> {new.heads}/{new.kv_heads}): old heads would lose their KV head")
        plan = layer_plan(prev, new, stage.spec)
        layers = [(k, None, layers[src][2]) if identity else layers[src] for src, identity in plan]
        dims.append(new)
    return Layout(model_type=family.model_type, dims=[_dims_dict(d) for d in dims],
                  starts=[0] + [s.start for s in stages], ramps=[0] + [s.ramp for s in stages],
                  layer_stage=[s for s, _, _ in layers], old_layer=[o for _, o, _ in layers],
                  type_layer=[t for _, _, t in layers])


def target_config(small_config: Any, layout: Layout) -> Any:
    """The small model's config at the final shape (per-layer lists follow the layers)."""
    family = layout.family
    keys = family.config_keys
    final = layout.final
    d = small_config.to_dict()
    for slot in ("hidden", "ffn", "heads", "kv_heads", "layers", "head_dim"):
        if slot in keys:
            d[keys[slot]] = final[slot]
    n_old = layout.dim(0, "layers")
    if final["layers"] != n_old:
        for key, value in small_config.to_dict().items():  # layer_types, no_rope_layers, ...
            if isinstance(value, list) and len(value) == n_old and key != "architectures":
                d[key] = [value[t] for t in layout.type_layer]
    for key in ("_name_or_path", "transformers_version", CONFIG_KEY):
        d.pop(key, None)
    try:
        return type(small_config).from_dict(d)
    except (ValueError, TypeError) as exc:  # transformers' own shape validation
        reason = str(exc).splitlines()[-1].strip()
        raise HyperCloneError(f"MSG target shape refused by transformers: {reason}") from None


def tensor_rules(family: Family) -> list[tuple[re.Pattern[str], TensorRule]]:
    """A regex per family tensor template; group 1 is the layer index of per-layer tensors."""
    out = []
    for rule in family.tensors:
        pattern = re.escape(rule.name).replace(re.escape("{layer}"), r"(\d+)")
        out.append((re.compile(f"^{pattern}$"), rule))
    return out


def copy_small_weights(small: torch.nn.Module, big: torch.nn.Module, layout: Layout) -> None:
    """Write every small-model parameter into the old slices of the target-shape model (in place)."""
    family = layout.family
    rules = tensor_rules(family)
    new_index = {old: t for t, old in enumerate(layout.old_layer) if old is not None}
    big_params = dict(big.named_parameters())
    small_head, big_head = small.get_output_embeddings(), big.get_output_embeddings()
    head_rule = next((r for r in family.tensors if r.role == "lm_head"), None)
    with torch.no_grad():
        for name, param in small.named_parameters():
            match = next(((m, r) for p, r in rules if (m := p.match(name))), None)
            if match is None and head_rule is not None and small_head is not None and param is small_head.weight:
                # transformers may rename the output layer on load (GPT-NeoX: embed_out -> lm_head)
                target, rule = big_head.weight, head_rule
            elif match is None:
                raise HyperCloneError(f"MSG: {family.model_type} tensor {name} is not in the family table")
            else:
                m, rule = match
                target_name = name
                if rule.per_layer:
                    target_name = rule.name.replace("{layer}", str(new_index[int(m.group(1))]))
                target = big_params[target_name]
            index = [layout.axis_positions(kinds, size) for kinds, size in zip(rule.axes, target.shape, strict=True)]
            if tuple(len(i) for i in index) != tuple(param.shape):
                raise HyperCloneError(f"MSG: {name} has shape {tuple(param.shape)}, the layout expects "
                                      f"{tuple(len(i) for i in index)}")
            if len(index) == 1:
                target[index[0]] = param.to(target.dtype)
            else:
                target[index[0][:, None], index[1][None, :]] = param.to(target.dtype)
