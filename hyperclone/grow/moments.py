"""AdamW moments of a small model grown for the model grown from it (`hyperclone grow --moments-from RUN/final`).

A run saves its final moments keyed by parameter name (``final/moments.pt``, see
``TrainConfig.save_moments``). ``grow_moments`` maps them onto the grown model with the same
plan as the weights, but with the rule gradients follow, not the rule weights follow:

With even copies and symmetric growth every copy of a source element is interchangeable, so at the
grown point all N copies of an element get the same gradient g'. Moving the small parameter θ by δ
moves every copy by s·δ (s: the copy's weight multiplier, e.g. 1/n for a column that reads a
copied input), hence G = N·s·g' and g' = G / (N·s). So the first moment grows as m / (N·s) and
the second as v / (N·s)², per element, with N = grown elements per source element. Elements with
s = 0 (identity layers, diagonal blocks) get zero moments. The rule is exact for the symmetric
construction (tests/test_moments.py checks it against autograd); for noisy and diagonal growth it is
the symmetric point's moments, a close approximation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import MOMENTS_FILE, load_moments, read_provenance_spec
from hyperclone.grow.planning import plan_growth
from hyperclone.grow.tensor_rule import grow_tensor
from hyperclone.grow.wrapper import parameter_layout, relayout


def grown_spec(model_dir: Path) -> Any | None:
    """The GrowthSpec recorded in model_dir's hyperclone.json, or None for a model that was not grown."""
    from hyperclone.grow.plan import spec_from_record

    raw = read_provenance_spec(model_dir)
    return None if raw is None else spec_from_record(raw)


def grow_moments(src_folder: Path, spec: Any, moments: dict[str, dict[str, Any]],
                 to: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The source model's moments mapped onto the grown model's parameter names and shapes (see module doc);
    `to`: the target config the weights grow to (grow --to)."""
    sym = dataclasses.replace(spec, mode="symmetric", noise_db=None, dtype="float32")  # moments stay float32
    plan, source = plan_growth(Path(src_folder), sym, to=to)
    stored_name, moment_name = _namings(source, list(moments))
    moments = _by_stored_name(plan, source, moments, stored_name)
    out: dict[str, dict[str, Any]] = {}
    for recipe in plan.recipes:
        if recipe.kind in ("zero", "fill") or recipe.src_name not in moments:  # an identity block's zeroed writers
            continue  # and its gains set to 1 (layer_scalar) start with fresh optimizer state
        m = moments[recipe.src_name]
        src_shape = m["exp_avg"].shape
        ones = torch.ones(src_shape, dtype=torch.float32)
        if recipe.kind == "norm":
            mult = torch.full(recipe.out_shape, float(recipe.scale))
            def rep(t: torch.Tensor, r=recipe) -> torch.Tensor:
                return grow_tensor(dataclasses.replace(r, scale=1.0, norm_offset=0.0), t, sym)
        else:
            mult = grow_tensor(recipe, ones, sym).float()
            def rep(t: torch.Tensor, r=recipe, s=mult) -> torch.Tensor:
                grown = grow_tensor(r, t.float(), sym).float()
                return torch.where(s != 0, grown / torch.where(s != 0, s, 1.0), 0.0)
        copies = mult.numel() / ones.numel()
        if copies != round(copies):
            raise HyperCloneError(f"{recipe.src_name}: carrying moments over needs whole-number copies "
                                  f"({tuple(src_shape)} -> {recipe.out_shape})")
        factor = torch.where(mult != 0, 1.0 / (copies * torch.where(mult != 0, mult, 1.0)), 0.0)
        out[moment_name(recipe.out_name)] = {"step": m["step"], "exp_avg": rep(m["exp_avg"].float()) * factor,
                                             "exp_avg_sq": rep(m["exp_avg_sq"].float()) * factor**2}
    return out


def _by_stored_name(plan: Any, source: Any, moments: dict[str, dict[str, Any]],
                    stored_name: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """The moments keyed by the source's stored tensor names, each checked against its tensor: a moment that names
    no tensor growth reads, or has another shape, is refused in one line quoting the run's name for it, so that no
    moment is dropped without a word (the grown run would start that tensor's AdamW state afresh)."""
    read = {recipe.src_name for recipe in plan.recipes if recipe.kind != "zero"}
    out = {}
    for name, moment in moments.items():
        stored = stored_name(name)
        if stored not in read:
            raise HyperCloneError(f"the moments name {name}, which is no tensor of the source as its checkpoint "
                                  "stores it (transformers holds some families' tensors otherwise, e.g. experts "
                                  "fused into one; carrying moments over needs the run's and the checkpoint's "
                                  "tensors to be the same)")
        shape, wanted = tuple(moment["exp_avg"].shape), tuple(source.weights.infos[stored].shape)
        if shape != wanted:
            raise HyperCloneError(f"the moments of {name} have shape {list(shape)}, the source's tensor "
                                  f"{list(wanted)}: they are another model's moments")
        out[stored] = moment
    return out


def _namings(source: Any, names: list[str]) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """(moment name -> stored name, stored name -> moment name). A run keys its moments by the class's parameter
    names; a multimodal checkpoint may store its language model in another layout (transformers 5 writes LLaVA's
    model.language_model.* as language_model.model.*), so those are renamed through the wrapper's table; the vision
    tower and projector learn nothing in a run (hyperclone.train.model_class) and have no moments to grow."""
    wrapped = source.wrapped
    if wrapped is None:
        return (lambda name: name), (lambda name: name)
    layout = parameter_layout(source.wrapper, names)

    def stored(name: str) -> str:  # a name no layout maps is left as it is, and refused by _by_stored_name
        return relayout(name, layout, wrapped.layout) or name

    def moment(name: str) -> str:
        return relayout(name, wrapped.layout, layout) or name

    return stored, moment


def grown_run_moments(run_final: Path, spec: Any, to: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The moments saved in a small model's run (run_final/moments.pt, beside that model) grown with `spec` (for
    grow --moments-from: computed before the weights are written, so a refusal leaves nothing behind)."""
    return grow_moments(Path(run_final), spec, load_moments(run_final), to)


def write_moments(moments: dict[str, dict[str, Any]], destination: Path) -> Path:
    """destination/moments.pt; returns the file."""
    path = Path(destination) / MOMENTS_FILE
    torch.save(moments, path)
    return path
