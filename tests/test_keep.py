"""Issue 25's tools, each against a hand computation: copy divergence (weights and hidden states), the copy
layout grow writes, asymmetric continuation's first step, the distillation loss and its schedule, perturbed
growth, learning speed at equal loss, and exact resume with each of them."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from train_helpers import make_corpus, make_model

from hyperclone.common.copies import (
    CopyAxis,
    CopyLayout,
    activation_divergence,
    copy_divergence,
    decode,
    encode,
    original_mask,
    read_copies,
)
from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments.curve_math import lead, stable_points, tokens_per_drop
from hyperclone.experiments.sweep_spec import parse_sweep
from hyperclone.grow.engine import grow
from hyperclone.grow.perturb import parse_perturbation
from hyperclone.train import asymmetric
from hyperclone.train.config import TrainConfig
from hyperclone.train.loop import train
from hyperclone.train.losses import distillation_loss
from hyperclone.train.metrics import read_metrics
from hyperclone.train.schedule import kd_steps, kd_weight


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny llama trained a few steps (with its AdamW moments) and its 2x growth with the moments grown."""
    root = tmp_path_factory.mktemp("keep")
    corpus = make_corpus(root / "corpus")
    init = make_model(root / "init", corpus)
    cfg = TrainConfig(model=init, data=[corpus], out=root / "small", tokens=256 * 20, batch_tokens=256, seq_len=32,
                      eval_every=10, eval_tokens=512, save_every=10, lr=3e-3, warmup=2, cache_dir=root / "cache",
                      progress=False, save_moments=True)
    final = train(cfg).final
    grown = grow(final, root / "grown", width=2, moments_from=final)
    return root, corpus, final, grown


def run_config(small, out: Path, **kw) -> TrainConfig:
    root, corpus, _, grown = small
    cfg = TrainConfig(model=grown, data=[corpus], out=out, tokens=256 * 30, batch_tokens=256, seq_len=32,
                      eval_every=10, eval_tokens=512, save_every=10, log_every=5, lr=3e-3, warmup=3,
                      cache_dir=root / "cache", progress=False)
    return replace(cfg, **kw)


def comparable(metrics):
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s")} for m in metrics]


# ----------------------------------------------------------------------------- copy divergence


def test_copy_divergence_equals_a_hand_computation():
    """Rows 2 and 3 copy rows 0 and 1 (index [0, 1, 0, 1]): cosine and relative difference against copy 0."""
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 2.0]])
    found = copy_divergence({"model.layers.0.mlp.up_proj.weight": w, "model.layers.1.mlp.up_proj.weight": w},
                            [CopyAxis("model.layers.0.mlp.up_proj.weight", 0, torch.tensor([0, 1, 0, 1])),
                             CopyAxis("model.layers.1.mlp.up_proj.weight", 0, torch.tensor([0, 1, 0, 1]))])
    cos0, rel0 = 1 / math.sqrt(2), 1.0  # [1,0] vs [1,1]; |[0,1]| / |[1,0]|
    assert set(found) == {"layers.*.mlp.up_proj.weight"}
    group = found["layers.*.mlp.up_proj.weight"]
    assert group["pairs"] == 4
    assert group["cos"] == pytest.approx((cos0 + 1.0) / 2, abs=1e-6)
    assert group["rel_diff"] == pytest.approx((rel0 + 0.0) / 2, abs=1e-6)


def test_activation_divergence_equals_a_hand_computation():
    """Hidden [a, b, a', b'] per token: the cosine of (a, b) with (a', b') per token, averaged over tokens."""
    h = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]])  # token 0: copies equal; token 1: orthogonal
    found = activation_divergence([h, h], torch.tensor([0, 1, 0, 1]))
    assert set(found) == {"h0", "h1"}
    assert found["h1"]["cos"] == pytest.approx(0.5, abs=1e-6)
    assert found["h1"]["rel_diff"] == pytest.approx((0.0 + math.sqrt(2)) / 2, abs=1e-6)


def test_original_mask_is_copy_block_zero_on_every_axis():
    mask = original_mask((torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1])))
    assert mask.tolist() == [[True, False, True], [True, False, True], [False, False, False], [False, False, False]]
    assert original_mask((torch.tensor([0, -1, 0]),)).tolist() == [True, False, False]  # a mean position: not original


def test_copy_layout_round_trips_and_stores_tile_maps_compactly():
    layout = CopyLayout([CopyAxis("a", 0, torch.arange(8) % 4), CopyAxis("b", 1, torch.tensor([1, 0, 1, 0]))],
                        torch.arange(8) % 4, {"a": (torch.arange(8) % 4, torch.arange(3))})
    raw = json.loads(json.dumps(encode(layout)))
    assert {"tile": 4, "size": 8} in raw["maps"] and len(raw["maps"]) == 3  # shared maps stored once
    back = decode(raw)
    assert [(a.name, a.axis, a.index.tolist()) for a in back.axes] == [
        (a.name, a.axis, a.index.tolist()) for a in layout.axes]
    assert torch.equal(back.residual, layout.residual) and torch.equal(back.maps["a"][1], torch.arange(3))


def test_symmetric_growth_starts_with_identical_copies(small, tmp_path):
    _, _, final, _ = small
    grown = grow(final, tmp_path / "sym", width=2, mode="symmetric")
    layout = read_copies(grown)
    found = copy_divergence(load_file(grown / "model.safetensors"), layout.axes)
    assert found and all(g["cos"] == pytest.approx(1.0, abs=1e-6) and g["rel_diff"] == 0.0 for g in found.values())
    assert layout.residual is not None and layout.residual.numel() == 64
    assert "model.norm.weight" in layout.maps  # every grown tensor, norms too


@pytest.mark.parametrize("family,name,axis", [
    ("gpt2", "transformer.h.0.mlp.c_fc.weight", 1),  # Conv1D [in, out]: the rows it emits are its last axis
    ("gpt_oss", "model.layers.0.mlp.experts.down_proj", 2),  # [experts, in, out]
    ("gpt_oss", "model.layers.0.mlp.experts.gate_up_proj", 2),
    ("llama", "model.layers.0.mlp.down_proj.weight", 0),  # nn.Linear [out, in]
])
def test_copy_axis_is_the_emitted_one(tmp_path, family, name, axis):
    """A cloned unit is a row the layer emits: copies.json names the emitted axis, whatever the storage order."""
    from tiny_models import make_tiny

    grown = grow(make_tiny(family, tmp_path / "src"), tmp_path / "out", width=2, mode="symmetric")
    layout = read_copies(grown)
    assert {a.name: a.axis for a in layout.axes}[name] == axis
    found = copy_divergence(load_file(grown / "model.safetensors"), layout.axes)
    assert all(g["cos"] == pytest.approx(1.0, abs=1e-6) and g["rel_diff"] == 0.0 for g in found.values())


def test_a_grown_run_logs_its_copy_divergence_at_every_evaluation(small, tmp_path):
    """Zero-sum noise: the weights' copies differ from the start, the hidden units are exact copies at step 0
    (cosine 1) and drift apart with training; a random-init run logs nothing of the kind."""
    metrics = read_metrics(train(run_config(small, tmp_path / "run")).out)
    evals = [m for m in metrics if m["val_loss"] is not None]
    assert all("activation_divergence" in m and "copy_divergence" in m for m in evals)
    assert not any("activation_divergence" in m for m in metrics if m["val_loss"] is None)
    start, end = evals[0]["activation_divergence"], evals[-1]["activation_divergence"]
    assert all(v["cos"] == pytest.approx(1.0, abs=1e-5) for v in start.values())
    assert all(end[k]["cos"] < start[k]["cos"] for k in start if k != "h0")
    weights = {name: g["cos"] for name, g in evals[0]["copy_divergence"].items()}
    assert weights["embed_tokens.weight"] == pytest.approx(1.0)  # the embedding is copied without noise
    assert all(cos < 0.9 for name, cos in weights.items() if "proj" in name)


# ----------------------------------------------------------------------------- asymmetric continuation


def test_asymmetric_first_step_equals_adamw_by_hand(small):
    """One step with copy factors: block 0 moves by AdamW's step at lr, the other copies at mult x lr, worked
    out by hand from AdamW's formula (decoupled weight decay, bias-corrected moments)."""
    from transformers import AutoModelForCausalLM

    _, _, _, grown = small
    model = AutoModelForCausalLM.from_pretrained(grown)
    factors = asymmetric.copy_factors(model, read_copies(grown))
    assert factors and all(0 < float(f.mean()) < 1 for f in factors.values())
    lr, wd, b1, b2, eps, mult = 1e-2, 0.1, 0.9, 0.95, 1e-8, 1.7
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    x = torch.randint(0, 320, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    before = asymmetric.snapshot(model, factors)
    opt.step()
    asymmetric.scale_update(model, before, factors, mult)
    for name, p in model.named_parameters():
        f = 1 + (mult - 1) * factors[name] if name in factors else torch.ones_like(p)
        m_hat = (1 - b1) * grads[name] / (1 - b1)
        v_hat = (1 - b2) * grads[name] ** 2 / (1 - b2)
        expected = start[name] * (1 - lr * f * wd) - lr * f * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)


def test_copies_multiplier_rises_to_rho():
    assert asymmetric.copies_multiplier(0, 100, 1.3, 0.1) == pytest.approx(1.03)
    assert asymmetric.copies_multiplier(9, 100, 1.3, 0.1) == pytest.approx(1.3)
    assert asymmetric.copies_multiplier(50, 100, 1.3, 0.1) == pytest.approx(1.3)
    assert asymmetric.copies_multiplier(0, 100, 2.0, 0.0) == pytest.approx(2.0)


def test_moments_reset_copies_keeps_block_zero_only_and_resumes_exactly(small, tmp_path):
    _, _, _, grown = small
    cfg = run_config(small, tmp_path / "asym", moments_from=grown, moments_reset="copies", copies_lr=1.3,
                     copies_warmup=0.1)
    train(replace(cfg, stop_after=13))
    train(replace(cfg, resume=True))
    reference = train(replace(cfg, out=tmp_path / "asym-ref"))
    assert comparable(read_metrics(cfg.out)) == comparable(read_metrics(reference.out))
    plain = read_metrics(train(replace(cfg, out=tmp_path / "plain", copies_lr=None, moments_reset="none")).out)
    assert comparable(plain) != comparable(read_metrics(reference.out))


def test_asymmetric_continuation_needs_a_grown_model_and_ddp(small, tmp_path):
    root, corpus, final, _ = small
    with pytest.raises(HyperCloneError, match="need a grown model"):
        train(replace(run_config(small, tmp_path / "x"), model=final, copies_lr=1.3))
    with pytest.raises(HyperCloneError, match="--copies-lr is not supported with --strategy fsdp"):
        train(run_config(small, tmp_path / "y", copies_lr=1.3, strategy="fsdp"))
    _, _, _, grown = small  # a copy layout written for another model class: refused, not silently ignored
    other = tmp_path / "other"
    shutil.copytree(grown, other)
    layout = json.loads((other / "copies.json").read_text())
    (other / "copies.json").write_text(json.dumps(layout).replace('"model.', '"other.').replace('"lm_head.', '"other.'))
    with pytest.raises(HyperCloneError, match="copies.json names none of the model's parameters"):
        train(replace(run_config(small, tmp_path / "z"), model=other, copies_lr=1.3))


# ----------------------------------------------------------------------------- distillation anchor


def test_distillation_loss_is_ce_at_alpha_zero_and_kl_by_hand():
    torch.manual_seed(0)
    logits, teacher, y = torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    loss, ce = distillation_loss(logits, teacher, y, 0.0)
    assert torch.equal(loss, ce) and torch.equal(ce, F.cross_entropy(logits.view(-1, 5), y.view(-1)))
    p_t = torch.softmax(teacher.view(-1, 5).double(), -1)
    p_s = torch.softmax(logits.view(-1, 5).double(), -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    loss, ce = distillation_loss(logits, teacher, y, 0.25)
    assert float(loss) == pytest.approx(float(0.75 * ce.double() + 0.25 * kl), rel=1e-5)


def test_kd_weight_falls_linearly_to_zero():
    cfg = TrainConfig(model=Path("m"), data=[], out=Path("o"), tokens=1, teacher=Path("t"), kd_alpha=0.5,
                      kd_until=0.3)
    assert kd_weight(0, 100, cfg) == 0.5 and kd_weight(15, 100, cfg) == pytest.approx(0.25)
    assert kd_weight(30, 100, cfg) == 0.0 and kd_weight(99, 100, cfg) == 0.0
    assert kd_steps(100, 100, cfg) == 30
    assert kd_weight(0, 100, replace(cfg, teacher=None, kd_alpha=0.0)) == 0.0


def test_distilled_run_resumes_exactly_and_charges_the_teacher(small, tmp_path):
    _, _, final, _ = small
    cfg = run_config(small, tmp_path / "kd", teacher=final, kd_alpha=0.5, kd_until=0.5)
    train(replace(cfg, stop_after=13))
    train(replace(cfg, resume=True))
    reference = train(replace(cfg, out=tmp_path / "kd-ref"))
    assert comparable(read_metrics(cfg.out)) == comparable(read_metrics(reference.out))
    summary = json.loads((cfg.out / "train_summary.json").read_text())
    assert summary["teacher"]["forward_tokens"] == 15 * 256  # the steps before kd_until, each of 256 tokens
    alphas = [m["kd_alpha"] for m in read_metrics(cfg.out) if "kd_alpha" in m]
    assert alphas[0] > alphas[1] > 0 and alphas[-1] == 0.0
    plain = read_metrics(train(replace(cfg, out=tmp_path / "plain", teacher=None, kd_alpha=0.0)).out)
    assert comparable(plain) != comparable(read_metrics(reference.out))


def test_kd_options_give_one_line_errors(small, tmp_path):
    with pytest.raises(HyperCloneError, match="--kd-alpha needs --teacher"):
        train(run_config(small, tmp_path / "a", kd_alpha=0.5))
    with pytest.raises(HyperCloneError, match="--kd-until must be in"):
        train(run_config(small, tmp_path / "b", teacher=small[2], kd_alpha=0.5, kd_until=0.0))


# ----------------------------------------------------------------------------- perturbed growth


def test_perturbed_growth_is_the_mix_formula_and_recorded_as_not_exact(small, tmp_path):
    _, _, final, _ = small
    exact = grow(final, tmp_path / "exact", width=2)
    mixed = grow(final, tmp_path / "mixed", width=2, perturb="mix:0.25")
    record = json.loads((mixed / "hyperclone.json").read_text())
    assert record["function_preserving"] is False and record["spec"]["perturb"] == "mix:0.25"
    assert any("NOT exact" in note for note in record["notes"])
    assert json.loads((exact / "hyperclone.json").read_text())["function_preserving"] is True
    a, b = load_file(exact / "model.safetensors"), load_file(mixed / "model.safetensors")
    p = parse_perturbation("mix:0.25")
    for name in a:
        if a[name].ndim < 2:
            assert torch.equal(a[name], b[name]), name  # norm weights untouched
        else:
            torch.testing.assert_close(b[name], p.apply(a[name], name, 0.02, 0))
            fresh = (b[name] - 0.75 * a[name]) / 0.25
            assert float(fresh.std()) == pytest.approx(0.02, rel=0.2)  # the family's init std


@pytest.mark.parametrize("bad", ["mix", "mix:0", "mix:1.5", "shrink:0.5", "shrink:2,0.1", "noise:0.1", "mix:x"])
def test_bad_perturbations_are_refused_in_one_line(small, tmp_path, bad):
    with pytest.raises(HyperCloneError, match="--perturb must be") as err:
        grow(small[2], tmp_path / "out", width=2, perturb=bad)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_cli_grow_perturb_exit_2_on_bad_value(small, tmp_path):
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "grow", str(small[2]), str(tmp_path / "o"),
                           "--perturb", "mix:2"], capture_output=True, text=True)
    assert done.returncode == 2 and "--perturb must be" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- learning speed, sweep keys


def test_tokens_per_drop_reads_the_curve_by_linear_interpolation():
    points = [(0, 3.0), (100, 2.8), (200, 2.7), (400, 2.5)]
    found = tokens_per_drop(points, levels=(3.0, 2.9, 2.8, 2.6, 2.55), drop=0.1)
    # 2.9 at 50, 2.8 at 100, 2.7 at 200, 2.6 at 300, 2.5 at 400; 3.0 is the start (not above it); 2.45 never
    assert found == {"2.90": pytest.approx(50.0), "2.80": pytest.approx(100.0), "2.60": pytest.approx(100.0)}


def test_stable_points_keep_the_peak_learning_rate_phase():
    metrics = [{"step": 0, "tokens": 0, "val_loss": 4.0, "lr": 0.0}]
    metrics += [{"step": s, "tokens": s, "val_loss": 4.0 - s / 100, "lr": lr}
                for s, lr in ((10, 0.5), (20, 1.0), (30, 1.0), (40, 1.0), (50, 0.4))]
    assert stable_points(metrics) == [(20, 3.8), (30, 3.7), (40, 3.6)]


def test_sweep_arms_take_perturb_kd_and_copies():
    sweep = parse_sweep({"preset": "micro", "arms": [
        {"name": "m", "init": "grown", "lr": 1e-3, "grow": {"perturb": "mix:0.2"}},
        {"name": "k", "init": "grown", "lr": 1e-3, "kd": {"alpha": 0.5, "until": 0.3}},
        {"name": "s", "init": "grown", "lr": 1e-3, "moments": "carry", "moments_reset": "copies",
         "copies": {"lr": 1.3, "warmup": 0.02}}]})
    assert sweep.arms[0].grow["perturb"] == "mix:0.2" and sweep.arms[1].kd["alpha"] == 0.5
    assert sweep.arms[2].copies == {"lr": 1.3, "warmup": 0.02}
    for arm, message in (({"grow": {"perturb": "mix:3"}}, "grow.perturb"), ({"kd": {"alpha": 2}}, "kd.alpha"),
                         ({"kd": {"alpha": 0.5, "till": 1}}, "unknown key 'till'"),
                         ({"copies": {"lr": 1.3, "warmup": 2}}, "copies.warmup")):
        with pytest.raises(HyperCloneError, match=message):
            parse_sweep({"preset": "micro", "arms": [{"name": "a", "init": "grown", "lr": 1e-3, **arm}]})
    with pytest.raises(HyperCloneError, match="only applies to init: grown"):
        parse_sweep({"preset": "micro", "arms": [{"name": "a", "init": "random", "lr": 1e-3, "kd": {"alpha": 1}}]})


def test_lead_is_the_tokens_random_needs_minus_the_tokens_trained():
    """Random falls 0.1 per 100 tokens from 4.0; the grown run sits at 3.5 after 100 tokens of its 400 (random
    needs 500 for it: lead 400) and at 3.2 after 300 (random: 800, lead 500); random never reaches 1.0."""
    random = [(t, 4.0 - t / 1000) for t in range(0, 1001, 100)]
    grown = [(0, 3.6), (100, 3.5), (200, 3.3), (300, 3.2), (400, 1.0)]
    found = lead(grown, random, at=(0.25, 0.75, 1.0))
    assert found == {"0.25": pytest.approx(400.0), "0.75": pytest.approx(500.0), "1": None}


@pytest.mark.slow
def test_asymmetric_continuation_under_ddp_matches_one_process(small, tmp_path):
    """Two DDP processes apply the same copy factors as one process: the same losses step by step."""
    import os

    root, corpus, _, grown = small
    repo = Path(__file__).resolve().parents[1]
    common = ["-m", "hyperclone.cli", "train", str(grown), "--data", str(corpus), "--tokens", str(256 * 12),
              "--batch-tokens", "256", "--seq-len", "32", "--eval-every", "6", "--eval-tokens", "256",
              "--log-every", "1", "--lr", "3e-3", "--warmup", "0", "--cache-dir", str(root / "cache"),
              "--no-progress", "--moments-from", str(grown), "--moments-reset", "copies", "--copies-lr", "1.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    for out, prefix in (("one", [sys.executable]), ("two", [sys.executable, "-m", "torch.distributed.run",
                                                            "--standalone", "--nproc-per-node", "2"])):
        done = subprocess.run([*prefix, *common, "--out", str(tmp_path / out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = ([m["train_loss"] for m in read_metrics(tmp_path / name) if m["train_loss"] is not None]
                for name in ("one", "two"))
    assert len(one) == len(two) == 12
    assert all(abs(a - b) <= 1e-4 * a for a, b in zip(one, two, strict=True))  # fp32: the ranks reorder sums only
