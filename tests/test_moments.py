"""Carried-over AdamW moments: the growth rule matches autograd, and grown runs resume exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_corpus, make_model, make_tokenizer

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import MOMENTS_FILE, load_moments
from hyperclone.grow.engine import grow
from hyperclone.grow.moments import grow_moments, grown_spec
from hyperclone.train.config import TrainConfig
from hyperclone.train.loop import train

STEPS = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("moments")
    corpus = make_corpus(root / "corpus", n_files=3, lines=200)
    model = make_model(root / "model", corpus)
    return root, corpus, model


def config(setup, model: Path, out: Path, **kw) -> TrainConfig:
    root, corpus, _ = setup
    cfg = TrainConfig(model=model, data=[corpus], out=out, tokens=256 * STEPS, batch_tokens=256, seq_len=32,
                      eval_every=8, eval_tokens=256, save_every=4, log_every=4, lr=3e-3, warmup=2,
                      cache_dir=root / "cache", progress=False, seed=0)
    return replace(cfg, **kw)


def grads(folder: Path, batch: torch.Tensor, **load) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64, **load)
    logits = model(input_ids=batch[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("width", [2, 3])
def test_grown_moments_equal_the_grown_models_gradients(setup, tmp_path, width):
    """With m = G and v = G², the grown moments must be exactly the grown model's gradient and its square.
    (Exact for identical copies; with zero-sum noise the copies' backward signals differ, so the carried
    moments are the symmetric model's, a starting estimate.)"""
    _, _, small = setup
    grown = grow(small, tmp_path / "grown", width=width, mode="symmetric")
    batch = torch.randint(0, 320, (3, 17), generator=torch.Generator().manual_seed(0))
    g_small, g_big = grads(small, batch), grads(grown, batch)
    moments = {n: {"step": 5.0, "exp_avg": g.float(), "exp_avg_sq": g.float() ** 2} for n, g in g_small.items()}
    carried = grow_moments(small, grown_spec(grown), moments)
    assert carried.keys() == g_big.keys()
    for name, g in g_big.items():
        assert carried[name]["exp_avg"].shape == g.shape
        assert torch.allclose(carried[name]["exp_avg"].double(), g, atol=1e-7, rtol=1e-4), name
        assert torch.allclose(carried[name]["exp_avg_sq"].double(), g**2, atol=1e-10, rtol=1e-3), name
        assert carried[name]["step"] == 5.0


@pytest.mark.parametrize("family,width", [("mixtral", 2), ("qwen3_moe", 2), ("qwen3_moe", 3)])
def test_fused_expert_moments_equal_the_grown_models_gradients(tmp_path, family, width):
    """A run keys a mixture of experts' moments by transformers' fused in-memory names (mlp.experts.gate_up_proj
    [experts, 2 x ffn, hidden], Mixtral's router as mlp.gate): they are split into the checkpoint's per-expert
    tensors, grown, and fused back under the grown model's names, exactly as the gradients grow. (fp64 needs the
    eager experts; Mixtral at x3 is left out: its router's softmax runs in float32, so the grown model's own
    gradient moves by ~1e-3 relative on its smallest entries.)"""
    from tiny_models import VOCAB, make_tiny

    small = make_tiny(family, tmp_path / "small", dtype=torch.float64)
    grown = grow(small, tmp_path / "grown", width=width, mode="symmetric")
    batch = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(0))
    g_small, g_big = (grads(f, batch, experts_implementation="eager") for f in (small, grown))
    assert "model.layers.0.mlp.experts.gate_up_proj" in g_small
    moments = {n: {"step": 5.0, "exp_avg": g.float(), "exp_avg_sq": g.float() ** 2} for n, g in g_small.items()}
    carried = grow_moments(small, grown_spec(grown), moments)
    assert carried.keys() == g_big.keys()
    for name, g in g_big.items():
        assert torch.allclose(carried[name]["exp_avg"].double(), g, atol=1e-7, rtol=1e-4), name
        assert torch.allclose(carried[name]["exp_avg_sq"].double(), g**2, atol=1e-10, rtol=1e-3), name
    wrong = {**moments, "model.layers.0.mlp.experts.gate_up_proj": moments["model.layers.0.mlp.experts.down_proj"]}
    with pytest.raises(HyperCloneError, match=r"gate_up_proj have shape \[4, 48, 40\], not the \[4, 80, 48\]"):
        grow_moments(small, grown_spec(grown), wrong)


def test_fused_expert_moments_carry_over_and_resume_exactly(setup, tmp_path):
    """A Qwen3-MoE run's moments (fused names) grown with grow --moments-from give every grown parameter its state."""
    from tiny_models import make_tiny

    _, corpus, _ = setup
    small = make_tiny("qwen3_moe", tmp_path / "small", vocab_size=320)
    make_tokenizer(small, corpus)
    first = train(config(setup, small, tmp_path / "first", save_moments=True))
    grown = grow(first.final, tmp_path / "grown", width=2, moments_from=first.final)
    cfg = config(setup, grown, tmp_path / "ref", moments_from=grown)
    ref = train(cfg)
    run = replace(cfg, out=tmp_path / "run")
    train(replace(run, stop_after=6))
    opt = torch.load(tmp_path / "run" / "checkpoints" / "step-0000004" / "optimizer.pt", weights_only=True)
    weights = load_file(grown / "model.safetensors")
    assert len(opt["state"]) == len(load_moments(grown)) < len(weights)  # experts fused: fewer tensors in memory
    assert all(float(s["step"]) == STEPS + 4 for s in opt["state"].values())
    resumed = train(replace(run, resume=True))
    a, b = load_file(ref.final / "model.safetensors"), load_file(resumed.final / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_carried_moments_have_grown_shapes_and_resume_exactly(setup, tmp_path):
    _, _, small = setup
    first = train(config(setup, small, tmp_path / "small", save_moments=True))
    saved = load_moments(first.final)
    assert (first.final / MOMENTS_FILE).is_file() and saved["model.embed_tokens.weight"]["step"] == STEPS
    grown = grow(first.final, tmp_path / "grown", width=2, moments_from=first.final)  # writes grown/moments.pt
    with pytest.raises(HyperCloneError, match="must be grown with it"):  # small moments, grown model: refused
        train(config(setup, grown, tmp_path / "unshaped", moments_from=first.final))
    cfg = config(setup, grown, tmp_path / "ref", moments_from=grown, moments_reset="none")
    ref = train(cfg)
    weights = load_file(grown / "model.safetensors")
    run = replace(cfg, out=tmp_path / "run")
    train(replace(run, stop_after=6))
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000004"
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    shapes = sorted(tuple(s["exp_avg"].shape) for s in opt["state"].values())
    assert shapes == sorted(tuple(w.shape) for w in weights.values())
    assert all(float(s["step"]) == STEPS + 4 for s in opt["state"].values())
    resumed = train(replace(run, resume=True))
    a, b = load_file(ref.final / "model.safetensors"), load_file(resumed.final / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # carried moments change the run; a fresh optimizer gives other weights
    fresh = train(config(setup, grown, tmp_path / "fresh"))
    c = load_file(fresh.final / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_moments_errors(setup, tmp_path):
    _, _, small = setup
    with pytest.raises(HyperCloneError, match="no moments.pt"):
        train(config(setup, small, tmp_path / "a", moments_from=small))
    with pytest.raises(HyperCloneError, match="--moments-reset must be one of"):
        train(config(setup, small, tmp_path / "b", moments_from=small, moments_reset="all"))
    with pytest.raises(HyperCloneError, match="needs --moments-from"):
        train(config(setup, small, tmp_path / "c", moments_reset="first"))


def test_moments_that_are_not_the_sources_are_refused_before_anything_is_written(setup, tmp_path):
    """A moment of another shape or of a tensor the checkpoint does not store is refused in one line naming it, and
    the output folder is not made (the moments are grown before the weights are written); with --to, the moments
    take the target's shapes."""
    import shutil

    _, _, small = setup
    base = {n: {"step": 3.0, "exp_avg": torch.ones(t.shape), "exp_avg_sq": torch.ones(t.shape)}
            for n, t in load_file(small / "model.safetensors").items()}
    cases = {"model.norm.weight": ({"step": 3.0, "exp_avg": torch.ones(7), "exp_avg_sq": torch.ones(7)},
                                   r"moments of model\.norm\.weight have shape \[7\], the source's tensor"),
             "model.layers.0.mlp.experts.gate_up_proj": (base["model.norm.weight"],
                                                         r"moments name model\.layers\.0\.mlp\.experts\.gate_up_proj")}
    for i, (name, (moment, message)) in enumerate(cases.items()):
        folder = tmp_path / f"src{i}"
        shutil.copytree(small, folder)
        torch.save({**base, name: moment}, folder / MOMENTS_FILE)
        with pytest.raises(HyperCloneError, match=message) as err:
            grow(folder, tmp_path / f"out{i}", width=2, moments_from=folder)
        assert "\n" not in str(err.value) and not (tmp_path / f"out{i}").exists()
    folder = tmp_path / "src-ok"
    shutil.copytree(small, folder)
    torch.save(base, folder / MOMENTS_FILE)
    big = grow(folder, tmp_path / "big", width=2)
    grown = grow(folder, tmp_path / "to", to=big / "config.json", moments_from=folder)
    weights = load_file(grown / "model.safetensors")
    carried = torch.load(grown / MOMENTS_FILE, weights_only=True)
    assert carried.keys() == base.keys() and all(carried[n]["exp_avg"].shape == weights[n].shape for n in carried)


def test_identity_blocks_start_with_fresh_moments(tmp_path):
    """An identity block's zeroed writers and its gains set to 1 (Doge's per-channel residual gains, Gemma 4's
    layer_scalar: role layer_scalar, recipe "fill") carry no moments over: their state starts fresh (before, the
    gains' moments were grown from the filled value 1, 0.5 and 0.25 at x2, whatever the source's were), while the
    copied layers' gains carry the source's moments split over the copies."""
    from tiny_models import make_tiny

    small = make_tiny("doge", tmp_path / "small")
    moments = {n: {"step": 3.0, "exp_avg": torch.full_like(t, 0.01), "exp_avg_sq": torch.full_like(t, 1e-4)}
               for n, t in load_file(small / "model.safetensors").items()}
    grown = grow(small, tmp_path / "grown", width=2, layers=3, insert_after=(0,))
    carried = grow_moments(small, grown_spec(grown), moments)
    gains = [n for n in carried if n.endswith("_residual")]
    assert gains and not any(n.startswith("model.layers.1.") for n in gains)
    for name in gains:
        assert torch.allclose(carried[name]["exp_avg"], torch.full_like(carried[name]["exp_avg"], 0.005)), name


def test_fused_expert_moments_of_an_identity_block(tmp_path):
    """Depth growth reads each source expert twice (the copied layer, the identity block): the fused moments split
    once, and the identity block's zeroed down_proj (all its experts) starts fresh while its gate_up_proj carries."""
    from tiny_models import make_tiny
    from transformers import AutoModelForCausalLM

    small = make_tiny("qwen3_moe", tmp_path / "small")
    moments = {n: {"step": 3.0, "exp_avg": torch.full_like(p, 0.01), "exp_avg_sq": torch.full_like(p, 1e-4)}
               for n, p in AutoModelForCausalLM.from_pretrained(small).named_parameters()}
    grown = grow(small, tmp_path / "grown", width=2, layers=3, insert_after=(0,))
    carried = grow_moments(small, grown_spec(grown), moments)
    params = dict(AutoModelForCausalLM.from_pretrained(grown).named_parameters())
    assert all(carried[n]["exp_avg"].shape == params[n].shape for n in carried)
    assert "model.layers.1.mlp.experts.gate_up_proj" in carried
    assert "model.layers.1.mlp.experts.down_proj" in params.keys() - carried.keys()
