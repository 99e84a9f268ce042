"""Which model folder (under DIR/models) each sweep arm starts from, and the final shape it trains.

Names are data the sweep and its report share: a grown model per (shape, grow options, small model's
budget and schedule when an arm sets small_tokens or small_decay), a random
init per (shape, seed), an MSG start per (arm, seed). A shape is the width factor and, when the arm
deepens the model, the final number of layers ("2" or "2-L8").
"""

from __future__ import annotations

from typing import Any

from hyperclone.experiments.presets import Preset
from hyperclone.experiments.sweep_spec import MOE_KEYS, SweepArm
from hyperclone.grow.options import DEFAULT_MODE, DEFAULT_TOP_K, NOISE_MODES

REFERENCE_GROWTH = {"mode": "symmetric"}  # grow options of each shape's reference model (its config only)


def shape_label(width: int, layers: int | None) -> str:
    """"2" for width x2 at the small model's depth, "2-L8" for width x2 and 8 layers."""
    return f"{width}" if layers is None else f"{width}-L{layers}"


def grown_name(width: int, opts: dict[str, Any], layers: int | None = None) -> str:
    mode = opts.get("mode", DEFAULT_MODE)  # an arm without a mode gets hyperclone grow's default
    name = f"grown-w{shape_label(width, layers)}-{mode}"
    if mode in NOISE_MODES:
        name += f"-{opts.get('noise_db', 'default')}db"
    for key in ("seed", "tie", "ffn"):
        if opts.get(key) is not None:
            name += f"-{key}{opts[key]}"
    if opts.get("depth_mode") is not None:
        name += f"-{opts['depth_mode']}"
    if opts.get("perturb") is not None:  # "mix:0.2" -> "-mix0.2", "shrink:0.8,0.01" -> "-shrink0.8_0.01"
        name += "-" + str(opts["perturb"]).replace(":", "").replace(",", "_")
    return name + moe_suffix(opts)


def small_suffix(small_tokens: int | None, small_decay: bool = True, small_corpus: str | None = None) -> str:
    """"-small3200000" for a model grown from a small model pretrained for 3.2M tokens instead of the preset's;
    "-site-packages" added for one pretrained on that public corpus, "-nodecay" for one trained without the
    learning-rate decay."""
    return (("" if small_tokens is None else f"-small{small_tokens}")
            + ("" if small_corpus is None else f"-{small_corpus}") + ("" if small_decay else "-nodecay"))


def moe_suffix(opts: dict[str, Any]) -> str:
    """"-e4k1" for a model upcycled to 4 experts with top-1 routing."""
    return f"-e{opts['experts']}k{opts.get('top_k', DEFAULT_TOP_K)}" if opts.get("experts") else ""


def moe_shape(arm: SweepArm) -> dict[str, Any]:
    return {k: arm.grow[k] for k in MOE_KEYS if k in arm.grow}


def arm_width(arm: SweepArm, preset: Preset) -> int:
    return arm.width or preset.width


def arm_layers(arm: SweepArm, preset: Preset) -> int | None:
    """The final number of layers when the arm deepens the model, else None."""
    return arm.layers if arm.layers is not None and arm.layers != preset.layers else None


def arm_shape(arm: SweepArm, preset: Preset) -> str:
    """"2", "2-L8", or "2-L8-e4k1" for a mixture-of-experts arm (its own shape: its own FLOPs per token)."""
    return shape_label(arm_width(arm, preset), arm_layers(arm, preset)) + moe_suffix(arm.grow)


def model_for(arm: SweepArm, seed: int, preset: Preset) -> str:
    """The folder under DIR/models the arm starts from (for msg: its MSG start, written by the run)."""
    w, layers = arm_width(arm, preset), arm_layers(arm, preset)
    if arm.init == "grown":
        return grown_name(w, arm.grow, layers) + small_suffix(*arm.small_model)
    if arm.init == "msg":
        return f"msg-{arm.name}-s{seed}"
    return f"random-w{shape_label(w, layers)}{moe_suffix(arm.grow)}-s{seed}"


def reference_model(arm: SweepArm, preset: Preset) -> str:
    """The symmetric grown model of the arm's final shape (with its experts, for a mixture-of-experts arm):
    the config of random init and of model_stats."""
    return grown_name(arm_width(arm, preset), reference_growth(arm), arm_layers(arm, preset))


def reference_growth(arm: SweepArm) -> dict[str, Any]:
    return {**REFERENCE_GROWTH, **moe_shape(arm)}
