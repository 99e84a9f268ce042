"""Multimodal checkpoints whose language model is a supported family (Gemma 3 4B and larger, Gemma 4, Mistral 3, Mistral
Large 4, Qwen3.5, Qwen2-VL, Qwen2.5-VL, EXAONE 4.5, Qwen3-VL, Qwen3-VL-MoE, GLM-4.1V, GLM-4.5V, LFM2-VL, Aya Vision,
Command A Vision, PaliGemma, LLaVA, LLaVA-NeXT, LLaVA-NeXT-Video, LLaVA-OneVision, InternVL, Idefics2, Idefics3,
SmolVLM, Llama 4, Llama 3.2 Vision, Apertus 1.5): the language model grows as its family does, the vision tower is
copied unchanged, and the projector that writes image features into the language model's residual stream grows with the
residual stream's map, so that image tokens, like text tokens, enter the grown model as the copies of what entered the
source (Llama 3.2 Vision's projector writes the features its cross-attention layers' k_proj and v_proj read as they
would the residual stream: the same map; Idefics2's connector, a SwiGLU then a perceiver resampler, runs a small
transformer over the residual stream's width: its stream grows with the same map, its norms as the language model's;
Gemma 4's embed_vision and embed_audio, a weightless RMSNorm over the tower's own width then embedding_projection, write
the stream unscaled, as Gemma 3's projector does: only the text embeddings carry the language model's sqrt(hidden)
multiplier, which the family's embedding growth accounts for; Apertus 1.5 has no projector: its image and audio
tokenizers write codebook indices into the vocabulary, which the text embedding reads: both are kept, ``projector``
empty).

Architecture knowledge as data (wrappers.json), per multimodal model_type:
``text_config``: the config key of the language model's config; ``text_family``: its family when that config does
not name one, or names ``text_model_type``, the multimodal model's own text config class (Qwen2.5-VL's
qwen2_5_vl_text), which is not a family: such a config is read by that class (which fills its defaults and turns its
M-RoPE statement into plain rope parameters), then as the family's, less the rope keys its class does not validate
(M-RoPE's sections: on text every section's position is the same, so the family's plain rope is the same);
``text_model_aliases``: model types a text config may state that the multimodal config class itself reads as
``text_family``'s (EXAONE 4.5's first releases' exaone4_5_text, which Exaone4_5_Config renames exaone4): such a config
is read as the family's, and the grown one keeps the name it states;
``text_at_top``: a config without a text_config object states the language model's keys at its top level (the
Qwen2-VL and Qwen2.5-VL releases' flat config.json), and the grown config keeps them there.
``layouts``: the ways checkpoints name the language model's tensors, each a map from stored prefix to the family
table's (the releases' `language_model.model.` and `language_model.lm_head.`, transformers 5's in-memory
`model.language_model.` and `lm_head.`; Idefics2's, Idefics3's and SmolVLM's `model.text_model.`, the same in both;
Mistral Large 4's Mistral names, `tok_embeddings.`, `layers.`, `norm.`, `output.`, which its release and
save_pretrained write and its table names `model.embed_tokens.`, `model.layers.`, `model.norm.`, `lm_head.`;
Gemma 4's releases use transformers 5's names, its only layout): a checkpoint uses the first under which all its
other tensors are named, and the grown one keeps it (so a layout whose prefix extends another's comes first:
Qwen2.5-VL's in-memory `model.language_model.` before its releases' `model.`, beside which the vision tower is
`visual.`).
``kept``: regexes of tensors copied unchanged (the vision tower, Gemma 4's audio tower, Llama 4's with its
pixel-shuffle MLP vision_adapter, Mistral Large 4's learned rope frequency factors `lerope.alpha`, which no width
changes, LLaVA-NeXT-Video's resampler, the projector's norms, LFM2-VL's, Aya Vision's and Command A Vision's projector
linear_1, whose width is their own);
``projector``: the tensors that depend on the language model's width, each with its axes, one of ``hidden`` (the
residual stream: grown with its map, as the embedding table's hidden axis is in every mode: modes shape only the
contracted axes of matrices, rows are emitted; LLaVA-NeXT's image_newline, a vector the model places among the
image features, is one axis of this kind and so grows exactly as an embedding row of these text families, none of
which has a width-dependent embedding multiplier; Idefics2's perceiver resampler works in this width throughout: its
latents are rows of its stream, its attention's q/k/v read it and o_proj writes it, as the language model's layers
do), ``inner`` (a projector's own width that its config ties to the hidden size: grown by plain copies, divided among
them where it is read; GLM-4.1V's vision MLPs, downsampling convolution and merger are out_hidden_size wide), written
``inner*M`` for a width M times the hidden size that the model derives from it (Idefics2's perceiver MLP, hidden_size *
4: ``inner*4``, grown to M times the grown hidden size, the same plain copies), ``ffn`` (the language model's MLP
width, which the model reads from the text config for the projector too: grown with the family's own map of it to the
grown MLP width, divided among the copies where it is read; Idefics2's modality_projection SwiGLU, as wide as
text_config.intermediate_size) and ``kept``, and ``contract``, the axis a matrix reads (as in the family tables);
``norm``: true on a LayerNorm's weight or bias over an inner axis (GLM-4.1V's merger post_projection_norm), whose
statistics over copies are the source's only when every channel has as many copies as the others: a hidden size that
is not a whole multiple is refused; ``rms_norm``: true on an RMSNorm's weight over the hidden axis (Idefics2's
perceiver norms): gathered with the residual stream's map unscaled, as the family tables' norm weights are (the copies'
scales pass through the normalisation), which is exact when the map keeps every vector's mean square (an RMSNorm
family's copies, weighted for widths that are not multiples; a LayerNorm family's whole copies): any other map (a
LayerNorm family's padding with means) is refused. A tensor that matches a projector rule is the projector's even where
a kept pattern covers it too. Every stored tensor must be one of the three, or the checkpoint is refused.
``tied_default``: the multimodal config class's default of tie_word_embeddings, which the model ties by; ``text_ties``:
the class also ties when the text config's tie_word_embeddings says true (transformers forwards it to the top level for
older saves: Qwen2-VL, Qwen2.5-VL, GLM-4.1V, GLM-4.5V, LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision); otherwise the text
config's own value is never read. ``ties_by_text``: the language model is a whole causal LM that ties by its own
config's tie_word_embeddings (its family's default where it says none), and the top level's is never read (Llama 4's
Llama4ForCausalLM; Mllama, whose class never ties and whose table refuses a text config that says it does): the
source ties as the text config says, and the grown text config says so too. ``tie_aliases``:
top-level keys the class reads in place of tie_word_embeddings when they are there (LFM2-VL's tie_embedding, LFM2's own
name, which its config class pops over tie_word_embeddings): the source ties by them, and a grown config that unties
drops them.
``hidden_links``: dotted config keys that state the language model's hidden size elsewhere (the width a vision merger
writes: Qwen3.5's, Qwen3-VL's and GLM-4.1V's vision_config.out_hidden_size, Qwen2-VL's vision_config.hidden_size;
PaliGemma's projection_dim, its projector's output): they must equal it, and take the grown size. ``hidden_defaults``:
dotted config keys whose class default is the language model's hidden size, a projector width that does not grow (Aya
Vision's alignment_intermediate_size, linear_1's output, split in two by its SwiGLU): where the source leaves one out,
the grown config states the source's hidden size in it. ``hidden_restated``: dotted config keys that may restate the
language model's hidden size where the class never reads them (PaliGemma's vision_config.projection_dim, which its
config class sets from projection_dim, and its top-level hidden_size, which may hold the class default 2048 beside
another width): one that states the source's hidden size takes the grown one, any other value (or none) is left as
stated. ``leading_layers``: a dotted config key holding a list as long as the number of the language model's first
layers after which the vision tower adds features to the residual stream (Qwen3-VL's DeepStack:
vision_config.deepstack_visual_indexes, the i-th merger's output added after layer i); the model adds them by layer
index, so depth growth keeps those layers first: new layers placed by default go after the last of them, and
--insert-after positions before it are refused. ``resolved``: dotted config keys that the multimodal config class
settles itself, from its defaults or the text config (Idefics2's perceiver_config.hidden_size and rms_norm_eps: where
the perceiver's hidden size, stated or its class default 4096, is not the text config's, the class takes the text
config's hidden size and rms_norm_eps in their place): the source's are read as the class settles them (so a
hidden_links key among them is checked as the model uses it) and the grown config states them (a hidden_links key
the grown size), so that the grown model's class, seeing another hidden size, cannot settle them otherwise.
``like``: another model type whose fields an entry takes (Qwen3.5-MoE's
are Qwen3.5's but for its text family; SmolVLM's are Idefics3's; likes chain: OneVision is like LLaVA-NeXT, itself like
LLaVA). An unknown key is an error.

The grown config is the source's with the language model's growth written into its text config (or, flat, its top
level); tie_word_embeddings is the top-level config's (the multimodal model class ties by it; ties_by_text: the text
config's, where the growth's updates are written as well).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import AxisMap, tile_map
from hyperclone.grow.checkpoint_io import TensorInfo
from hyperclone.grow.families import FAMILIES
from hyperclone.grow.plan import Recipe

PROJECTOR_AXES = ("hidden", "inner", "ffn", "kept")  # "inner" also as "inner*M": M times the hidden size
TOP_LEVEL_KEYS = ("tie_word_embeddings", "dtype")  # grown config keys the multimodal config holds at its top too
ENTRY_KEYS = {"text_config", "text_family", "text_model_type", "text_at_top", "tied_default", "text_ties", "layouts",
              "kept", "projector", "hidden_links", "leading_layers", "like", "tie_aliases", "hidden_defaults",
              "hidden_restated", "ties_by_text", "resolved", "text_model_aliases"}
RULE_KEYS = {"name", "axes", "contract", "norm", "rms_norm"}


def axis_kind(kind: str) -> tuple[str, int]:
    """A projector axis kind and its multiple of the hidden size ("inner*4": ("inner", 4); any other: 1)."""
    base, _, multiple = kind.partition("*")
    return base, int(multiple) if multiple else 1


def _valid_axis(kind: str) -> bool:
    base, _, multiple = kind.partition("*")
    if not multiple:
        return base in PROJECTOR_AXES
    return base == "inner" and multiple.isdigit() and int(multiple) >= 2


@dataclass(frozen=True)
class ProjectorRule:
    pattern: str
    axes: tuple[str, ...]
    contract: int | None
    norm: bool = False  # a LayerNorm's weight or bias over an inner axis: whole copies only
    rms_norm: bool = False  # an RMSNorm's weight over the residual stream: gathered unscaled, as the family's norms


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
    text_model_type: str | None = None
    text_at_top: bool = False
    text_ties: bool = False
    leading_layers: str | None = None
    tie_aliases: tuple[str, ...] = ()
    hidden_defaults: tuple[str, ...] = ()
    hidden_restated: tuple[str, ...] = ()
    ties_by_text: bool = False
    resolved: tuple[str, ...] = ()
    text_model_aliases: tuple[str, ...] = ()  # text model types the multimodal config class reads as text_family

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

    @property
    def outside_language_model(self) -> set[str]:
        """The stored names of the vision tower's and the projector's tensors."""
        return set(self.kept) | {name for name, _ in self.projector}

    def stored_names_in(self, text: str) -> str:
        """A plan note that names a language-model tensor ("e.g. model.layers.0...") with the checkpoint's name."""
        others = self.outside_language_model

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


def relayout(name: str, source: tuple[tuple[str, str], ...], target: tuple[tuple[str, str], ...]) -> str | None:
    """A language-model tensor's name in layout `source` renamed into layout `target` (None: `source` does not
    name it)."""
    family = _family_name(source, name)
    if family is None:
        return None
    for stored_prefix, family_prefix in target:
        if family.startswith(family_prefix):
            return stored_prefix + family.removeprefix(family_prefix)
    return None


def _layout_naming(wrapper: Wrapper, names: list[str]) -> tuple[tuple[str, str], ...] | None:
    """The first of the wrapper's layouts that names each of the language model's tensors `names` as a distinct
    family tensor (None: none does)."""
    for layout in wrapper.layouts:
        family = {_family_name(layout, name) for name in names}
        if None not in family and len(family) == len(names):
            return layout
    return None


def parameter_layout(wrapper: Wrapper, names: list[str]) -> tuple[tuple[str, str], ...]:
    """The layout that names every language-model parameter in `names` (a run's moments, keyed by the class's
    in-memory names, which transformers may store in another layout); a one-line error when none does."""
    text = [n for n in names if not wrapper.is_kept(n) and wrapper.projector_rule(n) is None]
    layout = _layout_naming(wrapper, text)
    if layout is not None:
        return layout
    unnamed = next(n for n in text if _family_name(wrapper.layouts[-1], n) is None)
    raise HyperCloneError(f"{wrapper.model_type}: the moments name {unnamed}, which no layout of the language model "
                          "in hyperclone's table names")


def sort_tensors(wrapper: Wrapper, names: list[str] | Any) -> WrappedTensors:
    """Sort every stored tensor name, refusing one the wrapper does not describe."""
    projector = [(n, rule) for n in names if (rule := wrapper.projector_rule(n)) is not None]
    kept = [n for n in names if wrapper.is_kept(n) and wrapper.projector_rule(n) is None]
    sorted_out = set(kept) | {n for n, _ in projector}
    rest = [n for n in names if n not in sorted_out]
    layout = _layout_naming(wrapper, rest)
    if layout is not None:
        text = {_family_name(layout, stored): stored for stored in rest}
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


def _is_flat(wrapper: Wrapper, raw: dict[str, Any]) -> bool:
    return wrapper.text_at_top and wrapper.text_config not in raw


def text_section(wrapper: Wrapper, raw: dict[str, Any]) -> dict[str, Any]:
    """The language model's config as the multimodal config.json states it: its text config object, or (text_at_top,
    with none) the top level's keys but the other configs (`*_config`) and the model type."""
    if _is_flat(wrapper, raw):
        return {k: v for k, v in raw.items() if not k.endswith("_config") and k != "model_type"}
    text = raw.get(wrapper.text_config)
    if not isinstance(text, dict):
        raise HyperCloneError(f"config.json: a {wrapper.model_type} config needs a {wrapper.text_config} object")
    return text


def _config_object(model_type: str, raw: dict[str, Any], what: str) -> Any:
    """transformers' config object of a config.json dict (left unchanged), or a one-line error naming `what`."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type, **copy.deepcopy({k: v for k, v in raw.items() if k != "model_type"}))
    except Exception as exc:  # transformers raises ValueError/KeyError/TypeError for bad configs
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise HyperCloneError(f"transformers cannot read a {model_type} {what}: {reason}") from None


def _through_own_class(model_type: str, text: dict[str, Any]) -> dict[str, Any]:
    """A text config as its own (non-family) class states it in full, less the rope keys that class does not
    validate (M-RoPE's sections)."""
    config = _config_object(model_type, text, "text config")
    values = config.to_dict()
    rope = values.get("rope_parameters")
    if isinstance(rope, dict):
        ignored = set(getattr(config, "ignore_keys_at_rope_validation", None) or ())
        ignored |= {"type"} if "rope_type" in rope else set()  # the legacy name of rope_type ("mrope")
        values["rope_parameters"] = {k: v for k, v in rope.items() if k not in ignored}
    return values


def text_raw_config(wrapper: Wrapper, raw: dict[str, Any]) -> dict[str, Any]:
    """The language model's config.json as a text model's: its family, and the tie_word_embeddings the multimodal
    model ties by (the top level's, the wrapper's default where it says nothing, or, where text_ties, a text config
    that ties)."""
    text = copy.deepcopy(text_section(wrapper, raw))  # config classes change what they are given (rope dicts)
    text = {k: v for k, v in text.items() if k not in wrapper.tie_aliases}  # the text class would tie by them
    stated = text.get("model_type")
    if stated in wrapper.text_model_aliases:  # the multimodal config class renames it the family's
        stated = wrapper.text_family
    tied = next((raw[key] for key in (*wrapper.tie_aliases, "tie_word_embeddings") if raw.get(key) is not None), None)
    tied = wrapper.tied_default if tied is None else bool(tied)
    if wrapper.text_model_type is not None and stated in (None, wrapper.text_model_type):
        stated = None
    family = stated or wrapper.text_family
    text_tied = bool(text.get("tie_word_embeddings", getattr(FAMILIES.get(family), "tied_default", False)))
    if wrapper.ties_by_text:  # the text config's value, or its class's default (its family's), alone
        tied = text_tied
    elif wrapper.text_ties and not tied:
        tied = text_tied
    if stated is None and wrapper.text_model_type is not None:
        text = _through_own_class(wrapper.text_model_type, text)
    return {**text, "model_type": family, "tie_word_embeddings": tied}


def resolved_config(wrapper: Wrapper, raw: dict[str, Any]) -> dict[str, Any]:
    """config.json with the wrapper's resolved keys stated as the multimodal config class settles them (its defaults,
    and values it takes from the text config: Idefics2's perceiver_config.hidden_size and rms_norm_eps); the others
    as stated."""
    if not wrapper.resolved:
        return raw
    values, resolved = _config_object(wrapper.model_type, raw, "config").to_dict(), dict(raw)
    for link in wrapper.resolved:
        value = _dotted(values, link)
        if value is None:
            raise HyperCloneError(f"config.json: transformers' {wrapper.model_type} config states no {link}; this "
                                  "version of transformers is not the one hyperclone's table describes")
        _set_dotted(resolved, link, value)
    return resolved


def nest_config(wrapper: Wrapper, raw: dict[str, Any], grown_text: dict[str, Any], updates: dict[str, Any],
                hidden: int, source_hidden: int) -> dict[str, Any]:
    """The grown multimodal config: the source's, with the grown text config in its place (flat: its keys at the
    top), the growth's updates of top-level keys (untied embeddings, float32) at the top too, the resolved keys as
    the source's class settles them, the grown hidden size in its links and in the hidden_restated keys that state
    the source's, and the source's in the hidden_defaults it leaves out."""
    raw = resolved_config(wrapper, raw)
    if _is_flat(wrapper, raw):
        config = {**raw, **grown_text}
    else:
        config = {**raw, wrapper.text_config: grown_text}
        if wrapper.text_at_top:  # older saves state the text keys at the top as well: they follow the text config
            config.update({k: v for k, v in grown_text.items()
                           if k in raw and not k.endswith("_config") and k != "model_type"})
    config.update({key: updates[key] for key in TOP_LEVEL_KEYS if key in updates})
    if "tie_word_embeddings" in updates:  # the class would read an alias in its place
        for alias in wrapper.tie_aliases:
            config.pop(alias, None)
    if "dtype" in updates:  # the legacy name would contradict it (flat Qwen2-VL configs read torch_dtype first)
        config.pop("torch_dtype", None)
        if isinstance(config.get(wrapper.text_config), dict):
            config[wrapper.text_config] = {k: v for k, v in config[wrapper.text_config].items() if k != "torch_dtype"}
    config.pop("quantization_config", None)
    for link in wrapper.hidden_links:
        _set_dotted(config, link, hidden)
    for link in wrapper.hidden_defaults:
        if _dotted(raw, link) is None:
            _set_dotted(config, link, source_hidden)
    for link in wrapper.hidden_restated:  # the class never reads them: kept as stated unless they state the width
        if _dotted(raw, link) == source_hidden:
            _set_dotted(config, link, hidden)
    return config


def _set_dotted(config: dict[str, Any], link: str, value: Any) -> None:
    *parents, key = link.split(".")
    node = config
    for parent in parents:  # copied on the way down (the source's config is not changed); made where missing
        node[parent] = node = dict(node.get(parent) or {})
    node[key] = value


def _dotted(raw: dict[str, Any], link: str) -> Any:
    value: Any = raw
    for key in link.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_links(wrapper: Wrapper, raw: dict[str, Any], hidden: int) -> None:
    """Every hidden_links key states the language model's hidden size (else growth could not keep them equal; a
    resolved one as the class settles it)."""
    raw = resolved_config(wrapper, raw)
    for link in wrapper.hidden_links:
        value = _dotted(raw, link)
        if value is None:  # the class default would be some released model's width, not this one's
            raise HyperCloneError(f"config.json: {link} is missing; it states the width the vision tower writes "
                                  f"(the language model's hidden size, {hidden}): add it")
        if value != hidden:
            raise HyperCloneError(f"config.json: {link} is {value!r}, not the language model's hidden size {hidden}; "
                                  "this layout is not in hyperclone's table")


def leading_layers(wrapper: Wrapper, raw: dict[str, Any]) -> int:
    """How many of the language model's first layers the vision tower writes after (0 where the wrapper says none)."""
    if wrapper.leading_layers is None:
        return 0
    value = _dotted(raw, wrapper.leading_layers)
    if value is None:
        raise HyperCloneError(f"config.json: {wrapper.leading_layers} is missing; it says after which of the language "
                              "model's first layers the vision tower adds features: add it")
    if not isinstance(value, list):
        raise HyperCloneError(f"config.json: {wrapper.leading_layers} is {value!r}, not a list; this layout is not in "
                              "hyperclone's table")
    return len(value)


def leading_insert_after(wrapper: Wrapper, raw: dict[str, Any], layers: list[tuple[int, bool]],
                         explicit: bool) -> tuple[int, ...] | None:
    """For a plan's layers (source layer, identity?) that put a new layer among the first leading_layers: the new
    layers' --insert-after positions moved after the last of them (the default placement), or a refusal (given
    positions). None when they keep them first."""
    count = leading_layers(wrapper, raw)
    if not any(identity for _, identity in layers) or layers[:count] == [(i, False) for i in range(count)]:
        return None
    source_layers = sum(not identity for _, identity in layers)
    if count > source_layers:  # the source never adds its last features; a grown model with more layers would
        raise HyperCloneError(f"{wrapper.model_type}: {wrapper.leading_layers} lists {count} layers after which the "
                              f"vision tower adds features, the language model has {source_layers}: with more layers "
                              "the grown model would add features the source drops; grow without new layers")
    if explicit:
        raise HyperCloneError(f"{wrapper.model_type}: the vision tower adds features to the language model's residual "
                              f"stream after each of its first {count} layers ({wrapper.leading_layers}), by layer "
                              f"index; a new layer among them is not function-preserving: insert after layer "
                              f"{count - 1} or later")
    after, last = [], -1
    for src, identity in layers:
        if identity:
            after.append(max(last, count - 1))
        else:
            last = src
    return tuple(after)


def keeps_mean_square(amap: AxisMap) -> bool:
    """Whether every vector grown with this map has the source's mean square (no position holding a mean, the
    squared scales of every source position's copies summing to new / old): an RMSNorm over it then sees the
    source's statistics with the same epsilon."""
    if bool((amap.index < 0).any()):
        return False
    squares = torch.zeros(amap.src_size, dtype=torch.float64).index_add_(0, amap.index, amap.scale ** 2)
    return bool(torch.allclose(squares, torch.full_like(squares, amap.size / amap.src_size), rtol=1e-12, atol=0))


def projector_maps(rule: ProjectorRule, shape: tuple[int, ...], hidden: AxisMap, name: str = "projector tensor",
                   ffn: AxisMap | None = None) -> tuple[AxisMap, ...]:
    """Each axis's map: the residual stream's, plain copies of (a multiple of) the hidden size, the language model's
    MLP width's map (`ffn`: None where it has none), or the identity."""
    if len(rule.axes) != len(shape):
        raise HyperCloneError(f"{name} of shape {list(shape)} does not have the axes {list(rule.axes)}")
    if rule.norm and hidden.size % hidden.src_size:
        raise HyperCloneError(f"{name}: a LayerNorm over the language model's width inside the projector sees the "
                              "source's mean and variance only when every channel is copied as often as the others "
                              f"(its epsilon is fixed); grow the hidden size {hidden.src_size} by a whole factor, "
                              f"not to {hidden.size}")
    if rule.rms_norm and not keeps_mean_square(hidden):
        raise HyperCloneError(f"{name}: an RMSNorm over the residual stream inside the projector sees the source's "
                              "mean square only where the grown stream keeps it (its epsilon is fixed), which this "
                              f"family's map from {hidden.src_size} to {hidden.size} does not; grow the hidden size "
                              "by a whole factor")
    maps = []
    for kind, size in zip(rule.axes, shape, strict=True):
        base, multiple = axis_kind(kind)
        if base == "ffn":
            if ffn is None:
                raise HyperCloneError(f"{name}: its ffn axis is the language model's MLP width, which this "
                                      "language model does not have")
            if size != ffn.src_size:
                raise HyperCloneError(f"{name} of shape {list(shape)}: its ffn axis is {size}, the language model's "
                                      f"MLP width is {ffn.src_size}")
            maps.append(ffn)
            continue
        if base != "kept" and size != multiple * hidden.src_size:
            times = "" if multiple == 1 else f"{multiple} x "
            raise HyperCloneError(f"{name} of shape {list(shape)}: its {kind} axis is {size}, {times}the language "
                                  f"model's hidden size is {multiple * hidden.src_size}")
        maps.append(hidden if base == "hidden" else tile_map(size, multiple * hidden.size if base == "inner" else size))
    return tuple(maps)


def wrapper_recipes(wrapped: WrappedTensors, infos: dict[str, TensorInfo], hidden: AxisMap,
                    ffn: AxisMap | None = None) -> list[Recipe]:
    """The kept tensors, copied as they are, and the projector's, grown (for make_plan's `extra`, given the residual
    stream's map and the MLP width's)."""
    recipes = []
    for name in wrapped.kept:
        info = infos[name]
        recipes.append(Recipe(name, name, tuple(tile_map(s, s) for s in info.shape), None, "emit", dtype=info.dtype))
    for name, rule in wrapped.projector:
        info = infos[name]
        maps = projector_maps(rule, tuple(info.shape), hidden, name, ffn)
        kind = "norm" if rule.rms_norm else "emit" if rule.contract is None else "linear"
        recipes.append(Recipe(name, name, maps, rule.contract, kind, dtype=info.dtype))
    return recipes


def _renamed(recipe: Recipe, rename: Callable[[str], str]) -> Recipe:
    """A recipe with its names renamed (a segment's whole tensor's too: hyperclone.grow.segment)."""
    names = {"out_name": rename(recipe.out_name), "src_name": rename(recipe.src_name)}
    whole = getattr(recipe, "whole_name", "")
    if whole:
        names["whole_name"] = rename(whole)
    return replace(recipe, **names)


def stored_recipes(wrapped: WrappedTensors, recipes: list[Recipe], family_names: set[str]) -> list[Recipe]:
    """The language model's recipes under the checkpoint's own names (the others are stored names already)."""
    return [_renamed(r, wrapped.stored_name) if r.src_name in family_names else r for r in recipes]


def family_recipes(wrapped: WrappedTensors, recipes: list[Recipe]) -> list[Recipe]:
    """The inverse of stored_recipes: the language model's recipes under the family table's names, the vision
    tower's and the projector's as stored (for a step that matches the family's names: splitting experts)."""
    others = wrapped.outside_language_model

    def family(name: str) -> str:
        renamed = _family_name(wrapped.layout, name)
        if renamed is None:
            raise HyperCloneError(f"{name}: no prefix of the checkpoint's layout names it")
        return renamed

    return [r if r.src_name in others else _renamed(r, family) for r in recipes]


def _parse(model_type: str, raw: dict[str, Any]) -> Wrapper:
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise ValueError(f"wrapper {model_type}: unknown keys {sorted(unknown)}")
    rules = []
    for entry in raw["projector"]:
        re.compile(entry["name"])
        if not all(_valid_axis(kind) for kind in entry["axes"]):
            raise ValueError(f"wrapper {model_type}: projector axes must be among {PROJECTOR_AXES} (inner also as "
                             "inner*M, M >= 2)")
        if set(entry) - RULE_KEYS:
            raise ValueError(f"wrapper {model_type}: unknown projector keys {sorted(set(entry) - RULE_KEYS)}")
        if entry.get("rms_norm") and (list(entry["axes"]) != ["hidden"] or entry.get("contract") is not None):
            raise ValueError(f"wrapper {model_type}: rms_norm is for a norm weight over the hidden axis alone")
        if entry.get("rms_norm") and entry.get("norm"):
            raise ValueError(f"wrapper {model_type}: a projector rule is norm (over an inner axis) or rms_norm (over "
                             f"the hidden axis), not both: {entry['name']}")
        rules.append(ProjectorRule(entry["name"], tuple(entry["axes"]), entry.get("contract"),
                                   bool(entry.get("norm", False)), bool(entry.get("rms_norm", False))))
    for pattern in raw["kept"]:
        re.compile(pattern)
    layouts = tuple(tuple(layout.items()) for layout in raw["layouts"])
    return Wrapper(model_type, raw["text_config"], raw["text_family"], bool(raw["tied_default"]), layouts,
                   tuple(raw["kept"]), tuple(rules), tuple(raw.get("hidden_links", ())), raw.get("text_model_type"),
                   bool(raw.get("text_at_top", False)), bool(raw.get("text_ties", False)), raw.get("leading_layers"),
                   tuple(raw.get("tie_aliases", ())), tuple(raw.get("hidden_defaults", ())),
                   tuple(raw.get("hidden_restated", ())), bool(raw.get("ties_by_text", False)),
                   tuple(raw.get("resolved", ())), tuple(raw.get("text_model_aliases", ())))


def _merged(raws: dict[str, dict[str, Any]], model_type: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """An entry's fields: those of the model type it is "like" (itself merged: likes chain), its own replacing them."""
    raw = raws[model_type]
    if "like" not in raw:
        return raw
    if raw["like"] in (*chain, model_type):
        raise ValueError(f"wrapper {model_type}: its \"like\" entries form a loop")
    return {**_merged(raws, raw["like"], (*chain, model_type)), **raw}


def _load_all() -> dict[str, Wrapper]:
    """Every wrapper; an entry with "like": another model type takes that one's fields, its own replacing them."""
    raws = json.loads(resources.files("hyperclone.grow").joinpath("wrappers.json").read_text())
    return {model_type: _parse(model_type, _merged(raws, model_type)) for model_type in raws}


WRAPPERS: dict[str, Wrapper] = _load_all()
