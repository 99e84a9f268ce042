"""GPT-OSS's MXFP4 expert weights (the openai/gpt-oss-20b and -120b releases) read as bf16 and grown exactly.

The reader's dequantization is checked bit for bit against transformers' own (convert_moe_packed_tensors); a tiny
GPT-OSS with its experts written as MXFP4 grows into a plain bf16 checkpoint that computes what the dequantized
source computes (the reference: the same model with transformers' dequantized weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import compare_tiny, make_tiny
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.mxfp4 import FP4_VALUES, dequantize
from hyperclone.grow.verify import load_causal_lm
from hyperclone.grow.verify_blocks import verify_out_of_core

REL_TOL = 1e-4
EXPERTS = ("gate_up_proj", "down_proj")
TINY = dict(hidden_size=64, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[experts, in, out] -> MXFP4 blocks [experts, out, in/32, 16] and scales [experts, out, in/32]: per group of
    32 values the exponent that puts the largest at most 6, each value the nearest E2M1 code."""
    rows = weight.transpose(1, 2).float()  # [experts, out, in], as the release stores it
    groups = rows.unflatten(-1, (-1, 32))
    exponent = torch.ceil(torch.log2(groups.abs().amax(-1).clamp(min=1e-30) / 6.0)).clamp(-127, 127)
    scaled = groups / torch.exp2(exponent).unsqueeze(-1)
    codes = (scaled.unsqueeze(-1) - torch.tensor(FP4_VALUES)).abs().argmin(-1).to(torch.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks, (exponent + 127).to(torch.uint8)


def write_mxfp4(src: Path, out: Path) -> Path:
    """`src` (a bf16 GPT-OSS folder) with its experts written as MXFP4, as the releases are."""
    out.mkdir()
    state = load_file(src / "model.safetensors")
    for name in [n for n in state if n.endswith(EXPERTS)]:
        state[name + "_blocks"], state[name + "_scales"] = quantize(state.pop(name))
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (out / "config.json").write_text(json.dumps(config))
    return out


def dequantized_reference(quantized: Path, src: Path, out: Path) -> Path:
    """The plain bf16 model the MXFP4 folder stands for, dequantized by transformers."""
    out.mkdir()
    state = load_file(quantized / "model.safetensors")
    for name in [n[: -len("_blocks")] for n in state if n.endswith("_blocks")]:
        state[name] = convert_moe_packed_tensors(state.pop(name + "_blocks"), state.pop(name + "_scales"))
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text((src / "config.json").read_text())
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_dequantize_equals_transformers_bit_for_bit(seed):
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (3, 20, 4, 16), generator=gen, dtype=torch.uint8)
    scales = torch.randint(100, 150, (3, 20, 4), generator=gen, dtype=torch.uint8)
    scales[0] = torch.arange(0, 80, dtype=torch.uint8).reshape(20, 4)  # exponents 2^-127 .. 2^-48 (bf16 subnormals)
    scales[1] = torch.arange(175, 255, dtype=torch.uint8).reshape(20, 4)  # 2^48 .. 2^127 (6 x 2^127 is inf in bf16)
    ours = dequantize(blocks, scales).transpose(1, 2)
    theirs = convert_moe_packed_tensors(blocks, scales)
    assert ours.dtype == theirs.dtype == torch.bfloat16 and ours.shape == theirs.shape == (3, 128, 20)
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))


@pytest.mark.parametrize("options", [dict(width=2), dict(width=2, ffn=3, layers=3, mode="uneven")])
def test_an_mxfp4_release_grows_into_the_bf16_model_it_stands_for(tmp_path, options):
    src = make_tiny("gpt_oss", tmp_path / "src", dtype=torch.bfloat16, **TINY)
    quantized = write_mxfp4(src, tmp_path / "mxfp4")
    reference = dequantized_reference(quantized, src, tmp_path / "reference")
    out = grow(quantized, tmp_path / "out", seed=3, **options)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    grown = load_file(out / "model.safetensors")
    assert not any(n.endswith(("_blocks", "_scales")) for n in grown)
    assert {t.dtype for t in grown.values()} == {torch.bfloat16}
    assert grown["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 128, 2 * 32 * options.get("ffn", 2))
    result = compare_tiny(load_causal_lm(reference), load_causal_lm(out), tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL and result.generate_match, result
    blocks = verify_out_of_core(quantized, out)  # its own reader, one decoder block at a time
    assert blocks.ok and max(blocks.block_rel_err) <= REL_TOL, blocks
    # and the same growth of the dequantized model gives the same tensors, bit for bit
    plain = load_file(grow(reference, tmp_path / "plain", seed=3, **options) / "model.safetensors")
    assert plain.keys() == grown.keys() and all(torch.equal(plain[n], grown[n]) for n in plain)


def test_broken_mxfp4_pairs_are_refused_in_one_line(tmp_path):
    src = make_tiny("gpt_oss", tmp_path / "src", dtype=torch.bfloat16, **TINY)
    quantized = write_mxfp4(src, tmp_path / "mxfp4")
    state = load_file(quantized / "model.safetensors")
    scales = state.pop("model.layers.1.mlp.experts.down_proj_scales")
    save_file(state, quantized / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="down_proj_blocks has no .*down_proj_scales") as err:
        grow(quantized, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    state["model.layers.1.mlp.experts.down_proj_scales"] = scales.to(torch.int16)
    save_file(state, quantized / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="must be uint8"):
        grow(quantized, tmp_path / "out")
    scales[0, 0, 0] = 255
    state["model.layers.1.mlp.experts.down_proj_scales"] = scales
    save_file(state, quantized / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="E8M0's NaN"):
        grow(quantized, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mxfp4_is_read_for_gpt_oss_only(tmp_path):
    src = make_tiny("llama", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4"}
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(HyperCloneError, match=r"is quantized \(mxfp4\)"):
        grow(src, tmp_path / "out")
