"""Hybrid state-space sources (Mamba2 mixers beside or among attention layers): the variants of each family's mixer
the main matrix (tests/test_families.py, which runs every family of tiny_models.TINY_CONFIGS) does not meet, the
targets that are refused and why, and the tools around growth (inspect, out-of-core verify) on a hybrid.

Mamba2 heads grow by the hidden size's factor, copied inside their B/C group (hyperclone.grow.plan._mamba2_maps);
the gated RMSNorm normalises each group, so it needs every head of a group copied the same number of times.
"""

import json

import pytest
import torch
from tiny_models import HYBRID_FAMILIES, compare_tiny, make_tiny

from hyperclone.cli import main
from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm
from hyperclone.grow.verify_blocks import verify_out_of_core

REL_TOL = 1e-4
UNEVEN = dict(hidden_size=72, heads=9, kv_heads=3, ffn_size=100)  # 1.5x: every second Mamba2 head copied twice


def assert_same_function(src, out):
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=REL_TOL)
    assert result.rel_err <= REL_TOL and result.generate_match and result.argmax_agreement == 1.0, result
    return result


# Falcon-H1 as configured by its releases (tiny_models), and the mixer options they do not use: no gated norm
# (uneven head copies are then exact), the norm before the gate, an inner width tied to the hidden size
FALCON_VARIANTS = {
    "no-gated-norm": dict(mamba_rms_norm=False),
    "norm-before-gate": dict(mamba_norm_before_gate=True),
    "inner-from-expand": dict(mamba_d_ssm=None, mamba_n_heads=12, mamba_rms_norm=False),  # 2 x 48 = 12 heads x 8
}


@pytest.mark.parametrize("variant", sorted(FALCON_VARIANTS))
@pytest.mark.parametrize("growth", [dict(width=3, mode="diagonal"), dict(UNEVEN, layers=3, mode="noisy")])
def test_falcon_h1_mixer_variants(tmp_path, variant, growth):
    overrides = FALCON_VARIANTS[variant]
    src = make_tiny("falcon_h1", tmp_path / "src", **overrides)
    if "hidden_size" in growth and overrides.get("mamba_rms_norm", True):
        with pytest.raises(HyperCloneError, match="gated RMSNorm normalises over each group's heads; 6 heads"):
            grow(src, tmp_path / "out", seed=1, **growth)
        return
    out = grow(src, tmp_path / "out", seed=1, **growth)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    factor = config["hidden_size"] // 48 if config["hidden_size"] % 48 == 0 else 1.5
    heads = json.loads((src / "config.json").read_text())["mamba_n_heads"]
    assert config["mamba_n_heads"] == heads * factor and config["mamba_d_head"] == 8
    assert config["mamba_n_groups"] == 2 and config["mamba_d_state"] == 8
    assert config.get("mamba_d_ssm") in (None, config["mamba_n_heads"] * 8)
    assert config["mlp_multipliers"] == [1.1, 0.9] and len(config["ssm_multipliers"]) == 5  # not per-layer lists


def test_mamba2_heads_stay_in_their_group(tmp_path):
    """Head h reads B/C group h // (heads / groups): the grown heads are ordered group by group, each group
    holding copies of its own source heads (a plain tile order would put copies of group 1's heads in group 0)."""
    from safetensors.torch import load_file

    src = make_tiny("falcon_h1", tmp_path / "src")
    out = grow(src, tmp_path / "out", width=2, mode="symmetric")
    before = load_file(src / "model.safetensors")["model.layers.0.mamba.A_log"]
    after = load_file(out / "model.safetensors")["model.layers.0.mamba.A_log"]
    assert torch.equal(after, before[[0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]])


# and LFM2's and LFM3's short convolutions, Jamba's Mamba1 mixers, RecurrentGemma's RG-LRU blocks (block_types cycle)
LAYERED = (*HYBRID_FAMILIES, "lfm2", "lfm3", "jamba", "recurrent_gemma")
MAMBA2 = (*HYBRID_FAMILIES, "mamba2")  # and the pure Mamba2 language model


@pytest.mark.parametrize("family", LAYERED)
def test_identity_depth_keeps_the_layer_kinds(tmp_path, family):
    src = make_tiny(family, tmp_path / "src")
    layers = load_causal_lm(src).config.num_hidden_layers  # NemotronH's config.json states only its pattern
    out = grow(src, tmp_path / "out", layers=layers + 2, insert_after=(-1, layers - 1), width=2)
    assert_same_function(src, out)
    provenance = json.loads((out / "hyperclone.json").read_text())
    sources = [layer for layer, _ in provenance["layers"]]
    kinds = provenance["source"]["layer_kinds"]
    if kinds is not None:
        assert provenance["grown"]["layer_kinds"] == [kinds[i] for i in sources]
    before, after = load_causal_lm(src).config.layer_types, load_causal_lm(out).config.layer_types
    assert list(after) == [before[i] for i in sources]  # as transformers reads the grown config


def test_falcon_h1_refusals(tmp_path):
    src = make_tiny("falcon_h1", tmp_path / "src", mamba_rms_norm=False)
    with pytest.raises(HyperCloneError, match="8 Mamba2 heads grown with the hidden size \\(48 -> 56\\) would not"):
        grow(src, tmp_path / "out", hidden_size=56, heads=8, kv_heads=2, ffn_size=100)
    assert not (tmp_path / "out").exists()


def test_bamba_refusals(tmp_path):
    """Bamba's inner width is expand x hidden and its gated norm always on: a 1.5x hidden size would copy every
    second head of a group twice."""
    src = make_tiny("bamba", tmp_path / "src")
    with pytest.raises(HyperCloneError, match="9 heads per group cannot hold the same number of copies of its 6 "
                                              "source heads \\(grow the hidden size by a whole multiple\\)$"):
        grow(src, tmp_path / "out", **UNEVEN)
    assert not (tmp_path / "out").exists()


def test_to_target_sets_the_mamba2_heads(tmp_path):
    """A target config that keeps Falcon-H1's explicit inner width: the mixer keeps its heads, even under an uneven
    hidden size with the gated norm."""
    src = make_tiny("falcon_h1", tmp_path / "src")
    target = json.loads((src / "config.json").read_text())
    target.update(hidden_size=72, num_attention_heads=9, num_key_value_heads=3, intermediate_size=100)
    (tmp_path / "target.json").write_text(json.dumps(target))
    out = grow(src, tmp_path / "out", to=tmp_path / "target.json")
    config = json.loads((out / "config.json").read_text())
    assert config["mamba_n_heads"] == 8 and config["mamba_d_ssm"] == 64 and config["hidden_size"] == 72
    assert_same_function(src, out)


@pytest.mark.parametrize("family", MAMBA2)
def test_inspect_explains_the_mixer(tmp_path, family, capsys):
    src = make_tiny(family, tmp_path / "src")
    with pytest.raises(SystemExit, match="0"):
        main(["inspect", str(src)])
    assert "Mamba2 heads" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="0"):
        main(["inspect", str(src), "--width", "2", "--layers", "5"])
    text = capsys.readouterr().out
    assert "ssm_heads" in text and "ordered group by group" in text and "exact       yes" in text


# and the families whose layers live under backbone.layers (Mamba, Mamba2) or transformer.blocks (DBRX)
@pytest.mark.parametrize("family", [*LAYERED, "mamba2", "mamba", "falcon_mamba", "dbrx"])
def test_out_of_core_verify_runs_hybrid_blocks(tmp_path, family):
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16)
    out = grow(src, tmp_path / "out", width=2, layers=load_causal_lm(src).config.num_hidden_layers + 1)
    if family == "nemotron_h":  # stored under backbone., loaded as model.: refused in one line
        with pytest.raises(HyperCloneError, match="does not store the decoder layers under model.layers .*in memory"):
            verify_out_of_core(src, out)
        return
    result = verify_out_of_core(src, out)
    assert result.ok, result
    assert max(result.block_rel_err) <= REL_TOL and result.rel_err <= REL_TOL


# Granite-4.0-H: experts stored as stacked 3-D tensors (each expert's matrix grows on its own), or none at all
# (Granite-4.0-H-Micro: num_local_experts 0, the shared MLP alone), or no Mamba2 layer (Granite-4.0-Micro)
GRANITE_VARIANTS = {
    "dense": dict(num_local_experts=0),
    "attention-only": dict(num_local_experts=0, layer_types=["attention"] * 3),
}


@pytest.mark.parametrize("variant", sorted(GRANITE_VARIANTS))
@pytest.mark.parametrize("growth", [dict(width=2, ffn=3, mode="noisy"),
                                    dict(hidden_size=96, heads=12, kv_heads=3, ffn_size=100, layers=4)])
def test_granite_hybrid_variants(tmp_path, variant, growth):
    src = make_tiny("granitemoehybrid", tmp_path / "src", **GRANITE_VARIANTS[variant])
    out = grow(src, tmp_path / "out", seed=2, **growth)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert config["num_local_experts"] == 0 and config["mamba_n_heads"] == 24
    assert config["shared_intermediate_size"] == 80 * (3 if "ffn" in growth else 100 / 40)


@pytest.mark.parametrize("growth", [dict(width=3, mode="diagonal"), dict(hidden_size=96, heads=12, kv_heads=3,
                                                                         ffn_size=60, mode="uneven")])
def test_granite_routing_is_unchanged(tmp_path, growth):
    """The router reads the residual stream like any input projection: every token takes the same experts with the
    same weights; the stacked expert tensors keep their experts and grow each one's MLP."""
    from safetensors import safe_open

    src = make_tiny("granitemoehybrid", tmp_path / "src")
    out = grow(src, tmp_path / "out", seed=4, **growth)
    source, grown = load_causal_lm(src), load_causal_lm(out)

    def keep(model, into):
        for name, module in model.named_modules():
            if name.endswith("block_sparse_moe.router"):
                module.register_forward_hook(lambda m, args, output, n=name: into.__setitem__(n, output[0]))

    before, after = {}, {}
    keep(source, before)
    keep(grown, after)
    tokens = torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        source(tokens), grown(tokens)
    assert sorted(before) == sorted(after) and len(before) == 3
    for name, a in before.items():
        b = after[name]
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
        chosen = a.topk(2, dim=-1).indices.sort(-1).values
        assert torch.equal(chosen, b.topk(2, dim=-1).indices.sort(-1).values)
        assert len({tuple(row.tolist()) for row in chosen}) >= 3  # the tiny model really routes
    result = compare_tiny(source, grown, tolerance=REL_TOL)
    assert result.ok, result
    ffn = json.loads((out / "config.json").read_text())["intermediate_size"]
    with safe_open(out / "model.safetensors", "pt") as handle:
        assert handle.get_slice("model.layers.0.block_sparse_moe.input_linear.weight").get_shape() == [
            4, 2 * ffn, json.loads((out / "config.json").read_text())["hidden_size"]]


def test_stacked_expert_tables_fail_loudly():
    from importlib import resources

    from hyperclone.grow.families import _parse_family

    raw = json.loads(resources.files("hyperclone.grow.families").joinpath("granitemoehybrid.json").read_text())
    _parse_family(raw)
    # contract 1 on [experts, in, out] is GPT-OSS's layout (allowed); contracting experts or a fused axis is not
    for axes, contract in ((["ffn", "experts", "hidden"], 2), (["experts", "ffn", "hidden"], 0),
                           (["experts", "ffn+ffn", "hidden"], 1), (["experts", "ffn", "hidden+hidden"], 2)):
        broken = [dict(t, axes=axes, contract=contract) if t["name"].endswith("input_linear.weight") and
                  "block_sparse_moe" in t["name"] else t for t in raw["tensors"]]
        with pytest.raises(ValueError, match="contract must name an unfused axis"):
            _parse_family({**raw, "tensors": broken})


# Nemotron-H: a latent MoE (the experts read and write moe_latent_size between fc1/fc2_latent_proj) and not
@pytest.mark.parametrize("latent", [None, 16])
@pytest.mark.parametrize("growth", [dict(width=3, ffn=2, mode="uneven"), dict(UNEVEN, ffn_size=36, mode="noisy"),
                                    dict(hidden_size=96, heads=8, kv_heads=2, head_dim=12, ffn_size=48)])
def test_nemotron_h_variants(tmp_path, latent, growth):
    """Also head_dim growth: NemotronH's attention has no RoPE (q.k absorbs the change of 1/sqrt(head_dim))."""
    src = make_tiny("nemotron_h", tmp_path / "src", moe_latent_size=latent)
    if growth.get("hidden_size") == 72:  # 12 Mamba2 heads x 1.5 under the gated norm: the target may keep them
        with pytest.raises(HyperCloneError, match="or give --to a config whose mamba_num_heads is a whole multiple"):
            grow(src, tmp_path / "out", **growth)
        target = {**json.loads((src / "config.json").read_text()), "hidden_size": 72, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "moe_intermediate_size": 36}
        (tmp_path / "target.json").write_text(json.dumps(target))
        growth = dict(to=tmp_path / "target.json", mode="noisy")
    out = grow(src, tmp_path / "out", seed=5, **growth)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert config["moe_latent_size"] == latent and config["n_routed_experts"] == 4


@pytest.mark.parametrize("latent", [None, 16])
def test_nemotron_h_identity_moe_block(tmp_path, latent):
    """An identity copy of the MoE block zeroes what writes the residual stream: fc2_latent_proj with a latent
    MoE (the experts' down projections keep their weights, so gradients reach both), the experts' down
    projections without one; the shared expert's down projection either way."""
    from safetensors.torch import load_file

    src = make_tiny("nemotron_h", tmp_path / "src", moe_latent_size=latent)
    out = grow(src, tmp_path / "out", layers=5, insert_after=(1,), width=2)
    assert_same_function(src, out)
    assert json.loads((out / "config.json").read_text())["hybrid_override_pattern"] == "MEE*-"
    grown = load_file(out / "model.safetensors")
    zero = lambda name: not bool(grown[f"backbone.layers.2.mixer.{name}"].any())  # noqa: E731
    assert zero("shared_experts.down_proj.weight") and zero("shared_experts.down_proj.bias")
    assert zero("experts.0.down_proj.weight") == (latent is None)
    if latent is not None:
        assert zero("fc2_latent_proj.weight") and zero("fc2_latent_proj.bias")
    assert not zero("experts.0.up_proj.weight") and not zero("gate.weight")


def test_nemotron_h_refusals(tmp_path):
    src = make_tiny("nemotron_h", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    with pytest.raises(HyperCloneError, match="never ties lm_head to the embeddings"):
        grow(src, tmp_path / "out", width=2)
    assert not (tmp_path / "out").exists()


def test_mamba2_refusals(tmp_path):
    """Mamba2 has no attention and no MLP: sizes asked of them are refused (the --ffn factor has nothing to grow and
    is left); its gated norm needs whole copies of every group's heads; the mamba_ssm name of its embedding, which
    transformers renames on load, is refused with the way out."""
    from safetensors.torch import load_file, save_file

    src = make_tiny("mamba2", tmp_path / "src")
    for options, message in ((dict(width=2, heads=12), "--heads .*: mamba2 has no attention"),
                             (dict(width=2, kv_heads=2), "--kv-heads .*: mamba2 has no attention"),
                             (dict(hidden_size=96, ffn_size=100), "--ffn-size .*: mamba2 has no MLP"),
                             (dict(hidden_size=72), "9 heads per group cannot hold the same number of copies")):
        with pytest.raises(HyperCloneError, match=message):
            grow(src, tmp_path / "out", **options)
        assert not (tmp_path / "out").exists()
    out = grow(src, tmp_path / "out", width=2, ffn=3, layers=3)
    config = json.loads((out / "config.json").read_text())
    assert [config[k] for k in ("hidden_size", "num_heads", "head_dim", "n_groups", "num_hidden_layers")] == [
        96, 24, 8, 2, 3]
    assert_same_function(src, out)
    state = load_file(src / "model.safetensors")
    state["backbone.embedding.weight"] = state.pop("backbone.embeddings.weight")
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(HyperCloneError, match="backbone.embedding.weight cannot be grown: .*save_pretrained"):
        grow(src, tmp_path / "renamed", width=2)


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
def test_mamba_time_step_rank_auto_is_kept(tmp_path, family):
    """Mamba (Mamba1) keeps the time step's rank, which a config may state as "auto" (ceil(hidden / 16), 3 here):
    the grown config states the source's number, else the class would derive ceil(72 / 16) = 5 from the grown hidden
    size and x_proj would not load. The inner width (expand x hidden) grows by uneven plain copies of its channels,
    exact (Falcon-Mamba's norms over dt, B and C see the kept widths); sizes of parts Mamba lacks are refused."""
    src = make_tiny(family, tmp_path / "src", tied=False, time_step_rank="auto")  # saved as the number, 3
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "time_step_rank": "auto"}))
    out = grow(src, tmp_path / "out", hidden_size=72, layers=3, mode="noisy", seed=2)
    grown = json.loads((out / "config.json").read_text())
    assert [grown[k] for k in ("hidden_size", "time_step_rank", "intermediate_size", "expand")] == [72, 3, 144, 2]
    assert_same_function(src, out)
    with pytest.raises(HyperCloneError, match=f"--heads .*: {family} has no attention"):
        grow(src, tmp_path / "heads", width=2, heads=12)


def test_tables_without_attention_or_mlp_fail_loudly():
    """A table without the heads slot describes no attention, one without ffn no MLP: their axis kinds and slots
    are then an error when the tables load."""
    from importlib import resources

    from hyperclone.grow.families import _parse_family

    raw = json.loads(resources.files("hyperclone.grow.families").joinpath("mamba2.json").read_text())
    _parse_family(raw)
    q = {"name": "backbone.layers.{layer}.q.weight", "axes": ["q", "hidden"], "contract": 1}
    with pytest.raises(ValueError, match="without the heads slot the table has no attention, but it uses q"):
        _parse_family({**raw, "tensors": [*raw["tensors"], q]})
    with pytest.raises(ValueError, match="without the ffn slot the table has no MLP, but it uses experts"):
        _parse_family({**raw, "config": {**raw["config"], "experts": "num_experts"}})
    with pytest.raises(ValueError, match="Mamba needs the config slots"):
        _parse_family({**raw, "config": {**raw["config"], "dt_rank": "time_step_rank"}})


def test_periods_layer_kinds_read_and_write():
    """Jamba's encoding: one partition per (period, offset) pair, layer i of its inside kind when i % period ==
    offset; a block's kind joins its parts ("mamba/moe") and a rule naming a part holds in every block that has it.
    Written back with the source's own values where they still say the layers, else the first that do (a period
    longer than the stack names one layer), or refused in one line."""
    from types import SimpleNamespace

    from hyperclone.grow.layer_kinds import has_part, parse_layer_kinds, read_layer_kinds, write_layer_kinds

    spec = parse_layer_kinds("test", {"periods": [
        {"period": "attn_layer_period", "offset": "attn_layer_offset", "inside": "attention", "outside": "mamba"},
        {"period": "expert_layer_period", "offset": "expert_layer_offset", "inside": "moe", "outside": "dense"}]})
    keys = ("attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset")

    def config(*values):
        return SimpleNamespace(**dict(zip(keys, values, strict=True)))

    md, me, ad = "mamba/dense", "mamba/moe", "attention/dense"
    assert read_layer_kinds(spec, config(8, 4, 2, 1), 8) == (md, me, md, me, ad, me, md, me)
    assert has_part(ad, ("attention",)) and has_part(me, ("moe",)) and not has_part(md, ("moe", "attention"))
    assert write_layer_kinds(spec, config(8, 4, 2, 1), (md, me, md, me, ad, me, md, me) * 2) == dict(
        zip(keys, (8, 4, 2, 1), strict=True))
    assert write_layer_kinds(spec, config(4, 2, 2, 1), (md, me, md, ad, me)) == dict(zip(keys, (4, 3, 3, 1),
                                                                                          strict=True))
    with pytest.raises(HyperCloneError, match="attn_layer_period/attn_layer_offset: the grown layers would put "
                                              "attention blocks at 2, 3 of 4, which a period and an offset") as error:
        write_layer_kinds(spec, config(4, 2, 2, 1), (md, me, ad, ad))
    assert "\n" not in str(error.value)
    with pytest.raises(HyperCloneError, match="attn_layer_offset must be an integer from 0 to 3, got 4"):
        read_layer_kinds(spec, config(4, 4, 2, 1), 4)
    for raw in ({"periods": []}, {"periods": [{"period": "p", "offset": "o", "inside": "a"}]},
                {"periods": [{"period": "p", "offset": "o", "inside": "a", "outside": "a"}]},
                {"periods": [{"period": "p", "offset": "o", "inside": "a/b", "outside": "c"}]}):
        with pytest.raises(ValueError, match="layer_kinds periods"):
            parse_layer_kinds("test", raw)


def test_lists_layer_kinds_read_and_write():
    """DeepSeek-V4's encoding: two per-layer lists (attention kind, MLP kind), each translated by its own values; a
    block's kind joins its parts ("csa/hash") and a rule naming a part holds in every block that has it. Written back
    list by list in each list's own spelling; a malformed table fails when it loads."""
    from types import SimpleNamespace

    from hyperclone.grow.layer_kinds import has_part, parse_layer_kinds, read_layer_kinds, write_layer_kinds

    spec = parse_layer_kinds("test", {"lists": [
        {"list": "layer_types", "values": {"sliding_attention": "sliding", "compressed_sparse_attention": "csa"}},
        {"list": "mlp_layer_types", "values": {"hash_moe": "hash", "moe": "moe"}}]})
    config = SimpleNamespace(layer_types=["sliding_attention", "compressed_sparse_attention"] * 2,
                             mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"])
    kinds = read_layer_kinds(spec, config, 4)
    assert kinds == ("sliding/hash", "csa/hash", "sliding/moe", "csa/moe") and spec.kinds == ("sliding", "csa",
                                                                                              "hash", "moe")
    assert has_part(kinds[1], ("csa",)) and has_part(kinds[1], ("hash",)) and not has_part(kinds[2], ("csa", "hash"))
    assert write_layer_kinds(spec, config, kinds + kinds[1:2]) == {
        "layer_types": [*config.layer_types, "compressed_sparse_attention"],
        "mlp_layer_types": [*config.mlp_layer_types, "hash_moe"]}
    with pytest.raises(HyperCloneError, match=r"config.json: mlp_layer_types: layer kind 'dense' is not described"):
        read_layer_kinds(spec, SimpleNamespace(layer_types=config.layer_types, mlp_layer_types=["dense"] * 4), 4)
    for raw in ({"lists": [{"list": "layer_types", "values": {"a": "x"}}]},  # one list: use "list"
                {"lists": [{"list": "a", "values": {"a": "x"}}, {"list": "b", "values": {"b": "x"}}]},  # not distinct
                {"lists": [{"list": "a", "values": {"a": "x/y"}}, {"list": "b", "values": {"b": "z"}}]},
                {"lists": [{"list": "a", "values": {}}, {"list": "b", "values": {"b": "z"}}]}):
        with pytest.raises(ValueError, match="layer_kinds lists"):
            parse_layer_kinds("test", raw)


def test_cycle_layer_kinds_read_and_write():
    """RecurrentGemma's encoding: block_types repeated over the layers (layer i: entry i mod its length); written
    back as the source's list where its cycle still says the grown layers, else one entry per grown layer."""
    from types import SimpleNamespace

    from hyperclone.grow.layer_kinds import parse_layer_kinds, read_layer_kinds, write_layer_kinds

    spec = parse_layer_kinds("test", {"cycle": "block_types", "values": {"recurrent": "r", "attention": "a"}})
    config = SimpleNamespace(block_types=["recurrent", "recurrent", "attention"])
    assert read_layer_kinds(spec, config, 4) == ("r", "r", "a", "r")
    assert write_layer_kinds(spec, config, ("r", "r", "a", "r", "r", "a", "r")) == {"block_types": config.block_types}
    assert write_layer_kinds(spec, config, ("r", "r", "r", "a", "r")) == {
        "block_types": ["recurrent", "recurrent", "recurrent", "attention", "recurrent"]}
    for value in ([], None, ["recurrent", "mlp"]):
        with pytest.raises(HyperCloneError, match="config.json: block_types"):
            read_layer_kinds(spec, SimpleNamespace(block_types=value), 4)
    with pytest.raises(ValueError, match="layer_kinds cycle takes"):
        parse_layer_kinds("test", {"cycle": "block_types", "inside": "a"})


def test_jamba_identity_blocks_take_the_kind_the_periods_say(tmp_path):
    """One identity block shifts every later block, which a period and an offset can rarely say; an identity block
    computes the identity whatever its kind, so each takes the kind (and a source block's weights of that kind) that
    keeps both partitions periodic: four identity blocks after the last layer continue the period. Where no choice of
    kinds can say the layers, growth is refused in one line and nothing is written. The rank stated as "auto" is
    written as the source's number."""
    src = make_tiny("jamba", tmp_path / "src", mamba_dt_rank="auto")  # m/dense, m/moe, attention/dense, m/moe
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "mamba_dt_rank": "auto"}))
    out = grow(src, tmp_path / "out", layers=8, insert_after=(3, 3, 3, 3), width=2, seed=3)
    grown = json.loads((out / "config.json").read_text())
    assert [grown[k] for k in ("attn_layer_period", "attn_layer_offset", "expert_layer_period",
                               "expert_layer_offset", "mamba_dt_rank")] == [4, 2, 2, 1, 3]
    provenance = json.loads((out / "hyperclone.json").read_text())
    assert provenance["layers"] == [[0, False], [1, False], [2, False], [3, False], [0, True], [1, True], [2, True],
                                    [1, True]]
    assert any("identity blocks 4, 5, 6, 7 copy layer 0, 1, 2, 1" in note for note in provenance["notes"])
    assert list(load_causal_lm(out).config.layers_block_type) == ["mamba", "mamba", "attention", "mamba"] * 2
    assert_same_function(src, out)
    alternating = make_tiny("jamba", tmp_path / "alt", attn_layer_period=2, attn_layer_offset=1)  # a/e every 2nd
    with pytest.raises(HyperCloneError, match="attention blocks at 2, 4 of 5, which a period and an offset cannot"):
        grow(alternating, tmp_path / "refused", layers=5, insert_after=(0,))
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("growth", [dict(UNEVEN, mode="uneven"), dict(width=2, ffn=3, mode="diagonal", layers=4)])
def test_lfm2_short_convolutions(tmp_path, growth):
    """LFM2's gated short convolution multiplies channels (B x, then C conv(.)): its channels are plain copies
    (scale 1) even where the residual stream's copies are scaled for RMSNorm (1.5x), and out_proj divides by them.
    The grown config states its MLP width (block_auto_adjust_ff_dim false)."""
    src = make_tiny("lfm2", tmp_path / "src", tied=False)
    out = grow(src, tmp_path / "out", seed=6, **growth)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert config["block_auto_adjust_ff_dim"] is False and config["intermediate_size"] == growth.get("ffn_size", 240)
    assert load_causal_lm(out).model.layers[0].feed_forward.w1.out_features == config["intermediate_size"]


@pytest.mark.parametrize("tie", ["keep", "untie"])
def test_lfm2_release_config_names(tmp_path, tie):
    """LFM2's releases state block_ff_dim and tie_embedding, which Lfm2Config reads over intermediate_size and
    tie_word_embeddings: the grown config writes the grown values into them too (left stale, a grown MLP width would
    not load and an untied model would load tied, its output projection dropped)."""
    src = make_tiny("lfm2", tmp_path / "src", tied=True)
    config = json.loads((src / "config.json").read_text())
    config["block_ff_dim"] = config.pop("intermediate_size")
    config["tie_embedding"] = config.pop("tie_word_embeddings", True)
    (src / "config.json").write_text(json.dumps(config))
    out = grow(src, tmp_path / "out", width=2, tie=tie)
    config = json.loads((out / "config.json").read_text())
    assert config["block_ff_dim"] == config["intermediate_size"] == 160  # 2 x the adjusted width, 80
    assert config["tie_embedding"] is config.get("tie_word_embeddings", config["tie_embedding"]) is (tie == "keep")
    grown = load_causal_lm(out)
    tied = grown.get_output_embeddings().weight.data_ptr() == grown.get_input_embeddings().weight.data_ptr()
    assert tied is (tie == "keep")
    assert_same_function(src, out)


def test_lfm2_full_attn_idxs_follow_the_layers(tmp_path):
    """Hub LFM2 configs list the attention layers as full_attn_idxs too: rewritten with layer_types."""
    src = make_tiny("lfm2", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "full_attn_idxs": [1]}))
    out = grow(src, tmp_path / "out", layers=5, insert_after=(0, 1))
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"] == ["conv", "conv", "full_attention", "full_attention", "conv"]
    assert config["full_attn_idxs"] == [2, 3]
    assert_same_function(src, out)


def test_lfm3_gates_sandwich_norms_and_layer_types(tmp_path):
    """LFM3: LFM2's short convolutions among sliding and full attention layers, each attention head's output scaled
    by a sigmoid gate read from the residual stream (stored gate_proj, g_proj in memory: its rows follow the query
    heads, copied with them, 6 -> 9 unevenly), sandwich norms on both branches (an identity block's zeroed branch
    stays zero through them). Both attention kinds keep their own entry in layer_types under depth growth, and the
    sources without the gate or the sandwich norms grow too."""
    src = make_tiny("lfm3", tmp_path / "src", tied=False)
    out = grow(src, tmp_path / "out", hidden_size=72, heads=9, kv_heads=3, ffn_size=100, layers=6,
               insert_after=(1, 2), seed=6)
    assert_same_function(src, out)
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"] == ["conv", "sliding_attention", "sliding_attention", "full_attention",
                                     "full_attention", "conv"]
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as grown, safe_open(src / "model.safetensors", "pt") as small:
        name = "model.layers.1.self_attn.gate_proj.weight"
        assert grown.get_slice(name).get_shape() == [9, 72] and small.get_slice(name).get_shape() == [6, 48]
        assert not any(".g_proj." in key for key in grown.keys())  # the checkpoint's names, as save_pretrained
    plain = make_tiny("lfm3", tmp_path / "plain", use_attention_gate=False, use_sandwich_norm=False)
    assert_same_function(plain, grow(plain, tmp_path / "plain-out", width=2, layers=5))


@pytest.mark.parametrize("raw", [
    {"list": "layer_types", "indices_too": {"key": "full_attn_idxs"}},
    {"list": "layer_types", "indices_too": ["full_attn_idxs", "attention"]},
    {"indices": "attn_layer_indices", "inside": "attention", "outside": "mamba",
     "indices_too": {"key": "x", "kind": "attention"}},
])
def test_layer_kinds_indices_too_fail_loudly(raw):
    from hyperclone.grow.layer_kinds import parse_layer_kinds

    with pytest.raises(ValueError, match="layer_kinds"):
        parse_layer_kinds("test", raw)
