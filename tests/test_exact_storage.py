"""Exact growth in the storage dtype (bf16, fp16) and a verify that measures it.

Source and grown model are both evaluated in float32 (hyperclone.grow.verify.load_causal_lm), with one tolerance
for every dtype: relative logit error <= 1e-4, every decisive argmax equal, identical greedy tokens. Before
the exact split, a random bf16 Llama grown 2x in the default mode was off by 8.7e-3 and flipped 0.8% of the
argmaxes, and verify called it exact with a 3e-2 tolerance for bf16.
"""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import FALCON_7B, FAMILIES, HIDDEN_FIXED, MOE_FAMILIES, compare_tiny, make_tiny

from hyperclone.cli import main
from hyperclone.grow.engine import grow
from hyperclone.grow.exact_split import kept_noise_power, split_columns, split_tiles
from hyperclone.grow.verify import load_causal_lm, verify, verify_length

REL_TOL = 1e-4
# Gated DeltaNet families: transformers' gated delta rule (torch_chunk_gated_delta_rule) computes in float32 whatever
# the model's dtype, so a float64 evaluation of a bf16 source grown x3 still differs from it by 1.8e-5 (qwen3_next)
# and 3.4e-5 (qwen3_5_moe_text), and in float32 such pairs reach 1.4e-4 (qwen3_next, seed 0) and 1.8e-4
# (qwen3_5_moe_text, seed 3), every argmax and greedy token the same: a looser bound there, the rest unchanged
LINEAR_ATTENTION_TOL = 3e-4
LINEAR_ATTENTION = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")
MODES = ("symmetric", "noisy", "diagonal", "uneven")


def stored_dtypes(folder):
    """The dtypes a checkpoint stores its tensors in, but for DeepSeek-V4's hash-routing tables (tid2eid), which stay
    int64 (test_families checks them); any other integer tensor shows here."""
    dtypes = set()
    for shard in folder.glob("*.safetensors"):
        with safe_open(shard, "pt") as handle:
            dtypes |= {handle.get_slice(name).get_dtype() for name in handle.keys() if not name.endswith(".tid2eid")}
    return dtypes


def assert_exact(src, out, tolerance: float = REL_TOL):
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=tolerance)
    assert result.ok, result
    assert result.rel_err <= tolerance and result.decisive_agreement == 1.0 and result.generate_match, result
    return result


# ---- the split itself ------------------------------------------------------------------------------

SPECIALS = {torch.bfloat16: [0.0, 2.0**-133, -(2.0**-126), 1.0, -3.0, 2.0**-120 * 3],
            torch.float16: [0.0, 2.0**-24, -(2.0**-14), 1.0, -3.0, 2.0**-20 * 3]}


def reference_unit(value: float, copies: int, dtype: torch.dtype, spread: float) -> float:
    """exact_split.grid's rule for one element in plain Python (math.frexp instead of bit operations):
    the dtype's spacing at |W|/c + spread (computed in float32, as grid does), with noise no coarser than
    W's lowest set bit (0 for a float32 subnormal W), never below the dtype's smallest subnormal."""
    import math

    p = {torch.bfloat16: 8, torch.float16: 11}[dtype]
    smallest = {torch.bfloat16: 2.0**-133, torch.float16: 2.0**-24}[dtype]
    x = float(torch.tensor(abs(value), dtype=torch.float32) / copies + spread)
    unit = 0.0 if x < 2.0**-126 else 2.0 ** (math.frexp(x)[1] - 1) * 2.0 ** (1 - p)
    if spread > 0.0 and value != 0.0:
        if abs(value) < 2.0**-126:
            lowest = 0.0
        else:
            mantissa, exponent = math.frexp(abs(value))
            integer = int(mantissa * 2**24)
            lowest = (integer & -integer) * 2.0 ** (exponent - 24)
        unit = min(unit, lowest)
    return max(unit, smallest)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_grid_follows_its_rule_on_edge_values(dtype):
    """The bit-operation grid (rewritten in place for speed) against its rule written with math.frexp: zeros,
    subnormals, powers of two, values with few and many significant bits, small and large spreads."""
    from hyperclone.grow.exact_split import grid

    tiny = torch.finfo(dtype).tiny
    values = [0.0, -0.0, tiny / 8, tiny, 2 * tiny, 1.0, -1.0, 0.75, 3.0, -0.0123, 1e-3, 2.0**-20, 0.3]
    weight = torch.tensor(values + [v * 1.37 for v in values], dtype=dtype).float()
    for copies in (2, 3, 4):
        for spread in (0.0, 1e-6, 1e-3, 0.5):
            got = grid(weight, copies, dtype, spread)
            want = [reference_unit(float(w), copies, dtype, spread) for w in weight]
            assert got.tolist() == want, (copies, spread)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("copies", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_split_tiles_sums_exactly_and_is_representable(dtype, copies, noise):
    generator = torch.Generator().manual_seed(copies)
    weight = (0.02 * torch.randn(64, 64, generator=generator)).to(dtype)
    weight[0, : len(SPECIALS[dtype])] = torch.tensor(SPECIALS[dtype]).to(dtype)  # zero, subnormals, round values
    weight = weight.float()
    std = noise * float(weight.pow(2).mean().sqrt()) / copies
    eta = torch.randn(copies, 64, 64, generator=generator) * std
    targets = list(weight / copies + eta - eta.mean(0))
    parts = split_tiles(weight, targets, dtype, 4 * std)
    assert all(torch.equal(p.to(dtype).float(), p) for p in parts)  # each copy is a value of the dtype
    assert torch.equal(sum(p.double() for p in parts), weight.double())  # and they sum to W exactly
    if noise == 0.0:  # symmetric: copies within half a unit of W / n, the last (the remainder) within n / 2
        spacing = torch.finfo(dtype).eps * (weight / copies).abs() + SPECIALS[dtype][1]
        for j, part in enumerate(parts):
            bound = (copies / 2 if j == copies - 1 else 0.5) * spacing
            assert bool(((part - weight / copies).abs() <= bound).all())
        if copies in (2, 4):  # exact halves / quarters wherever W / n does not underflow the dtype
            normal = (weight.abs() >= copies * torch.finfo(dtype).tiny) | (weight == 0)
            assert all(torch.equal(p[normal], (weight / copies)[normal]) for p in parts)


def test_noise_survives_the_exact_split():
    """0 dB zero-sum noise on two bf16 copies: the exact split keeps most of its power (measured 0.76 on
    this matrix; the Sterbenz remainder with exact-halves fallback keeps 0.52, DESIGN.md section 4)."""
    generator = torch.Generator().manual_seed(0)
    weight = (0.02 * torch.randn(512, 512, generator=generator)).to(torch.bfloat16).float()
    std = float(weight.pow(2).mean().sqrt()) / 2
    eta = torch.randn(512, 512, generator=generator) * std
    targets = [weight / 2 + eta, weight / 2 - eta]
    parts = split_tiles(weight, targets, torch.bfloat16, 4 * std)
    assert kept_noise_power(parts, weight / 2, targets) > 0.7



@pytest.mark.parametrize("copies", [2, 3])
def test_uneven_growth_tile_split_equals_the_column_split(copies):
    """--mode uneven on n plain copies splits with split_tiles (about 4x faster); on the same targets it gives the
    column split's copies bit for bit, and the copies sum to W exactly."""
    from hyperclone.grow.axis_map import _split_uneven_tiles

    generator = torch.Generator().manual_seed(copies)
    weight = (0.02 * torch.randn(64, 300, generator=generator)).to(torch.bfloat16).float()
    index = torch.arange(300 * copies) % 300
    shares = 1 / copies + 0.5 / copies * torch.randn(300 * copies, generator=generator)
    targets = weight[:, index] * shares
    spread = 4 * 0.5 / copies
    by_columns = split_columns(weight, targets, index, torch.ones(300 * copies, dtype=torch.bool), torch.bfloat16,
                               0.0, spread)
    by_tiles = _split_uneven_tiles(weight, targets, copies, torch.bfloat16, spread)
    assert torch.equal(by_tiles, by_columns)
    assert torch.equal(sum(t.double() for t in by_tiles.split(300, 1)), weight.double())


def test_split_columns_with_uneven_copies_and_inactive_columns():
    generator = torch.Generator().manual_seed(1)
    weight = (0.02 * torch.randn(16, 3, generator=generator)).to(torch.bfloat16).float()
    index = torch.tensor([0, 1, 2, 0, 1, 0, -1, 2])
    reader = torch.tensor([1 / 3, 1 / 2, 1 / 2, 1 / 3, 1 / 2, 1 / 3, 0, 1 / 2])
    active = torch.tensor([True, True, True, True, True, False, False, True])  # source 0: 2 of its 3 copies
    targets = weight[:, index.clamp(min=0)] * torch.where(active, reader, torch.zeros(1))
    out = split_columns(weight, targets, index, active, torch.bfloat16)
    assert torch.equal(out.to(torch.bfloat16).float(), out)
    assert bool((out[:, ~active] == 0).all())
    sums = torch.zeros(16, 3, dtype=torch.float64).index_add_(1, index[active], out[:, active].double())
    assert torch.equal(sums, weight.double())


# ---- every family, bf16 sources, widths 2 and 3, every mode ------------------------------------------

# Modes and widths rotate over the families (as tie settings do in tests/test_families.py, which grows every family
# in every mode in fp32): each family meets two of the four modes in bf16, one at x2 and one at x3, and each mode
# meets both widths across the families, at a quarter of the cross product's cases (the suite's time on 2 cores, ~1 s
# a case); HYPERCLONE_FULL_MATRIX=1 runs every (family, mode, width) before a release or after a change to the growth
# rules.
FULL_MATRIX = os.environ.get("HYPERCLONE_FULL_MATRIX") == "1"
# the families whose x2 growth needs no factor bf16 cannot hold meet x2 in the default mode always (the test below
# asserts their output stays bf16)
# (AFMoE's tiny model has muP's sqrt(hidden) embedding multiplier on, as Gemma's: sqrt(2) written in float32)
STAYS_BF16 = ("llama", "qwen2", "qwen3", "mistral", "gpt2", "gpt_neox", "opt",
              *(family for family in MOE_FAMILIES if family != "afmoe"))
BF16_MATRIX = [(family, mode, width) for f, family in enumerate(FAMILIES) for m, mode in enumerate(MODES)
               for width in (2, 3) if FULL_MATRIX or ((f + m) % 2 == 0 and width == (2, 3)[(f // 2 + m // 2) % 2])
               or (family in STAYS_BF16 and mode == "noisy" and width == 2)]


@pytest.mark.parametrize("family,mode,width", BF16_MATRIX)
def test_bf16_growth_is_exact_in_float32(tmp_path, family, mode, width):
    """bf16 sources grown x2 and x3 in each mode: exact by the float32 check. The output stays bf16 where
    bf16 holds the growth exactly; where it cannot (Gemma's embedding multiplier, a tied final norm's 1/3,
    ...), the default --dtype auto writes float32 and says why in hyperclone.json."""
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16, seed=width)
    factors = dict(width=1, ffn=width) if family in HIDDEN_FIXED else dict(width=width)  # (its MLP alone)
    out = grow(src, tmp_path / "out", mode=mode, seed=7, **factors)
    assert_exact(src, out, LINEAR_ATTENTION_TOL if family in LINEAR_ATTENTION else REL_TOL)
    provenance = json.loads((out / "hyperclone.json").read_text())
    assert provenance["function_preserving"] is True and provenance["exact_in_storage_dtype"] is True
    if provenance["output_dtypes"] == ["bfloat16"]:
        assert stored_dtypes(out) == {"BF16"}
    else:
        assert provenance["output_dtypes"] == ["float32"] and stored_dtypes(out) == {"F32"}
        assert any("written in float32" in note for note in provenance["notes"])
        assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    if family in STAYS_BF16 and width == 2:
        assert provenance["output_dtypes"] == ["bfloat16"]  # no factor bf16 cannot hold: stays bf16


FP16_MATRIX = [(family, mode, width, tied) for f, family in enumerate(("llama", "qwen3", "gpt2", "phi3"))
               for m, mode in enumerate(MODES) for width in (2, 3) for tied in (False, True)
               if FULL_MATRIX or tied == bool((f + m + width) % 2)]  # tied rotates like the widths above


@pytest.mark.parametrize("family,mode,width,tied", FP16_MATRIX)
def test_fp16_growth_is_exact_in_float32(tmp_path, family, mode, width, tied):
    src = make_tiny(family, tmp_path / "src", dtype=torch.float16, tied=tied)
    out = grow(src, tmp_path / "out", width=width, mode=mode, tie="keep")
    assert_exact(src, out)
    if not tied or width == 2:  # tied x3 puts 1/3 into the final norm: float32 (tested below)
        assert stored_dtypes(out) == {"F16"}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tied_odd_width_goes_float32_or_is_recorded_inexact(tmp_path, family):
    """Tied embeddings grown x3: the final norm must absorb 1/3, which bf16 cannot hold. auto writes an
    exact float32 checkpoint; --dtype source keeps bf16 and records that the output is not exact, and the
    float32 check confirms that it is not."""
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16, tied=True)
    auto = grow(src, tmp_path / "auto", width=3)
    assert stored_dtypes(auto) == {"F32"}
    assert_exact(src, auto)
    kept = grow(src, tmp_path / "kept", width=3, dtype="source")
    assert stored_dtypes(kept) == {"BF16"}
    provenance = json.loads((kept / "hyperclone.json").read_text())
    assert provenance["function_preserving"] is False and provenance["exact_in_storage_dtype"] is False
    assert "final norm" in " ".join(provenance["inexact_reasons"]) or "norm weights" in provenance["inexact_reasons"][0]
    result = compare_tiny(load_causal_lm(src), load_causal_lm(kept), tolerance=REL_TOL)
    assert result.rel_err > REL_TOL and not result.ok


def test_dtype_float32_writes_float32(tmp_path):
    src = make_tiny("qwen3", tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", width=3, dtype="float32")
    assert stored_dtypes(out) == {"F32"}
    assert_exact(src, out)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_bf16_uneven_width_and_depth(tmp_path, family):
    """Uneven targets need square-root scales (RMSNorm) or mean positions (LayerNorm): float32 by default,
    exact; identity layers and uneven head copies in bf16 stay exact."""
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16)
    target = dict(hidden_size=72, heads=9 if family != "gemma2" else 6, ffn_size=100)
    if family == "llama":
        target["kv_heads"] = 3
    if family == "gemma2":
        target["kv_heads"] = 3
    out = grow(src, tmp_path / "out", layers=3, **target)
    assert_exact(src, out)
    deeper = grow(src, tmp_path / "deeper", layers=4, width=1, mode="noisy")
    assert stored_dtypes(deeper) == {"BF16"}
    assert_exact(src, deeper)


# ---- layouts real checkpoints have -------------------------------------------------------------------

LAYOUTS = {
    # explicit head_dim with heads x head_dim != hidden (Qwen3-0.6B: 16 x 128 with hidden 1024)
    "llama-head-dim": ("llama", dict(head_dim=12)),
    "qwen3-head-dim": ("qwen3", dict(head_dim=16)),
    "gemma3-head-dim": ("gemma3_text", dict(head_dim=24, query_pre_attn_scalar=24)),
    # sliding windows that the 64-token check crosses
    "mistral-window": ("mistral", dict(sliding_window=8)),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1)),
    "gemma2-window": ("gemma2", dict(sliding_window=6)),
    # scaled RoPE, checked past the original context
    "llama3-rope": ("llama", dict(max_position_embeddings=128, rope_parameters=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=32, rope_theta=10000.0))),
    "yarn-rope": ("qwen3", dict(max_position_embeddings=128, rope_parameters=dict(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=48, rope_theta=10000.0))),
    "linear-rope": ("llama", dict(rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=10000.0))),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode,width", [("noisy", 2), ("symmetric", 3)])
def test_real_layouts_in_bf16(tmp_path, layout, mode, width):
    family, overrides = LAYOUTS[layout]
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16, **overrides)
    config = load_causal_lm(src).config
    length = verify_length(config)
    window = getattr(config, "sliding_window", None)
    if window and "window" in layout:
        assert length > window
    original = (config.rope_parameters or {}).get("original_max_position_embeddings")
    if original:
        assert length > original
    out = grow(src, tmp_path / "out", width=width, mode=mode)
    assert_exact(src, out)


def test_sharded_bf16_source(tmp_path):
    from transformers import AutoModelForCausalLM

    src = make_tiny("qwen2", tmp_path / "one", dtype=torch.bfloat16)
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(tmp_path / "src",
                                                                                    max_shard_size="20KB")
    assert len(list((tmp_path / "src").glob("*.safetensors"))) > 2
    out = grow(tmp_path / "src", tmp_path / "out", width=3, shard_size="50KB")
    assert len(list(out.glob("*.safetensors"))) > 2
    assert_exact(tmp_path / "src", out)


# ---- verify ------------------------------------------------------------------------------------------

def test_verify_fails_a_copy_one_ulp_off(tmp_path, capsys):
    """A grown bf16 model with one copy of one matrix moved by one bf16 ulp (what rounding each copy on its
    own did) is caught: verify exits 1. The untouched grown model passes."""
    src = make_tiny("llama", tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", width=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(src), str(out)])
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    tensors = load_file(out / "model.safetensors")
    name = "model.layers.0.self_attn.o_proj.weight"
    weight = tensors[name]
    half = weight.shape[1] // 2
    copy = weight[:, half:]
    weight[:, half:] = torch.nextafter(copy, torch.full_like(copy, float("inf")))  # +1 ulp, every element
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(src), str(out)])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["rel_err"] > REL_TOL and report["tolerance"] == REL_TOL


def test_verify_uses_one_tolerance_and_long_inputs(tmp_path):
    src = make_tiny("mistral", tmp_path / "src", dtype=torch.bfloat16, sliding_window=8)
    out = grow(src, tmp_path / "out", width=2)
    result = verify(src, out)
    assert result.ok and result.tolerance == REL_TOL and result.length >= 64


def test_verify_bad_device_is_one_line(tmp_path, capsys):
    src = make_tiny("llama", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(src), str(out), "--device", "nonsense"])
    assert exit_info.value.code == 2
    expected = "hyperclone: error: --device: not a torch device: 'nonsense'"
    assert capsys.readouterr().err.strip().splitlines() == [expected]


# ---- inspect ----------------------------------------------------------------------------------------

def test_inspect_lists_refusals_and_dtypes_per_row(tmp_path, capsys):
    """A tied OLMo v1 source cannot keep tied embeddings at any width: every row says so, nothing crashes.
    A tied bf16 llama: x2 stays bf16, x3 needs float32 for the final norm's 1/3."""
    olmo = make_tiny("olmo", tmp_path / "olmo", tied=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(olmo)])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.count("refused: olmo: tied embeddings cannot be kept exactly") == 3
    llama = make_tiny("llama", tmp_path / "llama", tied=True, dtype=torch.bfloat16)
    with pytest.raises(SystemExit):
        main(["inspect", str(llama), "--json"])
    rows = {row["width"]: row for row in json.loads(capsys.readouterr().out)["growths"]}
    assert rows[2]["output_dtypes"] == ["bfloat16"] and rows[3]["output_dtypes"] == ["float32"]
    assert rows[4]["output_dtypes"] == ["bfloat16"] and all(r["exact"] for r in rows.values())
    with pytest.raises(SystemExit):
        main(["inspect", str(llama), "--width", "3", "--dtype", "source"])
    assert "exact       no (bfloat16 cannot hold norm weights multiplied by 0.333333" in capsys.readouterr().out


# ---- out-of-core verify ------------------------------------------------------------------------------

@pytest.mark.parametrize("family,options", [
    ("llama", dict(width=2, layers=4)),
    ("gemma2", dict(width=3)),
    ("gpt2", dict(width=2, layers=3, insert_after=(-1,))),
    ("gpt_neox", dict(width=2)),
    ("gpt_bigcode", dict(width=2, layers=3)),  # multi-query: one KV head kept
    ("qwen3", dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=100)),
    ("opt", dict(width=2, layers=3)),
    ("gemma3_text", dict(width=2)),  # a rotary table per layer type
    ("olmo3", dict(width=2, layers=3)),
    # mixtures of experts: per-expert tensors on disk, fused 3-D experts in memory (the tables' in_memory)
    ("mixtral", dict(width=2, layers=3)),
    ("qwen3_moe", dict(width=3)),
    ("olmoe", dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=100)),
    ("qwen2_moe", dict(width=2, ffn=3)),
    ("granitemoeshared", dict(width=2, layers=3)),  # stacked 3-D experts renamed in memory, a shared MLP
    ("ernie4_5_moe", dict(width=2, layers=4)),  # a dense layer, experts, the correction bias renamed in memory
    ("gpt_oss", dict(width=2, ffn=3, layers=3)),  # [experts, in, out] with gate/up interleaved, attention sinks
])
def test_out_of_core_verify_passes_exact_growths(tmp_path, family, options):
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", **options)
    from hyperclone.grow.verify_blocks import verify_out_of_core

    result = verify_out_of_core(src, out)
    assert result.ok, result
    assert len(result.block_rel_err) == json.loads((out / "config.json").read_text()).get(
        "num_hidden_layers", json.loads((out / "config.json").read_text()).get("n_layer"))
    assert max(result.block_rel_err) <= REL_TOL and result.rel_err <= REL_TOL


def test_out_of_core_verify_passes_falcon_7b(tmp_path):
    """Falcon-7B's multi-query layout from bf16, with depth: block by block as in memory."""
    src = make_tiny("falcon", tmp_path / "src", dtype=torch.bfloat16, **FALCON_7B)
    out = grow(src, tmp_path / "out", width=2, layers=3)
    from hyperclone.grow.verify_blocks import verify_out_of_core

    result = verify_out_of_core(src, out)
    assert result.ok and len(result.block_rel_err) == 3, result
    assert max(result.block_rel_err) <= REL_TOL and result.rel_err <= REL_TOL


def test_out_of_core_verify_points_at_the_inexact_block(tmp_path, capsys):
    """One copy of layer 1's down projection one bf16 ulp off: the block check fails at block 1, exit 1."""
    src = make_tiny("llama", tmp_path / "src", dtype=torch.bfloat16, num_hidden_layers=3)
    out = grow(src, tmp_path / "out", width=2)
    tensors = load_file(out / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    weight = tensors[name]
    half = weight.shape[1] // 2
    weight[:, half:] = torch.nextafter(weight[:, half:], torch.full_like(weight[:, half:], float("inf")))
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(src), str(out), "--out-of-core"])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["worst_block"] == 1
    assert report["block_rel_err"][1] > REL_TOL and report["block_rel_err"][0] <= REL_TOL


def test_out_of_core_verify_blames_a_damaged_block_on_the_checkpoint(tmp_path):
    """A grown block whose tensor has the wrong shape (8 columns cut off) is the checkpoint's fault: one line that
    says which block and tensor, not the advice to verify in memory given for layers that cannot load alone."""
    from hyperclone.common.errors import HyperCloneError
    from hyperclone.grow.verify_blocks import verify_out_of_core

    src = make_tiny("llama", tmp_path / "src", num_hidden_layers=3)
    out = grow(src, tmp_path / "out", width=2)
    tensors = load_file(out / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"] = tensors["model.layers.1.mlp.down_proj.weight"][:, 8:].clone()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match=r"decoder block 1 does not match its layer class: size mismatch for "
                                              r"mlp\.down_proj\.weight") as err:
        verify_out_of_core(src, out)
    assert "\n" not in str(err.value) and "verify in memory" not in str(err.value)
