"""Plan a growth: from the source config and the requested factors, the grown config and one recipe
per output tensor. Nothing here reads tensor data; every shape is checked before any is written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hyperclone.checkpoint_io import OutputTensor, TensorInfo
from hyperclone.errors import HyperCloneError
from hyperclone.families import Family, TensorRule
from hyperclone.ops import MODES, Section

TIE_CHOICES = ("keep", "untie")
DEFAULT_NOISE_DB = 10.0


@dataclass(frozen=True)
class GrowthSpec:
    """What the user asked for."""

    width: int = 2  # hidden size, attention heads and KV heads are multiplied by this
    ffn: int | None = None  # MLP width multiplier; None means the same as width
    mode: str = "symmetric"  # symmetric | noisy | diagonal
    noise_db: float | None = None  # signal-to-noise ratio of noisy mode, in dB
    tie: str = "keep"  # keep | untie (only matters for tied embeddings)
    seed: int = 0

    @property
    def ffn_factor(self) -> int:
        return self.width if self.ffn is None else self.ffn

    @property
    def snr_db(self) -> float | None:
        if self.mode != "noisy":
            return None
        return DEFAULT_NOISE_DB if self.noise_db is None else self.noise_db

    def validate(self) -> None:
        for label, value in (("--width", self.width), ("--ffn", self.ffn_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HyperCloneError(f"{label} must be a positive integer, got {value!r}")
        if self.mode not in MODES:
            raise HyperCloneError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.tie not in TIE_CHOICES:
            raise HyperCloneError(f"--tie must be one of {', '.join(TIE_CHOICES)}, got {self.tie!r}")
        if self.noise_db is not None and self.mode != "noisy":
            raise HyperCloneError("--noise-db only applies to --mode noisy")
        if self.snr_db is not None and not math.isfinite(self.snr_db):
            raise HyperCloneError("--noise-db must be a finite number")


@dataclass(frozen=True)
class Dims:
    """The growable dimensions of a model."""

    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    positions: int | None
    embed: int  # OPT's word_embed_proj_dim; equals hidden elsewhere


def source_dims(family: Family, config: Any) -> Dims:
    """Read the dimensions from a transformers config object, with the family's defaults."""
    keys = family.config_keys

    def get(slot: str) -> Any:
        return getattr(config, keys[slot], None) if slot in keys else None

    hidden, heads = get("hidden"), get("heads")
    ffn = get("ffn")
    if ffn is None and family.ffn_default_multiple:
        ffn = family.ffn_default_multiple * hidden
    values = dict(hidden=hidden, ffn=ffn, heads=heads, layers=get("layers"), vocab=get("vocab"))
    for slot, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise HyperCloneError(f"config.json: {keys.get(slot, slot)} must be a positive integer, got {value!r}")
    kv_heads = get("kv_heads") or heads
    head_dim = get("head_dim") or hidden // heads
    if heads % kv_heads:
        raise HyperCloneError(f"config.json: {heads} attention heads are not divisible by {kv_heads} KV heads")
    return Dims(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv_heads, head_dim=head_dim, layers=get("layers"),
                vocab=get("vocab"), positions=get("positions"), embed=get("embed") or hidden)


def grown_dims(dims: Dims, spec: GrowthSpec) -> Dims:
    n, m = spec.width, spec.ffn_factor
    return Dims(hidden=dims.hidden * n, ffn=dims.ffn * m, heads=dims.heads * n, kv_heads=dims.kv_heads * n,
                head_dim=dims.head_dim, layers=dims.layers, vocab=dims.vocab, positions=dims.positions,
                embed=dims.embed * n if dims.embed == dims.hidden else dims.embed)


def axis_section(kind: str, dims: Dims, spec: GrowthSpec, family: Family) -> Section:
    """(source size, copies) of one axis section of kind `kind`."""
    n, m = spec.width, spec.ffn_factor
    table: dict[str, Section] = {
        "hidden": (dims.hidden, n),
        "q": (dims.heads * dims.head_dim, n),
        "kv": (dims.kv_heads * dims.head_dim, n),
        "qkv_interleaved": (3 * dims.heads * dims.head_dim, n),
        "ffn": (dims.ffn, m),
        "embed": (dims.embed, n if dims.embed == dims.hidden else 1),
        "vocab": (dims.vocab, 1),
        "positions": ((dims.positions or 0) + family.position_offset, 1),
        "head_dim": (dims.head_dim, 1),
    }
    return table[kind]


def rule_sections(rule: TensorRule, dims: Dims, spec: GrowthSpec, family: Family) -> tuple[tuple[Section, ...], ...]:
    return tuple(tuple(axis_section(kind, dims, spec, family) for kind in axis) for axis in rule.axes)


def expand_names(family: Family, layers: int) -> list[tuple[str, TensorRule]]:
    """Every concrete tensor name the family table describes, in checkpoint order."""
    names = []
    globals_first = [r for r in family.tensors if not r.per_layer and r.role == "embedding"]
    rest_globals = [r for r in family.tensors if not r.per_layer and r.role != "embedding"]
    for rule in globals_first:
        names.append((rule.name, rule))
    for layer in range(layers):
        for rule in family.tensors:
            if rule.per_layer:
                names.append((rule.name.replace("{layer}", str(layer)), rule))
    for rule in rest_globals:
        names.append((rule.name, rule))
    return names


def expected_shapes(family: Family, dims: Dims, tied: bool) -> dict[str, tuple[int, ...]]:
    one = GrowthSpec(width=1, ffn=1)
    shapes = {}
    for name, rule in expand_names(family, dims.layers):
        if rule.role == "lm_head" and tied:
            continue
        shapes[name] = tuple(sum(size for size, _ in axis) for axis in rule_sections(rule, dims, one, family))
    return shapes


@dataclass(frozen=True)
class Recipe:
    """How one output tensor is made from one source tensor."""

    out_name: str
    src_name: str
    sections: tuple[tuple[Section, ...], ...]  # per axis of the source tensor
    contract: int | None  # axis that reads copies of its input (None: every axis is emitted)
    scale: float = 1.0  # multiplies the grown tensor (embedding multiplier, tied-output rescale)
    norm_offset: float = 0.0  # applied around `scale` for norm weights stored as (weight - offset)
    dtype: torch.dtype = torch.float32

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(sum(size * copies for size, copies in axis) for axis in self.sections)


@dataclass
class Plan:
    family: Family
    spec: GrowthSpec
    source: Dims
    grown: Dims
    tied_source: bool
    tied_output: bool
    recipes: list[Recipe]
    config_updates: dict[str, Any]
    source_parameters: int
    notes: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> list[OutputTensor]:
        return [OutputTensor(r.out_name, r.out_shape, r.dtype) for r in self.recipes]

    @property
    def grown_parameters(self) -> int:
        return sum(math.prod(r.out_shape) for r in self.recipes)

    def summary(self) -> dict[str, Any]:
        return {"family": self.family.model_type, "spec": asdict(self.spec),
                "source": asdict(self.source), "grown": asdict(self.grown),
                "tied_source": self.tied_source, "tied_output": self.tied_output,
                "source_parameters": self.source_parameters,
                "grown_parameters": self.grown_parameters,
                "output_bytes": sum(t.nbytes for t in self.outputs), "notes": self.notes}


def embedding_multiplier_ratio(family: Family, spec: GrowthSpec) -> float:
    """Ratio old/new of a multiplier the model applies to its embeddings (Gemma: sqrt(hidden_size))."""
    if family.embedding_scale == "sqrt_hidden":
        return 1.0 / math.sqrt(spec.width)
    return 1.0


def make_plan(family: Family, config: Any, tensors: dict[str, TensorInfo], spec: GrowthSpec) -> Plan:
    """Check the source tensors against the family table and plan every output tensor.

    Tied embeddings, kept tied: the embedding must be one matrix E' serving as input and output.
    The input side needs E' = repeat(E) * a (a undoes any hidden-size-dependent embedding multiplier),
    so the output side sees n copies of E * a and would produce n * a times the logits. The final
    norm sits right before the output projection and nothing else reads it, so its effective weight
    (and bias) is multiplied by t = 1 / (n * a): the logits are exact and the residual stream,
    every other norm and every eps are untouched.
    """
    spec.validate()
    dims = source_dims(family, config)
    grown = grown_dims(dims, spec)
    tied = bool(getattr(config, "tie_word_embeddings", family.tied_default))
    shapes = expected_shapes(family, dims, tied)
    rules = dict(expand_names(family, dims.layers))

    # Strict check: every source tensor is known and has the shape the config implies.
    present = {}
    for name, info in tensors.items():
        if family.is_ignored(name):
            continue
        rule = rules.get(name)
        if rule is None:
            raise HyperCloneError(f"config and weights disagree: unexpected tensor {name!r} for a "
                                  f"{family.model_type} model with {dims.layers} layers")
        if rule.role == "lm_head" and tied:
            continue  # a tied checkpoint may store the output matrix again; it is the embedding
        if tuple(info.shape) != shapes[name]:
            raise HyperCloneError(f"config and weights disagree: {name} has shape {tuple(info.shape)}, "
                                  f"config implies {shapes[name]}")
        present[name] = info
    missing = [name for name in shapes if name not in present and not rules[name].optional]
    if missing:
        raise HyperCloneError(f"config and weights disagree: missing tensor {missing[0]!r}"
                              + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if not tied and not any(rules[name].role == "lm_head" for name in present):
        raise HyperCloneError("config and weights disagree: tie_word_embeddings is false but there is no "
                              "output projection in the weights")

    a = embedding_multiplier_ratio(family, spec)
    embedding_name = next(name for name, rule in rules.items() if rule.role == "embedding")
    embed_copies = rule_sections(rules[embedding_name], dims, spec, family)[1][0][1]
    tied_output = tied and spec.tie == "keep"
    final_norm_scale = 1.0 / (embed_copies * a) if tied_output else 1.0
    notes = []
    if tied_output and abs(final_norm_scale - 1.0) > 0 and not (
            family.final_norm_parametric and any(rules[n].role == "final_norm" for n in present)):
        raise HyperCloneError(f"{family.model_type}: tied embeddings cannot be kept exactly here (the final norm "
                              "has no weight to absorb the rescale); use --tie untie")
    if tied and spec.tie == "untie":
        notes.append("output projection untied from the embedding")

    recipes = []
    for name, rule in rules.items():
        if name not in present:
            continue
        info = present[name]
        sections = rule_sections(rule, dims, spec, family)
        scale, offset = 1.0, 0.0
        if rule.role == "embedding":
            scale = a
        elif rule.role == "final_norm":
            scale = final_norm_scale
            offset = family.norm_offset if name.endswith(".weight") else 0.0
        recipes.append(Recipe(name, name, sections, rule.contract, scale, offset, info.dtype))
        if rule.role == "embedding" and tied and spec.tie == "untie":
            lm_rule = next(r for r in family.tensors if r.role == "lm_head")
            recipes.append(Recipe(lm_rule.name, name, rule_sections(lm_rule, dims, spec, family), lm_rule.contract,
                                  1.0, 0.0, info.dtype))

    config_updates = _config_updates(family, config, dims, grown, tied, spec)
    source_parameters = sum(math.prod(info.shape) for info in present.values())
    return Plan(family, spec, dims, grown, tied, tied_output, recipes, config_updates, source_parameters, notes)


def _config_updates(family: Family, config: Any, dims: Dims, grown: Dims, tied: bool,
                    spec: GrowthSpec) -> dict[str, Any]:
    keys = family.config_keys
    updates: dict[str, Any] = {keys["hidden"]: grown.hidden, keys["ffn"]: grown.ffn, keys["heads"]: grown.heads}
    if "kv_heads" in keys:
        updates[keys["kv_heads"]] = grown.kv_heads
    if "head_dim" in keys:
        updates[keys["head_dim"]] = grown.head_dim
    if "embed" in keys:
        updates[keys["embed"]] = grown.embed
    if tied and spec.tie == "untie":
        updates["tie_word_embeddings"] = False
    return updates
