"""Speedups read off synthetic validation curves."""

from __future__ import annotations

import pytest

from hyperclone.experiments import curve_math, report


def curve(losses, tokens_per_point=100, flops_per_token=10.0, seconds_per_token=0.01):
    return [{"tokens": i * tokens_per_point, "val_loss": v, "flops": i * tokens_per_point * flops_per_token,
             "elapsed_s": i * tokens_per_point * seconds_per_token} for i, v in enumerate(losses)]


def test_x_to_reach_interpolates_linearly():
    xs, ys = [0, 100, 200, 300], [5.0, 4.0, 3.0, 2.5]
    assert curve_math.x_to_reach(xs, ys, 3.5) == pytest.approx(150.0)
    assert curve_math.x_to_reach(xs, ys, 3.0) == pytest.approx(200.0)
    assert curve_math.x_to_reach(xs, ys, 2.75) == pytest.approx(250.0)
    assert curve_math.x_to_reach(xs, ys, 5.5) == 0.0  # already there at the start
    assert curve_math.x_to_reach(xs, ys, 2.0) is None  # never reached


def test_x_to_reach_takes_the_first_crossing_and_skips_missing_points():
    xs, ys = [0, 100, 200, 300], [5.0, 3.0, 4.0, 2.0]
    assert curve_math.x_to_reach(xs, ys, 3.5) == pytest.approx(75.0)
    assert curve_math.x_to_reach([0, 100, 200], [5.0, None, 3.0], 4.0) == pytest.approx(100.0)


def test_speedups_on_synthetic_curves():
    random = curve([6.0, 5.0, 4.0, 3.5, 3.0])  # final 3.0 at 400 tokens
    grown = curve([4.0, 3.5, 3.0, 2.8, 2.6])  # reaches 3.0 at 200 tokens
    s = curve_math.speedups(grown, random, small_tokens=200, small_flops=500.0, small_elapsed=1.0)
    assert s["target_val_loss"] == 3.0
    assert s["grown_tokens_to_target"] == pytest.approx(200)
    assert s["speedup_tokens"] == pytest.approx(2.0)
    assert s["speedup_tokens_incl_small"] == pytest.approx(400 / (200 + 200))
    assert s["speedup_flops"] == pytest.approx(4000 / (2000 + 500))
    assert s["speedup_wall_clock_incl_small"] == pytest.approx(4.0 / (2.0 + 1.0))
    assert not s["reached_at_start"]


def test_speedup_is_null_when_never_reached():
    random = curve([6.0, 4.0, 2.0])
    grown = curve([4.0, 3.0, 2.5])
    s = curve_math.speedups(grown, random, 100, 100.0, 1.0)
    assert s["grown_tokens_to_target"] is None
    assert s["speedup_tokens"] is None and s["speedup_flops"] is None and s["speedup_tokens_incl_small"] is None


def test_summarize_uses_seed_mean_curves_and_reports_spread():
    arms = {
        "grown": {0: curve([4.0, 3.0, 2.0]), 1: curve([4.0, 3.4, 2.2])},
        "random": {0: curve([6.0, 4.0, 3.0]), 1: curve([6.0, 4.4, 2.6])},
        "grown-half": {0: curve([4.0, 2.5], tokens_per_point=100)},
    }
    small = curve([7.0, 4.0], tokens_per_point=50, flops_per_token=2.5)
    out = curve_math.summarize(arms, small)
    # mean random final = 2.8; mean grown = [4.0, 3.2, 2.1] reaches 2.8 at 100 + 0.4/1.1*100 tokens
    assert out["target_val_loss"] == pytest.approx(2.8)
    assert out["grown_tokens_to_target"] == pytest.approx(100 + 0.4 / 1.1 * 100)
    assert out["speedup_tokens"] == pytest.approx(200 / (100 + 0.4 / 1.1 * 100))
    per_seed = {p["seed"]: p["speedup_tokens"] for p in out["per_seed"]}
    assert per_seed[0] == pytest.approx(200 / 100)  # seed 0 reaches 3.0 at 100 tokens
    assert per_seed[1] == pytest.approx(200 / (100 + 0.8 / 1.2 * 100))  # seed 1 reaches 2.6 between 100 and 200
    spread = out["seed_spread"]
    assert spread["speedup_tokens"]["n"] == 2 and spread["speedup_tokens"]["max"] == pytest.approx(2.0)
    assert spread["final_val_loss"]["random"]["mean"] == pytest.approx(2.8)
    assert spread["final_val_loss"]["grown-half"]["std"] == 0.0


def test_write_text_atomic_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    import os

    from hyperclone.common import outputs

    card = tmp_path / "README.md"
    card.write_text("old card\n")
    outputs.write_text_atomic(card, "new card\n")
    assert card.read_text() == "new card\n"

    def crash(*_args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        outputs.write_text_atomic(card, "half")
    assert card.read_text() == "new card\n"  # never truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no temporary left behind


def test_save_figure_writes_a_png_and_nothing_else(tmp_path):
    plt = report.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = report.save_figure(fig, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    assert not plt.get_fignums()  # closed
