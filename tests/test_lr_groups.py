"""Per-group learning rates (train --lr-scale, sweep key lr_scale; issue 25 item 5): the rules, the optimizer's
groups, the first step against AdamW's formula (a group at s x lr moves exactly s times as far on step one),
exact resume, and one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_corpus, make_model

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments.presets import get_preset
from hyperclone.experiments.sweep_report import describe
from hyperclone.experiments.sweep_spec import parse_sweep
from hyperclone.train.config import TrainConfig
from hyperclone.train.loop import train
from hyperclone.train.lr_groups import param_groups, parse_lr_scale, scale_of
from hyperclone.train.metrics import read_metrics

MATRICES = "*proj.weight"  # a llama's attention and MLP matrices


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr-groups")
    corpus = make_corpus(root / "corpus")
    return root, corpus, make_model(root / "init", corpus)


def config(tiny, out, **kw) -> TrainConfig:
    root, corpus, model = tiny
    cfg = TrainConfig(model=model, data=[corpus], out=out, tokens=256 * 12, batch_tokens=256, seq_len=32,
                      eval_every=4, eval_tokens=512, save_every=4, log_every=2, lr=3e-3, warmup=2,
                      cache_dir=root / "cache", progress=False)
    return replace(cfg, **kw)


def test_rules_parse_in_order_and_the_first_match_wins():
    rules = parse_lr_scale(["*q_proj.weight=2", "*proj.weight=0.5", "lm_head*=1e-1"])
    assert rules == (("*q_proj.weight", 2.0), ("*proj.weight", 0.5), ("lm_head*", 0.1))
    assert scale_of("model.layers.0.self_attn.q_proj.weight", rules) == 2.0
    assert scale_of("model.layers.0.mlp.up_proj.weight", rules) == 0.5
    assert scale_of("model.norm.weight", rules) == 1.0


@pytest.mark.parametrize("bad", ["*proj.weight", "=0.5", "*proj.weight=0", "*proj.weight=-1", "*proj.weight=x",
                                 "*proj.weight=inf", "*proj.weight=nan"])
def test_malformed_rules_are_one_line_errors(bad):
    with pytest.raises(HyperCloneError, match="--lr-scale takes GLOB=MULT") as err:
        parse_lr_scale([bad])
    assert "\n" not in str(err.value)


def test_groups_split_by_decay_and_multiplier_and_refuse_a_glob_matching_nothing(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny[2])
    groups = param_groups(model, 0.1, parse_lr_scale([f"{MATRICES}=0.5"]))
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert [(g["weight_decay"], g["lr_scale"]) for g in groups] == [(0.1, 0.5), (0.1, 1.0), (0.0, 1.0)]
    assert all(by_id[id(p)].endswith("proj.weight") for p in groups[0]["params"])
    assert not any(by_id[id(p)].endswith("proj.weight") for g in groups[1:] for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(HyperCloneError, match="matches no parameter"):
        param_groups(model, 0.1, parse_lr_scale(["*mlp.fc9*=2"]))


def test_first_step_moves_a_scaled_group_exactly_s_times_as_far(tiny, tmp_path):
    """AdamW's step is p (1 - lr wd) - lr u with u independent of lr, so on step one (same data, same gradients)
    a group at s x lr moves s times as far as it does at lr, and every other parameter moves the same."""
    start = load_file(tiny[2] / "model.safetensors")
    one = dict(tokens=256, warmup=0, eval_every=1, save_every=1)
    plain = load_file(train(config(tiny, tmp_path / "plain", **one)).final / "model.safetensors")
    scaled = load_file(train(config(tiny, tmp_path / "scaled", lr_scale=(f"{MATRICES}=0.25",), **one)).final
                       / "model.safetensors")
    moved = 0
    for name, p0 in start.items():
        step_plain, step_scaled = plain[name] - p0, scaled[name] - p0
        if name.endswith("proj.weight"):
            torch.testing.assert_close(step_scaled, 0.25 * step_plain, rtol=1e-4, atol=1e-9)
            moved += 1
        else:
            torch.testing.assert_close(step_scaled, step_plain, rtol=0, atol=0)
    assert moved == 14 and any(float((plain[n] - start[n]).abs().max()) > 0 for n in start)


def test_a_run_with_groups_resumes_exactly_and_refuses_changed_rules(tiny, tmp_path):
    cfg = config(tiny, tmp_path / "run", lr_scale=(f"{MATRICES}=0.5", "lm_head.weight=2"))
    train(replace(cfg, stop_after=5))
    train(replace(cfg, resume=True))
    reference = train(replace(cfg, out=tmp_path / "ref"))
    strip = [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s")} for m in read_metrics(cfg.out)]
    assert strip == [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s")}
                     for m in read_metrics(reference.out)]
    plain = read_metrics(train(config(tiny, tmp_path / "plain")).out)
    assert [m["train_loss"] for m in plain] != [m["train_loss"] for m in read_metrics(reference.out)]
    other = config(tiny, tmp_path / "other", lr_scale=(f"{MATRICES}=0.5",))
    train(replace(other, stop_after=5))
    with pytest.raises(HyperCloneError, match="different recipe: lr_scale was"):
        train(replace(other, resume=True, lr_scale=(f"{MATRICES}=0.25",)))


def test_cli_refuses_a_bad_rule_in_one_line_with_exit_2(tiny, tmp_path):
    root, corpus, model = tiny
    for bad, message in (("*proj.weight=zero", "--lr-scale takes GLOB=MULT"), ("*nothing*=2", "matches no parameter")):
        done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "train", str(model), "--data", str(corpus),
                               "--out", str(tmp_path / "o"), "--tokens", "512", "--batch-tokens", "256",
                               "--seq-len", "32", "--cache-dir", str(root / "cache"), "--no-progress",
                               "--lr-scale", bad], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
        assert not list((tmp_path / "o").glob("checkpoints/*"))


def test_sweep_arms_take_lr_scale_on_any_init_and_describe_it():
    sweep = parse_sweep({"preset": "micro", "arms": [
        {"name": "r", "init": "random", "lr": 1e-3, "lr_scale": {MATRICES: 0.5}},
        {"name": "g", "init": "grown", "lr": 1e-3, "lr_scale": {MATRICES: 0.5, "lm_head*": 2}}]})
    assert sweep.arms[0].lr_scale == {MATRICES: 0.5} and sweep.arms[1].lr_scale == {MATRICES: 0.5, "lm_head*": 2.0}
    assert "LR x0.5 on *proj.weight, x2 on lm_head*" in describe(sweep.arms[1], get_preset("cpu-tiny"))
    for value, message in (([0.5], "lr_scale must be a mapping"), ({MATRICES: 0}, "must be a positive number")):
        with pytest.raises(HyperCloneError, match=message):
            parse_sweep({"preset": "micro", "arms": [{"name": "a", "init": "grown", "lr": 1e-3, "lr_scale": value}]})
