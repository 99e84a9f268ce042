"""Dense to mixture-of-experts, exact: every MLP becomes E experts that start as copies of it (grown with the
rest of the model, so width and depth growth combine with it in one pass), behind a new router.

Why it is exact: with top-k routing whose weights are renormalised to sum to 1, the layer computes
sum_i w_i * expert_i(x) = (sum_i w_i) * mlp(x) = mlp(x) whatever the router says, because every expert
computes mlp(x) (with noisy growth each expert carries its own zero-sum noise, seeded by its tensor names, so the
experts differ while each is exact). Mixtral always renormalises; Qwen3-MoE and Qwen2-MoE do when
`norm_topk_prob` is true, which the grown config sets. Qwen2-MoE's shared expert is made silent (its down
projection is zero), so only the routed experts contribute. The router is new: a seeded normal of standard
deviation ROUTER_STD (transformers' initializer_range default), recorded in hyperclone.json.

Architecture knowledge as data: UPCYCLE maps a dense source family to its MoE target; the target's tensor names
(experts, router, shared expert and its gate) and config keys are read from the target's own family table
(hyperclone/grow/families/<target>.json, the table that grows MoE sources), so they are written once.
Out of scope (stated): expert-parallel layouts, capacity limits / token dropping (transformers' eager MoE
computes every routed token), and families whose router cannot renormalise (refused).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.families import Family, get_family

ROUTER_STD = 0.02
MLP = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$")

# What the target tables do not say: the class, the top-k renormalisation switch, the dense MLP part each expert
# tensor copies (the expert tensor's last name component), config values, and whether attention may have biases.
# A target with a shared expert (Qwen2-MoE) gets one of the MLP's shape, silent (zero down projection, zero gate).
TARGETS: dict[str, dict[str, Any]] = {
    "mixtral": {"architecture": "MixtralForCausalLM", "norm_topk": None,
                "parts": {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
                "config": {}, "no_attention_bias": True},
    "qwen3_moe": {"architecture": "Qwen3MoeForCausalLM", "norm_topk": "norm_topk_prob",
                  "parts": {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"},
                  "config": {"decoder_sparse_step": 1, "mlp_only_layers": []}, "no_attention_bias": False},
    "qwen2_moe": {"architecture": "Qwen2MoeForCausalLM", "norm_topk": "norm_topk_prob",
                  "parts": {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"},
                  "config": {"decoder_sparse_step": 1, "mlp_only_layers": []}, "no_attention_bias": False},
}
UPCYCLE = {"llama": "mixtral", "mistral": "mixtral", "qwen3": "qwen3_moe", "qwen2": "qwen2_moe"}


def target_of(model_type: str) -> str:
    if model_type not in UPCYCLE:
        raise HyperCloneError(f"--experts: {model_type} cannot be upcycled yet; sources: "
                              f"{', '.join(f'{s} -> {t}' for s, t in UPCYCLE.items())}")
    return UPCYCLE[model_type]


def check(raw_config: dict[str, Any], experts: int, top_k: int) -> str:
    """The MoE target of this source, or a one-line refusal."""
    target = target_of(raw_config.get("model_type", "?"))
    if experts < 2 or top_k < 1 or top_k > experts:
        raise HyperCloneError(f"--experts must be at least 2 and --top-k between 1 and --experts, got {experts} and "
                              f"{top_k}")
    if raw_config.get("mlp_bias"):
        raise HyperCloneError(f"{raw_config['model_type']} with MLP biases cannot be upcycled: {target} experts "
                              "have no biases")
    if TARGETS[target]["no_attention_bias"] and raw_config.get("attention_bias"):
        raise HyperCloneError(f"{raw_config['model_type']} with attention biases cannot become {target}, whose "
                              "attention has none")
    return target


def _template(family: Family, part: str, shared: bool = False) -> str:
    """The target table's name template of an expert's (or the shared expert's) `part` weight."""
    for rule in family.tensors:
        is_shared = any("shared_ffn" in axis for axis in rule.axes)
        if rule.name.endswith(f".{part}.weight") and (is_shared if shared else rule.per_expert):
            return rule.name
    raise HyperCloneError(f"{family.model_type}: its table has no {'shared ' if shared else ''}expert {part}")


def _role(family: Family, role: str) -> str | None:
    return next((rule.name for rule in family.tensors if rule.role == role), None)


def upcycle_recipes(recipes: list, experts: int, target: str, router_map) -> list:
    """The plan's recipes with every MLP tensor written once per expert, plus a router per layer (and the
    silent shared expert of Qwen2-MoE). Other tensors are unchanged."""
    from hyperclone.grow.axis_map import tile_map

    spec, family = TARGETS[target], get_family(target)
    shared_gate = _role(family, "shared_gate")
    out, routed = [], set()
    for recipe in recipes:
        match = MLP.match(recipe.out_name)
        if match is None:
            out.append(recipe)
            continue
        layer, part, _ = match.groups()
        for expert in range(experts):
            name = _template(family, spec["parts"][part]).format(layer=layer, expert=expert)
            out.append(replace(recipe, out_name=name))
        if shared_gate is not None:
            name = _template(family, part, shared=True).format(layer=layer)
            out.append(replace(recipe, out_name=name, kind="zero") if part == "down_proj"
                       else replace(recipe, out_name=name))
        if layer not in routed:
            routed.add(layer)
            maps = (tile_map(experts, experts), router_map)
            out.append(replace(recipe, out_name=_role(family, "router").format(layer=layer), maps=maps,
                               contract=None, kind="router", scale=ROUTER_STD))
            if shared_gate is not None:
                gate = shared_gate.format(layer=layer)
                out.append(replace(recipe, out_name=gate, maps=(tile_map(1, 1), router_map), contract=None,
                                   kind="zero"))
    return out


def moe_config(dense: dict[str, Any], target: str, experts: int, top_k: int) -> dict[str, Any]:
    """The grown dense config as the target MoE family's config: every shared field carried explicitly (the
    target class's own defaults, e.g. Mixtral's rope_theta, must not leak in), then the expert settings."""
    from transformers import AutoConfig

    spec, keys = TARGETS[target], get_family(target).config_keys
    fields = {k: v for k, v in dense.items()
              if k not in ("model_type", "architectures", "transformers_version", "auto_map", "mlp_bias")}
    fields.update(spec["config"])
    fields[keys["experts"]] = experts
    fields["num_experts_per_tok"] = top_k
    fields[keys["ffn"]] = dense["intermediate_size"]
    if spec["norm_topk"]:
        fields[spec["norm_topk"]] = True
    if "shared_ffn" in keys:
        fields[keys["shared_ffn"]] = dense["intermediate_size"]
    config = AutoConfig.for_model(target, **fields).to_dict()
    config["architectures"] = [spec["architecture"]]
    return config
