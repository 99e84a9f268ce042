"""Planning a growth beyond the per-tensor recipes of plan.py: opening the source and planning it (`plan_growth`,
with a target config read from --to), the grown config, dense MLPs turned into experts, the copy layout that
copies.json records, hyperclone.json's provenance, and --width's default."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hyperclone import __version__
from hyperclone.common.copies import CopyAxis, CopyLayout
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import AxisMap
from hyperclone.grow.families import emitted_axis, has_config_key, set_config_value
from hyperclone.grow.plan import (
    GrowthSpec,
    Plan,
    Recipe,
    make_plan,
    refuse_changed_kept_sizes,
    refuse_other_target_groups,
    spec_with_target_config,
)
from hyperclone.grow.source import Source, open_source
from hyperclone.grow.wrapper import (
    check_links,
    family_recipes,
    leading_insert_after,
    nest_config,
    stored_recipes,
    text_raw_config,
    text_section,
    wrapper_recipes,
)


def grown_config(raw_config: dict[str, Any], plan: Plan) -> dict[str, Any]:
    config = dict(raw_config)
    for key, value in plan.config_updates.items():  # (a key with dots: in a nested config, DBRX's attn_config)
        set_config_value(config, key, value)
    for alias, key in plan.family.config_aliases:  # the class reads the alias over the key (LFM2's releases)
        if has_config_key(config, alias) and key in plan.config_updates:
            set_config_value(config, alias, plan.config_updates[key])
    config.pop("quantization_config", None)
    if "dtype" in plan.config_updates:  # transformers 4's name for it would contradict it
        config.pop("torch_dtype", None)
    return config


def grown_source_config(source: Source, plan: Plan) -> dict[str, Any]:
    """The grown config.json: a multimodal source's with its language model's growth in its text config."""
    if source.wrapper is None:
        return grown_config(source.raw_config, plan)
    text = grown_config(text_section(source.wrapper, source.full_config), plan)
    return nest_config(source.wrapper, source.full_config, text, plan.config_updates, plan.grown.hidden,
                       plan.source.hidden)


def plan_source(source: Source, spec: GrowthSpec) -> Plan:
    """make_plan for an opened source; a multimodal one's language model under the family's names, its vision tower
    and projector added, and every recipe named as the checkpoint names it (hyperclone.grow.wrapper)."""
    wrapped = source.wrapped
    if wrapped is None:
        return source.planned(lambda config: make_plan(source.family, config, source.family_infos, spec))

    def extra(hidden: AxisMap, ffn: AxisMap | None) -> list[Recipe]:
        return wrapper_recipes(wrapped, source.weights.infos, hidden, ffn)

    plan = source.planned(lambda config: make_plan(source.family, config, source.family_infos, spec, extra))
    after = leading_insert_after(source.wrapper, source.full_config, plan.layers, spec.insert_after is not None)
    if after is not None and spec.depth_mode == "identity":  # new layers after those the vision tower writes after
        spec = replace(spec, insert_after=after)
        plan = source.planned(lambda config: make_plan(source.family, config, source.family_infos, spec, extra))
    check_links(source.wrapper, source.full_config, plan.source.hidden)
    kept = set(wrapped.kept)  # copied as stored, in their own dtype even where the plan writes float32
    plan.recipes = [replace(r, dtype=source.weights.infos[r.src_name].dtype) if r.src_name in kept else r
                    for r in stored_recipes(wrapped, plan.recipes, set(wrapped.text))]
    plan.notes = [wrapped.stored_names_in(note) for note in plan.notes]
    plan.storage_inexact = [wrapped.stored_names_in(reason) for reason in plan.storage_inexact]
    plan.wrapper, plan.stored_name = source.wrapper.model_type, wrapped.stored_name
    return plan


def provenance(src: str | Path, plan: Plan, grow_s: float) -> dict[str, Any]:
    return {"hyperclone_version": __version__, "source_path": str(src),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "grow_s": round(grow_s, 3), **plan.summary()}


def apply_upcycling(plan: Plan, dense_config: dict[str, Any], experts: int, top_k: int
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn the plan's MLPs into experts (in place) and the grown config into the MoE family's; returns the
    config and the MoE summary for hyperclone.json."""
    from hyperclone.grow import upcycle
    from hyperclone.grow.axis_map import tile_map

    target = upcycle.check({**dense_config, "model_type": plan.family.model_type}, experts, top_k)
    dense_parameters = plan.grown_parameters
    per_expert = sum(math.prod(r.out_shape) for r in plan.recipes if upcycle.MLP.match(r.out_name))
    plan.recipes = upcycle.upcycle_recipes(plan.recipes, experts, target,
                                           tile_map(plan.grown.hidden, plan.grown.hidden))
    total = plan.grown_parameters
    summary = {"target": target, "experts": experts, "top_k": top_k, "router_std": upcycle.ROUTER_STD,
               "renormalised_top_k": True, "dense_parameters": dense_parameters, "total_parameters": total,
               "active_parameters_per_token": total - (experts - top_k) * per_expert}
    plan.notes.append(f"MLPs upcycled into {experts} experts ({target}, top-{top_k}, renormalised): "
                      f"{total:,} parameters, {summary['active_parameters_per_token']:,} active per token")
    return upcycle.moe_config(dense_config, target, experts, top_k), summary


def split_wrapped_experts(source: Source, plan: Plan, experts: int, top_k: int | None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """--experts on a multimodal checkpoint whose language model is a mixture of experts: its experts split as its
    family's (hyperclone.grow.segment), on the recipes under the family's names, then named as the checkpoint names
    them; the vision tower and projector as planned, the kept tensors in their own dtype. Returns the grown
    multimodal config (the text config's expert count, expert width and top-k) and the summary."""
    from hyperclone.grow.segment import ROUTING, segment_plan

    wrapper, wrapped, family = source.wrapper, source.wrapped, plan.family.model_type
    if not plan.source.experts:
        raise HyperCloneError(f"--experts on a {wrapper.model_type} checkpoint with a dense language model ({family}): "
                              "upcycling into experts is not supported for multimodal checkpoints yet")
    if family not in ROUTING:
        raise HyperCloneError(f"--experts on a {wrapper.model_type} checkpoint: splitting the experts of its language "
                              f"model ({family}) is not described in hyperclone.grow.segment; grow without --experts")
    notes, inexact = len(plan.notes), len(plan.storage_inexact)
    text = grown_config(text_section(wrapper, source.full_config), plan)
    plan.recipes = family_recipes(wrapped, plan.recipes)
    _, summary = segment_plan(plan, text, experts, top_k)
    kept = set(wrapped.kept)  # copied as stored, in their own dtype even where the split writes float32
    plan.recipes = [replace(r, dtype=source.weights.infos[r.src_name].dtype) if r.src_name in kept else r
                    for r in stored_recipes(wrapped, plan.recipes, set(wrapped.text))]
    plan.notes[notes:] = [wrapped.stored_names_in(note) for note in plan.notes[notes:]]
    plan.storage_inexact[inexact:] = [wrapped.stored_names_in(reason) for reason in plan.storage_inexact[inexact:]]
    return grown_source_config(source, plan), summary


def apply_experts(plan: Plan, config: dict[str, Any], experts: int, top_k: int | None,
                  source: Source | None = None) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """--experts: a dense source is upcycled into that many experts (top_k: --top-k, default DEFAULT_TOP_K); a
    mixture of experts has each of its experts split into experts / E segments (hyperclone.grow.segment; through a
    multimodal `source`'s wrapper: split_wrapped_experts). Returns the grown config, the hyperclone.json key of the
    summary ("upcycled" or "segmented") and the summary."""
    if source is not None and source.wrapper is not None:
        config, summary = split_wrapped_experts(source, plan, experts, top_k)
        return config, "segmented", summary
    if plan.source.experts:
        from hyperclone.grow.segment import segment_plan

        config, summary = segment_plan(plan, config, experts, top_k)
        return config, "segmented", summary
    from hyperclone.grow.options import DEFAULT_TOP_K

    config, summary = apply_upcycling(plan, config, experts, DEFAULT_TOP_K if top_k is None else top_k)
    return config, "upcycled", summary


def copy_layout(plan: Plan) -> CopyLayout:
    """For copies.json: every grown tensor of rank >= 2 with the axis on which it holds copies of source units (a
    linear layer's emitted axis when that one holds copies, else the first that does) and the source position of
    every position on that axis; the residual stream's map (the hidden axis of the token embedding, when it is the
    hidden size); and every grown tensor's map per axis."""
    axes = []
    maps = {r.out_name: tuple(m.index for m in r.maps) for r in plan.recipes if r.kind not in ("zero", "router")}
    for recipe in plan.recipes:
        if recipe.kind == "zero" or len(recipe.maps) < 2:
            continue
        # a linear layer's copied units are its rows: its emitted axis first (GPT-2's Conv1D [in, out] and GPT-OSS's
        # experts [experts, in, out] emit their last axis), then the others in order
        order = list(range(len(recipe.maps)))
        if recipe.contract is not None:
            emitted = emitted_axis(len(recipe.maps), recipe.contract)
            order = [emitted] + [axis for axis in order if axis != emitted]
        for axis in order:
            amap = recipe.maps[axis]
            if amap.size > amap.src_size and int(amap.copies().max()) >= 2:
                axes.append(CopyAxis(recipe.out_name, axis, amap.index))
                break
    embeddings = {plan.stored_name(rule.name) for rule in plan.family.tensors
                  if rule.role == "embedding" and not rule.per_layer}
    residual = next((r.maps[-1].index for r in plan.recipes if r.out_name in embeddings
                     and r.maps[-1].size == plan.grown.hidden), None)
    return CopyLayout(axes, residual, maps)


def read_target_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        target = json.loads(path.read_text())
    except FileNotFoundError:
        raise HyperCloneError(f"--to: no such file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HyperCloneError(f"--to: {path} is not valid JSON ({exc})") from None
    if not isinstance(target, dict):
        raise HyperCloneError(f"--to: {path} is not a config object")
    return target


def plan_growth(src: Path, spec: GrowthSpec, allow_pickle: bool = False,
                to: str | Path | None = None) -> tuple[Plan, Any]:
    source = open_source(src, allow_pickle=allow_pickle)
    target = None if to is None else read_target_config(to)
    if target is not None:
        if source.wrapper is not None and target.get("model_type") == source.wrapper.model_type:
            target = text_raw_config(source.wrapper, target)  # a multimodal target: its language model's sizes
        refuse_changed_kept_sizes(source.family, source.raw_config, target)
        spec = spec_with_target_config(spec, source.family, target)
    plan = plan_source(source, spec)
    if target is not None:
        refuse_other_target_groups(plan, target)
    return plan, source


def default_width(width: int | None, to: str | Path | None, targets: dict[str, Any]) -> int:
    """--width defaults to 2, or to 1 when a target size or config is given (so --layers 32 only deepens)."""
    if width is not None:
        return width
    sizes = ("hidden_size", "ffn_size", "heads", "kv_heads", "head_dim", "layers")
    return 1 if to is not None or any(targets.get(k) is not None for k in sizes) else 2
