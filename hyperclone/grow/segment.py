"""More experts, exactly: fine-grained expert segmentation of a mixture-of-experts source
(`hyperclone grow SRC OUT --experts E2` when SRC already has E experts), alone or with width and depth growth.

m = E2 / E must be a whole number of at least 2. Each source expert e (after any width growth of its MLP, to
width f) is cut into m experts e*m .. e*m + m - 1: segment s holds neurons s*f/m .. (s+1)*f/m - 1 of e, i.e.
those rows of its gate and up projections and those columns of its down projection (f must divide by m). The
router's row of e is copied to each of its segments (as is any per-expert router bias: every tensor the family
table gives an `experts` axis); the config's expert count becomes E*m, each expert's width f/m and top-k k*m.

Why it is exact, for routers that take a softmax over all experts, then the top k, then optionally renormalise
the k weights to sum to 1 (ROUTING; read off transformers 5's modeling code of each family):
- the m segments of e have e's logit, so each gets probability exp(l_e) / (m * sum_j exp(l_j)) = p_e / m, and
  top-(k*m) takes the m segments of each of the k experts the source takes (but see ties below);
- without renormalisation a segment's weight is p_e / m; with it, (p_e / m) / sum over the k*m chosen of p / m =
  (p_e / m) / sum_topk(p). Either way it is 1/m of the weight e had in the source;
- expert e's output is down(act(gate x) * up x), a sum over its neurons, so it is the sum of its segments'
  outputs; every segment's down projection is multiplied by m, and the m segments together give e's output with
  e's weight. Qwen2-MoE's shared expert and its sigmoid gate read the residual stream outside the routing and
  are not segmented (they grow with the width as usual).
Granite MoE and Granite-4 (granitemoe, granitemoeshared, granitemoehybrid) take the top k of the logits, then a
softmax over those k: the same weights as a softmax over all experts renormalised over the top k, so the same
argument holds. Their experts are stacked in one
tensor per projection ([experts, 2f, hidden] gate and up, [experts, hidden, f] down, contract 2): each expert's
slice is cut along its MLP-width axis (the gate and up sections alike) and segment s of expert e becomes slice
e*m + s of the output's experts axis (SegmentRecipe.segments); the shared MLP (granitemoeshared,
granitemoehybrid) has its own width key and is not segmented. GPT-OSS (gpt_oss) routes like Granite (top k of the
logits plus a router bias, which repeats with the router row) and stacks [experts, in, out] with gate and up
interleaved per neuron (ffn_pairs: a segment's neurons are one contiguous run there too); its down_proj_bias is
each segment's whole expert bias, since the m segments, each weighing 1/m, add it up once.
The factor m is exact in bf16/fp16 for powers of two; for any other m a 16-bit down projection times m rounds,
so --dtype auto writes float32 and --dtype source records the output as not exact (as plan.py does for its own
factors). Every segment is cut from the one grown tensor of its expert (noise seeded by the expert's name), so
noisy growth's zero-sum noise still cancels across the segments.

Ties: top-(k*m) picks all m segments of an expert together because they have identical logits (the router
rows are equal, and the matmul gave bitwise-equal logits for them on CPU and CUDA). When two DIFFERENT source
experts have exactly equal probability at the k-th place, the source's torch.topk takes one of them and the
grown model's takes m of their 2m tied segments, in an order torch.topk does not promise. Measured with two equal
router rows in a tiny Mixtral split x2 (benchmarks/split_experts.py; 15 of 48 tokens tied in layer 0): on CPU
(torch 2.13), whose topk breaks ties in an order that depends on the input's length, the grown model took the
other expert at 4 of the 15, so it is NOT exact there (relative logit error 0.91); torch.topk([0.2, 0.2, 0.4,
0.1], 2) takes experts 2 and 1 while top-4 of its split takes expert 2 and one segment each of experts 0 and 1 (a
partial set). On CUDA (H200, torch 2.11) topk took tied values lowest index first in both models: all 15 the
source's expert, exact (3.5e-7). tests/test_segment.py::test_exact_tie_between_two_experts keeps the CPU
measurement. Exact ties need equal router rows (an untrained zero-initialised router) or a measure-zero
coincidence; away from them the grown model takes exactly the source's experts.

Sigmoid routers (DeepSeek-V3, GLM-4.5, GLM-4.7-Flash, dots.llm1, Nemotron-H, MiniMax-M2) score each expert on its
own: a segment's score is e's score s_e, not s_e / m, and the correction bias (an `experts` axis) is repeated with
the router row. With renormalisation a segment's weight is s_e / (m * sum_topk(s)), 1/m of e's, so the down
projections are multiplied by m as above; without it each segment keeps e's whole weight s_e (times
routed_scaling_factor, unchanged) and the factor is 1. Group-limited routing: the m segments of an expert stay in
its group (experts are numbered group by group, and e*m .. e*m + m - 1 fall in e's group). DeepSeek-V2's greedy
groups score a group by its best expert, which every expert's segments divide by the same m, so the chosen groups
are the source's; DeepSeek-V3's score a group by the sum of its two best scores, which two segments of one expert
change (2 s_e instead of the best two experts' sum), so a sigmoid router with n_group > 1 and topk_group < n_group
is refused (Nemotron-H's router is DeepSeek-V3's, so the same; Mistral 4's softmax router scores its groups as
DeepSeek-V3's does, TOP_TWO_GROUPS, so the same refusal; its releases have one group). Nemotron-H's non-gated
experts (down(relu2(up x))) and its latent MoE (the experts read and write moe_latent_size through fc1/fc2_latent_proj,
outside the routing) split alike: the cut is along the experts' own width; its shared expert has its own width key.

ERNIE 4.5 MoE's router adds its correction bias to the softmax probabilities to choose the top k (the weights are
the probabilities alone, renormalised over the k with a floor of moe_norm_min). A segment's probability is p_e / m
but a repeated bias would stay b_e, which changes the order (p = (0.6, 0.4), b = (0, 0.15), top-1: the source
scores 0.6 and 0.55 and takes expert 0; split x2 with the bias repeated, the segments would score 0.3 and 0.35 and
take expert 1's); so the bias is divided by m with the probabilities: each segment scores (p_e + b_e) / m, in the
source's order, and top-(k*m) takes the source's experts. The renormalising sum
over the k*m segments is the source's sum over k (the same floor applies), so a segment weighs 1/m of its expert
and the down projections are multiplied by m (BIAS_ON_PROBABILITIES; exact in float32, where transformers keeps
the bias, for powers of two, and as exact as the softmax's own rounding otherwise). Its shared experts
(moe_num_shared_experts x the expert width) sit outside the routing and keep their width (moe_num_shared_experts x
m, as DeepSeek's n_shared_experts).

LFM2-MoE routes as MiniMax-M2 (sigmoid, expert_bias repeated) but renormalises by the sum + 1e-6: split, the sum of
the chosen segments is m x S + 1e-6, so the routed output is the source's times (S + 1e-6) / (S + 1e-6 / m), within
1e-6 / S relative (ROUTER_EPSILON, a plan note). Cohere2-MoE takes the top k of the logits, then expert_selection_fn
over those k: a softmax (Granite's argument) or sigmoids (renormalised or not, as above); scores() reads which.
Kimi Linear's router is DeepSeek-V3's under other config names (num_expert_group, moe_renormalize: _setting). Gemma
4's is Mixtral's times per_expert_scale of each chosen expert, an experts-axis vector repeated with the router row;
its experts' width is expert_ffn (_width_slot), beside a dense MLP of width ffn that is not split.

Out of scope (refused or not described here): capacity limits, families not in ROUTING, per-expert tensors with no
MLP-width axis (an expert's output bias), a shared MLP as wide as each expert (Hunyuan: one key for both), routers
that would pick two segments of one expert where the source picks two experts (Phi-3.5-MoE's sparsemixer: NOT_SPLIT),
carrying AdamW moments over (--moments-from).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.axis_map import AxisMap
from hyperclone.grow.exact_split import needs_exact_split
from hyperclone.grow.families import Family, TensorRule
from hyperclone.grow.plan import Plan, Recipe

# Per family: the router's scores ("softmax" over all experts, or "sigmoid" per expert) and whether it renormalises
# the top k weights: True (always), a config key (when that key is true) or False (never). Only these are segmented.
ROUTING: dict[str, tuple[str, bool | str]] = {
    "mixtral": ("softmax", True),  # MixtralTopKRouter: softmax, topk, always divided by the sum of the top k
    "minimax": ("softmax", True),  # MiniMaxTopKRouter: Mixtral's
    "olmoe": ("softmax", "norm_topk_prob"),  # OlmoeTopKRouter
    "flex_olmo": ("softmax", "norm_topk_prob"),  # FlexOlmoTopKRouter: OLMoE's
    "qwen2_moe": ("softmax", "norm_topk_prob"),  # the shared expert and its gate sit outside the routing
    "qwen3_moe": ("softmax", "norm_topk_prob"),  # Qwen3MoeTopKRouter
    "qwen3_next": ("softmax", "norm_topk_prob"),  # Qwen3NextTopKRouter; the shared expert as in Qwen2-MoE
    "qwen3_5_moe_text": ("softmax", True),  # Qwen3_5MoeTopKRouter: always renormalised; the shared expert as above
    "hunyuan_v1_moe": ("softmax", True),  # HunYuanMoEV1Gate: softmax, topk, divided by the sum
    "deepseek_v2": ("softmax", False),  # DeepseekV2TopkRouter: greedy or group-limited (best expert per group)
    "deepseek_v3": ("sigmoid", "norm_topk_prob"),  # DeepseekV3TopkRouter: correction bias, top-2-sum groups
    "mistral4": ("softmax", "norm_topk_prob"),  # Mistral4TopkRouter: DeepSeek-V2's softmax, top-2-sum groups, no bias
    "deepseek_v32": ("sigmoid", "norm_topk_prob"),  # DeepseekV32TopkRouter: DeepSeek-V3's
    "glm4_moe": ("sigmoid", "norm_topk_prob"),
    "glm4_moe_lite": ("sigmoid", "norm_topk_prob"),
    "glm_moe_dsa": ("sigmoid", "norm_topk_prob"),  # GlmMoeDsaTopkRouter: DeepSeek-V3's
    "dots1": ("sigmoid", "norm_topk_prob"),
    "exaone_moe": ("sigmoid", "norm_topk_prob"),  # ExaoneMoeTopkRouter: DeepSeek-V3's (bias, top-2-sum groups)
    # GraniteMoeHybridTopKRouter: the top k of the logits, then a softmax over those k (= softmax, top k, renormalised)
    "granitemoehybrid": ("softmax", True),
    "granitemoe": ("softmax", True),  # GraniteMoeTopKRouter: the same (top k of the logits, softmax over those k)
    "granitemoeshared": ("softmax", True),  # GraniteMoe's router; the shared MLP sits outside the routing
    "granitemoe_swa": ("softmax", True),  # GraniteMoeSWATopKRouter: GraniteMoe's; the shared MLP as above
    # GptOssTopKRouter: the top k of the logits (router bias included, repeated per segment), a softmax over those k
    "gpt_oss": ("softmax", True),
    # Llama4Router: the top k of the logits, their sigmoids not renormalised, scaling each chosen expert's input; its
    # shared expert reads the experts' width (intermediate_size), so a split is refused as Hunyuan's
    "llama4_text": ("sigmoid", False),
    "minimax_m2": ("sigmoid", True),  # MiniMaxM2TopKRouter: correction bias, no groups, always renormalised
    # HYV3TopKRouter: MiniMax-M2's (the sum + 1e-20, below float32's resolution of a sum of sigmoids), then scaled
    "hy_v3": ("sigmoid", True),
    "mellum": ("softmax", "norm_topk_prob"),  # MellumTopKRouter: Qwen3-MoE's
    "afmoe": ("sigmoid", True),  # AfmoeTokenChoiceRouter: Hy3's (expert_bias, the sum + 1e-20, route_scale)
    "solar_open": ("sigmoid", "norm_topk_prob"),  # SolarOpenTopkRouter: GLM-4.5's (DeepSeek-V3's)
    "mimo_v2_flash": ("sigmoid", "norm_topk_prob"),  # MiMoV2FlashTopkRouter: GLM-4.5's (DeepSeek-V3's)
    "nemotron_h": ("sigmoid", "norm_topk_prob"),  # NemotronHTopkRouter: DeepSeek-V3's (bias, top-2-sum groups)
    # Ernie4_5_MoeTopKRouter: softmax, top k of (probabilities + correction bias), the k probabilities divided by
    # their sum (at least moe_norm_min)
    "ernie4_5_moe": ("softmax", True),
    # Lfm2MoeTopKRouter: sigmoid, expert_bias (repeated) to choose, divided by the sum + 1e-6 (ROUTER_EPSILON), scaled
    "lfm2_moe": ("sigmoid", "norm_topk_prob"),
    # Cohere2MoeTopKRouter: the top k of the logits, then expert_selection_fn over those k: softmax (Granite's) or
    # sigmoid, renormalised when norm_topk_prob; a config key in the first slot names the scores (scores())
    "cohere2_moe": ("expert_selection_fn", "norm_topk_prob"),
    "kimi_linear": ("sigmoid", "norm_topk_prob"),  # KimiLinearTopkRouter: DeepSeek-V3's (bias, top-2-sum groups)
    # Gemma4TextRouter: softmax, topk, divided by the sum, times per_expert_scale (repeated with the router row)
    "gemma4_text": ("softmax", True),
    # the language models of Qwen3-VL-MoE and GLM-4.5V, split through their multimodal wrappers:
    "qwen3_vl_moe_text": ("softmax", True),  # Qwen3VLMoeTextTopKRouter: softmax, topk, always divided by the sum
    "glm4v_moe_text": ("sigmoid", "norm_topk_prob"),  # Glm4vMoeTextTopkRouter: GLM-4.5's (DeepSeek-V3's)
    # MistralLarge4TextTopkRouter (Mistral Large 4, split through its wrapper): Mistral 4's, always divided by the
    # sum + 1e-20 (below float32's resolution of a sum of softmax scores, at least the best one's)
    "mistral_large4_text": ("softmax", True),
}
# Routers that add a constant to the renormalising sum of sigmoid scores: the m segments of each chosen expert make
# the sum m x S + eps where the source's is S + eps, so the grown routed output is the source's times
# (S + eps) / (S + eps / m): off by under eps / S relative (S, the sum of the k chosen scores, is at least the best one)
ROUTER_EPSILON = {"lfm2_moe": 1e-6}
# Softmax routers that score a group by the sum of its two best experts, as the sigmoid ones with groups do (refused
# with n_group > 1 and topk_group < n_group as those are)
TOP_TWO_GROUPS = {"mistral4", "mistral_large4_text"}
# Routers whose experts cannot be split exactly, with the reason (refused in one line)
NOT_SPLIT = {
    # JetMoE: num_local_experts counts its attention experts (a query and an output projection each) as well as its
    # MLP experts, and the attention experts have no MLP width to cut
    "jetmoe": "its expert count also counts its attention experts, which have no MLP width to cut into segments",
    # PhimoeTopKRouter (sparsemixer): the best expert, then the best of the rest, each weighed by a softmax over the
    # logits near it; the rest would hold the chosen expert's other segments, equal to it
    "phimoe": "its sparsemixer router takes the best expert and then the best other one, which would be a second "
              "segment of the same expert",
    # DeepSeek-V4: DeepseekV4MLP, its shared expert, reads intermediate_size, which the config maps to
    # moe_intermediate_size (the routed experts' width). Its hash layers alone could split (tid2eid listing each
    # expert's segments, top-k x m)
    "deepseek_v4": "its shared expert is as wide as each routed expert (both moe_intermediate_size), which splitting "
                   "divides",
}
# Routers that add their correction bias (every non-router tensor with an experts axis) to the softmax probabilities
# to choose the top k: a segment's probability is 1/m of its expert's, so its bias is divided by m too
BIAS_ON_PROBABILITIES = {"ernie4_5_moe"}
TOP_K_KEY = "num_experts_per_tok"  # the top-k config key when a family table has no "top_k" slot
GROUPED_MM_ALIGN = 16  # torch's grouped_mm (transformers 5's default experts kernel) needs 16-byte row strides


@dataclass(frozen=True)
class SegmentRecipe(Recipe):
    """An output tensor cut from a grown tensor: the whole tensor is grown as `whole_maps` say, under the name
    `whole_name` (which seeds its noise, so all segments of one expert are cut from the same grown tensor), then
    the positions `index` along `axis` are kept and multiplied by `factor`. `maps` describe the output itself.
    Each of an expert's m segments grows the whole expert tensor again (m times the work on expert tensors, for a
    tensor rule that stays a pure function of its recipe)."""

    whole_maps: tuple[AxisMap, ...] = ()
    whole_name: str = ""
    axis: int = 0
    index: torch.Tensor | None = None
    factor: float = 1.0
    expert: int | None = None  # the new expert this tensor belongs to (None: a router or a stacked expert tensor)
    segments: int = 1  # > 1: a stacked expert tensor; `index` holds all m segments in order, each moved into the
    # experts axis (0) after its expert: the cut [E, m*L, ...] becomes [E*m, L, ...] (expert e*m + s = segment s)

    def whole(self) -> Recipe:
        """The plain recipe of the whole grown tensor this one is cut from."""
        base = {f.name: getattr(self, f.name) for f in fields(Recipe)}
        return Recipe(**{**base, "out_name": self.whole_name, "maps": self.whole_maps})


def cut(whole: torch.Tensor, recipe: SegmentRecipe, out: torch.Tensor | None = None) -> torch.Tensor:
    """The segment of a grown whole tensor (into `out` when given)."""
    piece = whole.index_select(recipe.axis, recipe.index)
    if recipe.segments > 1:  # [E, ..., m*L, ...] -> [E, m, ..., L, ...] -> [E*m, ..., L, ...]
        piece = piece.unflatten(recipe.axis, (recipe.segments, -1)).movedim(recipe.axis, 1).flatten(0, 1)
        piece = piece.contiguous() if out is None else piece
    if recipe.factor != 1.0:
        piece.mul_(recipe.factor)  # exact for powers of two; otherwise float32 or recorded (storage_reason)
    return piece if out is None else out.copy_(piece)


def _experts_axis(rule: TensorRule) -> int | None:
    """The axis of a tensor that has one position per routed expert (a router, a router bias), or None."""
    hits = [i for i, axis in enumerate(rule.axes) if "experts" in axis]
    if not hits:
        return None
    if len(hits) > 1 or rule.axes[hits[0]] != ("experts",):
        raise HyperCloneError(f"{rule.name}: an experts axis that is fused or repeated cannot be segmented")
    return hits[0]


def _width_slot(family: Family) -> str:
    """The experts' MLP-width slot: expert_ffn where ffn is an MLP beside them in every layer (Gemma 4), else ffn."""
    return "expert_ffn" if "expert_ffn" in family.config_keys else "ffn"


def _ffn_axis(rule: TensorRule, slot: str = "ffn") -> int:
    """The MLP-width axis of a per-expert tensor, the one segmentation cuts: ffn, or ffn+ffn (a fused gate and up
    projection, each section cut alike); `slot` names the experts' width (_width_slot)."""
    hits = [i for i, axis in enumerate(rule.axes) if axis and (set(axis) == {slot} or axis == ("ffn_pairs",))]
    if len(hits) != 1 or any(_has_ffn(axis, slot) for i, axis in enumerate(rule.axes) if i != hits[0]):
        raise HyperCloneError(f"{rule.name}: a per-expert tensor without exactly one MLP-width axis cannot "
                              "be segmented")
    return hits[0]


def _stacked(rule: TensorRule, slot: str = "ffn") -> bool:
    """Whether a tensor holds all experts stacked along its experts axis (Granite's [experts, out, in])."""
    return not rule.per_expert and _experts_axis(rule) is not None and any(_has_ffn(a, slot) for a in rule.axes)


def _has_ffn(axis: tuple[str, ...], slot: str = "ffn") -> bool:
    """Whether an axis holds the experts' MLP width: ffn, a fused ffn+ffn, or GPT-OSS's interleaved ffn_pairs (neuron
    j's gate and up at 2j and 2j + 1, so the neurons of a segment are one contiguous run there too)."""
    return slot in axis or "ffn_pairs" in axis


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{layer\}|\{expert\})", template)
    body = "".join(f"(?P<{p[1:-1]}>\\d+)" if p in ("{layer}", "{expert}") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def check(plan: Plan, config: dict[str, Any], experts: int, top_k: int | None) -> tuple[int, str, int]:
    """(segments per expert m, the top-k config key, the source's top-k), or a one-line refusal."""
    family, source = plan.family, plan.source.experts
    if family.model_type in NOT_SPLIT:
        raise HyperCloneError(f"--experts on a {family.model_type} mixture of experts: splitting experts is not "
                              f"exact, as {NOT_SPLIT[family.model_type]}")
    if family.model_type not in ROUTING:
        raise HyperCloneError(f"--experts on a {family.model_type} mixture of experts: splitting experts is "
                              f"described for {', '.join(sorted(ROUTING))}")
    kind = scores(family.model_type, config)
    if kind not in ("softmax", "sigmoid"):
        raise HyperCloneError(f"--experts on {family.model_type}: its router's scores {kind!r} are not described "
                              "(softmax or sigmoid)")
    model_type = family.model_type
    groups, chosen = _setting(model_type, config, "n_group") or 1, _setting(model_type, config, "topk_group") or 1
    if (kind == "sigmoid" or model_type in TOP_TWO_GROUPS) and groups > 1 and chosen < groups:
        raise HyperCloneError(f"--experts on {family.model_type} with n_group {groups} and topk_group {chosen}: its "
                              "router scores a group by the sum of its two best experts, which two segments of one "
                              "expert change; splitting is exact with topk_group = n_group or n_group 1")
    if isinstance(experts, bool) or not isinstance(experts, int) or experts % source or experts < 2 * source:
        raise HyperCloneError(f"--experts {experts}: the source has {source} experts, each split into m = "
                              f"{experts}/{source} segments, so --experts must be a multiple of {source} of at "
                              f"least {2 * source}")
    m, slot = experts // source, _width_slot(family)
    before, after = getattr(plan.source, slot), getattr(plan.grown, slot)
    if after % m:
        grown = f" grown to {after}" if after != before else ""
        raise HyperCloneError(f"--experts {experts}: each expert's MLP width ({before}{grown}) does not "
                              f"split into {m} equal segments; give an MLP width divisible by {m} (--ffn, --ffn-size)")
    key = family.config_keys.get("top_k", TOP_K_KEY)
    k = _setting(model_type, config, key)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= source:
        raise HyperCloneError(f"config.json: {key} must be an integer from 1 to {source}, got {k!r}")
    if top_k is not None and top_k != k * m:
        raise HyperCloneError(f"--top-k {top_k}: splitting each of {source} experts into {m} routes every token to "
                              f"{k} x {m} = {k * m} segments, which is what keeps the function; leave --top-k out")
    for rule in family.tensors:
        if rule.per_expert:
            _ffn_axis(rule, slot)
        elif _stacked(rule, slot):
            if _experts_axis(rule) != 0:
                raise HyperCloneError(f"{rule.name}: a stacked expert tensor whose experts axis is not the first "
                                      "cannot be segmented")
            _ffn_axis(rule, slot)
        elif any(_has_ffn(axis, slot) for axis in rule.axes):  # Hunyuan: the shared MLP is as wide as each expert
            raise HyperCloneError(f"--experts on {family.model_type}: {rule.name} has the experts' width "
                                  f"({family.config_keys[slot]}), which splitting divides by {m}; it cannot say a "
                                  "shared MLP of the old width")
        _experts_axis(rule)
    return m, key, k


def _segment(recipe: Recipe, name: str, axis: int, index: torch.Tensor, factor: float,
             expert: int | None = None) -> SegmentRecipe:
    maps = tuple(AxisMap(amap.index[index], amap.scale[index], amap.src_size) if i == axis else amap
                 for i, amap in enumerate(recipe.maps))
    base = {f.name: getattr(recipe, f.name) for f in fields(Recipe)}
    return SegmentRecipe(**{**base, "out_name": name, "maps": maps}, whole_maps=recipe.maps,
                         whole_name=recipe.out_name, axis=axis, index=index, factor=factor, expert=expert)


def _setting(model_type: str, config: dict[str, Any], key: str, default: Any = None) -> Any:
    """A config value saved under `key` or a name transformers maps to it (Kimi Linear: num_expert_group, n_group);
    where config.json states none of them, the config class's own default, as the model reads it (DeepSeek-V3's
    n_group 8, the renormalising routers' norm_topk_prob true); `default` only where the class has none."""
    names = sorted(_aliases(model_type, key), key=lambda name: name != key)
    stated = next((name for name in names if name in config), None)
    if stated is not None:
        return config[stated]
    value = _class_default(model_type, key)
    return default if value is None else value


def _class_default(model_type: str, key: str) -> Any:
    """The value transformers' config class of `model_type` gives `key` when config.json leaves it out (None when
    the class or the attribute is unknown)."""
    return getattr(_default_config(model_type), key, None)


@functools.cache
def _default_config(model_type: str) -> Any:
    """transformers' config of `model_type` built from its defaults, once (None for an unknown class or one that
    cannot build from its defaults)."""
    try:
        from transformers import CONFIG_MAPPING

        return CONFIG_MAPPING[model_type]()
    except Exception:  # noqa: BLE001 - an unknown class or one that cannot build with defaults: no default
        return None


def scores(model_type: str, config: dict[str, Any]) -> str:
    """The router's scores: ROUTING's "softmax" or "sigmoid", or the value of the config key it names (Cohere2-MoE's
    expert_selection_fn, transformers' default softmax)."""
    kind = ROUTING[model_type][0]
    return kind if kind in ("softmax", "sigmoid") else str(_setting(model_type, config, kind, "softmax"))


def renormalises(model_type: str, config: dict[str, Any]) -> bool:
    """Whether this router divides its top-k weights by their sum (ROUTING)."""
    kind, renorm = ROUTING[model_type]
    if kind not in ("softmax", "sigmoid") and scores(model_type, config) == "softmax":
        return True  # a softmax over the top k logits (Cohere2-MoE): the k weights sum to 1
    return renorm if isinstance(renorm, bool) else bool(_setting(model_type, config, renorm, False))


def down_factor(model_type: str, config: dict[str, Any], m: int) -> int:
    """What each segment's down projection is multiplied by: m where a segment's routing weight is 1/m of its
    expert's (softmax scores, or renormalised sigmoid scores), 1 where it is the expert's whole weight."""
    return m if scores(model_type, config) == "softmax" or renormalises(model_type, config) else 1


def segment_recipes(recipes: list[Recipe], family: Family, m: int, down: int | None = None) -> list[Recipe]:
    """The plan's recipes with every per-expert tensor cut into m segments (expert e -> e*m + s, the down
    projection times m) and every tensor with an experts axis (the router) repeating each expert's position m
    times. Other tensors are unchanged."""
    rules = [(rule, _pattern(rule.name)) for rule in family.tensors
             if rule.per_expert or _experts_axis(rule) is not None]
    out: list[Recipe] = []
    slot = _width_slot(family)
    for recipe in recipes:
        hit = next(((rule, match) for rule, pattern in rules if (match := pattern.match(recipe.out_name))), None)
        if hit is None:
            out.append(recipe)
            continue
        rule, match = hit
        if rule.may_be_transposed and recipe.contract != rule.contract:  # stored [experts, in, out]: plan.py's swap
            rule = rule.swapped()
        if _stacked(rule, slot):  # all experts in one tensor: expert e's segments are e*m .. e*m + m - 1 of axis 0
            out.append(_stacked_segments(recipe, rule, m, down, slot))
            continue
        if not rule.per_expert:
            axis = _experts_axis(rule)
            index = torch.arange(recipe.maps[axis].size).repeat_interleave(m)
            bias = rule.role != "router" and family.model_type in BIAS_ON_PROBABILITIES
            out.append(_segment(recipe, recipe.out_name, axis, index, 1.0 / m if bias else 1.0))
            continue
        axis = _ffn_axis(rule, slot)
        width = recipe.maps[axis].size // m
        factor = float(m if down is None else down) if axis == recipe.contract else 1.0  # what down projections read
        name = rule.name.replace("{layer}", match.group("layer")) if rule.per_layer else rule.name
        expert = int(match.group("expert"))
        for s in range(m):
            out.append(_segment(recipe, name.replace("{expert}", str(expert * m + s)), axis,
                                torch.arange(s * width, (s + 1) * width), factor, expert * m + s))
    return out


def _stacked_segments(recipe: Recipe, rule: TensorRule, m: int, down: int | None,
                      slot: str = "ffn") -> SegmentRecipe:
    """A stacked expert tensor [E, ...] cut into [E*m, ...]: every section of the MLP-width axis (gate, up) cut
    into m, segment s of expert e at e*m + s, the down projection times m."""
    axis = _ffn_axis(rule, slot)
    sections = len(rule.axes[axis])
    amap = recipe.maps[axis]
    section = amap.size // sections  # the grown MLP width
    width = section // m
    pieces = [torch.cat([p * section + torch.arange(s * width, (s + 1) * width) for p in range(sections)])
              for s in range(m)]
    index = torch.cat(pieces)
    factor = float(m if down is None else down) if axis == recipe.contract else 1.0
    experts = recipe.maps[0]
    maps = list(recipe.maps)
    maps[0] = AxisMap(experts.index.repeat_interleave(m), experts.scale.repeat_interleave(m), experts.src_size)
    maps[axis] = AxisMap(amap.index[pieces[0]], amap.scale[pieces[0]], amap.src_size)  # segment 0's (sizes)
    if rule.transposed and maps[1].size == maps[2].size:
        raise HyperCloneError(f"{recipe.out_name} would be square ({maps[1].size} x {maps[2].size}) split, in the "
                              "source's swapped layout [experts, in, out], which transformers cannot tell from "
                              "[experts, out, in] by its shape; choose another --experts, --hidden or --ffn")
    base = {f.name: getattr(recipe, f.name) for f in fields(Recipe)}
    return SegmentRecipe(**{**base, "maps": tuple(maps)}, whole_maps=recipe.maps, whole_name=recipe.out_name,
                         axis=axis, index=index, factor=factor, segments=m)


def storage_reason(recipes: list[Recipe], m: int) -> str | None:
    """Why the output dtype cannot hold the down projections times m exactly (m not a power of two, 16 bits)."""
    if m & (m - 1) == 0:
        return None
    scaled = sorted((r for r in recipes if isinstance(r, SegmentRecipe) and r.factor != 1.0 and r.kind != "zero"
                     and needs_exact_split(r.dtype)), key=lambda r: r.factor < 1.0)  # down projections first
    if not scaled:
        return None
    what = "expert down projections multiplied" if scaled[0].factor > 1.0 else "router correction biases divided"
    return (f"{str(scaled[0].dtype).removeprefix('torch.')} cannot hold {what} by {m} (not a power of two), "
            f"e.g. {scaled[0].out_name}")


def _aliases(model_type: str, key: str) -> set[str]:
    """`key` and the names transformers' config class maps to the same attribute (Qwen3-MoE saves num_experts as
    num_local_experts): a config.json may hold either, and every one it holds must say the new value."""
    from transformers import CONFIG_MAPPING

    try:
        attribute_map = getattr(CONFIG_MAPPING[model_type], "attribute_map", {}) or {}
    except KeyError:
        return {key}
    return {key} | {alias for alias, target in attribute_map.items() if target == key} | (
        {attribute_map[key]} if key in attribute_map else set())


def epsilon_note(model_type: str, m: int) -> str:
    """What a router's renormalising epsilon does to the split (ROUTER_EPSILON)."""
    eps = ROUTER_EPSILON[model_type]
    return (f"{model_type}'s router divides the chosen scores by their sum S + {eps:g}: split, the sum is {m} x S + "
            f"{eps:g}, so the routed experts' output is the source's times (S + {eps:g}) / (S + {eps:g} / {m}), "
            f"not exactly the source's: within {eps:g} / S relative (float32 rounding for S near 1, more where the "
            f"chosen scores are small)")


def segment_plan(plan: Plan, config: dict[str, Any], experts: int, top_k: int | None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Segment the plan's experts (in place: recipes, grown dimensions, config updates, notes, dtype); returns the
    grown config with the new expert count, expert width and top-k, and the summary for hyperclone.json."""
    m, top_k_key, k = check(plan, config, experts, top_k)
    family, source = plan.family, plan.source.experts
    down = down_factor(family.model_type, config, m)
    plan.recipes = segment_recipes(plan.recipes, family, m, down)
    slot = _width_slot(family)
    width = getattr(plan.grown, slot) // m
    updates: dict[str, Any] = {}
    for key, value in ((family.config_keys["experts"], experts), (family.config_keys[slot], width),
                       (top_k_key, k * m)):
        updates.update({name: value for name in _aliases(family.model_type, key) if name == key or name in config})
    shared = family.config_keys.get("shared_ffn", "")
    factors = shared.split("*")
    if len(factors) == 2 and factors[1] == family.config_keys["ffn"]:  # DeepSeek: n_shared_experts * expert width
        # the shared experts keep their width as each expert's shrinks; their count read off the source's widths (a
        # config.json may leave it at the class default)
        updates[factors[0]] = plan.source.shared_ffn // plan.source.ffn * m
    reason = storage_reason(plan.recipes, m)
    if reason is not None and plan.spec.dtype == "source":
        plan.storage_inexact.append(reason)
        plan.notes.append("NOT exact in the storage dtype (--dtype source): " + reason)
    elif reason is not None:
        plan.recipes = [replace(r, dtype=torch.float32) for r in plan.recipes]
        plan.notes.append("written in float32, where the growth is exact: " + reason)
        updates["dtype"] = "float32"
    plan.config_updates.update(updates)
    plan.grown = replace(plan.grown, experts=experts, **{slot: width})
    itemsize = next(r.dtype.itemsize for r in plan.recipes
                    if isinstance(r, SegmentRecipe) and (r.expert is not None or r.segments > 1))
    if width * itemsize % GROUPED_MM_ALIGN:
        plan.notes.append(f"each expert's width {width} x {itemsize} bytes is not a multiple of {GROUPED_MM_ALIGN} "
                          "bytes, which transformers' default experts kernel (grouped_mm) needs: load the model with "
                          "experts_implementation='eager'")
    renormalised = renormalises(family.model_type, config)
    if renormalised and family.model_type in ROUTER_EPSILON:
        plan.notes.append(epsilon_note(family.model_type, m))
    per_segment = sum(math.prod(r.out_shape) for r in plan.recipes  # one expert's parameters, over all layers
                      if isinstance(r, SegmentRecipe) and (r.expert is not None or r.segments > 1)) // experts
    total = plan.grown_parameters
    summary = {"experts_from": source, "experts": experts, "segments_per_expert": m, "top_k_from": k,
               "top_k": k * m, "expert_width": width, "down_projection_factor": down,
               "renormalised_top_k": renormalised, "total_parameters": total,
               "active_parameters_per_token": total - (experts - k * m) * per_segment}
    plan.notes.append(f"each of the {source} experts split into {m} segments of width {width}: {experts} experts, "
                      f"top-{k * m} (was top-{k}), segments' down projections x{down}")
    return {**config, **updates}, summary
