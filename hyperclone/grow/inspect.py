"""`hyperclone inspect`: what a checkpoint is and what the legal growths would give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.plan import GrowthSpec
from hyperclone.grow.planning import apply_experts, default_width, grown_source_config, plan_growth, plan_source
from hyperclone.grow.source import open_source, source_folder


def inspect_checkpoint(src: str | Path, max_width: int = 4, allow_pickle: bool = False) -> dict[str, Any]:
    with source_folder(src) as folder:
        source = open_source(folder, allow_pickle=allow_pickle)
        base = plan_source(source, GrowthSpec(width=1, ffn=1))
        dtypes = sorted({str(i.dtype).removeprefix("torch.") for i in source.weights.infos.values()})
        growths = []
        for width in range(2, max_width + 1):
            try:  # one row per width: a refusal is that row's answer, not the end of the listing
                plan = plan_source(source, GrowthSpec(width=width))
            except HyperCloneError as exc:
                growths.append({"width": width, "ffn": width, "refused": str(exc)})
                continue
            growths.append({"width": width, "ffn": width, "hidden": plan.grown.hidden, "ffn_size": plan.grown.ffn,
                            "heads": plan.grown.heads, "kv_heads": plan.grown.kv_heads,
                            "parameters": plan.grown_parameters,
                            "output_bytes": sum(t.nbytes for t in plan.outputs),
                            "output_dtypes": plan.output_dtypes, "exact": plan.function_preserving,
                            "notes": [n for n in plan.notes if "float32" in n or "exact" in n]})
        summary = base.summary()
        return {"source": str(src), "family": source.family.model_type, "wrapper": base.wrapper,
                "dims": summary["source"], "tied_embeddings": base.tied_source, "parameters": base.source_parameters,
                "dtypes": dtypes, "growths": growths}


def format_inspection(info: dict[str, Any]) -> str:
    dims = info["dims"]
    lines = [
        f"source      {info['source']}",
        f"family      {info['family']}" + (f" (the language model of a {info['wrapper']} checkpoint; its vision "
                                             "tower is kept, its projector grown)" if info.get("wrapper") else ""),
        f"parameters  {info['parameters']:,} ({', '.join(info['dtypes'])})",
        f"dimensions  hidden {dims['hidden']}" + (f", ffn {dims['ffn']}" if dims["ffn"] is not None else "")
        + (f", heads {dims['heads']}, kv heads {dims['kv_heads']}, head_dim {dims['head_dim']}"
           if dims["heads"] is not None else "")
        + f", layers {dims['layers']}, vocab {dims['vocab']}"
        + _moe_dims(dims) + _latent_dims(dims) + _ssm_dims(dims),
        f"tied        {'yes' if info['tied_embeddings'] else 'no'}",
        "",
        "legal growths (any positive integers --width N --ffn M; N = M shown):",
        f"  {'width':>5} {'hidden':>7} {'ffn':>7} {'heads':>5} {'kv':>4} {'parameters':>15} {'output':>10}  dtype",
    ]
    for g in info["growths"]:
        if "refused" in g:
            lines.append(f"  {g['width']:>5} refused: {g['refused']}")
            continue
        lines.append(f"  {g['width']:>5} {g['hidden']:>7} {_or_dash(g['ffn_size']):>7} {_or_dash(g['heads']):>5} "
                     f"{_or_dash(g['kv_heads']):>4} "
                     f"{g['parameters']:>15,} {g['output_bytes'] / 1e9:>8.2f}GB  {','.join(g['output_dtypes'])}"
                     + ("" if g["exact"] else "  NOT exact"))
        lines.extend(f"        note: {note}" for note in g["notes"])
    return "\n".join(lines)


MOE_SLOTS = ("experts", "dense_ffn", "shared_ffn")


def _or_dash(value: Any) -> Any:
    """A size, or "-" for a part the model does not have (heads without attention, ffn without an MLP)."""
    return "-" if value is None else value


def _moe_dims(dims: dict[str, Any]) -> str:
    """A mixture of experts' extra dimensions, for the dimensions line ('' for a dense model)."""
    if not dims.get("experts"):
        return ""
    extra = "".join(f", {slot.replace('_', ' ')} {dims[slot]}" for slot in MOE_SLOTS[1:] if dims.get(slot))
    return f", experts {dims['experts']} (ffn: each expert's width){extra}"


def _latent_dims(dims: dict[str, Any]) -> str:
    """Latent attention's widths (DeepSeek MLA; kept by growth, heads copied), for the dimensions line."""
    if not dims.get("kv_lora"):
        return ""
    q_lora = f"q LoRA {dims['q_lora']}, " if dims.get("q_lora") else ""
    indexer = (f", sparse-attention indexer {dims['index_heads']} heads of {dims['index_head_dim']} (kept)"
               if dims.get("index_heads") else "")
    return (f", latent attention: {q_lora}kv LoRA {dims['kv_lora']}, rope {dims['qk_rope']} per head and shared key, "
            f"value {dims['v_head_dim']} per head (head_dim: the no-rope part){indexer}")


def _ssm_dims(dims: dict[str, Any]) -> str:
    """A hybrid's Mamba2 mixers and which kind each block is, for the dimensions line ('' for others)."""
    text = ""
    if dims.get("ssm_channels"):
        text += (f", Mamba inner channels {dims['ssm_channels']} (state {dims['ssm_state']}, dt rank "
                 f"{dims['dt_rank']}, conv {dims['conv_kernel']})")
    if dims.get("ssm_heads"):
        text += (f", Mamba2 heads {dims['ssm_heads']} x {dims['ssm_head_dim']} in {dims['ssm_groups']} groups "
                 f"(state {dims['ssm_state']}, conv {dims['conv_kernel']})")
    if dims.get("lin_k_heads"):
        text += (f", gated DeltaNet {dims['lin_k_heads']} key heads x {dims['lin_k_dim']}, {dims['lin_v_heads']} "
                 f"value heads x {dims['lin_v_dim']} (conv {dims['conv_kernel']})")
    if dims.get("layer_kinds") and len(set(dims["layer_kinds"])) > 1:
        text += f", layer kinds {' '.join(dims['layer_kinds'])}"
    return text


def explain_plan(src: str | Path, width: int | None = None, ffn: int | None = None, to: str | Path | None = None,
                 allow_pickle: bool = False, tie: str = "keep", dtype: str = "auto", experts: int | None = None,
                 top_k: int | None = None, **targets: Any) -> dict[str, Any]:
    """The growth plan for a target, as `grow` would execute it; raises HyperCloneError if unreachable.
    `experts`: upcycle a dense source, or split a mixture's experts (see hyperclone.grow.planning.apply_experts)."""
    spec = GrowthSpec(width=default_width(width, to, targets), ffn=ffn, tie=tie, dtype=dtype, **targets)
    spec.validate()
    with source_folder(src) as folder:
        plan, source = plan_growth(folder, spec, allow_pickle, to)
    moe_key, moe = "upcycled", None
    if experts is not None:
        _, moe_key, moe = apply_experts(plan, grown_source_config(source, plan), experts, top_k, source)
    summary = plan.summary()
    summary["upcycled"] = summary["segmented"] = None
    summary[moe_key] = moe
    maps_note = []
    if plan.grown.hidden % plan.source.hidden:
        maps_note.append("hidden size is not a multiple: " + (
            "copies scaled so each norm sees the same mean square (RMSNorm)" if plan.family.norm == "rmsnorm"
            else "whole copies plus positions holding the mean, LayerNorm eps and weights rescaled"))
    if plan.source.heads is not None and plan.grown.heads % plan.source.heads:
        maps_note.append("heads are copied unevenly; the output projection divides by each head's copy count")
    if plan.grown.head_dim != plan.source.head_dim:
        maps_note.append("head_dim grows: q and k scaled so q.k absorbs the change of 1/sqrt(head_dim)")
    if moe_key == "segmented":
        maps_note.append(f"mixture of experts, split: every expert's neurons cut into {moe['segments_per_expert']} "
                         "segments, each a new expert with its expert's router row; softmax gives each segment 1/m "
                         "of its expert's probability, the down projections multiply by m, so the function is "
                         "unchanged (except on exact router ties between experts: hyperclone.grow.segment)")
    elif plan.source.experts:
        maps_note.append(f"mixture of experts: the {plan.source.experts} experts are kept and each grows like a dense "
                         "MLP; the router reads the residual stream like any input projection, so its logits and the "
                         "routing are unchanged")
    if plan.source.ssm_heads:
        maps_note.append(_ssm_note(plan.source, plan.grown))
    if plan.source.ssm_channels:
        maps_note.append(_mamba_note(plan.source, plan.grown))
    if plan.source.lin_k_heads:
        maps_note.append(_linear_note(plan.source, plan.grown))
    if any("q_gate" in axis for rule in plan.family.tensors for axis in rule.axes):
        maps_note.append("gated attention: each query head's output gate is copied with its head")
    if plan.source.lru is not None:
        maps_note.append(_rglru_note(plan.source, plan.grown))
    if any("conv_inner" in axis for rule in plan.family.tensors for axis in rule.axes):
        maps_note.append("short convolutions: their channels (as wide as the hidden size) are plain copies, so the "
                         "gates B·x and C·conv(·) stay exact per channel; out_proj divides by each channel's copies")
    if source.wrapper is not None:
        maps_note.append(f"multimodal ({source.wrapper.model_type}): the vision tower is copied as stored; the "
                         "projector's output that writes the residual stream takes its map, so image tokens enter "
                         "as copies too")
    summary["constructions"] = maps_note
    summary["config_updates"] = _config_changes(source, plan)
    return summary


def _config_changes(source: Any, plan: Any) -> dict[str, Any]:
    """The keys the grown config.json changes, a multimodal one's with their place in it (text_config.hidden_size)."""
    if source.wrapper is None:
        return plan.config_updates
    before, after = source.full_config, grown_source_config(source, plan)
    return {f"{outer}.{key}" if outer else key: value
            for outer, old, new in [("", before, after)] + [(k, before.get(k), v) for k, v in after.items()
                                                           if isinstance(v, dict)]
            for key, value in new.items()
            if not isinstance(value, dict) and (not isinstance(old, dict) or old.get(key) != value)}


def _ssm_note(source: Any, grown: Any) -> str:
    """How the Mamba2 mixers of a hybrid grow (hyperclone.grow.plan._mamba2_maps)."""
    if grown.ssm_heads == source.ssm_heads:
        return "Mamba2 mixers keep their heads: in_proj reads the grown residual stream, out_proj writes it"
    return (f"Mamba2 mixers: {source.ssm_heads} -> {grown.ssm_heads} heads, each copied with its slices of in_proj "
            f"(z, x, dt), its conv1d channels, dt_bias, A_log and D, ordered group by group so every copy reads "
            f"its source head's B/C group; the {source.ssm_groups} groups, d_state and the conv kernel are kept; "
            "out_proj divides by each head's copy count; a gated RMSNorm sees each group's mean square unchanged")


def _mamba_note(source: Any, grown: Any) -> str:
    """How the Mamba (Mamba1) mixers grow (hyperclone.grow.plan._mamba1_maps)."""
    return (f"Mamba mixers: {source.ssm_channels} -> {grown.ssm_channels} inner channels, each a plain copy with its "
            "x and z rows of in_proj, its conv1d filter, dt_proj row and bias, A_log row and D (every channel scans on "
            f"its own); the time step's rank {source.dt_rank} and the state {source.ssm_state} are kept; x_proj and "
            "out_proj divide by each channel's copies")


def _linear_note(source: Any, grown: Any) -> str:
    """How the gated DeltaNet mixers grow (hyperclone.grow.linear_attention)."""
    return (f"gated DeltaNet: {source.lin_k_heads}/{source.lin_v_heads} -> {grown.lin_k_heads}/{grown.lin_v_heads} "
            "key/value heads, each key head copied with its query and key slices and conv channels, each value head "
            "with its value and z slices, conv channels, a/b rows, A_log and dt_bias, inside a copy of its source key "
            "head's group; the recurrence and the gated norm are per head; out_proj divides by each head's copies")


def _rglru_note(source: Any, grown: Any) -> str:
    """How RecurrentGemma's RG-LRU grows (hyperclone.grow.plan._rglru_maps)."""
    return (f"RG-LRU: {source.lru} -> {grown.lru} channels, whole blocks of {source.lru // source.heads} copied with "
            "the heads, each with its input and recurrence gate matrices, conv_1d channels and a (every channel recurs "
            "on its own); linear_out divides by each channel's copies")


def format_plan(info: dict[str, Any]) -> str:
    src, new = info["source"], info["grown"]
    family = f"{info['family']} (the language model of a {info['wrapper']} checkpoint)" if info.get("wrapper") else (
        info["family"])
    lines = [f"family      {family}", f"{'dimension':<12}{'source':>10}{'grown':>10}"]
    for key in ("hidden", "ffn", "heads", "kv_heads", "head_dim", "layers", *MOE_SLOTS, "ssm_heads", "ssm_channels",
                "lin_k_heads", "lin_v_heads", "lru"):
        if src.get(key) is not None:
            lines.append(f"{key:<12}{src[key]:>10}{new[key]:>10}")
    lines.append(f"parameters  {info['source_parameters']:,} -> {info['grown_parameters']:,} "
                 f"({info['output_bytes'] / 1e9:.2f} GB written)")
    if info["function_preserving"]:
        exact = "yes"
    elif info["inexact_reasons"]:
        exact = "no (" + "; ".join(info["inexact_reasons"]) + ")"
    else:
        exact = "no (stacked layers)"
    lines.append(f"exact       {exact}")
    lines.append(f"dtype       {', '.join(info['output_dtypes'])}")
    if info.get("upcycled"):
        moe = info["upcycled"]
        lines.append(f"experts     {moe['experts']} per MLP ({moe['target']}, top-{moe['top_k']}, renormalised): "
                     f"{moe['total_parameters']:,} parameters, {moe['active_parameters_per_token']:,} active per token")
    if info.get("segmented"):
        seg = info["segmented"]
        lines.append(f"experts     {seg['experts_from']} -> {seg['experts']}: each split into "
                     f"{seg['segments_per_expert']} segments of width {seg['expert_width']}, "
                     f"top-{seg['top_k_from']} -> top-{seg['top_k']}, down projections "
                     f"x{seg['down_projection_factor']}: {seg['total_parameters']:,} parameters, "
                     f"{seg['active_parameters_per_token']:,} active per token")
    if info["grown"]["layers"] != info["source"]["layers"]:
        layer_text = ", ".join(f"{src_layer}{'*' if identity else ''}" for src_layer, identity in info["layers"])
        lines.append(f"layers      source of each new layer (* identity block): {layer_text}")
    for note in info["constructions"] + info["notes"]:
        lines.append(f"note        {note}")
    lines.append(f"config      {json.dumps(info['config_updates'])}")
    return "\n".join(lines)
