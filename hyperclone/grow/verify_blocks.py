"""`hyperclone verify --out-of-core`: check a grown model one block at a time, for models larger than RAM.

Both models are run by their own transformers classes, but only the parts outside the decoder stack
(embeddings, rotary tables, final norm, output head) live in memory for the whole run. Each decoder layer
is a placeholder that, when the model calls it, builds the real layer on the meta device, loads its
weights from the checkpoint (float32), runs it and frees it. So memory stays at about the largest grown
block plus the embeddings, whatever the depth.

The source runs first and its hidden state before and after every block is kept (batch x length x
hidden x (layers + 1) floats). The grown model is then fed, at every block, the plan's image of the
source hidden state at that point (copies, scales and mean positions of the hidden map; identity blocks
take the state where they were inserted) and the block's output is compared with the image of the
source's output, so every block is checked on its own. The final norm and output head get the image of
the source's last hidden state and the logits are compared as in the in-memory verify.
"""

from __future__ import annotations

import copy
import inspect
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError

LAYER_CONTAINERS = ("model.layers", "model.decoder.layers", "gpt_neox.layers", "transformer.h", "backbone.layers",
                    "transformer.blocks")


@dataclass
class BlockVerifyResult:
    block_rel_err: list[float]  # per grown block: max|out - image(expected)| / max|image(expected)|
    worst_block: int
    rel_err: float  # final logits, relative to max|logit|
    max_abs_diff: float
    argmax_agreement: float
    length: int
    tolerance: float
    ok: bool
    peak_note: str = field(default="one decoder block in memory at a time")
    kept_equal: bool | None = None  # a multimodal checkpoint: its vision tower's tensors equal the source's

    def as_dict(self) -> dict:
        return asdict(self)


def _find_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
    for path in LAYER_CONTAINERS:
        parent_path, _, attr = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path) if parent_path else model
        except AttributeError:
            continue
        layers = getattr(parent, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return parent, attr, layers
    raise HyperCloneError(f"{type(model).__name__}: no decoder layer list found for out-of-core verify")


def _config_with_layers(config: Any, layers_key: str, count: int, kept: tuple[str, ...] = ()) -> Any:
    """A copy of config with `count` layers (per-layer lists cut to match; `kept`: lists that are not per layer); one
    with per-layer overrides gets one layer of every kind where asked for any (see _overrides_per_kind)."""
    small = copy.deepcopy(config)
    full = getattr(config, layers_key)
    kinds = getattr(config, "layer_types", None)
    per_kind = getattr(config, "is_heterogeneous", False) and isinstance(kinds, list)
    if per_kind and count:  # Gemma 4 checks that every kind has a layer making its keys and values
        count = len(set(kinds))
    setattr(small, layers_key, count)
    for key, value in config.to_dict().items():  # per-layer lists (layer_types, no_rope_layers, ...)
        if isinstance(value, list) and len(value) == full and key != "architectures" and key not in kept:
            # layer_types keeps one entry of every kind: models build a rotary table per kind from it
            kept = value[:count] if key != "layer_types" else list(dict.fromkeys(value))
            setattr(small, key, kept)
    if per_kind:
        _overrides_per_kind(small, config)
    return small


def _overrides_per_kind(small: Any, config: Any) -> None:
    """A config with per-layer overrides (Gemma 4's full-attention head_dim and KV heads, as per_layer_config): the cut
    config, whose layer_types has one entry of every kind, takes the overrides of the first layer of each kind (its
    rotary tables are sized by them); it has no KV-shared layers (they need a layer of their kind before them)."""
    overrides = config._heterogeneity_spec.per_layer_overrides
    first = [config.layer_types.index(kind) for kind in dict.fromkeys(config.layer_types)]
    small._heterogeneity_spec.per_layer_overrides = {
        new: copy.deepcopy(overrides[old]) for new, old in enumerate(first) if old in overrides}
    if getattr(small, "num_kv_shared_layers", 0):
        small.num_kv_shared_layers = 0


def in_memory_layout(family: Any, state: dict[str, torch.Tensor], layer: int, experts: int | None
                     ) -> dict[str, torch.Tensor]:
    """One block's tensors as read from the checkpoint, renamed and fused where transformers holds them otherwise in
    memory (the family table's in_memory: a MoE's per-expert weights stacked, gate and up rows joined; other sections
    joined along their first axis, as Kimi Delta Attention's q, k and v convolutions)."""
    fused: dict[str, list[torch.Tensor | None]] = {}
    stacked: set[str] = set()
    for rule in family.tensors if family is not None else ():
        if rule.in_memory is None or not rule.per_layer:
            continue
        target, section, sections = rule.in_memory
        name = rule.name.replace("{layer}", str(layer))
        names = [name.replace("{expert}", str(e)) for e in range(experts or 0)] if rule.per_expert else [name]
        if not all(n in state for n in names):
            continue
        parts = [state.pop(n) for n in names]
        target = target.replace("{layer}", str(layer))
        fused.setdefault(target, [None] * sections)[section] = torch.stack(parts) if rule.per_expert else parts[0]
        if rule.per_expert:
            stacked.add(target)
    for name, sections in fused.items():
        if any(part is None for part in sections):
            raise HyperCloneError(f"{name}: the checkpoint lacks some of its sections")
        state[name] = sections[0] if len(sections) == 1 else torch.cat(sections, dim=1 if name in stacked else 0)
    return state


def _layers_key(family: Any, config: Any) -> str:
    """The config key counting the decoder layers: the family table's (LongCat-Flash's num_layers, whose
    num_hidden_layers counts its two attention sub-layers each), else the first of the usual keys."""
    table_key = family.config_keys.get("layers") if family is not None else None
    if table_key is not None and hasattr(config, table_key):
        return table_key
    return next(k for k in ("num_hidden_layers", "n_layer", "num_layers") if hasattr(config, k))


def _one_layer_probe(folder: Path, one: Any) -> torch.nn.Module:
    """The model with one decoder layer, on the meta device: only to learn the layer class and where layers live."""
    from hyperclone.grow.verify import causal_lm_auto

    with torch.device("meta"):
        try:
            return causal_lm_auto(one).from_config(one)
        except ValueError as exc:  # a text config with no causal LM class of its own (Qwen3-VL-MoE's), or one
            if "Unrecognized configuration class" not in str(exc):  # that refuses a single layer (Gemma 3n)
                raise HyperCloneError(f"{folder}: a {one.model_type} model cannot be built with one decoder layer, "
                                      f"which out-of-core verify needs ({str(exc).splitlines()[0]}); verify in "
                                      "memory") from None
            raise HyperCloneError(f"{folder}: transformers has no causal LM class for a {one.model_type} language "
                                  "model, which out-of-core verify runs alone; verify in memory") from None


def _block_load_error(message: str, index: int, model_type: str, prefix: str) -> HyperCloneError:
    """Why decoder block `index` did not load: a tensor of the wrong shape is the checkpoint's fault (a damaged or
    mis-grown file); tensors missing or left over mean the layer class built alone is not the checkpoint's layer
    (Zamba2's hybrid layers wrap shared blocks stored in other layers), which only verify in memory can run."""
    wrong = next((line.strip() for line in message.splitlines() if "size mismatch" in line), None)
    if wrong is not None:
        return HyperCloneError(f"decoder block {index} does not match its layer class: {wrong}")
    return HyperCloneError(f"out-of-core verify cannot load decoder block {index} of a {model_type} model alone "
                           f"(the layer class built alone holds other tensors than the checkpoint stores under "
                           f"{prefix}); verify in memory")


class LazyModel:
    """A causal LM whose decoder layers are built, loaded and freed one at a time when called."""

    def __init__(self, folder: Path, on_block):
        from transformers import AutoConfig

        from hyperclone.grow.checkpoint_io import SourceWeights
        from hyperclone.grow.families import FAMILIES, config_value
        from hyperclone.grow.mxfp4 import Mxfp4Weights, is_mxfp4
        from hyperclone.grow.source import open_source, read_raw_config
        from hyperclone.grow.verify import causal_lm_auto
        from hyperclone.grow.wrapper import WRAPPERS, TextWeights

        self.weights: SourceWeights | Mxfp4Weights | TextWeights = SourceWeights(Path(folder), allow_pickle=False)
        wrapped = open_source(Path(folder)) if read_raw_config(Path(folder)).get("model_type") in WRAPPERS else None
        if wrapped is not None:  # a multimodal checkpoint: its language model, as its text model class holds it
            self.weights, self.config = TextWeights(wrapped), wrapped.config
        else:
            self.config = AutoConfig.from_pretrained(folder)
        if is_mxfp4(getattr(self.config, "quantization_config", None)):
            self.weights = Mxfp4Weights(self.weights)  # GPT-OSS's MXFP4 experts, read as bf16
        self.family = FAMILIES.get(self.config.model_type)
        experts_key = self.family.config_keys.get("experts") if self.family is not None else None
        self.experts = config_value(self.config, experts_key) if experts_key else None
        layers_key = _layers_key(self.family, self.config)
        self.count = getattr(self.config, layers_key)
        kept = self.family.kept_lists if self.family is not None else ()
        one = _config_with_layers(self.config, layers_key, 1, kept)
        probe = _one_layer_probe(folder, one)
        _, _, probe_layers = _find_layers(probe)
        self.layer_class = type(probe_layers[0])
        prefix = next(name for name, module in probe.named_modules() if module is probe_layers)
        self.layer_buffers = self._model_made_buffers(one, probe_layers[0])
        del probe
        if not any(name.startswith(prefix + ".") for name in self.weights.infos):
            raise HyperCloneError(f"{folder}: the checkpoint does not store the decoder layers under {prefix} "
                                  "(transformers renames them on load), which out-of-core verify cannot follow; "
                                  "verify in memory")
        try:  # the model without decoder layers: embeddings, rotary tables, final norm, head
            small = _config_with_layers(self.config, layers_key, 0, kept)
            self.model = causal_lm_auto(small).from_config(small, dtype=torch.float32).eval()
        except (ValueError, IndexError, TypeError):  # a family that needs at least one layer
            small = one
            self.model = causal_lm_auto(small).from_config(small, dtype=torch.float32).eval()
        parent, attr, _ = _find_layers(self.model)
        self.prefix = prefix
        # outside the decoder stack: load every tensor the 1-layer model has, from the checkpoint
        self._load_outside(folder, prefix)
        self.model.tie_weights()
        # the real config for masks and per-layer types; placeholders for every layer
        self.config._attn_implementation = small._attn_implementation
        if getattr(small, "_experts_implementation", None) is not None:  # a mixture of experts' dispatch
            self.config._experts_implementation = small._experts_implementation
        self.model.config = self.config
        for module in self.model.modules():
            if getattr(module, "config", None) is small:
                module.config = self.config
        setattr(parent, attr, torch.nn.ModuleList(_LazyLayer(self, i, on_block) for i in range(self.count)))

    def _load_outside(self, folder: Path, prefix: str) -> None:
        """Load the tensors outside the decoder stack. A tensor transformers renames on load (GPT-NeoX's
        embed_out -> lm_head) is matched to the one unclaimed checkpoint tensor of its shape."""
        wanted = {n: t.shape for n, t in self.model.state_dict().items() if not n.startswith(prefix + ".")}
        stored = {n: i for n, i in self.weights.infos.items() if not n.startswith(prefix + ".")}
        unclaimed = {n: i for n, i in stored.items() if n not in wanted}
        state = {}
        for name, shape in wanted.items():
            if name in stored:
                state[name] = self.weights.read(name).float()
                continue
            same = [n for n, i in unclaimed.items() if tuple(i.shape) == tuple(shape)]
            if len(same) == 1:
                state[name] = self.weights.read(same[0]).float()
        empty = [n for n, t in state.items() if 0 in wanted[n] and t.shape != wanted[n]]
        for name in empty:  # held empty by the layer-free model, being sized by the layer count (Gemma 4's
            owner, _, attr = name.rpartition(".")  # per-layer embeddings and their projection): the stored tensor
            setattr(self.model.get_submodule(owner), attr, torch.nn.Parameter(state.pop(name), requires_grad=False))
        missing = [n for n in wanted if n not in state and n not in empty]
        tied = getattr(self.config, "tie_word_embeddings", False)
        if any(not (tied and ("lm_head" in n or "embed_out" in n)) for n in missing):
            raise HyperCloneError(f"{folder}: tensors missing for out-of-core verify: {missing[:3]}")
        self.model.load_state_dict(state, strict=False, assign=True)  # assign: no second copy of the embeddings

    def _model_made_buffers(self, one: Any, probed: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Buffers the model registers on its layers, which a layer built alone lacks (Falcon-H1's mup_vector, made
        from the config): taken from a real one-layer model, once; empty (and nothing built) for other families."""
        from hyperclone.grow.verify import causal_lm_auto

        with torch.device("meta"):
            alone = {name for name, _ in self._new_layer(one, 0).named_buffers()}
        extra = {name for name, _ in probed.named_buffers()} - alone
        if not extra:
            return {}
        real = causal_lm_auto(one).from_config(one, dtype=torch.float32)
        first = _find_layers(real)[2][0]
        return {name: buffer.clone() for name, buffer in first.named_buffers() if name in extra}

    def _new_layer(self, config: Any, index: int) -> torch.nn.Module:
        """A decoder layer of this model; a class told its kind apart from the config (Bamba's layer_type) gets it,
        and a model with a class per kind (Jamba's ALL_DECODER_LAYER_TYPES by layers_block_type) builds that one."""
        classes = getattr(sys.modules[self.layer_class.__module__], "ALL_DECODER_LAYER_TYPES", None)
        if isinstance(classes, dict) and hasattr(config, "layers_block_type"):
            return classes[config.layers_block_type[index]](config, index)
        if "layer_type" in inspect.signature(self.layer_class.__init__).parameters:
            return self.layer_class(config, index, layer_type=config.layer_types[index])
        return self.layer_class(config, index)

    def build(self, index: int) -> torch.nn.Module:
        with torch.device("meta"):
            layer = self._new_layer(self.config, index)
        prefix = f"{self.prefix}.{index}."
        state = {name: self.weights.read(name).float() for name in self.weights.infos if name.startswith(prefix)}
        state = in_memory_layout(self.family, state, index, self.experts)
        state = {name.removeprefix(prefix): tensor for name, tensor in state.items()}
        try:
            layer.load_state_dict(state, assign=True, strict=True)
        except RuntimeError as exc:
            raise _block_load_error(str(exc), index, self.config.model_type, prefix) from exc
        meta = [name for name, b in layer.named_buffers() if b.is_meta]
        if meta:  # non-persistent buffers (rotary tables, masks): build for real and load again
            layer = self._new_layer(self.config, index)
            layer.load_state_dict(state, strict=True)
        for name, buffer in self.layer_buffers.items():
            owner, _, attr = name.rpartition(".")
            layer.get_submodule(owner).register_buffer(attr, buffer.clone(), persistent=False)
        return layer.eval()


def _logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's logits on `tokens`, in float32. A model that sets up every layer's recurrent state by walking its
    layers before it runs them (RecurrentGemma's _setup_cache, which use_cache reaches) cannot do so through
    placeholder layers: it runs without a cache, which one forward pass does not need (each block starts from zero
    state either way)."""
    extra = {"use_cache": False} if hasattr(model, "_setup_cache") else {}
    return model(input_ids=tokens, **extra).logits.float()


class _LazyLayer(torch.nn.Module):
    def __init__(self, owner: LazyModel, index: int, on_block):
        super().__init__()
        self.index = index
        self.on_block = on_block
        self._owner = [owner]  # not a submodule
        layer_types = getattr(owner.config, "layer_types", None)
        if isinstance(layer_types, list):
            self.attention_type = layer_types[index]

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = self.on_block(self.index, "in", hidden)
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
        layer = self._owner[0].build(self.index)
        output = layer(*args, **kwargs)
        del layer
        if isinstance(output, tuple):
            return (self.on_block(self.index, "out", output[0]), *output[1:])
        return self.on_block(self.index, "out", output)


def _hidden_image(plan) -> Any:
    """A function mapping a source hidden state [..., d] to the grown model's [..., d']."""
    from hyperclone.grow.axis_map import gather
    from hyperclone.grow.plan import AxisMaps

    hidden_map = AxisMaps(plan.family, plan.source, plan.grown, plan.layers).hidden
    return lambda h: gather(h, h.ndim - 1, hidden_map)


@torch.no_grad()
def verify_out_of_core(src: str | Path, grown: str | Path, tolerance: float = 1e-4, seed: int = 0,
                       length: int | None = None, batch: int = 1) -> BlockVerifyResult:
    """Block-by-block check of a grown folder against its source (see the module doc)."""
    from hyperclone.common.files import PROVENANCE_FILE, read_provenance_spec
    from hyperclone.grow.plan import spec_from_record
    from hyperclone.grow.planning import plan_growth
    from hyperclone.grow.source import source_folder
    from hyperclone.grow.verify import verify_length

    grown = Path(grown)
    raw = read_provenance_spec(grown)
    if raw is None:
        raise HyperCloneError(f"{grown}: no {PROVENANCE_FILE}; out-of-core verify needs the growth plan")
    spec = spec_from_record(raw)
    with source_folder(src) as folder:
        plan, _ = plan_growth(folder, spec)
        if plan.stacked:
            raise HyperCloneError("stacked layers are not function-preserving: nothing to verify block by block")
        kept = _kept_equal(folder, grown) if plan.wrapper is not None else None
        image = _hidden_image(plan)
        states: list[torch.Tensor] = []

        def record(index: int, where: str, hidden: torch.Tensor) -> torch.Tensor:
            if index == 0 and where == "in":
                states.append(hidden.clone())
            if where == "out":
                states.append(hidden.clone())
            return hidden

        source = LazyModel(folder, record)
        length = length or max(verify_length(source.config), 64)
        vocab = source.config.vocab_size
        tokens = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
        logits_src = _logits(source.model, tokens)
        del source

    walk = []  # per grown layer: (source state index of its input, of its expected output)
    consumed = 0
    for _, identity in plan.layers:
        walk.append((consumed, consumed if identity else consumed + 1))
        consumed += 0 if identity else 1
    errors: list[float] = []

    def feed(index: int, where: str, hidden: torch.Tensor) -> torch.Tensor:
        start, end = walk[index]
        if where == "in":
            return image(states[start]).to(hidden.dtype)
        expected = image(states[end])
        errors.append(float((hidden - expected).abs().max() / expected.abs().max().clamp(min=1e-30)))
        return expected.to(hidden.dtype)  # the next block starts from the image again

    big = LazyModel(grown, feed)
    logits_big = _logits(big.model, tokens)
    diff = float((logits_src - logits_big).abs().max())
    rel = diff / max(float(logits_src.abs().max()), 1e-30)
    agree = float((logits_src.argmax(-1) == logits_big.argmax(-1)).float().mean())
    worst = max(range(len(errors)), key=errors.__getitem__) if errors else -1
    ok = rel <= tolerance and all(e <= tolerance for e in errors) and len(errors) == len(walk)
    return BlockVerifyResult(errors, worst, rel, diff, agree, length, tolerance, bool(ok and kept is not False),
                             kept_equal=kept)


def _kept_equal(src: Path, grown: Path) -> bool:
    """Whether every tensor a multimodal checkpoint keeps (its vision tower) is the source's, one at a time."""
    from hyperclone.grow.source import open_source

    source, out = open_source(src), open_source(grown)
    return all(torch.equal(source.weights.read(name), out.weights.read(name)) for name in source.wrapped.kept)
