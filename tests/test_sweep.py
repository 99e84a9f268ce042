"""`hyperclone experiment --sweep`: the sweep file (one-line errors), a micro sweep end to end, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_experiment import MICRO
from train_helpers import make_corpus

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments.sweep import run_sweep
from hyperclone.experiments.sweep_spec import load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[1]

SWEEP = {"preset": "micro", "seeds": [0], "arms": [
    {"name": "random", "init": "random", "lr": [1e-3, 4e-3]},
    {"name": "grown", "init": "grown", "lr": 2e-3, "seeds": [0, 1]},
    {"name": "noisy", "init": "grown", "grow": {"mode": "noisy", "noise_db": -5}, "lr": 2e-3},
    {"name": "carry", "init": "grown", "moments": "carry", "moments_reset": "first", "lr": 2e-3, "warmup": 0.0,
     "schedule": "wsd"},
]}


def test_parse_expands_learning_rates_and_fills_defaults():
    sweep = parse_sweep(SWEEP)
    names = [a.name for a in sweep.arms]
    assert names == ["random-lr0.001", "random-lr0.004", "grown", "noisy", "carry"]
    assert sweep.arms[0].seeds == (0,) and sweep.arms[2].seeds == (0, 1)
    assert sweep.arms[4].moments_reset == "first" and sweep.arms[4].warmup == 0.0


@pytest.mark.parametrize(("change", "message"), [
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "lrr": 2}]}, "arm 'a': unknown key 'lrr'"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "grow": {"noise": 0}}]}, "grow: unknown key 'noise'"),
    ({"arms": [{"name": "a", "init": "scratch", "lr": 1e-3}]}, "init must be one of grown, random, msg"),
    ({"arms": [{"name": "a", "init": "grown", "lr": -1}]}, "lr must be a positive number"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "moments_reset": "first"}]}, "needs moments: carry"),
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "grow": {"mode": "noisy"}}]}, "only apply to init"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3}, {"name": "a", "init": "random", "lr": 1e-3}]},
     "two arms are named 'a'"),
    ({"sedes": [0]}, "unknown key 'sedes'"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "msg": {"ramp_frac": 0.1}}]}, "only apply to init: msg"),
    ({"arms": [{"name": "a", "init": "msg", "lr": 1e-3, "msg": {"ramp_frac": 1.5}}]}, "ramp_frac must be in"),
    ({"arms": [{"name": "a", "init": "msg", "lr": 1e-3, "msg": {"ramp": 0.1}}]}, "msg: unknown key 'ramp'"),
    ({"arms": [{"name": "a", "init": "msg", "lr": 1e-3, "grow": {"mode": "noisy"}}]}, "only apply to init: grown"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "grow": {"depth_mode": "stack"}}]}, "needs layers"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "grow": {"depth_mode": "x"}}]}, "depth_mode must be"),
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "layers": 0}]}, "layers must be a positive integer"),
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "small_tokens": 1000}]}, "only applies to init: grown"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "small_tokens": 0}]}, "small_tokens must be a positive"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "small_decay": "no"}]}, "small_decay must be true or false"),
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "small_decay": False}]}, "small_decay .* only applies"),
    ({"arms": [{"name": "a", "init": "random", "lr": 1e-3, "small_corpus": "site-packages"}]},
     "small_corpus .* only applies"),
    ({"arms": [{"name": "a", "init": "grown", "lr": 1e-3, "small_corpus": "pypi"}]},
     "small_corpus must be one of site-packages, got 'pypi'"),
    ({"compare": "frontier"}, "compare must be one of best-random, ladder"),
    ({"report": "keep"}, "report .* needs compare: ladder"),
    ({"compare": "ladder", "report": "a.b"}, "report must be a file stem"),
])
def test_bad_sweep_files_give_one_line(change, message):
    with pytest.raises(HyperCloneError, match=message) as err:
        parse_sweep({**SWEEP, **change}, "s.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("s.yaml")


def test_cli_reports_a_bad_key_in_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("preset: cpu-tiny\narms:\n  - {name: r, init: random, lr: 1.0e-3, sedes: [0]}\n")
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "experiment", "--sweep", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hyperclone: error: {path}: arm 'r': unknown key 'sedes' (allowed: name, init, lr, seeds, width, layers, "
        "tokens, warmup, schedule, decay_frac, min_lr_ratio, grow, msg, moments, moments_reset, small_tokens, "
        "small_decay, small_corpus, kd, copies, lr_scale)"]
    assert not (tmp_path / "out").exists()


def test_compare_ladder_needs_a_ladder_preset(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("preset: cpu-tiny\ncompare: ladder\narms:\n  - {name: r, init: random, lr: 1.0e-3}\n")
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "experiment", "--sweep", str(path), "--out",
                           str(tmp_path / "out"), "--report-only"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hyperclone: error: {path}: compare: ladder needs a ladder preset (cpu-ladder), got cpu-tiny"]
    assert not (tmp_path / "out").exists()


def test_json_and_yaml_files_load(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SWEEP))
    (tmp_path / "s.yaml").write_text("preset: micro\narms:\n  - {name: r, init: random, lr: [1.0e-3]}\n")
    assert len(load_sweep(tmp_path / "s.json").arms) == 5
    assert load_sweep(tmp_path / "s.yaml").arms[0].name == "r-lr0.001"
    (tmp_path / "bad.yaml").write_text("preset: [")
    with pytest.raises(HyperCloneError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_micro_sweep_end_to_end_and_resume(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    res = run_sweep(MICRO, parse_sweep(SWEEP), out, data=[corpus])
    assert {"sweep.md", "sweep.json", "sweep_val_loss_w2.png"} <= {p.name for p in out.iterdir()}
    arms = res["arms"]
    best = res["best_random"]["2"]
    assert best in ("random-lr0.001", "random-lr0.004")
    assert best == min(("random-lr0.001", "random-lr0.004"), key=lambda n: arms[n]["final_val_loss"]["mean"])
    for name in ("grown", "noisy", "carry"):
        v = arms[name]["vs_best_random"]
        assert v["random_arm"] == best and v["seeds"] == [0]  # the random arms only ran seed 0
    assert arms["grown"]["final_val_loss"]["per_seed"].__len__() == 2
    assert res["winner"]["2"] in ("grown", "noisy", "carry")
    # the grown arms start at the small model's loss (function preserved), random ones far above
    assert abs(arms["grown"]["start_val_loss"] - res["small_curve"][-1]["val_loss"]) < 1e-3
    assert arms["noisy"]["start_val_loss"] == pytest.approx(arms["grown"]["start_val_loss"], abs=1e-3)
    md = (out / "sweep.md").read_text()
    assert "| carry |" in md and "(best random)" in md
    # rerun: nothing retrained; a changed arm under the same name is refused
    before = (out / "runs" / "carry-s0" / "metrics.jsonl").read_text()
    rerun = run_sweep(MICRO, parse_sweep(SWEEP), out, data=[corpus])
    assert (out / "runs" / "carry-s0" / "metrics.jsonl").read_text() == before
    # a report written from the finished runs trains nothing and adds no time to the wall-clock tally
    tally = (out / "wall_clock_sweep.json").read_text()
    report_only = run_sweep(MICRO, parse_sweep(SWEEP), out, data=[corpus], train_runs=False)
    assert (out / "wall_clock_sweep.json").read_text() == tally
    assert report_only["wall_clock_s"] == rerun["wall_clock_s"] == sum(json.loads(tally))
    changed = {**SWEEP, "arms": [{**SWEEP["arms"][3], "warmup": 0.2}]}
    with pytest.raises(HyperCloneError, match="arm 'carry' changed"):
        run_sweep(MICRO, parse_sweep(changed), out, data=[corpus])


def test_an_arm_grows_from_a_small_model_of_its_own_budget(tmp_path):
    """small_tokens: the arm's small model is pretrained for that budget (once, in runs/small-<tokens>-s0), the
    arm starts at that model's loss (exact growth), and its "incl. small" is charged that budget, not the
    preset's; an arm without it still grows from the preset's small model."""
    corpus = make_corpus(tmp_path / "corpus")
    budget = MICRO.small_tokens * 2
    sweep = {"preset": "micro", "seeds": [0], "arms": [
        {"name": "random", "init": "random", "lr": 2e-3},
        {"name": "grown", "init": "grown", "lr": 2e-3},
        {"name": "better-small", "init": "grown", "lr": 2e-3, "small_tokens": budget}]}
    out = tmp_path / "out"
    res = run_sweep(MICRO, parse_sweep(sweep), out, data=[corpus])
    metrics = (out / "runs" / f"small-{budget}-s0" / "metrics.jsonl").read_text().splitlines()
    own_final = [m for m in map(json.loads, metrics) if m.get("val_loss") is not None][-1]
    assert own_final["tokens"] == budget
    arms = res["arms"]
    assert abs(arms["better-small"]["start_val_loss"] - own_final["val_loss"]) < 1e-3
    assert abs(arms["grown"]["start_val_loss"] - res["small_curve"][-1]["val_loss"]) < 1e-3
    assert own_final["val_loss"] < res["small_curve"][-1]["val_loss"]  # trained twice as long
    assert arms["better-small"]["small_cost"]["tokens"] == budget
    assert arms["grown"]["small_cost"]["tokens"] == MICRO.small_tokens
    assert (out / "models" / f"grown-w2-noisy-defaultdb-small{budget}" / "config.json").exists()
    assert f"small model pretrained {budget:,} tokens" in (out / "sweep.md").read_text()


def test_an_arm_grows_from_the_small_model_without_its_decay(tmp_path):
    """small_decay: false: the arm's small model is pretrained for the preset's budget from the same init and data
    but keeps its peak learning rate to the end (runs/small-nodecay-s0): identical to the preset's small model
    through warmup, never decayed after it; the arm starts at that model's loss (exact growth) and is charged
    its tokens."""
    corpus = make_corpus(tmp_path / "corpus")
    sweep = {"preset": "micro", "seeds": [0], "arms": [
        {"name": "random", "init": "random", "lr": 2e-3},
        {"name": "grown", "init": "grown", "lr": 2e-3},
        {"name": "stable-small", "init": "grown", "lr": 2e-3, "small_decay": False}]}
    out = tmp_path / "out"
    res = run_sweep(MICRO, parse_sweep(sweep), out, data=[corpus])
    own = [json.loads(line) for line in (out / "runs" / "small-nodecay-s0" / "metrics.jsonl").read_text().splitlines()]
    preset_small = [json.loads(line) for line in (out / "runs" / "small" / "metrics.jsonl").read_text().splitlines()]
    warm = round(MICRO.warmup * MICRO.small_tokens // MICRO.batch_tokens)
    assert [m["train_loss"] for m in own if m["step"] <= warm] == [m["train_loss"] for m in preset_small
                                                                   if m["step"] <= warm]
    assert all(m["lr"] == MICRO.small_lr for m in own if m["step"] > warm)
    assert preset_small[-1]["lr"] < 0.2 * MICRO.small_lr  # the preset's small model did decay
    own_final = [m for m in own if m.get("val_loss") is not None][-1]
    assert own_final["tokens"] == res["small_curve"][-1]["tokens"]
    assert own_final["val_loss"] != res["small_curve"][-1]["val_loss"]
    arms = res["arms"]
    assert abs(arms["stable-small"]["start_val_loss"] - own_final["val_loss"]) < 1e-3
    assert abs(arms["grown"]["start_val_loss"] - res["small_curve"][-1]["val_loss"]) < 1e-3
    assert arms["stable-small"]["small_cost"]["tokens"] == MICRO.small_tokens
    assert (out / "models" / "grown-w2-noisy-defaultdb-nodecay" / "config.json").exists()
    assert "small model without its learning-rate decay" in (out / "sweep.md").read_text()


def test_an_arm_grows_from_a_small_model_pretrained_on_a_public_corpus(tmp_path, monkeypatch):
    """small_corpus: the arm's small model is pretrained on a public corpus (here a stand-in for site-packages:
    three files, one of them a copy, one not UTF-8) with the experiment's tokenizer, in
    runs/small-<tokens>-site-packages-s0; the arm starts at that model's loss on the experiment's own validation
    text (exact growth), not on the corpus it was pretrained on, and is charged its tokens."""
    from hyperclone.experiments import corpora

    corpus = make_corpus(tmp_path / "corpus")
    public = tmp_path / "site-packages"
    public.mkdir()
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i * 7}\n\n" for i in range(400))
    (public / "a.py").write_text(text)
    (public / "copy.py").write_text(text)  # a vendored copy: read once
    (public / "latin1.py").write_bytes(b"# caf\xe9\n" * 10)  # not UTF-8: skipped
    monkeypatch.setattr(corpora, "site_packages_files", lambda: sorted(public.iterdir()))
    budget = MICRO.small_tokens // 2
    sweep = {"preset": "micro", "seeds": [0], "arms": [
        {"name": "random", "init": "random", "lr": 2e-3},
        {"name": "public-small", "init": "grown", "lr": 2e-3, "small_tokens": budget,
         "small_corpus": "site-packages"}]}
    out = tmp_path / "out"
    res = run_sweep(MICRO, parse_sweep(sweep), out, data=[corpus])
    info = json.loads((out / "corpus" / "site-packages.json").read_text())
    assert info["documents"] == 1 and info["bytes"] == len(text)
    lines = (out / "corpus" / "site-packages.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [text]
    run = out / "runs" / f"small-{budget}-site-packages-s0"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["tokens"] == budget
    own_val = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
               if m.get("val_loss") is not None][-1]["val_loss"]
    arm = res["arms"]["public-small"]
    grown = out / "models" / f"grown-w2-noisy-defaultdb-small{budget}-site-packages"
    assert (grown / "config.json").exists()
    # its validation loss on its own corpus differs from where the grown arm starts (the experiment's text)
    assert abs(arm["start_val_loss"] - own_val) > 1e-3
    assert arm["small_cost"]["tokens"] == budget
    assert f"small model pretrained {budget:,} tokens on site-packages" in (out / "sweep.md").read_text()
