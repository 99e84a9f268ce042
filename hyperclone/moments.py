"""AdamW moments carried from a small model over to the model grown from it.

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
import json
from pathlib import Path
from typing import Any

import torch

from hyperclone.errors import HyperCloneError

MOMENTS_FILE = "moments.pt"
RESETS = ("none", "first")  # apply_moments: which carried moment to zero
PROVENANCE_FILE = "hyperclone.json"  # written by hyperclone.grow next to a grown model


def optimizer_moments(model, optimizer) -> dict[str, dict[str, Any]]:
    """{param name: {"step", "exp_avg", "exp_avg_sq"}} of an AdamW optimizer over model's parameters."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        st = optimizer.state.get(p)
        if st and "exp_avg" in st:
            out[name] = {"step": float(st["step"]), "exp_avg": st["exp_avg"].detach().cpu().clone(),
                         "exp_avg_sq": st["exp_avg_sq"].detach().cpu().clone()}
    return out


def load_moments(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / MOMENTS_FILE
    if not path.is_file():
        raise HyperCloneError(f"{folder} has no {MOMENTS_FILE}: train the source run with --save-moments")
    return torch.load(path, map_location="cpu", weights_only=True)


def grown_spec(model_dir: Path) -> Any | None:
    """The GrowthSpec recorded by hyperclone.grow in model_dir, or None for a model that was not grown."""
    from hyperclone.plan import GrowthSpec

    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    raw = dict(info["spec"])
    if raw.get("insert_after") is not None:
        raw["insert_after"] = tuple(raw["insert_after"])
    return GrowthSpec(**raw)


def grow_moments(src_folder: Path, spec: Any, moments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The source model's moments mapped onto the grown model's parameter names and shapes (see module doc)."""
    from hyperclone.grow import grow_tensor, plan_growth

    sym = dataclasses.replace(spec, mode="symmetric", noise_db=None, dtype="float32")  # moments stay float32
    plan, _ = plan_growth(Path(src_folder), sym)
    out: dict[str, dict[str, Any]] = {}
    for recipe in plan.recipes:
        if recipe.kind == "zero" or recipe.src_name not in moments:
            continue
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
        out[recipe.out_name] = {"step": m["step"], "exp_avg": rep(m["exp_avg"].float()) * factor,
                                "exp_avg_sq": rep(m["exp_avg_sq"].float()) * factor**2}
    return out


def moments_for(model_dir: Path, moments_from: Path) -> dict[str, dict[str, Any]]:
    """Moments to start training model_dir with.

    moments_from is a run's final folder holding moments.pt and the model they belong to. If model_dir
    was grown (it has hyperclone.json), the moments are grown with the growth's spec, planned from
    moments_from's model; otherwise they are used as they are (same model shape).
    """
    moments = load_moments(moments_from)
    spec = grown_spec(model_dir)
    return moments if spec is None else grow_moments(Path(moments_from), spec, moments)


def apply_moments(model, optimizer, moments: dict[str, dict[str, Any]], reset: str = "none") -> int:
    """Put moments into a fresh AdamW optimizer's state (shapes must match); `reset` zeroes one of them.

    reset: none | first (exp_avg = 0: forget the small model's direction, keep its per-coordinate step
    sizes; zeroing exp_avg_sq instead would blow up the first steps). Returns how many parameters got moments.
    """
    if reset not in RESETS:
        raise HyperCloneError(f"--moments-reset must be one of {', '.join(RESETS)}, not {reset!r}")
    n = 0
    for name, p in model.named_parameters():
        if name not in moments:
            continue
        m = moments[name]
        if tuple(m["exp_avg"].shape) != tuple(p.shape):
            raise HyperCloneError(f"moments for {name} have shape {tuple(m['exp_avg'].shape)}, the parameter "
                                  f"{tuple(p.shape)}")
        exp_avg = m["exp_avg"].to(p.device, p.dtype)
        exp_avg_sq = m["exp_avg_sq"].to(p.device, p.dtype)
        if reset == "first":
            exp_avg = torch.zeros_like(exp_avg)
        optimizer.state[p] = {"step": torch.tensor(float(m["step"])), "exp_avg": exp_avg.clone(),
                              "exp_avg_sq": exp_avg_sq.clone()}
        n += 1
    if n == 0:
        raise HyperCloneError("none of the carried-over moments matches a parameter of the model")
    return n

