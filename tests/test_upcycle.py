"""Dense to mixture-of-experts, exact (hyperclone grow --experts E --top-k K): every MLP becomes E experts that start
as copies of it behind a new router with renormalised top-k weights, alone or with width and depth growth, in fp32
and bf16; the saved MoE checkpoint, loaded back by transformers, gives the dense model's logits (<= 1e-4 relative,
both in fp32) and the same greedy tokens."""

import json

import pytest
import torch
from tiny_models import compare_tiny, make_tiny

from hyperclone.cli import main
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm

REL_TOL = 1e-4
NO_BIAS = dict(attention_bias=False, mlp_bias=False)  # Mixtral's attention has no biases
SOURCES = {"llama": ("mixtral", NO_BIAS), "mistral": ("mixtral", {}), "qwen3": ("qwen3_moe", {}),
           "qwen2": ("qwen2_moe", {})}
CASES = [  # experts, top-k, width, extra layers, dtype
    (4, 2, 2, 1, torch.float32),
    (8, 1, 1, 0, torch.bfloat16),
    (4, 1, 2, 0, torch.bfloat16),
    (8, 2, 1, 2, torch.float32),
]


@pytest.mark.parametrize("family", sorted(SOURCES))
@pytest.mark.parametrize("experts,top_k,width,extra,dtype", CASES)
def test_upcycled_model_computes_the_dense_function(tmp_path, family, experts, top_k, width, extra, dtype):
    target, overrides = SOURCES[family]
    src = make_tiny(family, tmp_path / "src", dtype=dtype, **overrides)
    source = load_causal_lm(src)
    layers = source.config.num_hidden_layers + extra
    out = grow(src, tmp_path / "out", width=width, experts=experts, top_k=top_k, layers=layers, seed=4)
    grown = load_causal_lm(out)
    assert grown.config.model_type == target and grown.config.num_hidden_layers == layers
    assert grown.config.num_experts_per_tok == top_k
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.ok and result.rel_err <= REL_TOL and result.generate_match, result
    record = json.loads((out / "hyperclone.json").read_text())
    moe = record["upcycled"]
    assert moe["experts"] == experts and moe["top_k"] == top_k and record["function_preserving"]
    assert moe["total_parameters"] == sum(p.numel() for p in grown.parameters())
    assert moe["active_parameters_per_token"] < moe["total_parameters"]


def test_experts_differ_under_noisy_growth_and_routers_are_seeded(tmp_path):
    from safetensors.torch import load_file

    src = make_tiny("qwen3", tmp_path / "src")
    a = grow(src, tmp_path / "a", width=2, experts=4, top_k=2, seed=1)
    b = grow(src, tmp_path / "b", width=2, experts=4, top_k=2, seed=1)
    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # seeded
    e0, e1 = (ta[f"model.layers.0.mlp.experts.{e}.down_proj.weight"] for e in (0, 1))
    assert not torch.equal(e0, e1)  # each expert carries its own exact zero-sum noise
    router = ta["model.layers.0.mlp.gate.weight"]
    assert router.shape == (4, 96) and 0.01 < float(router.std()) < 0.03


@pytest.mark.parametrize("family,overrides,options,message", [
    ("llama", dict(attention_bias=True, mlp_bias=False), {}, "attention biases cannot become mixtral"),
    ("llama", dict(attention_bias=False, mlp_bias=True), {}, "MLP biases cannot be upcycled"),
    ("gemma", {}, {}, "gemma cannot be upcycled yet"),
    ("qwen3", {}, dict(top_k=5), "--top-k between 1 and --experts"),
    # moments are planned without experts: before, the dense MLP's were left out without a word
    ("llama", dict(attention_bias=False, mlp_bias=False), dict(moments_from="nowhere"),
     "--moments-from with --experts on a dense model"),
])
def test_refusals(tmp_path, family, overrides, options, message):
    src = make_tiny(family, tmp_path / "src", **overrides)
    with pytest.raises(HyperCloneError, match=message):
        grow(src, tmp_path / "out", width=2, experts=4, **options)
    assert not (tmp_path / "out").exists()


def test_command_line_and_verify(tmp_path, capsys):
    src = make_tiny("mistral", tmp_path / "src", dtype=torch.bfloat16)
    with pytest.raises(SystemExit) as exit_info:
        main(["grow", str(src), str(tmp_path / "out"), "--experts", "8", "--top-k", "2", "--quiet"])
    assert exit_info.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(src), str(tmp_path / "out")])
    assert exit_info.value.code == 0 and json.loads(capsys.readouterr().out)["ok"] is True


def test_inspect_shows_the_moe_plan(tmp_path, capsys):
    src = make_tiny("qwen3", tmp_path / "src")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(src), "--experts", "8", "--top-k", "2", "--json"])
    assert exit_info.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["upcycled"]["experts"] == 8 and info["upcycled"]["target"] == "qwen3_moe"
    assert info["upcycled"]["active_parameters_per_token"] < info["upcycled"]["total_parameters"]
    assert not (tmp_path / "out").exists()
