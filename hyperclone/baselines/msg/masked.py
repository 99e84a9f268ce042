"""Masked Structural Growth (MSG, Yao et al., arXiv 2305.02869) as a baseline to HyperCloning.

The model is built at the target shape (a plain transformers model): the small model's weights go
into the old slices (`hyperclone.baselines.msg.layout`), the new slices keep the fresh initialisation
transformers gives them, and masks installed on the existing modules scale the contribution of
everything new by a factor c that ramps from 0 to 1 during training:

- residual width: every module that writes the residual stream (token and position embeddings,
  attention and MLP output projections) has its output multiplied by the hidden mask m (1 on old
  positions, c on new ones), so new hidden positions are 0 at c = 0. Every norm over the hidden
  size computes its statistics with the mask as weights, mean = sum(m*x)/sum(m) and
  var (or mean square) = sum(m*(x-mean)^2)/sum(m), and its output is multiplied by m: at c = 0 the
  norm sees exactly the old positions, at c = 1 it is the plain norm. Gemma's embedding multiplier
  sqrt(hidden_size) is corrected by sqrt(sum(m)/hidden_size);
- MLP neurons and attention heads: the input of the MLP down projection and of the attention output
  projection is multiplied by the neuron / head mask (new query heads read KV heads that are at
  least as old as themselves, see msg_layout, so old heads are untouched);
- layers: a new layer computes c*block(x) + (1-c)*x.

At c = 0 the model computes the small model's function; at c = 1 every mask is the identity and
`fold()` removes them, leaving the plain transformers model. Masks live only in forward hooks (a
masked norm is a hook that replaces the norm's output), never in the state dict, so every checkpoint is
loadable by plain transformers; while masks are live, the layout is kept in config.json under `msg_growth` so a
training run can re-install them on resume, and folding deletes that key.

Training: `train_hook` (the `step_hook` of hyperclone.train.config.TrainConfig) attaches the masks from
config.json, sets every stage's mask for the step, and folds once every ramp is over, so every
checkpoint saved after the ramp is plain.
"""

from __future__ import annotations

import math
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperclone.baselines.msg.layout import CONFIG_KEY, Layout, Stage, copy_small_weights, make_layout, target_config
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.quiet import hf_quiet
from hyperclone.grow.plan import GrowthSpec

__all__ = ["MaskedModel", "Stage", "build_masked", "prepare_msg", "train_hook", "GrowthSpec"]


def _load_small(small: str | Path | nn.Module) -> nn.Module:
    if isinstance(small, nn.Module):
        return small
    from transformers import AutoModelForCausalLM

    folder = Path(small)
    if not (folder / "config.json").is_file():
        raise HyperCloneError(f"{folder}: not a checkpoint folder (no config.json)")
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


class MaskedModel:
    """A target-shape transformers model with MSG masks installed on its modules."""

    def __init__(self, model: nn.Module, layout: Layout):
        self.model = model
        self.layout = layout
        self.c = [1.0] * (layout.n_stages + 1)  # per stage; stage 0 (the small model) is always 1
        self._handles: list[Any] = []
        self._hidden_owner = layout.axis_stage("hidden")
        self._ffn_owner = layout.axis_stage("ffn")
        hd = layout.dim(-1, "head_dim")
        self._attn_owner = layout.head_stage().repeat_interleave(hd)
        self._masks: dict[str, torch.Tensor] = {}
        self._embed_factor = 1.0
        self._layer_c: list[float] = []
        self.set_mask(0.0)
        self._install()
        model.config.__setattr__(CONFIG_KEY, layout.to_json())

    # ------------------------------------------------------------------ mask values

    def set_mask(self, c: float | list[float]) -> None:
        """Set every stage's mask to c (or stage k's to c[k-1])."""
        values = [float(c)] * self.layout.n_stages if isinstance(c, (int, float)) else [float(v) for v in c]
        if len(values) != self.layout.n_stages or any(not 0.0 <= v <= 1.0 for v in values):
            raise HyperCloneError(f"MSG masks need {self.layout.n_stages} values in [0, 1], got {c!r}")
        self.c = [1.0, *values]
        stage_c = torch.tensor(self.c, dtype=torch.float32)
        device = next(self.model.parameters()).device
        self._masks = {"hidden": stage_c[self._hidden_owner].to(device), "ffn": stage_c[self._ffn_owner].to(device),
                       "attn": stage_c[self._attn_owner].to(device)}
        self._hidden_sum = float(self._masks["hidden"].sum())
        family = self.layout.family
        hidden = self.layout.dim(-1, "hidden")
        self._embed_factor = math.sqrt(self._hidden_sum / hidden) if family.embedding_scale == "sqrt_hidden" else 1.0
        self._layer_c = [self.c[s] for s in self.layout.layer_stage]

    def set_step(self, step: int) -> None:
        """Masks of optimizer step `step` from each stage's start and ramp."""
        self.set_mask([self.layout.ramp_value(k, step) for k in range(1, self.layout.n_stages + 1)])

    @property
    def ramp_done(self) -> bool:
        return all(v == 1.0 for v in self.c)

    # ------------------------------------------------------------------ hooks

    def _install(self) -> None:
        family = self.layout.family
        model = self.model
        modules = dict(model.named_modules())
        seen: set[str] = set()
        layer_prefix = None
        for rule in family.tensors:
            if rule.per_layer and layer_prefix is None:
                layer_prefix = rule.name.split(".{layer}")[0]
            module_names = ([rule.name.replace("{layer}", str(t)) for t in range(self.layout.dim(-1, "layers"))]
                            if rule.per_layer else [rule.name])
            for tensor_name in module_names:
                mod_name = tensor_name.rsplit(".", 1)[0]
                if mod_name in seen or mod_name not in modules or not tensor_name.endswith(".weight"):
                    continue
                seen.add(mod_name)
                self._install_one(modules[mod_name], rule.role, rule.axes, rule.contract)
        if layer_prefix is None:
            raise HyperCloneError(f"{family.model_type}: no per-layer tensors in the family table")
        for t, layer in enumerate(model.get_submodule(layer_prefix)):
            if self.layout.layer_stage[t] > 0:
                self._handles.append(layer.register_forward_hook(self._layer_hook(t), with_kwargs=True))

    def _install_one(self, module: nn.Module, role: str, axes: tuple[tuple[str, ...], ...],
                     contract: int | None) -> None:
        if role in ("norm", "final_norm"):
            if axes == (("hidden",),):
                self._mask_norm(module)
            return
        if role == "lm_head":
            return
        emitted = axes[-1] if contract is None else axes[1 - contract]
        if emitted == ("hidden",):  # writes the residual stream (embeddings, output projections)
            factor = role == "embedding"
            self._handles.append(module.register_forward_hook(self._output_hook(factor)))
        if contract is not None and axes[contract] in (("attn",), ("ffn",)):
            self._handles.append(module.register_forward_pre_hook(self._input_hook(axes[contract][0])))

    def _output_hook(self, embedding: bool) -> Callable:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            mask = self._masks["hidden"] * self._embed_factor if embedding else self._masks["hidden"]
            return output * mask.to(output.dtype)

        return hook

    def _input_hook(self, kind: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            return (x * self._masks[kind].to(x.dtype), *args[1:])

        return hook

    def _layer_hook(self, t: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            c = self._layer_c[t]
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            mixed = out * c + x * (1.0 - c)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

        return hook

    def _mask_norm(self, module: nn.Module) -> None:
        family = self.layout.family
        offset = family.norm_offset
        if isinstance(module, nn.LayerNorm):
            def forward(x: torch.Tensor) -> torch.Tensor:
                m = self._masks["hidden"]
                xf = x.float()
                mean = (xf * m).sum(-1, keepdim=True) / self._hidden_sum
                centred = xf - mean
                var = (centred.pow(2) * m).sum(-1, keepdim=True) / self._hidden_sum
                y = centred * torch.rsqrt(var + module.eps)
                if module.weight is not None:
                    y = y * module.weight.float()
                if module.bias is not None:
                    y = y + module.bias.float()
                return (y * m).to(x.dtype)
        else:
            eps = getattr(module, "variance_epsilon", None)
            eps = getattr(module, "eps", 1e-6) if eps is None else eps

            def forward(x: torch.Tensor) -> torch.Tensor:
                m = self._masks["hidden"]
                xf = x.float()
                ms = (xf.pow(2) * m).sum(-1, keepdim=True) / self._hidden_sum
                y = xf * torch.rsqrt(ms + eps)
                if offset:  # Gemma: (1 + w), multiplied in fp32
                    return (y * (offset + module.weight.float()) * m).to(x.dtype)
                return module.weight * (y * m).to(x.dtype)
        # a forward hook that replaces the output rather than an instance attribute `forward`: transformers >= 5.2x
        # with the `kernels` package kernelizes norm layers on their first call, which drops an instance forward
        self._handles.append(module.register_forward_hook(lambda mod, args, out: forward(args[0])))

    def fold(self) -> nn.Module:
        """Remove every mask (they must all be 1) and return the plain transformers model."""
        if not self.ramp_done:
            raise HyperCloneError(f"MSG masks are not all 1 (stage masks {self.c[1:]}); finish the ramp first")
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if hasattr(self.model.config, CONFIG_KEY):
            delattr(self.model.config, CONFIG_KEY)
        _ATTACHED.pop(self.model, None)
        return self.model

    @property
    def folded(self) -> bool:
        return not self._handles

    @classmethod
    def attach(cls, model: nn.Module) -> MaskedModel:
        """Install masks on a target-shape model whose config carries the MSG layout (a saved MaskedModel)."""
        raw = getattr(model.config, CONFIG_KEY, None)
        if raw is None:
            raise HyperCloneError(f"model config has no {CONFIG_KEY!r}: not an MSG model")
        return cls(model, Layout.from_json(dict(raw)))


def build_masked(small: str | Path | nn.Module, stages: list[Stage] | GrowthSpec, seed: int = 0) -> MaskedModel:
    """The MSG model of `small` (a checkpoint folder or a loaded model) grown through `stages`, masks at 0.

    A single GrowthSpec is one stage that starts at step 0 with a ramp of 100 steps."""
    from transformers import AutoModelForCausalLM

    from hyperclone.grow.families import get_family

    if isinstance(stages, GrowthSpec):
        stages = [Stage(stages)]
    small_model = _load_small(small)
    family = get_family(small_model.config.model_type)
    layout = make_layout(family, small_model.config, list(stages))
    config = target_config(small_model.config, layout)
    torch.manual_seed(seed)
    big = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    copy_small_weights(small_model, big, layout)
    big.to(next(small_model.parameters()).device)
    return MaskedModel(big, layout)


def prepare_msg(small_dir: str | Path, out: str | Path, stages: list[Stage] | GrowthSpec, seed: int = 0,
                overwrite: bool = False) -> Path:
    """Write the MSG starting checkpoint (target shape, masks in config.json) and the small model's
    tokenizer files to `out`, ready for hyperclone.train.loop with
    `step_hook="hyperclone.baselines.msg.masked:train_hook"` (`hyperclone train OUT --msg`)."""
    from hyperclone.grow.engine import copy_side_files

    out = Path(out)
    if out.exists() and not overwrite:
        raise HyperCloneError(f"{out} exists; pass overwrite=True")
    with hf_quiet():
        masked = build_masked(small_dir, stages, seed)
    tmp = out.parent / f".{out.name}.msg-tmp"  # written aside and renamed: a killed run leaves nothing at out
    shutil.rmtree(tmp, ignore_errors=True)
    with hf_quiet():
        masked.model.save_pretrained(tmp)
    copy_side_files(Path(small_dir), tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------- training hook

_ATTACHED: weakref.WeakKeyDictionary[nn.Module, MaskedModel] = weakref.WeakKeyDictionary()


def train_hook(model: nn.Module, step: int, total_steps: int) -> None:
    """Set the MSG masks of `model` for optimizer step `step`; fold them once every ramp is over.

    A model without the MSG layout in its config (a plain checkpoint, or one already folded) is left alone,
    so the hook is safe to call at any point and on any model."""
    masked = _ATTACHED.get(model)
    if masked is None:
        if getattr(model.config, CONFIG_KEY, None) is None:
            return
        masked = MaskedModel.attach(model)
        _ATTACHED[model] = masked
    masked.set_step(step)
    if masked.ramp_done:
        masked.fold()
