"""Gemma 4's language model (gemma4_text): the layouts its tiny model in tiny_models.py does not show (the dense
releases; E2B/E4B's per-layer embeddings, KV-shared last layers and double-wide MLPs, grown in width and depth
exactly), and the growths refused in one line, nothing written (a new layer that would become the one whose keys the
KV-shared layers read; stacked copies of them)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import assert_out_of_core_catches, compare_tiny, make_tiny

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm

REL_TOL = 1e-4
# the dense releases' layout (31B): no experts, keys and values of their own in the full-attention layers
DENSE = dict(enable_moe_block=False, num_experts=None, top_k_experts=None, moe_intermediate_size=None,
             attention_k_eq_v=False)
# the small releases' layout (E2B/E4B): dense, per-layer embeddings (8 per layer over their own 97-token vocabulary,
# packed [vocab, 5 x 8]), the last 2 of 5 layers reusing the keys and values of the last earlier layer of their kind
# (layer 3 layer 2's, layer 4 layer 1's: no k_proj, v_proj, k_norm of their own)
SMALL = dict(DENSE, hidden_size_per_layer_input=8, vocab_size_per_layer_input=97, num_hidden_layers=5,
             layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                          "full_attention"], num_kv_shared_layers=2)


def check(src, out):
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match and result.argmax_agreement == 1.0, result
    return result


@pytest.mark.parametrize("options", [dict(width=2, ffn=3, mode="noisy", noise_db=0.0),
                                     dict(hidden_size=72, heads=12, kv_heads=6, ffn_size=100, layers=4,
                                          mode="uneven")])
def test_dense_gemma4_grows_exactly(tmp_path, options):
    src = make_tiny("gemma4_text", tmp_path / "src", **DENSE)
    out = grow(src, tmp_path / "out", seed=1, **options)
    check(src, out)
    grown = load_file(out / "model.safetensors")
    assert "model.layers.1.self_attn.v_proj.weight" in grown and not any(".experts." in name for name in grown)


def test_hub_config_with_global_keys_grows_and_rewrites_them(tmp_path):
    """The Hub's configs state global_head_dim and num_global_key_value_heads (no per_layer_config): growth reads
    them through transformers and writes both forms, consistent, into the grown config."""
    src = make_tiny("gemma4_text", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    del config["per_layer_config"]
    config.update(global_head_dim=16, num_global_key_value_heads=2)
    (src / "config.json").write_text(json.dumps(config))
    out = grow(src, tmp_path / "out", width=2, layers=4, insert_after=(0,))
    after = json.loads((out / "config.json").read_text())
    assert after["global_head_dim"] == 16 and after["num_global_key_value_heads"] == 4
    assert after["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention", "full_attention"]
    assert after["per_layer_config"] == {str(i): {"head_dim": 16, "num_key_value_heads": 4} for i in (2, 3)}
    check(src, out)


def test_identity_layer_gets_layer_scalar_one(tmp_path):
    """layer_scalar multiplies a block's whole output, residual included: an identity block needs it at 1."""
    src = make_tiny("gemma4_text", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2, layers=4, insert_after=(1,))
    source, grown = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    assert source["model.layers.1.layer_scalar"].item() != 1.0
    assert grown["model.layers.2.layer_scalar"].item() == 1.0  # the identity block after layer 1
    assert torch.equal(grown["model.layers.3.layer_scalar"], source["model.layers.2.layer_scalar"])
    check(src, out)


@pytest.mark.parametrize("wide,options", [
    (False, dict(width=2)),
    (True, dict(width=2, mode="noisy", noise_db=0.0)),
    (False, dict(hidden_size=72, heads=12, kv_heads=6, ffn_size=100, mode="uneven")),
    (True, dict(hidden_size=72, heads=12, kv_heads=6, ffn_size=100, mode="uneven")),
    (False, dict(width=3, ffn=2)),
    (True, dict(width=3)),
])
def test_small_release_grows_exactly_in_width(tmp_path, wide, options):
    """E2B/E4B: per-layer embeddings kept (their width, vocabulary and packed table), the per-layer gates reading and
    the per-layer projections writing the grown residual stream, per_layer_model_projection times sqrt(new/old hidden)
    (the model scales it by 1/sqrt(hidden)); the KV-shared layers store no keys of their own, and with
    use_double_wide_mlp their MLPs are twice as wide, each half grown as the MLP."""
    src = make_tiny("gemma4_text", tmp_path / "src", **SMALL, use_double_wide_mlp=wide)
    out = grow(src, tmp_path / "out", seed=1, **options)
    check(src, out)
    source, grown = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    hidden, ffn = grown["model.norm.weight"].shape[0], grown["model.layers.0.mlp.gate_proj.weight"].shape[0]
    assert not any(f"layers.{i}.self_attn.{part}" in name for name in grown for i in (3, 4)
                   for part in ("k_proj", "v_proj", "k_norm"))
    assert "model.layers.2.self_attn.k_proj.weight" in grown
    assert grown["model.layers.3.mlp.gate_proj.weight"].shape == ((2 if wide else 1) * ffn, hidden)
    assert grown["model.layers.4.mlp.down_proj.weight"].shape == (hidden, (2 if wide else 1) * ffn)
    assert torch.equal(grown["model.embed_tokens_per_layer.weight"], source["model.embed_tokens_per_layer.weight"])
    assert grown["model.layers.1.per_layer_input_gate.weight"].shape == (8, hidden)
    if "width" in options:  # whole copies: each row sums back to the source's, times sqrt(new/old hidden)
        projection = grown["model.per_layer_model_projection.weight"].double().sum(1)
        expected = source["model.per_layer_model_projection.weight"].double().sum(1) * (hidden / 48) ** 0.5
        assert projection.allclose(expected, atol=1e-5)


def test_small_release_in_bf16_is_exact_in_float32(tmp_path):
    src = make_tiny("gemma4_text", tmp_path / "src", dtype=torch.bfloat16, **SMALL, use_double_wide_mlp=True)
    out = grow(src, tmp_path / "out", width=2, mode="noisy", seed=7)
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL and result.generate_match, result
    provenance = json.loads((out / "hyperclone.json").read_text())
    assert provenance["exact_in_storage_dtype"] is True and provenance["output_dtypes"] == ["float32"]


def test_small_release_with_stored_shared_keys_grows(tmp_path):
    """Releases may store k_proj, v_proj and k_norm in the KV-shared layers, which transformers drops on load
    (_keys_to_ignore_on_load_unexpected): they are grown as any layer's and still unused."""
    from safetensors.torch import save_file

    src = make_tiny("gemma4_text", tmp_path / "src", **SMALL)
    tensors = load_file(src / "model.safetensors")
    for part in ("k_proj.weight", "v_proj.weight", "k_norm.weight"):
        tensors[f"model.layers.3.self_attn.{part}"] = tensors[f"model.layers.2.self_attn.{part}"].clone()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", width=2)
    assert load_file(out / "model.safetensors")["model.layers.3.self_attn.k_proj.weight"].shape == (64, 96)
    check(src, out)


FULL = "full_attention"


@pytest.mark.parametrize("options,after,shared", [
    # the default spread's position 1 (after layer 1, the full layers' reference): a copy of layer 2 (the last
    # before the shared ones, a sliding layer's reference), not of layer 1
    (dict(layers=6), [0, 1, 2, 2, 3, 4], 2),
    (dict(layers=8, width=2, mode="noisy", noise_db=0.0), [0, 0, 1, 2, 2, 3, 3, 4], 3),
    # per-layer embeddings without KV sharing, KV sharing without per-layer embeddings
    (dict(layers=7, width=2, num_kv_shared_layers=0), [0, 1, 1, 2, 2, 3, 4], 0),
    (dict(layers=6, hidden_size_per_layer_input=0), [0, 1, 2, 2, 3, 4], 2),
    # after layer 2, the last before the shared ones: the block joins them, a copy of layer 3 (a shared one)
    (dict(layers=7, insert_after=(-1, 2), width=2, wide=True), [0, 0, 1, 2, 3, 3, 4], 3),
    (dict(layers=7, insert_after=(3, 4), hidden_size=72, heads=12, kv_heads=6, ffn_size=100, mode="uneven",
          wide=True), [0, 1, 2, 3, 3, 4, 4], 4),
])
def test_small_release_grows_exactly_in_depth(tmp_path, options, after, shared):
    """E2B/E4B in depth: each new layer gets its own slice of the packed per-layer tables (a copy of its source
    layer's) and writes nothing (per_layer_projection zeroed, layer_scalar 1); new layers before the KV-shared ones
    never follow the last layer of their kind before them, whose keys those read, and new layers after it join them
    (num_kv_shared_layers grows; no keys of their own, double-wide MLPs)."""
    options = dict(options)
    config = {**SMALL, **{k: options.pop(k) for k in ("num_kv_shared_layers", "hidden_size_per_layer_input")
                          if k in options}}
    src = make_tiny("gemma4_text", tmp_path / "src", **config, use_double_wide_mlp=options.pop("wide", False))
    out = grow(src, tmp_path / "out", seed=1, **options)
    check(src, out)
    config = json.loads((out / "config.json").read_text())
    layers = json.loads((out / "hyperclone.json").read_text())["layers"]
    kinds = SMALL["layer_types"]
    assert [src for src, _ in layers] == after and config["num_hidden_layers"] == len(after)
    assert config["layer_types"] == [kinds[i] for i in after] and config["num_kv_shared_layers"] == shared
    assert sorted(map(int, config["per_layer_config"])) == [g for g, i in enumerate(after) if kinds[i] == FULL]
    source, grown = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    per_layer = config["hidden_size_per_layer_input"] > 0
    if per_layer:
        table, packed = source["model.embed_tokens_per_layer.weight"], grown["model.embed_tokens_per_layer.weight"]
        assert packed.shape == (97, 8 * len(after))
    for g, (i, identity) in enumerate(layers):
        assert not per_layer or torch.equal(packed[:, 8 * g:8 * g + 8], table[:, 8 * i:8 * i + 8])
        assert (f"model.layers.{g}.self_attn.k_proj.weight" in grown) == (g < len(after) - shared)
        if identity:
            assert not per_layer or not grown[f"model.layers.{g}.per_layer_projection.weight"].any()
            assert grown[f"model.layers.{g}.layer_scalar"].item() == 1.0


def test_small_release_depth_growth_keeps_the_shared_keys_and_refuses_stacking(tmp_path):
    """A new layer right after layer 1, the last full layer before the KV-shared ones, would become the layer whose
    keys layer 4 reads if it copied layer 1 (computed from another input: 0.42 relative logit error): it copies layer
    2 instead, the last layer before the shared ones (a plan note says so), exact; the default spread is not moved.
    A new layer after layer 3 joins the shared block (noted too). Stacked copies of the shared layers would have no
    keys of their own: refused in one line, nothing written."""
    from hyperclone.grow.plan import GrowthSpec
    from hyperclone.grow.planning import plan_growth

    src = make_tiny("gemma4_text", tmp_path / "src", **SMALL)
    plan, _ = plan_growth(src, GrowthSpec(width=2, layers=7, insert_after=(1, 3)))
    assert plan.layers == [(0, False), (1, False), (2, True), (2, False), (3, False), (3, True), (4, False)]
    assert any("identity blocks 2 copy layer 2, the last before the KV-shared layers" in n for n in plan.notes)
    assert any("KV-shared last layers: 2 -> 3" in n for n in plan.notes)
    out = grow(src, tmp_path / "out", width=2, layers=7, insert_after=(1, 3))
    assert json.loads((out / "config.json").read_text())["num_kv_shared_layers"] == 3
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.ok and result.generate_match, result
    default, _ = plan_growth(src, GrowthSpec(layers=6))
    assert default.spec.insert_after is None and [g for g, (_, new) in enumerate(default.layers) if new] == [2]
    with pytest.raises(HyperCloneError, match="--depth-mode stack with 2 KV-shared last layers") as stacked:
        grow(src, tmp_path / "stacked", layers=10, depth_mode="stack")
    assert "\n" not in str(stacked.value) and not (tmp_path / "stacked").exists()


def test_uneven_global_kv_heads_are_refused(tmp_path):
    """The full-attention layers' 2 KV heads grow with the query heads: 12 -> 18 heads keeps them whole (3), 10 does
    not."""
    src = make_tiny("gemma4_text", tmp_path / "src")
    with pytest.raises(HyperCloneError, match="num_global_key_value_heads"):
        grow(src, tmp_path / "out", hidden_size=60, heads=10, kv_heads=5, ffn_size=100)
    assert not (tmp_path / "out").exists()


def test_splitting_experts_cuts_the_experts_own_width(tmp_path):
    """--experts cuts the routed experts' width (moe_intermediate_size), not the dense MLP's beside them
    (intermediate_size): x4 with width x2 exactly, x3 refused in one line (40 wide); x2 in test_segment.py."""
    src = make_tiny("gemma4_text", tmp_path / "src")
    with pytest.raises(HyperCloneError, match=r"each expert's MLP width \(40\) does not split into 3") as err:
        grow(src, tmp_path / "refused", width=1, experts=12)
    assert "\n" not in str(err.value) and not (tmp_path / "refused").exists()
    out = grow(src, tmp_path / "out", width=2, experts=16, seed=2)  # 40 -> 80 -> 16 experts of 20
    config = json.loads((out / "config.json").read_text())
    assert [config[key] for key in ("num_experts", "top_k_experts", "moe_intermediate_size", "intermediate_size")] == [
        16, 8, 20, 160]
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL and result.generate_match, result


@pytest.mark.parametrize("layout, options, corrupt", [
    # experts beside the MLP, full layers with their own head_dim and KV heads (keys as values), an identity block
    (dict(), dict(width=2, layers=4, insert_after=(0,)), "model.layers.3.self_attn.k_proj.weight"),
    (DENSE, dict(hidden_size=72, heads=12, kv_heads=6, ffn_size=100, layers=4, mode="uneven"),
     "model.layers.0.self_attn.v_proj.weight"),
    # per-layer embeddings (held by the model around the blocks), a KV-shared layer reading layer 2's keys
    (SMALL, dict(width=2, ffn=3), "model.layers.3.self_attn.q_proj.weight"),
    (SMALL, dict(width=2, layers=7, insert_after=(0, 3)), "model.layers.6.self_attn.q_proj.weight"),
])
def test_out_of_core_verify_runs_gemma4_blocks(tmp_path, layout, options, corrupt):
    """Block by block as in memory; one grown tensor 5% off fails its own block and no earlier one, as it fails in
    memory."""
    src = make_tiny("gemma4_text", tmp_path / "src", dtype=torch.bfloat16, **layout)
    out = grow(src, tmp_path / "out", **options)
    layers = json.loads((out / "config.json").read_text())["num_hidden_layers"]
    assert_out_of_core_catches(src, out, corrupt, layers, REL_TOL)


def test_stacking_that_ends_on_a_sliding_layer_is_refused(tmp_path):
    """Gemma4TextConfig makes the last layer full attention whatever layer_types says: a stack whose last copy is a
    sliding layer (3 layers [sliding, full, full] stacked to 4) is refused in one line, one that ends full (5) grows
    exactly."""
    src = make_tiny("gemma4_text", tmp_path / "src")
    with pytest.raises(HyperCloneError, match="makes the last layer full") as err:
        grow(src, tmp_path / "four", layers=4, depth_mode="stack")
    assert "\n" not in str(err.value) and not (tmp_path / "four").exists()
    out = grow(src, tmp_path / "five", layers=5, depth_mode="stack")
    assert json.loads((out / "config.json").read_text())["layer_types"][-1] == "full_attention"
