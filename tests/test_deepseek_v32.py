"""DeepSeek-V3.2 (deepseek_v32): DeepSeek-V3's latent attention and experts plus DeepSeek Sparse Attention's lightning
indexer, which picks the top index_topk keys each query attends to. Growth keeps the indexer's heads and width (its
scores scale by index_head_dim^-1/2 and index_n_heads^-1/2), wq_b reads the kept q latent unchanged, and wk and
weights_proj read the residual stream like any reader: the same keys are selected, checked here index for index.
The family-wide checks (every mode, uneven widths, depth, bf16) are tests/test_families.py's and
tests/test_exact_storage.py's."""

import json

import pytest
import torch
from tiny_models import compare_tiny, make_tiny

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm

REL_TOL = 1e-4
TOPK = 8  # the tiny model's index_topk


def selected_keys(model, tokens: torch.Tensor) -> list[list[list[set[int]]]]:
    """Per indexer layer, per sequence, per query: the set of keys (at or before the query) its indexer selects."""
    calls = []

    def record(module, args, output):
        calls.append(output)

    indexers = [layer.self_attn.indexer for layer in model.model.layers]
    handles = [indexer.register_forward_hook(record) for indexer in indexers]
    try:
        with torch.no_grad():
            model(input_ids=tokens)
    finally:
        for handle in handles:
            handle.remove()
    return [[[{int(k) for k in row if int(k) <= query} for query, row in enumerate(sequence)]
             for sequence in indices] for indices in calls]


def tokens(length: int = 48) -> torch.Tensor:
    return torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("options", [dict(width=2, mode="noisy", noise_db=0.0, ffn=3),
                                     dict(width=3, mode="uneven"),
                                     dict(hidden_size=72, heads=9, kv_heads=9, ffn_size=36, mode="diagonal")],
                         ids=["x2-noisy", "x3-uneven", "1.5x"])
def test_indexer_selects_the_same_keys(tmp_path, options):
    src = make_tiny("deepseek_v32", tmp_path / "src")
    out = grow(src, tmp_path / "out", seed=2, **options)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert grown.config.index_n_heads == source.config.index_n_heads == 8
    assert grown.config.index_head_dim == source.config.index_head_dim == 8
    assert grown.config.index_topk == TOPK
    before, after = selected_keys(source, tokens()), selected_keys(grown, tokens())
    assert len(before) == 3 and before == after
    # the selection matters: past the first TOPK positions every query drops keys it could have attended to
    assert all(len(keys) == TOPK for layer in before for sequence in layer for keys in sequence[TOPK:])
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL, result


def test_identity_blocks_leave_later_indexers_alone(tmp_path):
    """Two identity blocks (one before layer 0, one after layer 1): every source layer's indexer, now a later layer,
    selects the same keys; the identity blocks' own attention is zeroed (its o_proj writes nothing)."""
    src = make_tiny("deepseek_v32", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2, layers=5, insert_after=(-1, 1), seed=1)
    source, grown = load_causal_lm(src), load_causal_lm(out)
    assert json.loads((out / "config.json").read_text())["layer_types"] == ["indexed_attention"] * 5
    before, after = selected_keys(source, tokens()), selected_keys(grown, tokens())
    assert [after[1], after[2], after[4]] == before  # grown layers 0 and 3 are the identity blocks
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL, result


def test_bf16_release_layout_with_float32_indexer_weights(tmp_path):
    """DeepSeek-V3.2 asks transformers to keep indexer.weights_proj and the router in float32 in a bf16 model
    (_keep_in_fp32_modules): a bf16 checkpoint holding those in float32 grows each tensor in its own dtype, exactly."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    plain = make_tiny("deepseek_v32", tmp_path / "plain")
    weights = {name: tensor if name.endswith(("weights_proj.weight", "gate.weight", "e_score_correction_bias"))
               else tensor.to(torch.bfloat16) for name, tensor in load_file(plain / "model.safetensors").items()}
    (tmp_path / "src").mkdir()
    save_file(weights, tmp_path / "src" / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((plain / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    shutil.copy(plain / "generation_config.json", tmp_path / "src")
    out = grow(tmp_path / "src", tmp_path / "out", width=3)
    name = "model.layers.1.self_attn.indexer.weights_proj.weight"
    with safe_open(out / "model.safetensors", "pt") as handle:
        assert handle.get_slice(name).get_dtype() == "F32"
        assert handle.get_slice("model.layers.1.self_attn.indexer.wk.weight").get_dtype() == "BF16"
    source, grown = load_causal_lm(tmp_path / "src"), load_causal_lm(out)
    assert selected_keys(source, tokens()) == selected_keys(grown, tokens())
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL, result


@pytest.mark.parametrize("key,value", [("index_n_heads", 16), ("index_head_dim", 16)])
def test_target_that_grows_the_indexer_is_refused(tmp_path, key, value):
    """The indexer's heads and width are kept: its scores scale by index_n_heads^-1/2 and index_head_dim^-1/2."""
    src = make_tiny("deepseek_v32", tmp_path / "src")
    target = json.loads((src / "config.json").read_text())
    target.update(hidden_size=96, num_attention_heads=12, num_key_value_heads=12, **{key: value})
    (tmp_path / "target.json").write_text(json.dumps(target))
    with pytest.raises(HyperCloneError, match=f"target's {key} is {value}.*growth keeps it"):
        grow(src, tmp_path / "out", to=tmp_path / "target.json")
    assert not (tmp_path / "out").exists()


def test_release_refusals(tmp_path):
    """FP8 blocks (the Hub release's format; the table's refusal), and a config without the q latent the indexer
    reads (DeepseekV32Config's own validation): one line each, nothing written."""
    from safetensors.torch import load_file, save_file

    src = make_tiny("deepseek_v32", tmp_path / "src")
    weights = load_file(src / "model.safetensors")
    weights["model.layers.0.self_attn.indexer.wk.weight_scale_inv"] = torch.ones(1, 1)
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="FP8 block-quantized"):
        grow(src, tmp_path / "out", width=2)
    assert not (tmp_path / "out").exists()

    src = make_tiny("deepseek_v32", tmp_path / "src2")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "q_lora_rank": None}))
    with pytest.raises(HyperCloneError, match="cannot read it.*q_lora_rank"):
        grow(src, tmp_path / "out2", width=2)
    assert not (tmp_path / "out2").exists()


def test_glm5_shared_indexer_layers_grow_exactly(tmp_path):
    """GLM-5 (glm_moe_dsa): a "shared" indexer layer reuses the top-k keys of the last "full" layer before it. Width
    growth keeps every layer's keys (x2 and 1.5x with uneven heads). An identity block copying a full layer would choose
    new keys for the shared layers after it (measured: 0.68 relative logit error), so the table's identity_copies makes
    every identity block after the first layer a copy of a shared layer: no indexer of its own, its attention zeroed,
    and the shared layers after it keep the same full layer's keys (insertions after a full and after a shared layer;
    one before the first layer copies that full layer, whose keys the next layer recomputes)."""
    src = make_tiny("glm_moe_dsa", tmp_path / "src", num_hidden_layers=4,
                    mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                    indexer_types=["full", "shared", "full", "shared"], index_topk=4)
    for name, options in (("x2", dict(width=2)), ("uneven", dict(hidden_size=72, heads=9, kv_heads=9, ffn_size=36)),
                          ("after-full", dict(layers=5, insert_after=(0,))),
                          ("after-both", dict(width=2, layers=6, insert_after=(2, 3))),
                          ("front", dict(layers=6, insert_after=(-1, 0)))):
        out = grow(src, tmp_path / name, seed=3, **options)
        result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
        assert result.rel_err <= REL_TOL and result.generate_match, (name, result.rel_err)
    config = json.loads((tmp_path / "after-both" / "config.json").read_text())
    assert config["indexer_types"] == ["full", "shared", "full", "shared", "shared", "shared"]
    assert config["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse", "sparse", "sparse"]
    front = json.loads((tmp_path / "front" / "config.json").read_text())["indexer_types"]
    assert front == ["full", "full", "shared", "shared", "full", "shared"]
    # the release configs also state the schedule as a pattern string and a period: the pattern follows the layers,
    # the period (which would describe other layers) is written null, and identity blocks copy the nearest shared layer
    stated = make_tiny("glm_moe_dsa", tmp_path / "stated", num_hidden_layers=4,
                       mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                       indexer_types=["full", "shared", "full", "shared"], index_topk=4, index_topk_pattern="FSFS",
                       index_topk_freq=2, index_skip_topk_offset=1)
    out = grow(stated, tmp_path / "stated-out", seed=3, layers=6, insert_after=(2, 3))
    assert compare_tiny(load_causal_lm(stated), load_causal_lm(out), tolerance=REL_TOL).ok
    config = json.loads((out / "config.json").read_text())
    assert config["index_topk_pattern"] == "FSFSSS" and config["index_topk_freq"] is None
    assert config["index_skip_topk_offset"] is None
    assert [source for source, _ in json.loads((out / "hyperclone.json").read_text())["layers"]] == [0, 1, 2, 1, 3, 3]
