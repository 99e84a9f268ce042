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
from tiny_models import make_tiny

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import compare_models, load_causal_lm

REL_TOL = 1e-4
FAMILIES = ("qwen3_5_text", "qwen3_next")
MIXER = "model.layers.0.linear_attn."


def assert_same_function(src, out):
    result = compare_models(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
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
