"""Gated DeltaNet sources (Qwen3.5 text, Qwen3-Next): what the main matrix (tests/test_families.py runs both families
in every mode, width, uneven width and depth case) does not show by itself: where every copied head lands, the
fused per-key-head layout of Qwen3-Next, head counts from a --to config (value heads copied unevenly inside their
key head's group), depth growth keeping the layer pattern, and the targets that are refused.

The value heads of a gated DeltaNet are grouped under its key heads as grouped-query attention's query heads are
under their KV heads (hyperclone.grow.linear_attention), so a grown value head must sit in a copy of its source
key head's group.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import assert_out_of_core_catches, compare_tiny, make_tiny

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm

REL_TOL = 1e-4
FAMILIES = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")
MIXER = "model.layers.0.linear_attn."


def assert_same_function(src, out):
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match and result.argmax_agreement == 1.0, result


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("growth, value_heads", [
    (dict(width=2), [0, 1, 2, 3, 0, 1, 2, 3]),  # key heads [0, 1, 0, 1], each with its own group's value heads
    (dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=120), [0, 1, 2, 3, 0, 1]),  # 1.5x: key heads [0, 1, 0]
])
def test_value_heads_stay_in_their_key_heads_group(tmp_path, family, growth, value_heads):
    """2 key heads with 2 value heads each (tiny_models): the grown A_log and dt_bias, written out by hand."""
    src = make_tiny(family, tmp_path / "src")
    out = grow(src, tmp_path / "out", mode="symmetric", **growth)
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    for name in ("A_log", "dt_bias"):
        assert torch.equal(after[MIXER + name], before[MIXER + name][value_heads])
    assert torch.equal(after[MIXER + "norm.weight"], before[MIXER + "norm.weight"])  # per head: kept
    config = json.loads((out / "config.json").read_text())
    assert (config["linear_num_key_heads"], config["linear_num_value_heads"]) == (len(value_heads) // 2,
                                                                                  len(value_heads))
    assert_same_function(src, out)


def test_qwen3_next_fused_projections_move_per_key_head(tmp_path):
    """in_proj_qkvz holds per key head [q 8, k 8, v 2 x 12, z 2 x 12] = 64 rows, in_proj_ba [b 2, a 2]; x2 in
    symmetric mode: the blocks in key-head order [0, 1, 0, 1], each row's columns the source row's halved twice."""
    src = make_tiny("qwen3_next", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2, mode="symmetric")
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    for name, block in (("in_proj_qkvz.weight", 64), ("in_proj_ba.weight", 4)):
        source, grown = before[MIXER + name], after[MIXER + name]
        blocks = torch.cat([source[k * block:(k + 1) * block] for k in (0, 1, 0, 1)])
        assert torch.allclose(grown, torch.cat([blocks, blocks], dim=1) / 2, rtol=0, atol=1e-7)
    # the conv channels are [q | k | v], each section head by head: q and k of key heads [0, 1, 0, 1], then v
    conv, grown_conv = before[MIXER + "conv1d.weight"], after[MIXER + "conv1d.weight"]
    q, k, v = conv[:16], conv[16:32], conv[32:]
    expected = torch.cat([q, q, k, k, v, v])
    assert torch.equal(grown_conv, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_to_target_sets_the_linear_heads(tmp_path, family):
    """A target with 3 value heads per key head (the source has 2): the grown groups hold copies of their own
    source heads, one of the two copied twice; the recurrence and the gated norm are per head, so it is exact."""
    src = make_tiny(family, tmp_path / "src")
    target = json.loads((src / "config.json").read_text())
    target.update(hidden_size=96, num_attention_heads=12, num_key_value_heads=4, intermediate_size=160,
                  linear_num_key_heads=4, linear_num_value_heads=12)
    if family == "qwen3_next":
        target.update(moe_intermediate_size=80, shared_expert_intermediate_size=40)
    (tmp_path / "target.json").write_text(json.dumps(target))
    out = grow(src, tmp_path / "out", to=tmp_path / "target.json")
    config = json.loads((out / "config.json").read_text())
    assert (config["linear_num_key_heads"], config["linear_num_value_heads"]) == (4, 12)
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(after[MIXER + "A_log"], before[MIXER + "A_log"][[0, 1, 0, 2, 3, 2, 1, 0, 1, 3, 2, 3]])
    assert_same_function(src, out)


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_depth_keeps_the_layer_pattern(tmp_path, family):
    src = make_tiny(family, tmp_path / "src")
    out = grow(src, tmp_path / "out", layers=5, insert_after=(-1, 2), width=2)
    assert_same_function(src, out)
    assert load_causal_lm(out).config.layer_types == ["linear_attention", "linear_attention", "full_attention",
                                                      "linear_attention", "linear_attention"]


def test_a_hidden_size_that_splits_a_head_is_refused(tmp_path):
    src = make_tiny("qwen3_5_text", tmp_path / "src")
    with pytest.raises(HyperCloneError, match="2 key and 4 value heads of linear attention grown with the hidden "
                                              "size \\(48 -> 56\\) would not be whole numbers") as error:
        grow(src, tmp_path / "out", hidden_size=56, heads=7, kv_heads=7, ffn_size=100)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("heads, message", [
    ((4, 2), "cannot shrink the linear-attention heads from 2/4 to 4/2 \\(key/value\\): growth only adds$"),
    ((4, 10), "10 linear-attention value heads do not divide into 4 key heads"),
])
def test_to_target_refusals(tmp_path, heads, message):
    src = make_tiny("qwen3_5_text", tmp_path / "src")
    target = json.loads((src / "config.json").read_text())
    target.update(hidden_size=96, num_attention_heads=12, num_key_value_heads=4, intermediate_size=160,
                  linear_num_key_heads=heads[0], linear_num_value_heads=heads[1])
    (tmp_path / "target.json").write_text(json.dumps(target))
    with pytest.raises(HyperCloneError, match=message) as error:
        grow(src, tmp_path / "out", to=tmp_path / "target.json")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (dict(linear_num_value_heads=8), "--to: the target gives linear_num_value_heads without linear_num_key_heads; "
                                     "give both$"),
    (dict(linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=16),
     "--to: the target's linear_key_head_dim is 16, the source's 8; growth keeps it"),
    (dict(linear_num_key_heads=4, linear_num_value_heads=8, linear_conv_kernel_dim=4),
     "--to: the target's linear_conv_kernel_dim is 4, the source's 3; growth keeps it"),
])
def test_to_target_that_drops_a_head_count_or_changes_a_kept_size_is_refused(tmp_path, change, message):
    """A target stating one of the two linear head counts, or another head width or conv kernel than the source's
    (sizes growth keeps), would otherwise be written as a different model than the config says."""
    src = make_tiny("qwen3_5_text", tmp_path / "src")
    source = json.loads((src / "config.json").read_text())
    assert (source["linear_key_head_dim"], source["linear_conv_kernel_dim"]) == (8, 3)
    target = {**source, "hidden_size": 96, "num_attention_heads": 12, "num_key_value_heads": 4,
              "intermediate_size": 160, **change}
    if "linear_num_key_heads" not in change:
        del target["linear_num_key_heads"]
    (tmp_path / "target.json").write_text(json.dumps(target))
    with pytest.raises(HyperCloneError, match=message) as error:
        grow(src, tmp_path / "out", to=tmp_path / "target.json")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["qwen3_5_text", "qwen3_next"])
def test_multi_token_prediction_weights_are_left_out(tmp_path, family):
    """Released Qwen3.5 and Qwen3-Next checkpoints carry an MTP block (mtp.*) that transformers does not load: growth
    leaves it out (as load and save_pretrained would), says so in its notes, and keeps the function."""
    from safetensors.torch import save_file

    from hyperclone.grow.verify import load_causal_lm

    src = make_tiny(family, tmp_path / "src")
    state = load_file(src / "model.safetensors")
    state["mtp.fc.weight"] = torch.zeros(48, 96)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    out = grow(src, tmp_path / "out", width=2)
    assert not any(name.startswith("mtp.") for name in load_file(out / "model.safetensors"))
    notes = json.loads((out / "hyperclone.json").read_text())["notes"]
    assert any("1 multi-token prediction tensors left out (e.g. mtp.fc.weight)" in note for note in notes), notes
    assert compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=1e-4).rel_err <= 1e-4


def test_qwen3_next_without_experts_is_refused(tmp_path):
    """num_experts 0 makes every Qwen3-Next layer a dense MLP, which the table does not describe: refused by its
    config, before any tensor is read."""
    src = make_tiny("qwen3_next", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "num_experts": 0}))
    with pytest.raises(HyperCloneError, match="num_experts=0 cannot be grown: only checkpoints whose every") as error:
        grow(src, tmp_path / "out", width=2)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_heads_wider_than_the_hidden_size_with_biases(tmp_path, family):
    """Released checkpoints state head_dim apart from hidden_size (Qwen3-Next: 16 heads x 256 against 2048): here
    6 x 12 = 72 against 48, with q/k/v/o biases, so the gated query's [query | gate] halves and their bias move per
    head at a width the hidden size does not give."""
    src = make_tiny(family, tmp_path / "src", head_dim=12, attention_bias=True)
    assert load_file(src / "model.safetensors")["model.layers.1.self_attn.q_proj.bias"].shape == (6 * 12 * 2,)
    assert_same_function(src, grow(src, tmp_path / "out", width=2))


def test_the_gated_norm_states_its_own_offset_and_a_misplaced_one_fails_loudly():
    """The gated RMSNorm multiplies by its stored weight in (1 + w) families: its rule says offset 0; a norm_offset
    on a tensor that is not a norm, or not a number, is a table mistake."""
    from importlib import resources

    from hyperclone.grow.families import _parse_family, get_family

    family = get_family("qwen3_5_text")
    offsets = {r.name.split(".", 3)[-1]: r.offset(family.norm_offset) for r in family.tensors if r.role == "norm"}
    assert family.norm_offset == 1.0 and offsets["linear_attn.norm.weight"] == 0.0
    assert offsets["input_layernorm.weight"] == 1.0
    raw = json.loads(resources.files("hyperclone.grow.families").joinpath("qwen3_5_text.json").read_text())
    rules = {t["name"].split(".", 3)[-1]: t for t in raw["tensors"]}
    for broken in ({**rules["linear_attn.in_proj_qkv.weight"], "norm_offset": 0.0},  # a matrix
                   {**rules["input_layernorm.weight"], "norm_offset": "0"}):  # not a number
        tensors = [broken if t["name"] == broken["name"] else t for t in raw["tensors"]]
        with pytest.raises(ValueError, match="norm_offset is a number, on a norm only"):
            _parse_family({**raw, "tensors": tensors})


# ---- Kimi Linear: Kimi Delta Attention (KDA) between latent-attention layers ---------------------------------------

KDA = "model.layers.0.self_attn."


def channels(heads: list[int], width: int = 8) -> torch.Tensor:
    """The channel indices of whole heads of `width` channels each."""
    return torch.cat([torch.arange(h * width, (h + 1) * width) for h in heads])


@pytest.mark.parametrize("growth, heads", [
    (dict(width=2), [0, 1, 2, 3, 0, 1, 2, 3]),
    (dict(hidden_size=72, heads=9, kv_heads=9, ffn_size=36), [0, 1, 2, 3, 0, 1]),  # 1.5x: heads copied unevenly
])
def test_kimi_delta_attention_copies_whole_heads(tmp_path, growth, heads):
    """4 KDA heads of 8 (tiny_models): every per-head and per-channel tensor moves with its head (q/k/v rows and
    their convolutions, the forget gate's up-projection and dt_bias per channel, A_log and beta per head, the output
    gate's up-projection); the low-rank gates' down-projections keep their rank (head_dim) and divide their columns,
    the gated norm over a head's width is kept, o_proj reads the copies divided among them."""
    src = make_tiny("kimi_linear", tmp_path / "src")
    out = grow(src, tmp_path / "out", mode="symmetric", **growth)
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    rows = channels(heads)
    for name in ("q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight", "dt_bias", "f_b_proj.weight",
                 "g_b_proj.weight"):
        assert torch.equal(after[KDA + name], before[KDA + name][rows]), name
    assert torch.equal(after[KDA + "A_log"], before[KDA + "A_log"][:, :, heads])
    assert torch.equal(after[KDA + "o_norm.weight"], before[KDA + "o_norm.weight"])
    hidden = after["model.embed_tokens.weight"].shape[1]
    assert after[KDA + "f_a_proj.weight"].shape == after[KDA + "g_a_proj.weight"].shape == (8, hidden)
    assert after[KDA + "b_proj.weight"].shape == (len(heads), hidden)
    config = json.loads((out / "config.json").read_text())
    assert (config["linear_num_heads"], config["linear_head_dim"], config["linear_conv_kernel_dim"]) == (len(heads), 8,
                                                                                                        3)
    assert_same_function(src, out)


def test_kimi_release_config_grows_in_its_own_keys(tmp_path):
    """The releases state the KDA heads and the layer pattern only in linear_attn_config (num_heads, head_dim,
    short_conv_kernel_size; full_attn_layers and kda_layers counted from 1) and the dense prefix as
    first_k_dense_replace; KimiLinearConfig reads num_heads there over linear_num_heads, so growth writes the grown
    heads and, under depth growth, both layer lists into it (and the per-layer lists the class would derive)."""
    src = make_tiny("kimi_linear", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    for key in ("layer_types", "mlp_layer_types", "linear_num_heads", "linear_head_dim", "linear_conv_kernel_dim"):
        config.pop(key)
    config["linear_attn_config"] = dict(num_heads=4, head_dim=8, short_conv_kernel_size=3, full_attn_layers=[2],
                                        kda_layers=[1, 3])
    (src / "config.json").write_text(json.dumps(config))
    out = grow(src, tmp_path / "out", width=2, layers=5, insert_after=(0, 1))
    grown = json.loads((out / "config.json").read_text())
    assert grown["linear_attn_config"] == dict(num_heads=8, head_dim=8, short_conv_kernel_size=3,
                                               full_attn_layers=[3, 4], kda_layers=[1, 2, 5])
    assert grown["layer_types"] == ["linear_attention", "linear_attention", "full_attention", "full_attention",
                                    "linear_attention"]
    assert grown["mlp_layer_types"] == ["dense", "dense", "sparse", "sparse", "sparse"]
    assert_same_function(src, out)


def test_kimi_routing_is_unchanged(tmp_path):
    """DeepSeek-V3's router (sigmoid scores, a correction bias, groups, the top k renormalised and scaled) reads the
    residual stream: the grown model's router logits and chosen experts are the source's."""
    src = make_tiny("kimi_linear", tmp_path / "src")
    out = grow(src, tmp_path / "out", hidden_size=72, heads=9, kv_heads=9, ffn_size=36, mode="uneven", seed=2)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    tokens = torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = source(tokens, output_router_logits=True).router_logits
        after = grown(tokens, output_router_logits=True).router_logits
    assert len(before) == len(after) == 2  # the dense first layer has no router
    for a, b in zip(before, after, strict=True):
        assert a.shape == b.shape == (48, 4)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
        assert torch.equal(a.topk(2, dim=-1).indices.sort(-1).values, b.topk(2, dim=-1).indices.sort(-1).values)


def kimi_in_memory_layout(src):
    """The tiny checkpoint with KDA's convolutions fused and its forget gate moved, as transformers holds them."""
    from safetensors.torch import save_file

    state = load_file(src / "model.safetensors")
    state[KDA + "conv1d.weight"] = torch.cat([state.pop(KDA + f"{p}_conv1d.weight") for p in "qkv"])
    state[KDA + "forget_gate.A_log"] = state.pop(KDA + "A_log")
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("case, message", [
    ("tied", "Kimi Linear never ties lm_head to the embeddings"),
    ("in-memory", "Kimi Delta Attention in transformers' in-memory layout"),
    ("head-dim", "head_dim cannot grow exactly in latent attention"),
    ("experts", "--experts on kimi_linear with n_group 2 and topk_group 1: its router scores a group by the sum"),
])
def test_kimi_refusals(tmp_path, case, message):
    """What the table does not describe is refused in one line, before anything is written."""
    src = make_tiny("kimi_linear", tmp_path / "src")
    options = dict(width=2)
    if case == "tied":
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    elif case == "in-memory":
        kimi_in_memory_layout(src)
    elif case == "head-dim":
        options = dict(head_dim=16)
    else:
        options = dict(experts=8)
    with pytest.raises(HyperCloneError, match=message) as error:
        grow(src, tmp_path / "out", **options)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("corrupt", ["model.layers.0.self_attn.q_conv1d.weight",  # KDA: fused conv1d in memory
                                     "model.layers.0.self_attn.f_b_proj.weight",  # KDA: its forget_gate module
                                     "model.layers.2.self_attn.kv_b_proj.weight"])  # MLA (layer 1 in the source)
def test_kimi_out_of_core_verify(tmp_path, corrupt):
    """Block by block (KDA and MLA layers, dense and routed MLPs, an identity block), the blocks loaded in
    transformers' in-memory layout (the table's in_memory); one grown tensor 5% off fails its own block and no
    earlier one, as it fails in memory."""
    src = make_tiny("kimi_linear", tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", width=2, ffn=3, layers=4, insert_after=(0,))
    assert_out_of_core_catches(src, out, corrupt, 4, REL_TOL)


def test_minimax_grows_hidden_and_experts_with_its_heads_kept(tmp_path):
    """MiniMax-Text-01's lightning attention decays head h by 2 ** (-8 (h + 1) / heads) x (1 - layer / (layers - 1)):
    the heads (and head_dim, rope in its softmax layers) are kept while the hidden size and the experts grow, the
    decay tables (stored buffers) are written unchanged, every expert of the tiny model is routed to, and out-of-core
    verify finds a corrupted block. Other head counts, head_dim and depth are refused in one line."""
    src = make_tiny("minimax", tmp_path / "src")
    source, chosen = load_causal_lm(src), []
    for layer in source.model.layers:
        layer.mlp.gate.register_forward_hook(lambda module, args, out: chosen.append(out[2].flatten()))
    source(torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0)))
    assert len(chosen) == 3 and all(torch.bincount(c, minlength=4).min() > 0 for c in chosen)
    out = grow(src, tmp_path / "out", hidden_size=72, ffn_size=36, mode="uneven")
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["head_dim"], config["intermediate_size"]) == (72, 6, 2, 8, 36)
    grown = load_file(out / "model.safetensors")
    for name in ("slope_rate", "query_decay", "key_decay", "diagonal_decay"):
        assert torch.equal(grown[f"model.layers.2.self_attn.{name}"],
                           getattr(source.model.layers[2].self_attn, name))
    assert_out_of_core_catches(src, grow(src, tmp_path / "x2", width=2), "model.layers.2.self_attn.qkv_proj.weight", 3)
    for options, message in (
            (dict(width=2, heads=12), r"minimax keeps its 6 heads and 2 KV heads \(--heads 12 asked\): lightning "
                                      r"attention decays head h by 2 \*\* \(-8 \(h \+ 1\) / num_attention_heads\)"),
            (dict(width=2, kv_heads=3, heads=6), r"\(--kv-heads 3 asked\)"),
            (dict(width=2, head_dim=16), r"head_dim cannot grow exactly with rotary embeddings \(minimax\); its heads "
                                         "are kept too"),
            (dict(layers=4), "minimax with num_hidden_layers=3 cannot grow in depth: lightning attention's decay "
                             "rates scale with 1 - layer index")):
        with pytest.raises(HyperCloneError, match=message) as err:
            grow(src, tmp_path / "refused", **options)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "refused").exists()


def test_minimax_explicit_head_dim_and_unstored_decay_tables(tmp_path):
    """MiniMax-Text-01 states head_dim (128 beside 6144 / 64 = 96): a tiny model whose heads x head_dim (6 x 16) is
    not its hidden size grows exactly with head_dim kept and written. Its decay tables are buffers the model class
    computes again from the config (heads and layer count, both kept): a checkpoint without them grows exactly and
    the grown one holds none either."""
    from safetensors.torch import save_file

    src = make_tiny("minimax", tmp_path / "src", head_dim=16)
    out = grow(src, tmp_path / "out", width=2, ffn=2)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (96, 6, 16)
    stored = load_file(src / "model.safetensors")
    tables = ("slope_rate", "query_decay", "key_decay", "diagonal_decay")
    save_file({k: v for k, v in stored.items() if not k.endswith(tables)}, src / "model.safetensors",
              metadata={"format": "pt"})
    out = grow(src, tmp_path / "bare", width=2)
    assert_same_function(src, out)
    assert not [k for k in load_file(out / "model.safetensors") if k.endswith(tables)]

