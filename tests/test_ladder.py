"""The budget ladder's arithmetic: budget-matched speed-ups, bounds, the random arm of each budget, the report."""

import math

import pytest

from hyperclone.experiments import ladder

FRONTIER = [(800_000, 4.70), (3_200_000, 3.81), (16_000_000, 3.30)]


def test_tokens_to_reach_interpolates_in_log_tokens():
    tokens, bound = ladder.tokens_to_reach(3.81, FRONTIER)
    assert bound == "" and tokens == pytest.approx(3_200_000)
    tokens, _ = ladder.tokens_to_reach((4.70 + 3.81) / 2, FRONTIER)  # halfway in loss -> geometric mean of budgets
    assert tokens == pytest.approx(math.sqrt(800_000 * 3_200_000))


def test_tokens_to_reach_gives_bounds_outside_the_measured_budgets():
    assert ladder.tokens_to_reach(3.0, FRONTIER) == (16_000_000.0, ">")
    assert ladder.tokens_to_reach(5.0, FRONTIER) == (800_000.0, "<")


def test_random_arm_of_a_budget_is_the_best_seed0_learning_rate():
    arms = {
        "random-a": {"init": "random", "tokens": 10, "lr": 1e-3, "final_val_loss": {0: 4.0, 1: 3.0}},
        "random-b": {"init": "random", "tokens": 10, "lr": 2e-3, "final_val_loss": {0: 3.5}},
        "random-c": {"init": "random", "tokens": 20, "lr": 2e-3, "final_val_loss": {}},
        "grown": {"init": "grown", "tokens": 10, "lr": 2e-3, "final_val_loss": {0: 1.0}},
    }
    assert ladder.pick_random(arms, 10) == "random-b"
    assert ladder.pick_random(arms, 20) is None


def test_report_marks_pending_runs_and_bounds(tmp_path):
    row = {"budget_tokens": 16_000_000, "tokens_per_parameter": 10.2, "random_arm": "random-16m", "random_lr": 2e-3,
           "random_lrs_tried": [1e-3, 2e-3], "random_final": {0: 3.30}, "grown_arm": "grown-16m",
           "grown_final": {0: 3.20, 1: 3.22}, "pending": ["random-16m-s1"], "random_mean": 3.30,
           "grown_mean": 3.21, "loss_gap": 0.027, "random_tokens_to_grown_loss": 16_000_000.0, "bound": ">",
           "speedup_tokens": 1.0, "speedup_tokens_per_seed": {"mean": 1.0, "std": 0.0},
           "speedup_flops": 1.0, "speedup_flops_incl_small": 0.9}
    pending = {"budget_tokens": 800_000, "tokens_per_parameter": 0.5, "random_arm": None, "random_lr": None,
               "random_lrs_tried": [2e-3], "random_final": {}, "grown_arm": None, "grown_final": {},
               "pending": ["random-0.8m-s0"], "random_mean": None, "grown_mean": None, "loss_gap": None}
    results = {"preset": {"name": "cpu-ladder", "schedule": "wsd", "batch_tokens": 2048},
               "models": {"grown": {"hidden": 128, "layers": 4, "params": 1_574_016}, "small": {"params": 524_864}},
               "small_cost": {"tokens": 798_720}, "corpus": {"description": "text", "bytes": 1e6},
               "budgets": [pending, row], "machine": "test", "date": "today", "command": "cmd"}
    report = ladder.write(results, tmp_path).read_text()
    expected = "| 16,000,000 | 10.2 | 0.002 (0.001/0.002) | 3.300 ± 0.000 (1) | 3.210 ± 0.014 (2) | 2.7% | >1.00 |"
    assert expected in report
    assert "| 800,000 | 0.5 | — (0.002) | pending | pending |" in report
    assert (tmp_path / "ladder_speedup.png").exists() and (tmp_path / "ladder.json").exists()


def test_the_packaged_ladder_parses():
    sweep = ladder.ladder_sweep("cpu-ladder")
    budgets = {a.tokens for a in sweep.arms}
    assert min(budgets) == 800_000 and max(budgets) == 16_000_000
    assert all(a.grow == {"mode": "noisy", "noise_db": 0} for a in sweep.arms if a.init == "grown")


def test_the_make_it_last_sweep_reuses_the_ladders_runs():
    """sweeps/cpu-ladder-last.yaml runs in the ladder's folder: every arm named like a ladder arm is defined exactly
    as the ladder's (else the sweep would refuse the folder's runs as changed), and its candidates all train the
    ladder's largest budget."""
    from pathlib import Path

    from hyperclone.experiments.sweep_spec import load_sweep

    search = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "cpu-ladder-last.yaml")
    ladder_arms = {a.name: a.as_dict() for a in ladder.ladder_sweep("cpu-ladder").arms}
    shared = [a for a in search.arms if a.name in ladder_arms]
    assert {a.name for a in shared} == {"random-16m-lr0.002", "grown-16m-lr0.002", "random-16m-lr0.001",
                                        "random-16m-lr0.004"}
    for arm in shared:
        assert arm.as_dict() == ladder_arms[arm.name]
    largest = max(a["tokens"] for a in ladder_arms.values())
    assert all(a.tokens == largest for a in search.arms)
    assert {a.small_tokens for a in search.arms} == {None, 3_200_000, 12_800_000}
