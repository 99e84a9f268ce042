"""Multimodal checkpoints whose language model is a supported family (Gemma 3 4B and larger, Mistral 3, Qwen3.5):
the language model grows as its family does, the vision tower is copied unchanged, and the projector that writes
image features into the language model's residual stream grows with the residual stream's map, so that image tokens,
like text tokens, enter the grown model as the copies of what entered the source.

Architecture knowledge as data (wrappers.json), per multimodal model_type:
``text_config``: the config key of the language model's config; ``text_family``: its family when that config does
not name one; ``layouts``: the ways checkpoints name the language model's tensors, each a map from stored prefix to
the family table's (the releases' `language_model.model.` and `language_model.lm_head.`, transformers 5's in-memory
`model.language_model.` and `lm_head.`): a checkpoint uses the first under which all its other tensors are named,
and the grown one keeps it; ``kept``: regexes of tensors copied unchanged (the vision tower, the projector's norms);
``projector``: the tensors that depend on the language model's width, each with its axes, one of ``hidden`` (the
residual stream: grown with its map), ``inner`` (a projector's own width that its config ties to the hidden size:
grown by plain copies, divided among them where it is read) and ``kept``, and ``contract``, the axis a matrix
reads (as in the family tables); a tensor that matches a projector rule is the projector's even where a kept
pattern covers it too. Every stored tensor must be one of the three, or the checkpoint is refused.
``tied_default``: the multimodal config class's default of tie_word_embeddings, which the model ties by (never the
text config's own value). ``hidden_links``: dotted config keys that state the language model's hidden size
elsewhere (Qwen3.5's vision_config.out_hidden_size, the width its vision merger writes): they must equal it, and
take the grown size. ``like``: another model type whose fields an entry takes (Qwen3.5-MoE's are Qwen3.5's but for
its text family).

The grown config is the source's with the language model's growth written into its text config;
tie_word_embeddings is the top-level config's (the multimodal model class ties by it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import AxisMap, tile_map
from hyperclone.grow.checkpoint_io import TensorInfo
from hyperclone.grow.plan import Recipe

PROJECTOR_AXES = ("hidden", "inner", "kept")
TOP_LEVEL_KEYS = ("tie_word_embeddings", "dtype")  # grown config keys the multimodal config holds at its top too


@dataclass(frozen=True)
class ProjectorRule:
    pattern: str
    axes: tuple[str, ...]
    contract: int | None


@dataclass(frozen=True)
class Wrapper:
    model_type: str
    text_config: str
    text_family: str
    tied_default: bool
    layouts: tuple[tuple[tuple[str, str], ...], ...]  # per layout: (stored prefix, family prefix)
    kept: tuple[str, ...]
    projector: tuple[ProjectorRule, ...]
    hidden_links: tuple[str, ...] = ()

    def is_kept(self, stored: str) -> bool:
        return any(re.search(pattern, stored) for pattern in self.kept)

    def projector_rule(self, stored: str) -> ProjectorRule | None:
        return next((rule for rule in self.projector if re.search(rule.pattern, stored)), None)


@dataclass(frozen=True)
class WrappedTensors:
    """A multimodal checkpoint's tensors sorted: the language model's under the family's names (family -> stored)
    in the layout the checkpoint uses, the kept ones and the projector's (stored names)."""

    layout: tuple[tuple[str, str], ...]
    text: dict[str, str]
    kept: tuple[str, ...]
    projector: tuple[tuple[str, ProjectorRule], ...]

    def text_infos(self, infos: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
        return {name: infos[stored] for name, stored in self.text.items()}

    def stored_name(self, name: str) -> str:
        """A family table name (a grown tensor's included: new layers, an untied output) in this layout."""
        for stored_prefix, family_prefix in self.layout:
            if name.startswith(family_prefix):
                return stored_prefix + name.removeprefix(family_prefix)
        raise HyperCloneError(f"{name}: no prefix of the checkpoint's layout names it")

    def stored_names_in(self, text: str) -> str:
        """A plan note that names a language-model tensor ("e.g. model.layers.0...") with the checkpoint's name."""
        others = set(self.kept) | {name for name, _ in self.projector}

        def rename(match: re.Match) -> str:
            name = match.group(0)
            ours = name not in others and any(name.startswith(prefix) for _, prefix in self.layout)
            return self.stored_name(name) if ours else name

        return re.sub(r"(?<=e\.g\. )\S+", rename, text)


def _family_name(layout: tuple[tuple[str, str], ...], stored: str) -> str | None:
    for stored_prefix, family_prefix in layout:
        if stored.startswith(stored_prefix):
            return family_prefix + stored.removeprefix(stored_prefix)
    return None


def sort_tensors(wrapper: Wrapper, names: list[str] | Any) -> WrappedTensors:
    """Sort every stored tensor name, refusing one the wrapper does not describe."""
    projector = [(n, rule) for n in names if (rule := wrapper.projector_rule(n)) is not None]
    kept = [n for n in names if wrapper.is_kept(n) and wrapper.projector_rule(n) is None]
    sorted_out = set(kept) | {n for n, _ in projector}
    rest = [n for n in names if n not in sorted_out]
    for layout in wrapper.layouts:
        text = {_family_name(layout, stored): stored for stored in rest}
        if None not in text and len(text) == len(rest):
            return WrappedTensors(layout, text, tuple(kept), tuple(projector))
    # name a tensor that the layout naming most of them leaves out
    closest = max(wrapper.layouts, key=lambda layout: sum(_family_name(layout, n) is not None for n in rest))
    unnamed = next((n for n in rest if _family_name(closest, n) is None), None)
    if unnamed is None:  # every one named, but two the same: a checkpoint holding both layouts
        raise HyperCloneError(f"{wrapper.model_type}: the checkpoint names its language model in two layouts at once")
    raise HyperCloneError(f"{wrapper.model_type}: tensor {unnamed} is neither the language model's, the vision "
                          "tower's nor the projector's; this checkpoint layout is not in hyperclone's table")


class TextWeights:
    """A multimodal source's language-model tensors under the family's names (for out-of-core verify, which runs
    the language model as its text model class names it)."""

    def __init__(self, source: Any):
        self.folder = source.folder
        self.infos = source.family_infos
        self._stored = source.wrapped.text
        self._weights = source.weights

    def read(self, name: str) -> Any:
        return self._weights.read(self._stored[name])


def text_raw_config(wrapper: Wrapper, raw: dict[str, Any]) -> dict[str, Any]:
    """The language model's config.json as a text model's: its family, and the top-level tie_word_embeddings (the
    wrapper's default where the top level does not state it)."""
    text = raw.get(wrapper.text_config)
    if not isinstance(text, dict):
        raise HyperCloneError(f"config.json: a {wrapper.model_type} config needs a {wrapper.text_config} object")
    tied = raw.get("tie_word_embeddings")
    return {**text, "model_type": text.get("model_type") or wrapper.text_family,
            "tie_word_embeddings": wrapper.tied_default if tied is None else bool(tied)}


def nest_config(wrapper: Wrapper, raw: dict[str, Any], grown_text: dict[str, Any], updates: dict[str, Any],
                hidden: int) -> dict[str, Any]:
    """The grown multimodal config: the source's, with the grown text config in its place, the growth's updates of
    top-level keys (untied embeddings, float32) at the top too, and the grown hidden size in its links."""
    config = {**raw, wrapper.text_config: grown_text}
    config.update({key: updates[key] for key in TOP_LEVEL_KEYS if key in updates})
    config.pop("quantization_config", None)
    for link in wrapper.hidden_links:
        *parents, key = link.split(".")
        node = config
        for parent in parents:
            node[parent] = node = dict(node[parent])
        node[key] = hidden
    return config


def check_links(wrapper: Wrapper, raw: dict[str, Any], hidden: int) -> None:
    """Every hidden_links key states the language model's hidden size (else growth could not keep them equal)."""
    for link in wrapper.hidden_links:
        value: Any = raw
        for key in link.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value != hidden:
            raise HyperCloneError(f"config.json: {link} is {value!r}, not the language model's hidden size {hidden}; "
                                  "this layout is not in hyperclone's table")


def projector_maps(rule: ProjectorRule, shape: tuple[int, ...], hidden: AxisMap) -> tuple[AxisMap, ...]:
    """Each axis's map: the residual stream's, plain copies of the hidden size, or the identity."""
    if len(rule.axes) != len(shape):
        raise HyperCloneError(f"projector tensor of shape {list(shape)} does not have the axes {list(rule.axes)}")
    maps = []
    for kind, size in zip(rule.axes, shape, strict=True):
        if kind != "kept" and size != hidden.src_size:
            raise HyperCloneError(f"projector tensor of shape {list(shape)}: its {kind} axis is {size}, the language "
                                  f"model's hidden size is {hidden.src_size}")
        maps.append(hidden if kind == "hidden" else tile_map(size, hidden.size if kind == "inner" else size))
    return tuple(maps)


def wrapper_recipes(wrapped: WrappedTensors, infos: dict[str, TensorInfo], hidden: AxisMap) -> list[Recipe]:
    """The kept tensors, copied as they are, and the projector's, grown (for make_plan's `extra`)."""
    recipes = []
    for name in wrapped.kept:
        info = infos[name]
        recipes.append(Recipe(name, name, tuple(tile_map(s, s) for s in info.shape), None, "emit", dtype=info.dtype))
    for name, rule in wrapped.projector:
        info = infos[name]
        maps = projector_maps(rule, tuple(info.shape), hidden)
        kind = "emit" if rule.contract is None else "linear"
        recipes.append(Recipe(name, name, maps, rule.contract, kind, dtype=info.dtype))
    return recipes


def stored_recipes(wrapped: WrappedTensors, recipes: list[Recipe], family_names: set[str]) -> list[Recipe]:
    """The language model's recipes under the checkpoint's own names (the others are stored names already)."""
    return [replace(r, out_name=wrapped.stored_name(r.out_name), src_name=wrapped.stored_name(r.src_name))
            if r.src_name in family_names else r for r in recipes]


def refuse_with_wrapper(wrapper: Wrapper, **options: Any) -> None:
    """Options not yet carried through a multimodal checkpoint, refused in one line when given."""
    given = next((name for name, value in options.items() if value is not None), None)
    if given is not None:
        raise HyperCloneError(f"--{given.replace('_', '-')} is not supported for multimodal checkpoints "
                              f"({wrapper.model_type}) yet: grow without it")


def _parse(model_type: str, raw: dict[str, Any]) -> Wrapper:
    rules = []
    for entry in raw["projector"]:
        re.compile(entry["name"])
        if any(kind not in PROJECTOR_AXES for kind in entry["axes"]):
            raise ValueError(f"wrapper {model_type}: projector axes must be among {PROJECTOR_AXES}")
        rules.append(ProjectorRule(entry["name"], tuple(entry["axes"]), entry.get("contract")))
    for pattern in raw["kept"]:
        re.compile(pattern)
    layouts = tuple(tuple(layout.items()) for layout in raw["layouts"])
    return Wrapper(model_type, raw["text_config"], raw["text_family"], bool(raw["tied_default"]), layouts,
                   tuple(raw["kept"]), tuple(rules), tuple(raw.get("hidden_links", ())))


def _load_all() -> dict[str, Wrapper]:
    """Every wrapper; an entry with "like": another model type takes that one's fields, its own replacing them."""
    raws = json.loads(resources.files("hyperclone.grow").joinpath("wrappers.json").read_text())
    merged = {t: {**raws[raw["like"]], **raw} if "like" in raw else raw for t, raw in raws.items()}
    return {model_type: _parse(model_type, raw) for model_type, raw in merged.items()}


WRAPPERS: dict[str, Wrapper] = _load_all()
