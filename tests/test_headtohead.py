"""`hyperclone experiment --arms`: growth methods head to head at one final shape (micro preset, seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_experiment import MICRO
from train_helpers import make_corpus

from hyperclone.baselines.msg.layout import CONFIG_KEY
from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments import headtohead
from hyperclone.experiments.setup import model_stats
from hyperclone.experiments.sweep import run_sweep

pytestmark = pytest.mark.slow  # six arms trained end to end

REPO = Path(__file__).resolve().parents[1]
ONE_SEED = replace(MICRO, seeds=(0,))


@pytest.mark.parametrize(("text", "message"), [
    ("random,foo", "unknown arm 'foo' in --arms; choose from random, hyperclone, symmetric, stack, msg, upcycle, "
                   "random-moe"),
    ("random,msg,msg", "names an arm twice"),
    ("hyperclone,msg", "must include random"),
])
def test_bad_arm_lists_give_one_line(text, message):
    with pytest.raises(HyperCloneError, match=message) as err:
        headtohead.parse_arms(text)
    assert "\n" not in str(err.value)


def test_every_arm_has_the_same_final_shape_and_recipe():
    sweep = headtohead.build_sweep(MICRO, headtohead.parse_arms("random,hyperclone,symmetric,msg,stack"))
    assert {(a.width, a.layers, a.lr, a.seeds, a.tokens, a.schedule) for a in sweep.arms} == {
        (MICRO.width, 2 * MICRO.layers, MICRO.lr, MICRO.seeds, None, None)}
    assert [a.init for a in sweep.arms] == ["random", "grown", "grown", "msg", "grown"]
    with pytest.raises(HyperCloneError, match="stack arm grows depth"):
        headtohead.build_sweep(MICRO, ["random", "stack"], layers=MICRO.layers)
    with pytest.raises(HyperCloneError, match="--layers must be an integer"):
        headtohead.build_sweep(MICRO, ["random"], layers=MICRO.layers - 1)


@pytest.fixture(scope="module")
def h2h(tmp_path_factory):
    root = tmp_path_factory.mktemp("h2h")
    corpus = make_corpus(root / "corpus")
    out = root / "out"
    sweep = headtohead.build_sweep(ONE_SEED, headtohead.parse_arms("random,hyperclone,msg,stack,upcycle,random-moe"))
    return out, run_sweep(ONE_SEED, sweep, out, data=[corpus], writer=headtohead.write)


def test_head_to_head_report_and_numbers(h2h):
    out, results = h2h
    assert (out / "report.md").read_text().startswith("# Growth methods head to head")
    assert (out / "headtohead_val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "results.json").read_text())
    rows = on_disk["headtohead"]["arms"]
    assert set(rows) == {"random", "hyperclone", "msg", "stack", "upcycle", "random-moe"}
    random_final = results["arms"]["random"]["final_val_loss"]["mean"]
    assert on_disk["headtohead"]["target_val_loss"] == pytest.approx(random_final)
    # random reaches its own final loss at its last point: the whole budget, speedup 1
    assert rows["random"]["tokens_to_target"] == pytest.approx(ONE_SEED.tokens, rel=0.01)
    assert rows["random"]["speedup_tokens"] == pytest.approx(1.0, rel=0.01)
    for row in rows.values():
        final = row["final_val_loss"]["mean"]
        assert row["loss_gap_vs_random"] == pytest.approx((random_final - final) / random_final)
        if row["tokens_to_target"] is not None:
            assert row["speedup_tokens"] == pytest.approx(rows["random"]["tokens_to_target"] / row["tokens_to_target"],
                                                          rel=0.01)
    # growth methods against each other: every growth arm reaches the highest growth final loss; MSG is the unit
    growth = [n for n in rows if results["arms"][n]["init"] != "random"]
    target = on_disk["headtohead"]["growth_target_val_loss"]
    assert target == pytest.approx(max(rows[n]["final_val_loss"]["mean"] for n in growth))
    assert all(rows[n]["tokens_to_growth_target"] is not None for n in growth)
    assert rows["msg"]["speedup_tokens_vs_msg"] == pytest.approx(1.0)
    for name in growth:
        at_start = rows[name]["tokens_to_target"] == 0.0
        assert rows[name]["reached_at_start"] == at_start and (rows[name]["speedup_tokens"] is None) == at_start
    md = (out / "report.md").read_text()
    assert all(f"| {name} |" in md for name in rows)


def test_arms_start_where_their_method_says(h2h):
    _, results = h2h
    small_final = results["small_curve"][-1]["val_loss"]
    arms = results["arms"]
    # function-preserving growth: the small model's loss at step 0 (width and depth grown)
    assert arms["hyperclone"]["start_val_loss"] == pytest.approx(small_final, abs=1e-3)
    assert arms["msg"]["start_val_loss"] == pytest.approx(small_final, abs=1e-3)
    # stacking copies layers: a different function; random init: far above
    assert abs(arms["stack"]["start_val_loss"] - small_final) > 1e-3
    assert arms["random"]["start_val_loss"] > small_final + 0.5
    # upcycling to experts that are copies of the grown MLP, top-1 renormalised: the same function again
    assert arms["upcycle"]["start_val_loss"] == pytest.approx(small_final, abs=1e-3)
    assert arms["random-moe"]["start_val_loss"] > small_final + 0.5


def test_mixture_of_experts_arms_count_active_flops_and_meet_their_own_random(h2h):
    out, results = h2h
    dense = model_stats(out / "models" / "random-w2-L4-s0", ONE_SEED.seq_len)
    moe = model_stats(out / "models" / "random-w2-L4-e4k1-s0", ONE_SEED.seq_len)
    router = dense["layers"] * 4 * dense["hidden"]  # one gate row per expert per layer
    assert moe["active_params"] == dense["params"] + router
    mlp = dense["layers"] * 3 * dense["hidden"] * dense["ffn"]  # gate, up and down projections
    assert moe["params"] == dense["params"] + router + 3 * mlp  # three more copies of every MLP, inactive
    for name in ("upcycle", "random-moe"):
        for point in results["curves"][name]["0"]:
            assert point["flops"] == pytest.approx(point["tokens"] * moe["flops_per_token"])
    rows = json.loads((out / "results.json").read_text())["headtohead"]["arms"]
    assert "speedup_tokens_vs_random_moe" in rows["upcycle"]
    assert not {"speedup_tokens_vs_random_moe"} & (set(rows["random"]) | set(rows["random-moe"]))  # baselines
    md = (out / "report.md").read_text()
    assert "speedup vs random-moe" in md and "4 experts top-1" in md


def test_masked_compute_counts_and_msg_ends_plain(h2h):
    from transformers import AutoConfig, AutoModelForCausalLM

    out, results = h2h
    per_token = model_stats(out / "models" / "random-w2-L4-s0", ONE_SEED.seq_len)["flops_per_token"]
    for name in ("random", "hyperclone", "msg", "stack"):
        for point in results["curves"][name]["0"]:
            assert point["flops"] == pytest.approx(point["tokens"] * per_token)
    final = out / "runs" / "msg-s0" / "final"
    assert CONFIG_KEY not in json.loads((final / "config.json").read_text())
    config = AutoConfig.from_pretrained(final)
    reference = AutoConfig.from_pretrained(out / "models" / "random-w2-L4-s0")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"):
        assert getattr(config, key) == getattr(reference, key)
    AutoModelForCausalLM.from_pretrained(final)  # plain transformers, no custom code


def test_cli_arms_errors_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "hyperclone.cli", "experiment", *args, "--out",
                               str(tmp_path / "out")], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    for args, message in ((["--preset", "cpu-tiny", "--arms", "random,foo"], "unknown arm 'foo'"),
                          (["--arms", "random,msg"], "--arms needs --preset"),
                          (["--preset", "cpu-tiny", "--layers", "8"], "--layers only applies with --arms"),
                          (["--preset", "cpu-tiny", "--arms", "random", "--sweep", "x.yaml"], "not both")):
        done = run(*args)
        assert done.returncode == 2, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
