"""Plan a growth: from the source config and the requested target, the grown config and one recipe
per output tensor. Nothing here reads tensor data; every shape is checked before any is written, and
every target that cannot be reached exactly is refused here with a one-line reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import (
    AxisMap,
    block_map,
    concat_maps,
    gqa_head_maps,
    grouped_qkv_map,
    halved_head_maps,
    layernorm_hidden_map,
    quarter_power_gamma,
    sharded_qkv_map,
    tile_map,
    weighted_map,
)
from hyperclone.grow.checkpoint_io import OutputTensor, TensorInfo
from hyperclone.grow.exact_split import needs_exact_split
from hyperclone.grow.families import (
    FFN_SLOTS,
    LATENT_SLOTS,
    SSM_SLOTS,
    Family,
    TensorRule,
    config_value,
    emitted_axis,
    has_config_key,
)
from hyperclone.grow.kv_sharing import refuse_stacking, share_new_layers
from hyperclone.grow.layer_kinds import (
    copy_for_identity,
    copy_kind_for_identity,
    cycle_insert_after,
    fit_identity_blocks,
    has_part,
    read_layer_kinds,
    write_layer_kinds,
)
from hyperclone.grow.linear_attention import grown_linear_heads, linear_attention_maps, source_linear_dims
from hyperclone.grow.options import (  # noqa: F401 (re-exported: the plan's vocabulary)
    DEFAULT_MODE,
    DEFAULT_NOISE_DB,
    DEPTH_MODES,
    DTYPE_CHOICES,
    MODES,
    NOISE_MODES,
    TIE_CHOICES,
)
from hyperclone.grow.perturb import parse_perturbation


@dataclass(frozen=True)
class GrowthSpec:
    """What the user asked for: factors (--width, --ffn) and/or absolute target sizes."""

    width: int = 2  # hidden size, attention heads and KV heads are multiplied by this
    ffn: int | None = None  # MLP width multiplier; None: same as width, or as hidden when hidden_size is given
    hidden_size: int | None = None  # absolute targets; each overrides the factors for its dimension
    ffn_size: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    layers: int | None = None
    depth_mode: str = "identity"  # identity: new blocks start as the identity; stack: copies of blocks (G_stack)
    insert_after: tuple[int, ...] | None = None  # identity blocks go after these source layers; None: spread evenly
    target_vocab: int | None = None  # from --to: must equal the source's vocabulary
    target_experts: int | None = None  # from --to: must equal the source's number of experts
    ssm_heads: int | None = None  # from --to: Mamba2 heads (None: the source's times the hidden size's factor)
    lin_heads: tuple[int, int] | None = None  # from --to: gated DeltaNet key and value heads (None: by the factor)
    mode: str = DEFAULT_MODE  # noisy | symmetric | diagonal | uneven
    noise_db: float | None = None  # signal-to-noise ratio of noisy and uneven mode, in dB
    tie: str = "keep"  # keep | untie (only matters for tied embeddings)
    seed: int = 0
    dtype: str = "auto"  # auto | source | float32: the dtype the grown tensors are written in
    perturb: str | None = None  # mix:R | shrink:LAMBDA,SIGMA (hyperclone.grow.perturb): not function-preserving

    @property
    def snr_db(self) -> float | None:
        if self.mode not in NOISE_MODES:
            return None
        return DEFAULT_NOISE_DB if self.noise_db is None else self.noise_db

    def validate(self) -> None:
        for label, value in (("--width", self.width), ("--ffn", self.ffn), ("--hidden-size", self.hidden_size),
                             ("--ffn-size", self.ffn_size), ("--heads", self.heads), ("--kv-heads", self.kv_heads),
                             ("--head-dim", self.head_dim), ("--layers", self.layers),
                             ("--to's Mamba2 heads", self.ssm_heads),
                             *(("--to's linear-attention heads", v) for v in self.lin_heads or ())):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise HyperCloneError(f"{label} must be a positive integer, got {value!r}")
        if self.mode not in MODES:
            raise HyperCloneError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.tie not in TIE_CHOICES:
            raise HyperCloneError(f"--tie must be one of {', '.join(TIE_CHOICES)}, got {self.tie!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise HyperCloneError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}")
        if self.depth_mode not in DEPTH_MODES:
            raise HyperCloneError(f"--depth-mode must be one of {', '.join(DEPTH_MODES)}, got {self.depth_mode!r}")
        if self.noise_db is not None and self.mode not in NOISE_MODES:
            raise HyperCloneError("--noise-db only applies to --mode noisy and --mode uneven")
        if self.snr_db is not None and not math.isfinite(self.snr_db):
            raise HyperCloneError("--noise-db must be a finite number")
        if self.insert_after is not None and self.depth_mode != "identity":
            raise HyperCloneError("--insert-after only applies to --depth-mode identity")
        parse_perturbation(self.perturb)


def spec_from_record(raw: dict[str, Any]) -> GrowthSpec:
    """The GrowthSpec a grown folder's hyperclone.json records; a record with fields this version does not know
    (written by a newer hyperclone) is refused in one line rather than re-planned without them."""
    known = {f.name for f in fields(GrowthSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise HyperCloneError(f"hyperclone.json records growth options this hyperclone does not know "
                              f"({', '.join(unknown)}): it was written by a newer version; upgrade hyperclone")
    return GrowthSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@dataclass(frozen=True)
class Dims:
    """The growable dimensions of a model."""

    hidden: int
    ffn: int | None  # None: the model has no MLP (Mamba, Mamba2)
    heads: int | None  # None: the model has no attention (Mamba, Mamba2); kv_heads and head_dim then None too
    kv_heads: int | None
    head_dim: int | None
    layers: int
    vocab: int
    positions: int | None
    embed: int  # OPT's word_embed_proj_dim; equals hidden elsewhere
    experts: int | None = None  # routed experts of a mixture of experts (kept by width growth)
    dense_ffn: int | None = None  # a MoE family's dense MLP width (Qwen-MoE intermediate_size)
    shared_ffn: int | None = None  # the shared expert's width (Qwen2-MoE)
    layer_kinds: tuple[str, ...] | None = None  # each block's kind, for blocks of more than one kind
    multi_query: bool = False  # one KV head that every query head reads, kept at one (GPT-BigCode, Falcon-7B)
    q_lora: int | None = None  # latent attention (DeepSeek MLA): the query's compressed width (None: no q LoRA)
    kv_lora: int | None = None  # ... the keys' and values' compressed width
    qk_rope: int | None = None  # ... the rope part of each query and key head (head_dim holds the no-rope part)
    v_head_dim: int | None = None  # ... each value head's width
    moe_latent: int | None = None  # a latent MoE's expert input width (Nemotron-H; None: the experts read hidden)
    index_heads: int | None = None  # DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2): its heads (kept)
    index_head_dim: int | None = None  # ... and their width (kept: its scores scale by both)
    ssm_heads: int | None = None  # Mamba2 mixers (hybrid state-space families): heads, grown by copies
    ssm_head_dim: int | None = None  # ... each head's width (kept)
    ssm_groups: int | None = None  # ... B/C groups (n_groups, kept): head h reads group h // (heads / groups)
    ssm_state: int | None = None  # ... d_state of each group (kept)
    conv_kernel: int | None = None  # ... the depthwise convolution's width (kept)
    ssm_expand: int | None = None  # ... inner width = ssm_expand x hidden when the config ties it (None: explicit)
    ssm_channels: int | None = None  # Mamba (Mamba1) mixers: inner channels, expand x hidden, grown by copies
    dt_rank: int | None = None  # ... the time step's rank (kept); ssm_state, conv_kernel and ssm_expand as above
    lin_k_heads: int | None = None  # gated DeltaNet mixers (linear attention): key heads, grown by copies
    lin_v_heads: int | None = None  # ... value heads (a multiple of the key heads), grown by copies in their groups
    lin_k_dim: int | None = None  # ... each key head's width (kept)
    lin_v_dim: int | None = None  # ... each value head's width (kept)
    expert_ffn: int | None = None  # the routed experts' width beside an MLP in every layer (Gemma 4)
    global_head_dim: int | None = None  # layers with their own attention (Gemma 4's full attention): head_dim (kept)
    global_kv_heads: int | None = None  # ... and KV heads (grown with the query heads)
    per_layer_input: int | None = None  # per-layer embeddings (Gemma 4 E2B/E4B): each layer's width (kept)
    per_layer_vocab: int | None = None  # ... and their vocabulary (kept)
    output_vocab: int | None = None  # an output projection pruned to fewer rows than the vocabulary (kept)
    zero_experts: int | None = None  # zero-computation experts, the router's last rows (LongCat-Flash; kept)
    altup_inputs: int | None = None  # AltUp's streams (Gemma 3n altup_num_inputs; kept)
    laurel_rank: int | None = None  # LAuReL's low-rank residual width (Gemma 3n; kept)
    adapter_rank: int | None = None  # per-layer LoRA adapters' rank on a shared block (Zamba2; kept)
    decay_block: int | None = None  # the tokens of a lightning attention block, its decay tables' axes (MiniMax; kept)
    hc_streams: int | None = None  # hyper-connections' residual streams (DeepSeek-V4 hc_mult; kept)
    o_groups: int | None = None  # a grouped output projection's groups of heads (DeepSeek-V4; grown with the heads)
    o_lora: int | None = None  # ... each group's latent width (o_lora_rank; kept)
    csa_window: int | None = None  # the tokens a compressed sparse attention layer pools per KV entry (kept)
    hca_window: int | None = None  # ... a heavily compressed attention layer (DeepSeek-V4 compress_rates; kept)
    hash_top_k: int | None = None  # the experts a hash-routing table gives every token (DeepSeek-V4 tid2eid; kept)
    kv_shared: int = 0  # the last layers that reuse earlier layers' keys and values (Gemma 4 E2B/E4B)
    lru: int | None = None  # RecurrentGemma's RG-LRU width: heads blocks of a kept width, grown with the heads


def check_supported(family: Family, config: Any, depth: bool = False) -> None:
    """Refuse a configuration the family table does not describe exactly (the table's "refuse" list; `depth`: its
    refusals of depth growth only)."""
    for refusal in family.refuse:
        if refusal.depth == depth and refusal.applies_to_config(config):
            given = ", ".join(f"{key}={json.dumps(config_value(config, key))}"
                              for key in (refusal.key, *(key for key, _ in refusal.when)))
            raise HyperCloneError(f"{family.model_type} with {given} cannot {'grow in depth' if depth else 'be grown'}"
                                  f": {refusal.reason}")


def source_dims(family: Family, config: Any) -> Dims:
    """Read the dimensions from a transformers config object, with the family's defaults."""
    check_supported(family, config)
    keys = family.config_keys

    def get(slot: str) -> Any:
        """A slot's value; a key written "a*b" is the product of two config values (DeepSeek's shared experts:
        n_shared_experts * moe_intermediate_size)."""
        if slot not in keys:
            return None
        factors = [config_value(config, key) for key in keys[slot].split("*")]
        if len(factors) > 1 and all(isinstance(f, int) and not isinstance(f, bool) for f in factors):
            return math.prod(factors)
        return factors[0] if len(factors) == 1 else None

    hidden, heads = get("hidden"), get("heads")
    ffn = adjusted_ffn(family, get("ffn"), lambda key: config_value(config, key))
    if ffn is None and family.ffn_default_multiple:
        ffn = family.ffn_default_multiple * hidden
    values = dict(hidden=hidden, layers=get("layers"), vocab=get("vocab"),
                  **({"ffn": ffn} if "ffn" in keys else {}), **({"heads": heads} if "heads" in keys else {}))
    optional = {slot: get(slot) for slot in ("kv_heads", "head_dim", "positions", "embed", "experts", "o_groups",
                                             "lru", *FFN_SLOTS, *LATENT_SLOTS)
                if get(slot) is not None}
    for slot, other in family.slot_defaults:  # a null width the class reads as another's (Cohere2-MoE's dense MLP)
        if slot not in optional:
            optional[slot] = {**values, **optional}.get(other)
    for slot in ("experts", "shared_ffn", "per_layer_input", "zero_experts"):
        if optional.get(slot) == 0:  # no experts at all (Granite-4.0-H-Micro's num_local_experts: 0), no shared MLP
            # (GraniteMoeShared's shared_intermediate_size: 0), no per-layer embeddings (Gemma 4's
            # hidden_size_per_layer_input: 0), no zero-computation experts (LongCat-Flash's zero_expert_num: 0)
            del optional[slot]
    for slot, value in {**values, **optional}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HyperCloneError(f"config.json: {keys.get(slot, slot)} must be a positive integer, got {value!r}")
    multi_query = family.is_multi_query(config)
    kv_heads = head_dim = None
    if heads is not None:  # (a model without attention has none of these)
        kv_heads = 1 if multi_query else get("kv_heads") or heads
        head_dim = get("head_dim") or hidden // heads
        if heads % kv_heads:
            raise HyperCloneError(f"config.json: {heads} attention heads are not divisible by {kv_heads} KV heads")
        if heads % optional.get("o_groups", 1):
            raise HyperCloneError(f"config.json: {heads} attention heads are not divisible by {optional['o_groups']} "
                                  f"output groups ({keys['o_groups']})")
        if optional.get("lru", heads) % heads:  # RecurrentGemma's RG-LRU: one block of channels per head
            raise HyperCloneError(f"config.json: {keys['lru']} = {optional['lru']} RG-LRU channels do not divide into "
                                  f"{heads} blocks ({keys['heads']})")
    kinds = read_layer_kinds(family.layer_kinds, config, get("layers")) if family.layer_kinds else None
    optional.update(_per_layer_attention_dims(family, config, kinds, heads, kv_heads, head_dim))
    return Dims(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv_heads, head_dim=head_dim, layers=get("layers"),
                vocab=get("vocab"), positions=get("positions"), embed=get("embed") or hidden,
                **{slot: optional.get(slot) for slot in ("experts", "o_groups", "lru", *FFN_SLOTS, *LATENT_SLOTS,
                                                         *GLOBAL_SLOTS)},
                layer_kinds=kinds, kv_shared=_kv_shared_layers(family, config, get("layers")),
                multi_query=multi_query, **_ssm_source_dims(family, get, hidden), **source_linear_dims(keys, get))


GLOBAL_SLOTS = ("global_head_dim", "global_kv_heads")
QKV_SHARDS = 4  # CodeGen's mp_num: its fused qkv_proj is interleaved across 4 model-parallel shards


def _kv_shared_layers(family: Family, config: Any, layers: int) -> int:
    """How many last layers reuse earlier layers' keys and values (the table's kv_shared_layers key; 0: none)."""
    value = 0 if family.kv_shared_layers is None else config_value(config, family.kv_shared_layers) or 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= layers:
        raise HyperCloneError(f"config.json: {family.kv_shared_layers} must be a layer count from 0 to {layers}, "
                              f"got {value!r}")
    return value


def _per_layer_attention_dims(family: Family, config: Any, kinds: tuple[str, ...] | None, heads: int | None,
                              kv_heads: int | None, head_dim: int | None) -> dict[str, int]:
    """The head_dim and KV heads of the layers a table's per_layer_attention names (Gemma 4's full-attention layers):
    every such layer must state the same, and every other layer the config's global values."""
    rule = family.per_layer_attention
    if rule is None or heads is None or kinds is None or kv_heads is None:
        return {}
    if rule.kv_factor:  # the same head_dim, a multiple of the KV heads (no key states them)
        return {"global_head_dim": head_dim, "global_kv_heads": rule.kv_factor * kv_heads} if any(
            kind in rule.kinds for kind in kinds) else {}
    values = {i: rule.layer_values(config, i) for i in range(len(kinds))}
    own = {values[i] for i, kind in enumerate(kinds) if kind in rule.kinds}
    others = {values[i] for i, kind in enumerate(kinds) if kind not in rule.kinds} - {(head_dim, kv_heads)}
    if len(own) > 1 or others:
        raise HyperCloneError(f"config.json: per_layer_config gives layers other head_dim / KV heads than one pair for "
                              f"the {', '.join(rule.kinds)} layers and the global values for the others: not described")
    if not own:
        return {}
    (global_head_dim, global_kv), = own
    for key, value in ((rule.head_dim, global_head_dim), (rule.kv_heads, global_kv)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HyperCloneError(f"config.json: {key} must be a positive integer, got {value!r}")
    if heads % global_kv:
        raise HyperCloneError(f"config.json: {heads} attention heads are not divisible by {global_kv} KV heads of the "
                              f"{', '.join(rule.kinds)} layers ({rule.kv_heads})")
    return {"global_head_dim": global_head_dim, "global_kv_heads": global_kv}


def adjusted_ffn(family: Family, value: Any, read: Any) -> Any:
    """The MLP's width from ffn's config value: itself, a fraction of it (the table's ffn_config_factor:
    RecurrentGemma's MLP is intermediate_size // 2 wide), or LFM2's SwiGLU sizing when its flag is set (read(key) gives
    a config value); a list of one width per layer (Gemma 3n's intermediate_size) must state one width."""
    if isinstance(value, list) and value:
        if any(width != value[0] for width in value):
            raise HyperCloneError(f"config.json: {family.config_keys['ffn']} gives the layers different MLP widths "
                                  f"({', '.join(map(str, sorted(set(value))))}), which growth does not describe")
        value = value[0]
    if family.ffn_config_factor > 1 and isinstance(value, int) and not isinstance(value, bool):
        return value // family.ffn_config_factor
    rule = family.ffn_auto_adjust
    if rule is None or not isinstance(value, int) or not read(rule["flag"]):
        return value
    width = int(2 * value / 3)
    multiplier, multiple = read(rule["multiplier"]), read(rule["multiple_of"])
    if multiplier is not None:
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            raise HyperCloneError(f"config.json: {rule['multiple_of']} must be a positive integer, got {multiple!r}")
        width = int(multiplier * width)
        width = multiple * ((width + multiple - 1) // multiple)
    return width


def _ssm_source_dims(family: Family, get: Any, hidden: int) -> dict[str, int | None]:
    """A Mamba2 mixer's widths from the config (empty for families without one), checked against each other."""
    keys = family.config_keys
    if "dt_rank" in keys:
        return _mamba1_source_dims(family, get, hidden)
    if "ssm_heads" not in keys:  # no Mamba2 mixer; maybe a short convolution (LFM2)
        kernel = get("conv_kernel") if "conv_kernel" in keys else None
        if kernel is not None and (not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1):
            raise HyperCloneError(f"config.json: {keys['conv_kernel']} must be a positive integer, got {kernel!r}")
        return {"conv_kernel": kernel} if kernel is not None else {}
    values = {slot: get(slot) for slot in SSM_SLOTS}
    for slot, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HyperCloneError(f"config.json: {keys[slot]} must be a positive integer, got {value!r}")
    heads, head_dim, groups = values["ssm_heads"], values["ssm_head_dim"], values["ssm_groups"]
    if heads % groups:
        raise HyperCloneError(f"config.json: {heads} Mamba2 heads ({keys['ssm_heads']}) are not divisible by "
                              f"{groups} groups ({keys['ssm_groups']})")
    explicit = get("ssm_inner") if "ssm_inner" in keys else None
    expand = get("ssm_expand") if explicit is None and "ssm_expand" in keys else None
    inner = explicit if explicit is not None else (expand * hidden if isinstance(expand, int) else None)
    if inner is not None and inner != heads * head_dim:
        where = keys["ssm_inner"] if explicit is not None else f"{keys['ssm_expand']} x {keys['hidden']}"
        raise HyperCloneError(f"config.json: the Mamba2 inner width {where} = {inner} is not {keys['ssm_heads']} x "
                              f"{keys['ssm_head_dim']} = {heads * head_dim}")
    return {**values, "ssm_expand": expand}


def _mamba1_source_dims(family: Family, get: Any, hidden: int) -> dict[str, int | None]:
    """A Mamba (Mamba1) mixer's widths: inner channels expand x hidden (checked against the inner width where the
    config states it too), the time step's rank ("auto": ceil(hidden / 16), as the config classes read it)."""
    keys = family.config_keys
    rank = get("dt_rank")
    if rank == "auto":
        rank = math.ceil(hidden / 16)
    values = {"dt_rank": rank, "ssm_state": get("ssm_state"), "conv_kernel": get("conv_kernel"),
              "ssm_expand": get("ssm_expand")}
    for slot, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HyperCloneError(f"config.json: {keys[slot]} must be a positive integer, got {value!r}")
    channels = values["ssm_expand"] * hidden
    stated = get("ssm_inner") if "ssm_inner" in keys else None
    if stated is not None and stated != channels:
        raise HyperCloneError(f"config.json: the Mamba inner width {keys['ssm_inner']} = {stated} is not "
                              f"{keys['ssm_expand']} x {keys['hidden']} = {channels}")
    return {**values, "ssm_channels": channels}


def check_dims_fit(family: Family, dims: Dims, tensors: dict[str, TensorInfo]) -> None:
    """Refuse, before any map is built, dimensions no tensor of the checkpoint can hold (a config.json that says
    hidden_size 10**12 would otherwise have the planner allocate terabytes): every width at most the longest
    tensor axis, the layer count at most the number of tensors."""
    longest = max((d for t in tensors.values() for d in t.shape), default=0)
    keys = family.config_keys
    widths = {"hidden": dims.hidden, "ffn": dims.ffn, "heads": dims.heads, "kv_heads": dims.kv_heads,
              "head_dim": dims.head_dim, "vocab": dims.vocab, "embed": dims.embed}
    for slot, value in widths.items():
        if value is not None and value > longest:
            raise HyperCloneError(f"config.json: {keys.get(slot, slot)} = {value:,} is larger than every tensor "
                                  f"axis of the checkpoint (the longest is {longest:,}): config and weights disagree")
    if dims.layers > len(tensors):
        raise HyperCloneError(f"config.json: {keys.get('layers', 'layers')} = {dims.layers:,} but the checkpoint "
                              f"holds only {len(tensors):,} tensors: config and weights disagree")


def _scaled_config(family: Family, config: Any, dims: Dims, grown: Dims) -> dict[str, Any]:
    """The family's scaled_config values times (new / old) ** p of their slot (MiniCPM3's dim_model_base and
    scale_depth), so that the factor the model computes from them and the slot stays the source's."""
    updates: dict[str, Any] = {}
    for key, slot, power in family.scaled_config:
        value, old, new = config_value(config, key), getattr(dims, slot), getattr(grown, slot)
        if value is None:
            continue
        if isinstance(value, int) and power in (0.0, 1.0):
            updates[key] = _ratio(value * new, old, key, f"a {slot} size that keeps {key} x new / {old} whole") \
                if power else value
        else:
            updates[key] = value * (new / old) ** power
    return updates


def check_whole_ffn_copies(family: Family, config: Any, dims: Dims, grown: Dims) -> None:
    """The table's ffn_whole_copies: where a layer's entry in that config list is set, its MLP compares every neuron
    with statistics over all of them (Gemma 3n's activation sparsity: a cutoff at the mean plus a multiple of the
    biased standard deviation), which only the same number of copies of every neuron keeps."""
    key = family.ffn_whole_copies
    if key is None or dims.ffn is None or grown.ffn % dims.ffn == 0:
        return
    entries = config_value(config, key)
    if any(entries if isinstance(entries, list) else [entries]):
        raise HyperCloneError(f"{family.model_type}: {key} sets a cutoff from the mean and standard deviation over "
                              f"the MLP's neurons, which only whole copies of each keep; an MLP width of {grown.ffn} "
                              f"is not a multiple of {dims.ffn}")


def _ratio(numerator: int, denominator: int, what: str, give: str) -> int:
    if numerator % denominator:
        raise HyperCloneError(f"{what} would be {numerator}/{denominator}, not a whole number; give {give}")
    return numerator // denominator


def target_dims(family: Family, dims: Dims, spec: GrowthSpec) -> Dims:
    """Resolve factors and absolute sizes into the grown dimensions, refusing what cannot be reached."""
    n = spec.width
    hidden = spec.hidden_size or dims.hidden * n
    if family.hidden_fixed and hidden != dims.hidden:
        raise HyperCloneError(f"{family.model_type}: the hidden size cannot grow exactly ({dims.hidden} -> {hidden}): "
                              f"{family.hidden_fixed}; grow the MLP (--width 1 --ffn N) or the depth (--layers)")
    _refuse_missing_parts(family, dims, spec)
    heads, kv_heads, head_dim = (None, None, None) if dims.heads is None else _attention_target(family, dims, spec,
                                                                                               hidden)
    if dims.ffn is None:  # no MLP: the --ffn factor has nothing to grow
        ffn = None
    elif spec.ffn_size is not None:
        ffn = spec.ffn_size
    elif spec.ffn is not None:
        ffn = dims.ffn * spec.ffn
    elif spec.hidden_size is None:
        ffn = dims.ffn * n
    else:
        ffn = _ratio(hidden * dims.ffn, dims.hidden, "MLP width for the new hidden size", "--ffn-size")
    layers = spec.layers or dims.layers
    if spec.target_vocab is not None and spec.target_vocab != dims.vocab:
        raise HyperCloneError(f"the target vocabulary ({spec.target_vocab}) differs from the source's ({dims.vocab}); "
                              "growth keeps the tokenizer")
    if spec.target_experts is not None and spec.target_experts != dims.experts:
        raise HyperCloneError(f"the target has {spec.target_experts} experts, the source {dims.experts}; width "
                              "growth keeps the number of experts")
    grown = Dims(hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv_heads, head_dim=head_dim, layers=layers,
                 vocab=dims.vocab, positions=dims.positions,
                 embed=hidden if dims.embed == dims.hidden else dims.embed, experts=dims.experts,
                 multi_query=dims.multi_query,
                 **{slot: _with_ffn(family, slot, getattr(dims, slot), dims.ffn, ffn) for slot in FFN_SLOTS},
                 **{slot: getattr(dims, slot) for slot in LATENT_SLOTS},
                 conv_kernel=dims.conv_kernel, lru=None if dims.lru is None else dims.lru // dims.heads * heads,
                 **({} if dims.ssm_heads is None else dict(
                     ssm_heads=_ssm_heads(family, dims, hidden, spec.ssm_heads), ssm_head_dim=dims.ssm_head_dim,
                     ssm_groups=dims.ssm_groups, ssm_state=dims.ssm_state, ssm_expand=dims.ssm_expand)),
                 **({} if dims.ssm_channels is None else dict(
                     ssm_channels=_ssm_channels(family, dims, hidden), dt_rank=dims.dt_rank, ssm_state=dims.ssm_state,
                     ssm_expand=dims.ssm_expand)))
    if dims.global_kv_heads is not None:
        rule = family.per_layer_attention
        grown = replace(grown, global_head_dim=dims.global_head_dim, global_kv_heads=_ratio(
            heads * dims.global_kv_heads, dims.heads, f"the KV heads of the {', '.join(rule.kinds)} layers "
            f"({rule.kv_heads}) for {heads} heads", "--heads that keep them whole"))
        if rule.kv_factor and grown.global_kv_heads != rule.kv_factor * grown.kv_heads:
            raise HyperCloneError(f"the {', '.join(rule.kinds)} layers have {rule.kv_factor} x the KV heads, which "
                                  f"would be {grown.global_kv_heads} for {heads} heads, not {rule.kv_factor} x "
                                  f"{grown.kv_heads}; grow the query and KV heads by the same factor")
    if dims.o_groups is not None:
        grown = replace(grown, o_groups=_output_groups(family, dims, heads))
    if dims.lin_k_heads is not None:
        new_k, new_v = grown_linear_heads(family.config_keys, dims.lin_k_heads, dims.lin_v_heads, dims.hidden,
                                          hidden, spec.lin_heads)
        grown = replace(grown, lin_k_heads=new_k, lin_v_heads=new_v, lin_k_dim=dims.lin_k_dim,
                        lin_v_dim=dims.lin_v_dim)
    _check_reachable(family, dims, grown)
    return grown


def _attention_target(family: Family, dims: Dims, spec: GrowthSpec, hidden: int) -> tuple[int, int, int]:
    """The grown attention heads, KV heads and head_dim (a model with attention)."""
    if family.heads_kept is not None:  # the model computes with the head count (MiniMax's decay rates): kept
        asked = [f"{label} {value}" for label, value, old in (("--heads", spec.heads, dims.heads),
                                                               ("--kv-heads", spec.kv_heads, dims.kv_heads))
                 if value not in (None, old)]
        if asked:
            raise HyperCloneError(f"{family.model_type} keeps its {dims.heads} heads and {dims.kv_heads} KV heads "
                                  f"({', '.join(asked)} asked): {family.heads_kept}")
        return dims.heads, dims.kv_heads, dims.head_dim if spec.head_dim is None else spec.head_dim
    if spec.heads is not None:
        heads = spec.heads
    elif spec.hidden_size is None:
        heads = dims.heads * spec.width
    else:
        heads = _ratio(hidden * dims.heads, dims.hidden, "attention heads for the new hidden size", "--heads")
    if dims.multi_query:  # the one KV head stays one
        if spec.kv_heads not in (None, 1):
            flag = f" with {family.multi_query}" if family.multi_query else ""
            raise HyperCloneError(f"a target with {spec.kv_heads} KV heads (--kv-heads, or --to's "
                                  f"{family.config_keys.get('kv_heads', 'KV heads')}): {family.model_type}{flag} "
                                  "has one KV head, which its config cannot make more")
        kv_heads = 1
    elif spec.kv_heads is not None:
        kv_heads = spec.kv_heads
    elif "kv_heads" not in family.config_keys:
        kv_heads = heads
    else:
        kv_heads = _ratio(heads * dims.kv_heads, dims.heads, "KV heads for the new head count", "--kv-heads")
    if spec.head_dim is not None:
        head_dim = spec.head_dim
    elif "head_dim" in family.config_keys:
        head_dim = dims.head_dim
    else:
        head_dim = _ratio(hidden, heads, f"head_dim (hidden size / heads) of {family.model_type}", "--heads")
    return heads, kv_heads, head_dim


def _output_groups(family: Family, dims: Dims, heads: int) -> int:
    """The grown groups of a grouped output projection (DeepSeek-V4's o_groups): every grown group copies a source
    group whole, so the groups keep their number of heads and grow with the heads; a one-line refusal otherwise."""
    per = dims.heads // dims.o_groups
    if heads % per:
        raise HyperCloneError(f"{family.model_type}'s grouped output projection reads its heads in {dims.o_groups} "
                              f"groups of {per} ({family.config_keys['o_groups']}), which growth copies whole: "
                              f"{heads} heads are not whole groups; give --heads a multiple of {per}")
    return heads // per


def _refuse_missing_parts(family: Family, dims: Dims, spec: GrowthSpec) -> None:
    """A size asked of a part the model does not have (--heads of a model without attention, --ffn-size of one
    without an MLP); the --ffn factor, which every growth states, has nothing to grow there and is left."""
    asked = [(label, part) for label, value, part in (
        ("--heads", spec.heads, dims.heads), ("--kv-heads", spec.kv_heads, dims.heads),
        ("--head-dim", spec.head_dim, dims.heads), ("--ffn-size", spec.ffn_size, dims.ffn)) if value is not None
        and part is None]
    if asked:
        label = asked[0][0]
        what = "MLP" if label == "--ffn-size" else "attention"
        raise HyperCloneError(f"{label} (or --to's value for it): {family.model_type} has no {what}")


def _ssm_channels(family: Family, dims: Dims, hidden: int) -> int:
    """The grown Mamba (Mamba1) inner width: expand x the grown hidden size (the config classes compute it so)."""
    return dims.ssm_expand * hidden


def _ssm_heads(family: Family, dims: Dims, hidden: int, requested: int | None) -> int:
    """The grown Mamba2 head count: the source's times the hidden size's factor (the inner width of most hybrids is
    expand x hidden), or a target config's. Every source head is copied into its own B/C group, so each group must
    hold at least as many heads as before; the head width, the groups and the state size are kept."""
    keys = family.config_keys
    if requested is None:
        if dims.ssm_heads * hidden % dims.hidden:
            raise HyperCloneError(f"{keys['ssm_heads']} = {dims.ssm_heads} Mamba2 heads grown with the hidden size "
                                  f"({dims.hidden} -> {hidden}) would not be a whole number; give a hidden size "
                                  f"that keeps them whole")
        requested = dims.ssm_heads * hidden // dims.hidden
    if dims.ssm_expand is not None and requested * dims.ssm_head_dim != dims.ssm_expand * hidden:
        raise HyperCloneError(f"{family.model_type}'s Mamba2 inner width is {keys['ssm_expand']} x {keys['hidden']} "
                              f"= {dims.ssm_expand * hidden}, not {requested} heads x {dims.ssm_head_dim}")
    if requested < dims.ssm_heads:
        raise HyperCloneError(f"cannot shrink the Mamba2 heads from {dims.ssm_heads} to {requested}: growth only adds")
    if requested % dims.ssm_groups:
        raise HyperCloneError(f"{requested} Mamba2 heads do not divide into the {dims.ssm_groups} groups "
                              f"({keys['ssm_groups']}, kept)")
    return requested


def _with_ffn(family: Family, slot: str, width: int | None, old_ffn: int, new_ffn: int) -> int | None:
    """Another MLP width of the model (a MoE's dense layers, its shared expert) grown by the MLP width's factor."""
    if width is None:
        return None
    return _ratio(width * new_ffn, old_ffn, f"{family.config_keys[slot]} grown with the MLP width",
                  "an MLP width that keeps it whole")


def _check_reachable(family: Family, dims: Dims, grown: Dims) -> None:
    for label, old, new in (("hidden size", dims.hidden, grown.hidden), ("MLP width", dims.ffn, grown.ffn),
                            ("attention heads", dims.heads, grown.heads), ("KV heads", dims.kv_heads, grown.kv_heads),
                            ("head_dim", dims.head_dim, grown.head_dim), ("layers", dims.layers, grown.layers)):
        if old is not None and new < old:
            raise HyperCloneError(f"cannot shrink the {label} from {old} to {new}: growth only adds")
    if grown.hidden % dims.hidden and family.norm == "layernorm" and family.norm_eps_key is None:
        raise HyperCloneError(f"{family.model_type}'s LayerNorm epsilon is fixed, so a hidden size that is not a "
                              f"multiple of {dims.hidden} cannot be exact")
    if dims.heads is None:  # no attention
        return
    if "kv_heads" not in family.config_keys and grown.kv_heads != grown.heads and not dims.multi_query:
        raise HyperCloneError(f"{family.model_type} has no separate KV heads: --kv-heads must equal --heads")
    if grown.heads % grown.kv_heads:
        raise HyperCloneError(f"{grown.heads} attention heads do not divide into {grown.kv_heads} KV heads")
    if "head_dim" not in family.config_keys and grown.heads * grown.head_dim != grown.hidden:
        raise HyperCloneError(f"{family.model_type} needs hidden size = heads x head_dim "
                              f"({grown.hidden} != {grown.heads} x {grown.head_dim})")
    if family.head_dim_from_hidden and grown.heads * grown.head_dim != family.head_dim_from_hidden * grown.hidden:
        raise HyperCloneError(f"{family.model_type}'s config class derives head_dim = {family.head_dim_from_hidden} x "
                              f"hidden / heads, so {grown.heads} heads of {grown.head_dim} cannot serve a hidden size "
                              f"of {grown.hidden}; grow the heads by the hidden size's factor")
    if grown.head_dim != dims.head_dim and "kv_lora" in family.config_keys:  # (Kimi Linear's has no rope at all)
        raise HyperCloneError(f"head_dim cannot grow exactly in latent attention ({family.model_type}: each head's "
                              "no-rope, shared-key and value widths are kept); grow the number of heads instead")
    if grown.head_dim != dims.head_dim and family.rope:
        raise HyperCloneError(f"head_dim cannot grow exactly with rotary embeddings ({family.model_type}); "
                              + ("grow the number of heads instead" if family.heads_kept is None else
                                 "its heads are kept too: grow the hidden size and the MLP width"))
    if grown.head_dim != dims.head_dim and family.unscaled_attention:
        raise HyperCloneError(f"head_dim cannot grow exactly: {family.model_type} scores attention without the "
                              "1/sqrt(head_dim) scale; grow the number of heads instead")
    try:
        if family.head_halves:  # each half by the GQA maps: the same coverage rule, checked once per half
            halved_head_maps(dims.heads, dims.kv_heads, grown.heads, grown.kv_heads)
        else:
            gqa_head_maps(dims.heads, dims.kv_heads, grown.heads, grown.kv_heads)
        if dims.global_kv_heads is not None:
            gqa_head_maps(dims.heads, dims.global_kv_heads, grown.heads, grown.global_kv_heads)
    except ValueError as exc:
        raise HyperCloneError(str(exc)) from None


# sizes growth keeps at any width (each head's or state's own width, a kernel, a latent width, the position table):
# a target config that states another value would describe a different model than the one written
KEPT_SLOTS = ("positions", "q_lora", "kv_lora", "qk_rope", "v_head_dim", "moe_latent", "ssm_head_dim", "ssm_groups",
              "ssm_state", "lin_k_dim", "lin_v_dim", "conv_kernel", "dt_rank", "index_heads", "index_head_dim",
              "per_layer_input", "per_layer_vocab", "output_vocab", "zero_experts", "altup_inputs", "laurel_rank",
              "adapter_rank", "decay_block", "hc_streams", "o_lora", "csa_window", "hca_window", "hash_top_k")


def refuse_changed_kept_sizes(family: Family, source: dict[str, Any], target: dict[str, Any]) -> None:
    """--to: refuse a target config that changes a size growth keeps (KEPT_SLOTS) where both configs state it."""
    for slot in KEPT_SLOTS:
        key = family.config_keys.get(slot)
        if key is not None and has_config_key(source, key) and has_config_key(target, key) and \
                config_value(source, key) != config_value(target, key):
            raise HyperCloneError(f"--to: the target's {key} is {config_value(target, key)!r}, the source's "
                                  f"{config_value(source, key)!r}; "
                                  "growth keeps it (only widths, head counts and layers grow)")


def refuse_other_target_groups(plan: Plan, target: dict[str, Any]) -> None:
    """--to: the output groups growth derives from the heads (DeepSeek-V4's o_groups, each group copied whole) and
    the RG-LRU width (RecurrentGemma's lru_width: a kept block width per head) must be the target's where it states
    them; a one-line refusal otherwise."""
    source, grown = plan.source, plan.grown
    for slot, value, why in (
            ("o_groups", grown.o_groups, lambda: f"in groups of {source.heads // source.o_groups}"),
            ("lru", grown.lru, lambda: f"with RG-LRU blocks of {source.lru // source.heads} channels")):
        key = plan.family.config_keys.get(slot)
        if key is None or value is None or not has_config_key(target, key):
            continue
        if config_value(target, key) != value:
            raise HyperCloneError(f"--to: the target's {key} is {config_value(target, key)!r}; {grown.heads} heads "
                                  f"{why()}, as growth copies the source's, make {value}")


def spec_with_target_config(spec: GrowthSpec, family: Family, target: dict[str, Any]) -> GrowthSpec:
    """Fill the absolute sizes of `spec` from a target config.json (e.g. the config of the next model size
    of the same family). Only the growable dimensions are read; the vocabulary must match."""
    if target.get("model_type") not in (None, family.model_type):
        raise HyperCloneError(f"--to: target is a {target.get('model_type')} config, the source is "
                              f"{family.model_type}")
    keys = family.config_keys

    def read(slot: str) -> int | None:
        value = config_value(target, keys[slot]) if slot in keys else None
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise HyperCloneError(f"--to: {keys[slot]} must be a positive integer, got {value!r}")
        return value

    values = dict(hidden_size=read("hidden"), ffn_size=adjusted_ffn(family, read("ffn"), target.get),
                  heads=read("heads"), kv_heads=read("kv_heads"), head_dim=read("head_dim"), layers=read("layers"),
                  ssm_heads=read("ssm_heads"))
    lin_heads = (read("lin_k_heads"), read("lin_v_heads"))
    if None not in lin_heads:
        values["lin_heads"] = lin_heads
    elif lin_heads != (None, None):
        given, missing = (("lin_k_heads", "lin_v_heads") if lin_heads[1] is None else ("lin_v_heads", "lin_k_heads"))
        raise HyperCloneError(f"--to: the target gives {keys[given]} without {keys[missing]}; give both")
    if values["hidden_size"] is None:
        raise HyperCloneError(f"--to: the target config has no {keys['hidden']}")
    vocab = read("vocab")
    updates = {k: v for k, v in values.items() if v is not None}
    clash = [k for k in updates if getattr(spec, k) is not None]
    if clash:
        raise HyperCloneError(f"--to and --{clash[0].replace('_', '-')} both give the {clash[0].replace('_', ' ')}")
    return replace(spec, target_vocab=vocab, target_experts=read("experts"), **updates)


def layer_plan(dims: Dims, grown: Dims, spec: GrowthSpec) -> list[tuple[int, bool]]:
    """For every new layer: (source layer, identity?). identity blocks copy their source's weights but
    have their residual-branch outputs zeroed, so they compute the identity; stacked copies do not."""
    old, new = dims.layers, grown.layers
    extra = new - old
    if extra == 0:
        return [(i, False) for i in range(old)]
    if spec.depth_mode == "stack":  # G_stack: the whole stack again, as far as it fits
        refuse_stacking(dims.kv_shared)
        return [(i % old, False) for i in range(new)]
    after = spec.insert_after
    if after is None:
        after = tuple(round((t + 1) * old / (extra + 1)) - 1 for t in range(extra))
    if len(after) != extra:
        raise HyperCloneError(f"--insert-after names {len(after)} positions for {extra} new layers")
    if any(not -1 <= a < old for a in after):
        raise HyperCloneError(f"--insert-after positions must be source layers from -1 to {old - 1}")
    layers: list[tuple[int, bool]] = [(max(a, 0), True) for a in sorted(after) if a == -1]
    for i in range(old):
        layers.append((i, False))
        layers.extend((i, True) for a in sorted(after) if a == i)
    return layers


@dataclass(frozen=True)
class Recipe:
    """How one output tensor is made from one source tensor."""

    out_name: str
    src_name: str
    maps: tuple[AxisMap, ...]  # per axis of the source tensor
    contract: int | None  # the axis a linear layer reads (None: every axis is emitted)
    kind: str  # "linear" | "emit" | "norm" | "zero" | "fill" (every value 1: an identity block's layer_scalar)
    scale: float = 1.0  # multiplies the grown tensor (embedding multiplier, norm rescale)
    norm_offset: float = 0.0  # the norm applies (offset + stored weight)
    zero_mean_positions: bool = False  # a norm bias: positions holding the mean get 0
    divide_by_map_scale: bool = False  # q/k norms over all heads (OLMo2): undo the scale of the q/k rows
    dtype: torch.dtype = torch.float32

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(m.size for m in self.maps)


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
    layers: list[tuple[int, bool]]
    notes: list[str] = field(default_factory=list)
    storage_inexact: list[str] = field(default_factory=list)  # why the written dtype cannot hold it exactly
    wrapper: str | None = None  # a multimodal checkpoint's model_type (its language model grows: family)
    stored_name: Callable[[str], str] = str  # a family table name as the checkpoint names it

    @property
    def outputs(self) -> list[OutputTensor]:
        return [OutputTensor(r.out_name, r.out_shape, r.dtype) for r in self.recipes]

    @property
    def grown_parameters(self) -> int:
        return sum(math.prod(r.out_shape) for r in self.recipes)

    @property
    def stacked(self) -> bool:
        return self.spec.depth_mode == "stack" and self.grown.layers > self.source.layers

    @property
    def function_preserving(self) -> bool:
        """The grown checkpoint, evaluated in float32, computes the source's function (to accumulation error)."""
        return not self.stacked and not self.storage_inexact and self.spec.perturb is None

    @property
    def output_dtypes(self) -> list[str]:
        return sorted({str(r.dtype).removeprefix("torch.") for r in self.recipes if r.dtype.is_floating_point})

    def summary(self) -> dict[str, Any]:
        return {"family": self.family.model_type, **({"wrapper": self.wrapper} if self.wrapper else {}),
                "spec": asdict(self.spec),
                "source": asdict(self.source), "grown": asdict(self.grown),
                "tied_source": self.tied_source, "tied_output": self.tied_output,
                "function_preserving": self.function_preserving, "output_dtypes": self.output_dtypes,
                "exact_in_storage_dtype": not self.storage_inexact, "inexact_reasons": self.storage_inexact,
                "source_parameters": self.source_parameters, "grown_parameters": self.grown_parameters,
                "output_bytes": sum(t.nbytes for t in self.outputs), "layers": self.layers, "notes": self.notes}


def expand_names(family: Family, layers: list[tuple[int, bool]] | int, experts: int | None = None,
                 kinds: tuple[str, ...] | None = None, shared_from: int | None = None
                 ) -> list[tuple[str, str, TensorRule, bool]]:
    """(output name, source name, rule, identity layer?) for every tensor the family table describes;
    a name with {expert} once per routed expert; a rule for some layer kinds only in the source blocks of those
    kinds (`kinds`: the source's); a kv_shared rule only in the source blocks from `shared_from` on (True) or
    before it (False)."""
    if isinstance(layers, int):
        layers = [(i, False) for i in range(layers)]
    names = []
    for rule in family.tensors:
        if not rule.per_layer and rule.role == "embedding":
            names.append((rule.name, rule.name, rule, False))
    for new_index, (src_index, identity) in enumerate(layers):
        for rule in family.tensors:
            if not rule.per_layer or (rule.layers is not None and not has_part(kinds[src_index], rule.layers)):
                continue
            if rule.kv_shared is not None and rule.kv_shared != (shared_from is not None and src_index >= shared_from):
                continue
            for template in _per_slot(_per_expert(rule.name, experts if rule.per_expert else None), len(layers)):
                names.append((template.replace("{layer}", str(new_index)),
                              template.replace("{layer}", str(src_index)), rule, identity))
    for rule in family.tensors:
        if not rule.per_layer and rule.role != "embedding":
            names.append((rule.name, rule.name, rule, False))
    return names


def _per_slot(names: list[str], layers: int) -> list[str]:
    """A name with {adapter} once per possible adapter slot (a shared block's, numbered by hybrid layer: fewer than
    the layers; the checkpoint holds some of them, see the module doc of hyperclone.grow.families)."""
    return [n.replace("{adapter}", str(slot)) for n in names for slot in range(layers)] if any(
        "{adapter}" in n for n in names) else names


def _per_expert(name: str, experts: int | None) -> list[str]:
    if experts is None:
        return [name]
    return [name.replace("{expert}", str(expert)) for expert in range(experts)]


class AxisMaps:
    """The map of every axis kind for one growth (computed once, shared by all tensors)."""

    def __init__(self, family: Family, dims: Dims, grown: Dims, layers: list[tuple[int, bool]] | None = None):
        """`layers`: the layer plan (source layer, identity?) per grown layer, which the axes packing one slice per
        layer follow (per_layer_packed; None: the source's layers, kept)."""
        self.family = family
        if family.norm == "rmsnorm":
            self.hidden = weighted_map(dims.hidden, grown.hidden)
            self.residual_gamma = grown.hidden / dims.hidden
            self.layernorm_scale = 1.0
        else:
            self.hidden = layernorm_hidden_map(dims.hidden, grown.hidden)
            copies = grown.hidden // dims.hidden
            self.residual_gamma = float(copies)
            self.layernorm_scale = math.sqrt(copies * dims.hidden / grown.hidden)
        # q/k norms over the whole projection (OLMo2) see every head: with uneven head copies, the q and k
        # rows of each copy are scaled so that the mean square over all heads is unchanged, and the norm
        # weight of that copy is divided by the same scale, so the normalised q and k are exact.
        self.full_qk_norm = any(r.role == "norm" and r.axes[0][0] in ("q", "k") for r in family.tensors)
        positions, rows = (dims.positions or 0) + family.position_offset, dims.vocab + family.vocab_offset
        self.by_kind: dict[str, AxisMap] = {
            "hidden": self.hidden,
            "one": tile_map(1, 1),
            **{slot: tile_map(getattr(dims, slot), getattr(grown, slot))
               for slot in FFN_SLOTS if getattr(dims, slot) is not None},
            **({"experts": tile_map(dims.experts, dims.experts)} if dims.experts else {}),
            "zero_experts": tile_map(dims.zero_experts or 0, dims.zero_experts or 0),  # none: an empty section
            "embed": self.hidden if dims.embed == dims.hidden else tile_map(dims.embed, dims.embed),
            "vocab": tile_map(dims.vocab, dims.vocab), "vocab_rows": tile_map(rows, rows),  # Mllama's embedding
            "output_vocab": tile_map(dims.output_vocab or dims.vocab, dims.output_vocab or dims.vocab),
            "positions": tile_map(positions, positions),
            "moe_latent": self.hidden if dims.moe_latent is None else tile_map(dims.moe_latent, dims.moe_latent),
            "conv_inner": tile_map(dims.hidden, grown.hidden),  # plain copies of channels (B x, C conv(.))
            **({"adapter_rank": tile_map(dims.adapter_rank, dims.adapter_rank)} if dims.adapter_rank else {}),
            **({"decay_block": tile_map(dims.decay_block, dims.decay_block)} if dims.decay_block else {}),
        }
        if dims.ffn is not None:
            self.by_kind["ffn"] = tile_map(dims.ffn, grown.ffn)
            self.by_kind["ffn_pairs"] = block_map(tile_map(dims.ffn, grown.ffn), tile_map(2, 2))  # gate, up per neuron
            self.by_kind["ffn_double"] = block_map(tile_map(2, 2), tile_map(dims.ffn, grown.ffn))  # two halves
            if dims.experts:  # every expert's neurons on one axis (DBRX's [experts x ffn, hidden]): copied in its block
                self.by_kind["experts_ffn"] = block_map(tile_map(dims.experts, dims.experts),
                                                        tile_map(dims.ffn, grown.ffn))
        if dims.per_layer_input is not None:  # per-layer embeddings (Gemma 4 E2B/E4B): their width, packed, vocabulary
            width, vocab = tile_map(dims.per_layer_input, dims.per_layer_input), dims.per_layer_vocab or 0
            sources = torch.tensor([src for src, _ in layers] if layers else list(range(dims.layers)), dtype=torch.long)
            slices = AxisMap(sources, torch.ones(len(sources), dtype=torch.float64), dims.layers)  # each its layer's
            self.by_kind.update(per_layer_input=width, per_layer_packed=block_map(slices, width),
                                per_layer_vocab=tile_map(vocab, vocab))
        self.by_kind.update(_kept_and_stream_maps(dims, self.hidden))
        if dims.altup_inputs is not None:  # AltUp's prediction coefficients: one per pair of streams
            self.by_kind["altup_coefs"] = tile_map(dims.altup_inputs ** 2, dims.altup_inputs ** 2)
        if dims.heads is not None:
            self.by_kind.update(self._attention_maps(family, dims, grown))
        if dims.conv_kernel is not None:
            self.by_kind["conv_kernel"] = tile_map(dims.conv_kernel, dims.conv_kernel)
        if dims.ssm_heads is not None:  # Mamba2 mixers: heads grow by copies inside their B/C groups
            self.by_kind.update(_mamba2_maps(dims, grown))
        if dims.ssm_channels is not None:  # Mamba1 mixers: channels grow by plain copies
            self.by_kind.update(_mamba1_maps(dims, grown))
        if dims.lru is not None:  # RecurrentGemma's RG-LRU: whole blocks of channels grow by copies
            self.by_kind.update(_rglru_maps(dims, grown))
        if dims.lin_k_heads is not None:  # gated DeltaNet mixers: key and value heads grow by copies
            self.by_kind.update(linear_attention_maps(dims.lin_k_heads, dims.lin_v_heads, dims.lin_k_dim,
                                                      dims.lin_v_dim, grown.lin_k_heads, grown.lin_v_heads))

    def _attention_maps(self, family: Family, dims: Dims, grown: Dims) -> dict[str, AxisMap]:
        """The maps of attention's axis kinds (a model with attention)."""
        if family.head_halves:  # differential attention: each half of the heads grows on its own, pairs whole
            q_heads, kv_heads, pairs = halved_head_maps(dims.heads, dims.kv_heads, grown.heads, grown.kv_heads)
        else:
            (q_heads, kv_heads), pairs = gqa_head_maps(dims.heads, dims.kv_heads, grown.heads, grown.kv_heads), None
        qk_heads, qk_kv_heads = q_heads, kv_heads
        if self.full_qk_norm:
            qk_heads = weighted_map_like(q_heads, grown.heads / dims.heads)
            qk_kv_heads = weighted_map_like(kv_heads, grown.kv_heads / dims.kv_heads)
        if dims.v_head_dim is not None and dims.kv_lora is None:  # values of their own width (MiMo): kept, as head_dim
            qk_dim, v_dim = tile_map(dims.head_dim, dims.head_dim), tile_map(dims.v_head_dim, dims.v_head_dim)
        elif grown.head_dim == dims.head_dim:
            qk_dim = v_dim = tile_map(dims.head_dim, dims.head_dim)
        else:  # no RoPE (checked): q.k must grow by sqrt(new/old) to cancel the 1/sqrt(head_dim) scale
            qk_dim = weighted_map(dims.head_dim, grown.head_dim,
                                  quarter_power_gamma(dims.head_dim, grown.head_dim))
            v_dim = tile_map(dims.head_dim, grown.head_dim)
        maps = {
            "q": block_map(qk_heads, qk_dim),
            "k": block_map(qk_kv_heads, qk_dim),
            "v": block_map(kv_heads, v_dim),
            "attn": block_map(q_heads, v_dim),
            "qkv_interleaved": block_map(q_heads, tile_map(3 * dims.head_dim, 3 * dims.head_dim)),
            "q_gate": block_map(qk_heads, concat_maps([qk_dim, v_dim])),  # per head its query, then its gate
            "heads": q_heads,
            "kv_heads": kv_heads,
            "head_dim": tile_map(dims.head_dim, dims.head_dim),
        }
        if pairs is not None:  # o_proj reads one block per pair of heads: its first value half, then its second
            maps["attn"] = block_map(pairs, concat_maps([v_dim, v_dim]))
        if dims.global_kv_heads is not None:  # layers with their own head_dim and KV groups (Gemma 4's full attention)
            global_q, global_kv = gqa_head_maps(dims.heads, dims.global_kv_heads, grown.heads, grown.global_kv_heads)
            global_dim = tile_map(dims.global_head_dim, dims.global_head_dim)
            global_v = v_dim if dims.v_head_dim is not None and dims.kv_lora is None else global_dim
            maps.update({"global_q": block_map(global_q, global_dim), "global_k": block_map(global_kv, global_dim),
                         "global_v": block_map(global_kv, global_v), "global_attn": block_map(global_q, global_v),
                         "global_head_dim": global_dim})
        if dims.kv_lora is not None:  # latent attention: heads grow by copies, each head's parts with it
            maps.update(_latent_attention_maps(dims, q_heads))
        else:  # a q LoRA and a sparse-attention indexer without latent keys and values (DeepSeek-V4)
            maps.update(_query_latent_maps(dims))
        if dims.o_groups is not None:  # a grouped output projection (DeepSeek-V4)
            maps.update(_output_group_maps(dims, grown, q_heads))
        if any("qkv_grouped" in axis for rule in family.tensors for axis in rule.axes):  # Falcon's fused QKV
            maps["qkv_grouped"] = grouped_qkv_map(qk_heads, qk_kv_heads, kv_heads, qk_dim, v_dim)
        if any("qkv_sharded" in axis for rule in family.tensors for axis in rule.axes):  # CodeGen's qkv_proj
            maps["qkv_sharded"] = sharded_qkv_map(block_map(qk_heads, qk_dim), block_map(q_heads, v_dim), QKV_SHARDS)
        return maps

    def for_rule(self, rule: TensorRule) -> tuple[AxisMap, ...]:
        return tuple(concat_maps([self.by_kind[kind] for kind in axis]) if len(axis) > 1 else self.by_kind[axis[0]]
                     for axis in rule.axes)

    def source_shape(self, rule: TensorRule) -> tuple[int, ...]:
        return tuple(m.src_size for m in self.for_rule(rule))


def _kept_and_stream_maps(dims: Dims, hidden: AxisMap) -> dict[str, AxisMap]:
    """AltUp's streams, LAuReL's rank (Gemma 3n), and DeepSeek-V4's hyper-connection streams, KV compressor windows
    and hash-routing table's experts: kept. The hyper-connections' projections read the streams side by side, each
    stream's block grown by the residual map `hidden`."""
    maps = {slot: tile_map(size, size) for slot in ("altup_inputs", "laurel_rank", "hc_streams", "csa_window",
                                                    "hca_window", "hash_top_k")
            if (size := getattr(dims, slot)) is not None}
    if dims.hc_streams is not None:  # every pair of streams' comb weight, and the streams side by side as read
        maps.update(hc_pairs=tile_map(dims.hc_streams ** 2, dims.hc_streams ** 2),
                    hc_hidden=block_map(maps["hc_streams"], hidden))
    return maps


def _latent_attention_maps(dims: Dims, q_heads: AxisMap) -> dict[str, AxisMap]:
    """DeepSeek's multi-head latent attention. The compressed projections (q_a, kv_a) read the residual stream and
    their widths stay; the up-projections (q_b, kv_b) emit one block per head, and a copied head copies its whole
    block (no-rope part, rope part, value part), so the attention of every copy equals its source head's; o_proj
    reads the copies divided among them. The rope key is one shared head (MQA-like) and stays. DeepSeek-V3.2's
    sparse-attention indexer keeps its own heads and width (its scores scale by both): wq_b reads the kept q latent
    unchanged, wk and weights_proj read the residual stream like any reader, so it selects the source's keys. A NoPE
    layer's up-projection (Mistral Large 4) emits each head's key without a rope part, as wide as its query."""
    nope, rope, value = dims.head_dim, dims.qk_rope, dims.v_head_dim
    if rope is None or value is None:
        raise HyperCloneError("latent attention needs qk_rope_head_dim and v_head_dim in config.json")
    return {"mla_q": block_map(q_heads, tile_map(nope + rope, nope + rope)),
            "mla_kv": block_map(q_heads, tile_map(nope + value, nope + value)),
            "mla_kv_nope": block_map(q_heads, tile_map(nope + rope + value, nope + rope + value)),
            "mla_attn": block_map(q_heads, tile_map(value, value)),
            "kv_lora": tile_map(dims.kv_lora, dims.kv_lora), "qk_rope": tile_map(rope, rope),
            **_query_latent_maps(dims)}


def _query_latent_maps(dims: Dims) -> dict[str, AxisMap]:
    """The q LoRA's width and a sparse-attention indexer's heads and width, all kept (DeepSeek-V3.2, GLM-5, V4)."""
    maps = {}
    if dims.q_lora is not None:
        maps["q_lora"] = tile_map(dims.q_lora, dims.q_lora)
    if dims.index_heads is not None:  # DeepSeek Sparse Attention's indexer: its own heads and width, kept
        if dims.index_head_dim is None:
            raise HyperCloneError("the sparse-attention indexer needs its head width (index_head_dim) in config.json")
        width = dims.index_heads * dims.index_head_dim
        maps.update({"index_q": tile_map(width, width), "index_k": tile_map(dims.index_head_dim, dims.index_head_dim),
                     "index_heads": tile_map(dims.index_heads, dims.index_heads)})
    return maps


def _output_group_maps(dims: Dims, grown: Dims, q_heads: AxisMap) -> dict[str, AxisMap]:
    """DeepSeek-V4's grouped output projection: o_a_proj [o_groups x o_lora, heads / o_groups x head_dim] maps each
    group of consecutive heads to its own latent (block-diagonal), o_b_proj reads every group's latent. The single KV
    head makes the query heads grow in tile order, so grown group g holds copies of one source group's heads in their
    order (checked): o_a_proj's rows are copied with their group, its columns (one group's heads) kept, and o_b_proj
    reads the copied latents divided among the copies."""
    if dims.o_lora is None:
        raise HyperCloneError("the grouped output projection needs its latent width (o_lora_rank) in config.json")
    per = dims.heads // dims.o_groups
    slots = q_heads.index.reshape(grown.o_groups, per)
    source = slots[:, 0] // per
    if not torch.equal(slots, source[:, None] * per + torch.arange(per)):
        raise HyperCloneError(f"{grown.heads} heads in {grown.o_groups} output groups do not copy the {dims.o_groups} "
                              "source groups whole")
    groups = AxisMap(source, torch.ones(grown.o_groups, dtype=torch.float64), dims.o_groups)
    return {"o_latent": block_map(groups, tile_map(dims.o_lora, dims.o_lora)),
            "o_group_in": tile_map(per * dims.head_dim, per * dims.head_dim)}


def _mamba2_maps(dims: Dims, grown: Dims) -> dict[str, AxisMap]:
    """A Mamba2 mixer. in_proj reads the residual stream and emits [z | x B C | dt]; head h's slices of z and x, its
    conv1d channels, its dt row, dt_bias, A_log and D move together, and head h reads B/C group h // (heads /
    groups). The groups are kept: the grown heads are ordered group by group, each group's slots cycling through
    its own source heads (gqa_head_maps with the groups as KV heads), so every copy runs its source head's scan
    exactly. out_proj contracts over the inner width, divided among the copies. The gated RMSNorm normalises each
    group: exact when every head of a group has the same number of copies (make_plan refuses otherwise)."""
    heads, _ = gqa_head_maps(dims.ssm_heads, dims.ssm_groups, grown.ssm_heads, dims.ssm_groups)
    groups = dims.ssm_groups * dims.ssm_state
    return {"ssm_heads": heads, "ssm_inner": block_map(heads, tile_map(dims.ssm_head_dim, dims.ssm_head_dim)),
            "ssm_groups": tile_map(groups, groups)}


def _mamba1_maps(dims: Dims, grown: Dims) -> dict[str, AxisMap]:
    """A Mamba (Mamba1) mixer. in_proj reads the residual stream and emits [x | z], each one position per inner
    channel; channel c's x and z rows, its conv1d filter, dt_proj row and bias, A_log row and D move together. Every
    channel runs its own scan h_c <- exp(dt_c A_c) h_c + dt_c B x_c, y_c = C h_c + D_c x_c, gated by silu(z_c), and
    reads dt's low rank, B and C through x_proj, which sums over the channels: plain copies (scale 1, any number of
    each) compute their source channel exactly, and x_proj and out_proj divide by each channel's copies. The time
    step's rank and the state are kept (so norms over dt, B or C, Falcon-Mamba's and Jamba's, see the same values)."""
    return {"ssm_channels": tile_map(dims.ssm_channels, grown.ssm_channels),
            "ssm_state": tile_map(dims.ssm_state, dims.ssm_state), "dt_rank": tile_map(dims.dt_rank, dims.dt_rank)}


def _rglru_maps(dims: Dims, grown: Dims) -> dict[str, AxisMap]:
    """RecurrentGemma's RG-LRU. linear_x and linear_y read the residual stream and emit its channels, heads blocks of
    lru / heads each; the input and recurrence gates are block-diagonal ([heads, block, block] weights, [heads, block]
    biases: each block's gates read that block's channels), and everything else (the depthwise conv_1d, the
    recurrent_param a, the scan, the product with the y branch) is per channel. Whole blocks copied in tile order with
    scale 1, their gate matrices with them, so every copied channel computes its source channel exactly; the blocks
    grow with the heads (the config counts them by num_attention_heads), the block width is kept, and linear_out reads
    the copies divided among them."""
    width = dims.lru // dims.heads
    blocks, inner = tile_map(dims.heads, grown.heads), tile_map(width, width)
    return {"lru": block_map(blocks, inner), "lru_blocks": blocks, "lru_block": inner}


def check_shared_epsilon(family: Family, dims: Dims, grown: Dims, maps: AxisMaps, present: dict[str, TensorInfo],
                         rules: dict[str, TensorRule]) -> None:
    """Refuse a hidden size that is not a whole multiple where LayerNorms over another axis (Persimmon's, Cohere's
    and Phi's per-head q/k norms over head_dim) read the epsilon that growth rescales for the hidden LayerNorms: theirs
    would change with it."""
    if maps.layernorm_scale == 1.0:
        return
    gains = sorted(name for name in present
                   if rules[name].role == "layer_scalar" and rules[name].axes[0] == ("hidden",))
    if gains:  # an uneven LayerNorm map holds means at some positions, and mean(g x) is not mean(g) mean(x)
        raise HyperCloneError(f"{family.model_type}: {gains[0]} is a per-channel gain on the residual stream, which a "
                              f"LayerNorm family's hidden size not a multiple of {dims.hidden} cannot carry exactly; "
                              "grow the hidden size by a whole factor")
    if family.norm_eps_key is None:
        return
    other = sorted(name for name in present if rules[name].role == "norm" and rules[name].axes[0] != ("hidden",))
    if other:
        raise HyperCloneError(f"{family.model_type}: {other[0]} normalises over another axis with the same "
                              f"{family.norm_eps_key} that a hidden size not a multiple of {dims.hidden} rescales "
                              f"(to {grown.hidden}), so it would not be exact; grow the hidden size by a whole factor")


def check_ssm_norm(family: Family, dims: Dims, grown: Dims, present: dict[str, TensorInfo],
                   rules: dict[str, TensorRule]) -> None:
    """Refuse uneven Mamba2 head copies under a gated RMSNorm: it normalises over each group's heads, so a head
    copied more often than another would weigh more in its group's mean square."""
    if dims.ssm_heads is None or grown.ssm_heads == dims.ssm_heads:
        return
    if not any(rules[name].role == "norm" and rules[name].axes[0] == ("ssm_inner",) for name in present):
        return
    old, new = dims.ssm_heads // dims.ssm_groups, grown.ssm_heads // dims.ssm_groups
    if new % old:
        raise HyperCloneError(f"{family.model_type}: the Mamba2 gated RMSNorm normalises over each group's heads; "
                              f"{new} heads per group cannot hold the same number of copies of its {old} source "
                              f"heads (grow the hidden size by a whole multiple{_keep_heads_hint(family, dims)})")


# axis kinds a norm may read whole (BitNet's attn_sub_norm over the attention output, ffn_sub_norm over the MLP's
# neurons) only where every position is copied alike: its mean square is over all of them
WHOLE_COPY_NORM_AXES = {"attn": "the attention output of every query head", "ffn": "the MLP's neurons"}


def check_norms_over_copies(family: Family, dims: Dims, grown: Dims, maps: AxisMaps, present: dict[str, TensorInfo],
                            rules: dict[str, TensorRule]) -> None:
    """Refuse uneven copies under a norm over the attention output or the MLP's neurons (BitNet's sub-norms): one
    head or neuron copied more often than another would weigh more in the mean square (0.19 relative logit error
    grown 6 -> 9 heads, 0.16 at an MLP 80 -> 100 wide, without the refusal). Likewise a LayerNorm over the residual
    stream in an RMSNorm family (a rule's ``layernorm``: Mistral Large 4's indexer q_input_norm): the weighted copies
    of a hidden size that is not a multiple keep the mean square, not the mean it subtracts (1.16 relative logit error
    grown 48 -> 72, its top-k keys changed, without the refusal)."""
    uneven_hidden = maps.hidden.copies().unique().numel() > 1 or bool((maps.hidden.scale != 1.0).any())
    centred = next((name for name in sorted(present) if rules[name].layernorm), None)
    if family.norm == "rmsnorm" and uneven_hidden and centred is not None:
        raise HyperCloneError(f"{family.model_type}: {centred} is a LayerNorm over the residual stream, whose mean "
                              f"only whole copies keep; a hidden size of {grown.hidden} is not a multiple of "
                              f"{dims.hidden}")
    for name in sorted(present):
        rule = rules[name]
        kind = rule.axes[0][0] if rule.role == "norm" and len(rule.axes[0]) == 1 else None
        if kind not in WHOLE_COPY_NORM_AXES:
            continue
        amap = maps.by_kind[kind]
        if amap.copies().unique().numel() > 1 or amap.scale.unique().numel() > 1:
            hint = (f"{grown.heads} query heads over {grown.kv_heads} KV heads do not copy each of the {dims.heads} "
                    f"over {dims.kv_heads} the same number of times" if kind == "attn" else
                    f"an MLP width of {grown.ffn} is not a multiple of {dims.ffn}")
            raise HyperCloneError(f"{family.model_type}: {name} normalises over {WHOLE_COPY_NORM_AXES[kind]}, which "
                                  f"only whole copies of each keep; {hint}")


def _keep_heads_hint(family: Family, dims: Dims) -> str:
    """Where the config states the inner width on its own (Falcon-H1's mamba_d_ssm), a target may keep the heads."""
    if dims.ssm_expand is not None:
        return ""
    return f", or give --to a config whose {family.config_keys['ssm_heads']} is a whole multiple of {dims.ssm_heads}"


def embedding_multiplier_ratio(family: Family, dims: Dims, grown: Dims) -> float:
    """Ratio old/new of a multiplier the model applies to its embeddings (Gemma: sqrt(hidden_size); RecurrentGemma:
    sqrt(hidden_size) rounded to bfloat16, its normalizer buffer's dtype, whatever the model's)."""
    if family.embedding_scale == "sqrt_hidden":
        return math.sqrt(dims.hidden / grown.hidden)
    if family.embedding_scale == "sqrt_hidden_bf16":
        def bf16_sqrt(hidden: int) -> float:
            return torch.tensor(math.sqrt(hidden), dtype=torch.bfloat16).item()

        return bf16_sqrt(dims.hidden) / bf16_sqrt(grown.hidden)
    return 1.0


def residual_writers(family: Family, dims: Dims | None = None) -> set[str]:
    """Per-layer tensors that write a block's output into the residual stream (zeroed in identity blocks):
    matrices whose emitted axis is the hidden size, and their biases (a MoE's experts writing its latent width
    when it has none, so they write the residual stream). A bias is `<name>.bias` beside `<name>.weight`, or
    `<name>_bias` beside a parameter without a suffix (GPT-OSS experts' down_proj_bias), or the bias of the module
    holding the writer, `<module>.bias` beside `<module>.<writer>.weight` (JetMoE's experts add mlp.bias)."""
    written = {("hidden",)} | ({("moe_latent",)} if dims is not None and dims.moe_latent is None else set())
    writers = set()
    for rule in family.tensors:
        if rule.per_layer and rule.contract is not None and rule.axes[rule.emitted] in written:
            writers.add(rule.name)
            base = rule.name.removesuffix(".weight")
            writers.add(base + ".bias" if base != rule.name else rule.name + "_bias")
            writers.add(base.rsplit(".", 1)[0] + ".bias")
    return writers


def check_source_tensors(family: Family, dims: Dims, tensors: dict[str, TensorInfo], tied: bool, maps: AxisMaps,
                         source_rules: dict[str, TensorRule]) -> dict[str, TensorInfo]:
    """Every checkpoint tensor against the family table: names, shapes, nothing missing. Returns the tensors
    growth reads (ignored ones and a tied checkpoint's stored copy of the output matrix left out). A stack of expert
    matrices stored with its last two axes swapped (a may_be_transposed rule) gets its swapped rule in
    `source_rules`."""
    present: dict[str, TensorInfo] = {}
    for name, info in tensors.items():
        if family.is_ignored(name) or family.is_multi_token_prediction(name, dims.layers):
            continue
        refused = next((r for r in family.refuse if r.tensor is not None and re.search(r.tensor, name)), None)
        if refused is not None:
            raise HyperCloneError(f"{family.model_type}: {name} cannot be grown: {refused.reason}")
        rule = source_rules.get(name)
        if rule is None or _absent_slot(rule, dims):
            raise HyperCloneError(f"config and weights disagree: unexpected tensor {name!r} for a "
                                  f"{family.model_type} model with {dims.layers} layers")
        if rule.role == "lm_head" and tied:
            continue  # a tied checkpoint may store the output matrix again; it is the embedding
        expected = maps.source_shape(rule)
        if tuple(info.shape) != expected and rule.may_be_transposed \
                and tuple(info.shape) == maps.source_shape(rule.swapped()):
            rule = source_rules[name] = rule.swapped()  # stored [experts, in, out]: read (and written) that way
        if tuple(info.shape) != expected and not rule.transposed:
            raise HyperCloneError(f"config and weights disagree: {name} has shape {tuple(info.shape)}, "
                                  f"config implies {expected}")
        present[name] = info
    missing = [name for name, rule in source_rules.items() if name not in present and not rule.optional
               and not (rule.role == "lm_head" and tied) and not _absent_slot(rule, dims)]
    if missing:
        raise HyperCloneError(f"config and weights disagree: missing tensor {missing[0]!r}"
                              + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if not tied and not any(source_rules[name].role == "lm_head" for name in present):
        raise HyperCloneError("config and weights disagree: tie_word_embeddings is false but there is no "
                              "output projection in the weights")
    return present


def _absent_slot(rule: TensorRule, dims: Dims) -> bool:
    """Whether the tensor belongs to a part the config says the model does not have (a width or expert count of 0:
    no experts, no shared MLP), so it is neither required nor allowed."""
    return any(getattr(dims, kind) is None for axis in rule.axes for kind in axis if kind in ("experts", *FFN_SLOTS))


def plan_notes(spec: GrowthSpec, tied: bool, dims: Dims, grown: Dims) -> list[str]:
    notes = []
    if tied and spec.tie == "untie":
        notes.append("output projection untied from the embedding")
    if grown.layers > dims.layers:
        kinds = "identity blocks" if spec.depth_mode == "identity" else "stacked copies (not function-preserving)"
        notes.append(f"{grown.layers - dims.layers} new layers as {kinds}")
    if spec.perturb is not None:
        notes.append(f"weight matrices perturbed toward a fresh initialisation ({spec.perturb}): NOT exact, "
                     "not function-preserving on purpose")
    return notes


def _final_norm_scale(family: Family, dims: Dims, tied_output: bool, a: float, maps: AxisMaps,
                      present: dict[str, TensorInfo], source_rules: dict[str, TensorRule]) -> float:
    """t = 1 / (a * gamma) for the final norm when tied embeddings stay tied and the embedding writes the
    residual stream (see make_plan), else 1; a one-line error when the final norm has no weight to absorb it."""
    embedding_rule = next(rule for rule in family.tensors if rule.role == "embedding")
    embeds_residual = embedding_rule.axes[1] == ("hidden",) or dims.embed == dims.hidden
    final_scale = 1.0 / (a * maps.residual_gamma) if tied_output and embeds_residual else 1.0
    if tied_output and not math.isclose(final_scale, 1.0) and not (
            family.final_norm_parametric and any(source_rules[n].role == "final_norm" for n in present)):
        raise HyperCloneError(f"{family.model_type}: tied embeddings cannot be kept exactly here (the final norm "
                              "has no weight to absorb the rescale); use --tie untie")
    return final_scale


def _tensor_recipes(family: Family, dims: Dims, layers: list[tuple[int, bool]], present: dict[str, TensorInfo],
                    source_rules: dict[str, TensorRule], maps: AxisMaps, a: float, final_scale: float,
                    untie: bool) -> list[Recipe]:
    """One Recipe per output tensor, in the family's order: identity blocks' residual writers are zeros, norms
    scaled (the final one by final_scale), embeddings emitted times a, linear weights grown; with `untie` the
    tied embedding also becomes a separate output projection."""
    writers = residual_writers(family, dims)
    recipes = []
    for out_name, src_name, rule, identity in expand_names(family, layers, dims.experts, dims.layer_kinds,
                                                           dims.layers - dims.kv_shared):
        if src_name not in present:
            continue
        info = present[src_name]
        rule = source_rules[src_name]  # the table's rule, or its swapped layout where the checkpoint stores that
        axis_maps = maps.for_rule(rule)
        if rule.transposed and axis_maps[1].size == axis_maps[2].size:
            raise HyperCloneError(f"{out_name} would be square ({axis_maps[1].size} x {axis_maps[2].size}) in the "
                                  "source's swapped layout [experts, in, out], which transformers cannot tell from "
                                  "[experts, out, in] by its shape; choose another --hidden or --ffn")
        if identity and rule.name in writers:
            recipes.append(Recipe(out_name, src_name, axis_maps, rule.contract, "zero", dtype=info.dtype))
            continue
        # a width-dependent factor hidden_size ** p the model applies (Gemma 4's router input): undone by the tensor
        power = 1.0 if rule.hidden_power is None else (dims.hidden / maps.hidden.size) ** rule.hidden_power
        if rule.role == "layer_scalar":  # a block's output or residual gain: 1 in an identity block, else gathered
            recipes.append(Recipe(out_name, src_name, axis_maps, None, "fill" if identity else "norm",  # unscaled
                                  dtype=info.dtype))
        elif rule.role in ("norm", "final_norm"):
            is_bias = out_name.endswith(".bias")
            scale = 1.0 if is_bias else (maps.layernorm_scale if rule.axes[0] == ("hidden",) else 1.0)
            if rule.role == "final_norm":
                scale *= final_scale
            scale *= power
            divide = maps.full_qk_norm and rule.axes[0][0] in ("q", "k")
            recipes.append(Recipe(out_name, src_name, axis_maps, None, "norm", scale,
                                  0.0 if is_bias else rule.offset(family.norm_offset), is_bias, divide, info.dtype))
        elif rule.contract is None:
            scale = a if rule.role == "embedding" else power
            recipes.append(Recipe(out_name, src_name, axis_maps, None, "emit", scale, dtype=info.dtype))
        else:
            recipes.append(Recipe(out_name, src_name, axis_maps, rule.contract, "linear", power, dtype=info.dtype))
        if rule.role == "embedding" and untie:
            lm_rule = next(r for r in family.tensors if r.role == "lm_head")
            recipes.append(Recipe(lm_rule.name, src_name, maps.for_rule(lm_rule), lm_rule.contract, "linear",
                                  dtype=info.dtype))
    return recipes


def make_plan(family: Family, config: Any, tensors: dict[str, TensorInfo], spec: GrowthSpec,
              extra: Callable[[AxisMap, AxisMap | None], list[Recipe]] | None = None) -> Plan:
    """Check the source tensors against the family table and plan every output tensor.

    `extra(hidden map, ffn map)`: recipes of tensors outside the family table that growth writes too (a multimodal
    checkpoint's vision tower and projector: hyperclone.grow.wrapper), given the residual stream's map and the MLP
    width's (None: no MLP); they are written in the dtype the plan chooses with the others, and their sizes count as
    the source's.

    Tied embeddings, kept tied: one matrix E' serves as input and output. The input side needs
    E'[:, k] = a * s_k * E[:, i] (s_k: the residual map's scale, a: undoes a hidden-size-dependent
    embedding multiplier); as the output projection it is then a * gamma times what the grown output
    should read (gamma: the sum of squared scales over the copies of a source dimension). The final norm
    sits right before the output projection and nothing else reads it, so its effective weight (and bias)
    is multiplied by t = 1 / (a * gamma): the logits are exact and no other tensor or epsilon changes.
    """
    spec.validate()
    family = family.for_config(config)  # a norm kind set by the config (Cohere2-MoE's RMSNorms)
    dims = source_dims(family, config)
    check_dims_fit(family, dims, tensors)
    grown = target_dims(family, dims, spec)
    check_whole_ffn_copies(family, config, dims, grown)
    if grown.layers != dims.layers:
        check_supported(family, config, depth=True)
        if family.identity_kind is not None and spec.depth_mode == "stack":
            raise HyperCloneError(f"--depth-mode stack on {family.model_type}: its new layers can only be identity "
                                  f"copies of a {family.identity_kind} layer (stacked layers of other kinds would be "
                                  "numbered anew: shared blocks and adapter slots by position); grow depth with "
                                  "--depth-mode identity")
    layers, grown, layer_notes = _plan_layers(family, config, dims, grown, spec)
    tied = bool(getattr(config, "tie_word_embeddings", family.tied_default))
    if tied and spec.tie == "untie" and family.untie_refused:
        raise HyperCloneError(f"{family.model_type}: --tie untie cannot be exact: {family.untie_refused}")
    maps = AxisMaps(family, dims, grown, layers)
    source_rules = {src: rule for _, src, rule, _ in expand_names(family, dims.layers, dims.experts,
                                                                           dims.layer_kinds,
                                                                           dims.layers - dims.kv_shared)}

    present = check_source_tensors(family, dims, tensors, tied, maps, source_rules)
    check_ssm_norm(family, dims, grown, present, source_rules)
    check_norms_over_copies(family, dims, grown, maps, present, source_rules)
    check_shared_epsilon(family, dims, grown, maps, present, source_rules)

    a = embedding_multiplier_ratio(family, dims, grown)
    tied_output = tied and spec.tie == "keep"
    final_scale = _final_norm_scale(family, dims, tied_output, a, maps, present, source_rules)
    notes = plan_notes(spec, tied, dims, grown) + layer_notes
    mtp = [name for name in tensors if family.is_multi_token_prediction(name, dims.layers)]
    if mtp:
        notes.append(f"{len(mtp)} multi-token prediction tensors left out (e.g. {mtp[0]}): transformers does not load "
                     "them, and the grown checkpoint has none")
    recipes = _tensor_recipes(family, dims, layers, present, source_rules, maps, a, final_scale,
                              tied and spec.tie == "untie")
    extra_recipes = [] if extra is None else extra(maps.hidden, maps.by_kind.get("ffn"))
    stored = recipes + extra_recipes
    recipes, storage_inexact = _choose_dtype(stored, spec, notes)
    config_updates = _config_updates(family, config, dims, grown, tied, spec, maps, layers)
    if any(a.dtype != b.dtype for a, b in zip(recipes, stored, strict=True)):  # upcast (not F32 kept from the source,
        config_updates["dtype"] = "float32"  # as DeepSeek-V4's bf16 checkpoints keep their norms and mixing weights)
    source_parameters = sum(math.prod(info.shape) for info in present.values())
    source_parameters += sum(math.prod(m.src_size for m in r.maps) for r in extra_recipes)
    return Plan(family, spec, dims, grown, tied, tied_output, recipes, config_updates, source_parameters, layers,
                notes, storage_inexact)


def _plan_layers(family: Family, config: Any, dims: Dims, grown: Dims, spec: GrowthSpec
                 ) -> tuple[list[tuple[int, bool]], Dims, list[str]]:
    """The layer plan (source layer, identity?) per grown layer with the layer kinds and KV-shared layers it gives
    the grown dims, and the notes on identity blocks copying another layer than the one they follow."""
    if spec.insert_after is None and spec.depth_mode == "identity" and dims.layer_kinds is not None:
        spec = replace(spec, insert_after=cycle_insert_after(family.layer_kinds, config, dims.layers, grown.layers))
    layers, refitted = copy_for_identity(family.identity_copies, config, layer_plan(dims, grown, spec))
    refuse_moved_layers(family, layers)
    layers, kv_shared, shared_moved, before_refs = share_new_layers(layers, dims.layer_kinds, dims.layers,
                                                                    dims.kv_shared)
    grown = replace(grown, kv_shared=kv_shared)
    if family.identity_kind is not None and dims.layer_kinds is not None:
        layers, refitted = copy_kind_for_identity(family.model_type, family.identity_kind, dims.layer_kinds, layers)
    if dims.layer_kinds is not None:
        if not refitted:
            layers, refitted = fit_identity_blocks(family.layer_kinds, config, dims.layer_kinds, layers)
        grown = replace(grown, layer_kinds=tuple(dims.layer_kinds[src] for src, _ in layers))
        if family.last_layer_kind is not None and grown.layer_kinds[-1] != family.last_layer_kind:
            raise HyperCloneError(f"{family.model_type}'s config class makes the last layer {family.last_layer_kind} "
                                  f"whatever the config says, and this depth growth ends with a "
                                  f"{grown.layer_kinds[-1]} layer; choose --layers or --insert-after so that the last "
                                  f"layer stays {family.last_layer_kind}")
    notes = []
    if refitted:
        notes.append(f"identity blocks {', '.join(map(str, refitted))} copy layer "
                     f"{', '.join(str(layers[i][0]) for i in refitted)} (the layer kind the config needs there)")
    if kv_shared != dims.kv_shared:
        notes.append(f"KV-shared last layers: {dims.kv_shared} -> {kv_shared}"
                     + (f"; identity blocks {', '.join(map(str, shared_moved))} join them and copy layer "
                        f"{layers[shared_moved[0]][0]}, the first of them (they need no keys of their own)"
                        if shared_moved else ""))
    if before_refs:
        notes.append(f"identity blocks {', '.join(map(str, before_refs))} copy layer {dims.layers - dims.kv_shared - 1}"
                     ", the last before the KV-shared layers (a copy of the layer they follow would become the layer "
                     "whose keys the shared layers read)")
    return layers, grown, notes


def refuse_moved_layers(family: Family, layers: list[tuple[int, bool]]) -> None:
    """Where a layer computes with its own index (the family's layer_index_dependent), every source layer must keep
    its index: new layers may only follow the last one (identity blocks), never come before a source layer."""
    if not family.layer_index_dependent:
        return
    moved = [(g, src) for g, (src, identity) in enumerate(layers) if not identity and src != g]
    if moved:
        last = max(src for src, _ in layers)
        raise HyperCloneError(f"{family.model_type}: source layer {moved[0][1]} would become layer {moved[0][0]}, and "
                              f"{family.layer_index_dependent}; add identity blocks after the last layer only "
                              f"(--insert-after {last} for each, --depth-mode identity)")


def _is_power_of_two(values: torch.Tensor | float) -> bool:
    values = torch.as_tensor(values, dtype=torch.float64).abs()
    return bool((torch.exp2(torch.round(torch.log2(values))) == values).all())


def storage_inexact_reason(recipe: Recipe) -> str | None:
    """Why a 16-bit dtype cannot hold this tensor's growth exactly, or None when it can.

    Exact: copies, zeros, products with powers of two, and splits of W among unscaled copies
    (hyperclone.grow.exact_split). Not exact: any other factor (the sqrt scales of uneven RMSNorm widths and of
    head_dim growth, Gemma's embedding multiplier ratio sqrt(old/new), a tied final norm's 1/n for odd n)
    and positions holding a mean (LayerNorm widths that are not multiples)."""
    if recipe.kind in ("zero", "fill"):
        return None
    maps = recipe.maps
    if recipe.kind == "linear":
        out_map, in_map = maps[emitted_axis(len(maps), recipe.contract)], maps[recipe.contract]
        if bool((out_map.index < 0).any()):
            return "output rows holding a mean (LayerNorm hidden size not a multiple)"
        if not _is_power_of_two(out_map.scale):
            return "output rows scaled by square roots (RMSNorm hidden size not a multiple, or head_dim growth)"
        if not bool((in_map.scale[in_map.index >= 0] == 1.0).all()):
            return "input copies scaled by square roots (RMSNorm hidden size not a multiple, or head_dim growth)"
        if not _is_power_of_two(recipe.scale):
            return f"weights multiplied by {recipe.scale:.6g} (a factor of the hidden size the model applies grows)"
        return None
    if recipe.kind == "emit":
        if any(bool((m.index < 0).any()) for m in maps):
            return "embedding columns holding a mean (LayerNorm hidden size not a multiple)"
        if not all(_is_power_of_two(m.scale) for m in maps):
            return "embedding columns scaled by square roots (RMSNorm hidden size not a multiple)"
        if not _is_power_of_two(recipe.scale):
            return f"embeddings multiplied by {recipe.scale:.6g} (the model's embedding multiplier grows)"
        return None
    if not _is_power_of_two(recipe.scale):
        return f"norm weights multiplied by {recipe.scale:.6g} (tied embeddings or LayerNorm rescaling)"
    if recipe.scale != 1.0 and recipe.norm_offset:
        return "norm weights stored as an offset from 1 and rescaled"
    if recipe.divide_by_map_scale and not _is_power_of_two(recipe.maps[0].scale[recipe.maps[0].index >= 0]):
        return "q/k norm weights divided by square roots (uneven head copies under a whole-projection norm)"
    return None


def _choose_dtype(recipes: list[Recipe], spec: GrowthSpec, notes: list[str]) -> tuple[list[Recipe], list[str]]:
    """Apply --dtype: returns the recipes with their output dtype, and the reasons the output is not exact."""
    reasons: list[str] = []
    for recipe in recipes:
        if needs_exact_split(recipe.dtype) and (reason := storage_inexact_reason(recipe)):
            text = f"{str(recipe.dtype).removeprefix('torch.')} cannot hold {reason}, e.g. {recipe.out_name}"
            if not any(r.startswith(text.split(", e.g.")[0]) for r in reasons):
                reasons.append(text)
    if spec.dtype == "float32" or (spec.dtype == "auto" and reasons):
        if reasons:
            notes.append("written in float32, where the growth is exact: " + "; ".join(reasons))
        # (integer tables, DeepSeek-V4's hash routing, stay as stored)
        return [replace(r, dtype=torch.float32) if r.dtype.is_floating_point else r for r in recipes], []
    if reasons:
        notes.append("NOT exact in the storage dtype (--dtype source): " + "; ".join(reasons))
    return recipes, reasons


def weighted_map_like(amap: AxisMap, gamma: float) -> AxisMap:
    """The same positions, scaled so the squared scales of every source's copies sum to gamma."""
    return AxisMap(amap.index, torch.sqrt(gamma / amap.copies().double()), amap.src_size)


def _config_updates(family: Family, config: Any, dims: Dims, grown: Dims, tied: bool, spec: GrowthSpec,
                    maps: AxisMaps, layers: list[tuple[int, bool]]) -> dict[str, Any]:
    keys = family.config_keys
    updates: dict[str, Any] = {keys["hidden"]: grown.hidden, keys["layers"]: grown.layers}
    if "ffn" in keys:
        updates[keys["ffn"]] = grown.ffn * family.ffn_config_factor
    if grown.lru is not None:
        updates[keys["lru"]] = grown.lru
    if "heads" in keys:
        updates[keys["heads"]] = grown.heads
    if "kv_heads" in keys:
        updates[keys["kv_heads"]] = grown.kv_heads
    if "head_dim" in keys:
        updates[keys["head_dim"]] = grown.head_dim
    if "embed" in keys:
        updates[keys["embed"]] = grown.embed
    if grown.o_groups is not None:
        updates[keys["o_groups"]] = grown.o_groups
    for slot in FFN_SLOTS:
        if getattr(grown, slot) is not None and "*" not in keys[slot]:  # a product follows its factors
            updates[keys[slot]] = getattr(grown, slot)
    if family.ffn_auto_adjust is not None:  # the grown config states the MLP's width itself
        updates[family.ffn_auto_adjust["flag"]] = False
    if grown.ssm_heads is not None:
        updates[keys["ssm_heads"]] = grown.ssm_heads
        if "ssm_inner" in keys and config_value(config, keys["ssm_inner"]) is not None:
            updates[keys["ssm_inner"]] = grown.ssm_heads * grown.ssm_head_dim
    if grown.ssm_channels is not None:  # Mamba1: the rank a config may state as "auto" (of the hidden size) stays
        updates[keys["dt_rank"]] = grown.dt_rank
        if "ssm_inner" in keys and config_value(config, keys["ssm_inner"]) is not None:
            updates[keys["ssm_inner"]] = grown.ssm_channels
    if grown.lin_k_heads is not None:
        updates[keys["lin_k_heads"]], updates[keys["lin_v_heads"]] = grown.lin_k_heads, grown.lin_v_heads
    if tied and spec.tie == "untie":
        updates["tie_word_embeddings"] = False
    if maps.layernorm_scale != 1.0:
        updates[family.norm_eps_key] = config_value(config, family.norm_eps_key) * maps.layernorm_scale**2
    if grown.layers != dims.layers:
        updates.update(_depth_updates(family, config, dims, grown, layers))
    if "ffn" in keys and isinstance(config_value(config, keys["ffn"]), list):  # one width per layer (Gemma 3n)
        updates[keys["ffn"]] = [grown.ffn * family.ffn_config_factor] * grown.layers
    if family.layer_kinds is not None:
        updates.update(write_layer_kinds(family.layer_kinds, config, grown.layer_kinds, dims.layers))
    updates.update(_scaled_config(family, config, dims, grown))
    if grown.global_kv_heads is not None and not family.per_layer_attention.kv_factor:  # as transformers 5 reads them
        rule = family.per_layer_attention
        updates[rule.head_dim], updates[rule.kv_heads] = grown.global_head_dim, grown.global_kv_heads
        own = [i for i, kind in enumerate(grown.layer_kinds) if kind in rule.kinds]
        digits = len(str(max(own)))
        updates["per_layer_config"] = {str(i).zfill(digits): dict(zip(rule.overrides, (
            grown.global_head_dim, grown.global_kv_heads), strict=True)) for i in own}
    return updates


def _renumbered_layer_indices(key: str, value: list[int], layers: list[tuple[int, bool]]) -> list[int]:
    """A per-layer list of layer indices (Mistral Large 4's kv_source_layers) for the grown layer plan: a layer naming
    itself names its grown self, one naming another layer names that layer's nearest earlier grown copy that is not an
    identity block (a stacked copy reads its own stack's), as the source layer it copies does. Refused in one line
    where that copy comes later (an identity block copying a layer whose source is further on)."""
    copies: dict[int, list[int]] = {}
    for index, (src, identity) in enumerate(layers):
        if not identity:
            copies.setdefault(src, []).append(index)
    renumbered = []
    for index, (src, _) in enumerate(layers):
        named = value[src]
        earlier = [c for c in copies[named] if c <= index]
        renumbered.append(index if named == src else earlier[-1] if earlier else copies[named][0])
        if renumbered[-1] > index:
            raise HyperCloneError(f"{key}: grown layer {index}, a copy of layer {src}, would read the keys and values "
                                  f"of grown layer {renumbered[-1]}, a later one; insert new layers after layer "
                                  f"{named} or later (--insert-after)")
    return renumbered


def _depth_updates(family: Family, config: Any, dims: Dims, grown: Dims, layers: list[tuple[int, bool]]
                   ) -> dict[str, Any]:
    """The config values depth growth rewrites: per-layer lists, strings and runs, schedules, the KV-shared count."""
    updates: dict[str, Any] = {}
    for key, value in config.to_dict().items():  # per-layer lists (layer_types, no_rope_layers, ...)
        if (isinstance(value, list) and len(value) == dims.layers and key != "architectures"
                and key not in family.kept_lists and key not in family.layer_index_lists):
            updates[key] = [value[src] for src, _ in layers]
    for key in family.layer_strings:  # one character per layer (GLM-5's index_topk_pattern "FSSF...")
        pattern = config_value(config, key)
        if isinstance(pattern, str) and len(pattern) == dims.layers:
            updates[key] = "".join(pattern[src] for src, _ in layers)
    for key in family.layer_index_lists:  # entries naming layers (kv_source_layers): the grown layers' indices
        value = config_value(config, key)
        if isinstance(value, list) and len(value) == dims.layers:
            updates[key] = _renumbered_layer_indices(key, value, layers)
    for key in family.schedule_keys:  # a period and offset the grown per-layer list need not follow: null
        if config_value(config, key) is not None:
            updates[key] = None
    if family.layer_runs is not None:  # runs [[pattern, repeats], ...]: the grown layers' entries as one run
        entries = [kind for pattern, repeats in config_value(config, family.layer_runs)
                   for _ in range(repeats) for kind in pattern]
        updates[family.layer_runs] = [[[entries[src] for src, _ in layers], 1]]
    if dims.kv_shared:  # identity blocks after the last layer with keys of its own join the KV-shared layers
        updates[family.kv_shared_layers] = grown.kv_shared
    return updates
