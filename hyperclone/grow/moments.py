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

A run keys its moments by the class's in-memory names, which for some families are not the checkpoint's (the
family table's ``in_memory``: transformers 5 fuses a mixture of experts' per-expert gate and up projections into
one ``mlp.experts.gate_up_proj`` [experts, 2 x ffn, hidden], renames Mixtral's router). Such moments are split into
the checkpoint's tensors, grown like them, and fused back under the grown model's in-memory names (a fused tensor
some of whose pieces get no moments, as an identity block's zeroed writers, starts with fresh state as a whole).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
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
    moments, fused = _split_fused(_fusions(plan, moment_name, [r.src_name for r in plan.recipes]), moments,
                                  lambda name: tuple(source.weights.infos[name].shape))
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
    grown = _fusions(plan, moment_name, [r.out_name for r in plan.recipes])
    return _fuse({target: f for target, f in grown.items() if f.template in fused}, out)


@dataclasses.dataclass
class _Fusion:
    """One in-memory tensor (a run's name for it) made of checkpoint tensors: pieces[i] = (section, expert or None,
    the run's name for the checkpoint tensor, its stored name); `template`: the family table's in_memory name."""

    template: str
    sections: int
    pieces: list[tuple[int, int | None, str, str]] = dataclasses.field(default_factory=list)

    @property
    def stacked(self) -> bool:
        return self.pieces[0][1] is not None

    def section_pieces(self) -> list[list[tuple[int, int | None, str, str]]]:
        """The pieces by section, each section's in expert order."""
        return [sorted((p for p in self.pieces if p[0] == s), key=lambda p: p[1] or 0) for s in range(self.sections)]


def _fusions(plan: Any, moment_name: Callable[[str], str], stored: Iterable[str]) -> dict[str, _Fusion]:
    """The in-memory tensors (by the run's names) that the family table's in_memory makes of the `stored` tensors,
    a tensor held under its own name left out."""
    rules = [(_pattern(plan.stored_name(rule.name)), rule) for rule in plan.family.tensors if rule.in_memory]
    out: dict[str, _Fusion] = {}
    for name in dict.fromkeys(stored):  # (a source tensor that several grown ones read, once)
        for pattern, rule in rules:
            match = pattern.match(name)
            if match is None:
                continue
            template, section, sections = rule.in_memory
            groups = match.groupdict()
            target = moment_name(plan.stored_name(template.replace("{layer}", groups.get("layer", ""))))
            expert = int(groups["expert"]) if "expert" in groups else None
            if target != moment_name(name):
                out.setdefault(target, _Fusion(template, sections)).pieces.append(
                    (section, expert, moment_name(name), name))
            break
    return out


def _pattern(template: str) -> re.Pattern[str]:
    """A table name's pattern, {layer}, {expert} and {adapter} as named groups."""
    return re.compile("^" + re.sub(r"\\\{(layer|expert|adapter)\\\}", r"(?P<\1>\\d+)", re.escape(template)) + "$")


def _split_fused(fusions: dict[str, _Fusion], moments: dict[str, dict[str, Any]],
                 shape: Callable[[str], tuple[int, ...]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The moments with those of in-memory tensors split into their checkpoint tensors' (keyed by the run's names
    for them), and the in_memory templates split; a fused moment of another shape than its pieces make is refused."""
    out, split = dict(moments), set()
    for target, fusion in fusions.items():
        if target not in moments:
            continue
        moment, by_section = out.pop(target), fusion.section_pieces()
        if any(not pieces for pieces in by_section):
            raise HyperCloneError(f"the moments of {target} cannot be split: the checkpoint lacks some of its sections")
        sizes = [shape(pieces[0][3])[0] for pieces in by_section]
        rest = shape(by_section[0][0][3])[1:]
        wanted = (len(by_section[0]), sum(sizes), *rest) if fusion.stacked else (sum(sizes), *rest)
        if tuple(moment["exp_avg"].shape) != wanted:
            raise HyperCloneError(f"the moments of {target} have shape {list(moment['exp_avg'].shape)}, not the "
                                  f"{list(wanted)} its checkpoint tensors make: this layout cannot be carried over")
        parts = {key: moment[key].split(sizes, dim=1 if fusion.stacked else 0) for key in ("exp_avg", "exp_avg_sq")}
        for section, pieces in enumerate(by_section):
            for index, (_, _, name, _) in enumerate(pieces):
                out[name] = {"step": moment["step"], **{key: (part[section][index] if fusion.stacked
                                                              else part[section]).clone()
                                                        for key, part in parts.items()}}
        split.add(fusion.template)
    return out, split


def _fuse(fusions: dict[str, _Fusion], moments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The grown moments with the checkpoint tensors' joined under their in-memory names, as transformers joins the
    weights (experts stacked, then sections along axis 1; unstacked sections along axis 0)."""
    out = dict(moments)
    for target, fusion in fusions.items():
        names = [p[2] for p in fusion.pieces]
        if not all(name in out for name in names):  # some pieces start afresh (an identity block's zeroed writers):
            for name in names:  # so does the whole in-memory tensor
                out.pop(name, None)
            continue
        pieces = {p[2]: out.pop(p[2]) for p in fusion.pieces}
        joined = {}
        for key in ("exp_avg", "exp_avg_sq"):
            sections = [[pieces[p[2]][key] for p in section] for section in fusion.section_pieces()]
            parts = [torch.stack(s) if fusion.stacked else s[0] for s in sections]
            joined[key] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1 if fusion.stacked else 0)
        out[target] = {"step": pieces[names[0]]["step"], **joined}
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
                                  "stores it, nor one the family table's in_memory makes of them (carrying moments "
                                  "over needs the run's tensors to be the checkpoint's or fused from them)")
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
