"""The budget ladder's arithmetic: budget-matched speed-ups, bounds, the random arm of each budget, the report."""

import math

import pytest

from hyperclone.experiments import curve_math, ladder

FRONTIER = [(800_000, 4.70), (3_200_000, 3.81), (16_000_000, 3.30)]


def test_tokens_to_reach_interpolates_in_log_tokens():
    tokens, bound = curve_math.tokens_to_reach(3.81, FRONTIER)
    assert bound == "" and tokens == pytest.approx(3_200_000)
    tokens, _ = curve_math.tokens_to_reach((4.70 + 3.81) / 2, FRONTIER)  # halfway in loss -> geometric mean of budgets
    assert tokens == pytest.approx(math.sqrt(800_000 * 3_200_000))


def test_tokens_to_reach_gives_bounds_outside_the_measured_budgets():
    # FRONTIER flattens (0.64 then 0.32 nats of loss per e-fold of tokens): below its last loss the bound extends
    # the last segment, so 0.16 nats lower needs e^(0.16 / 0.317) more tokens than 16M
    per_log_token = (3.81 - 3.30) / math.log(5)
    tokens, bound = curve_math.tokens_to_reach(3.14, FRONTIER)
    assert bound == ">" and tokens == pytest.approx(16_000_000 * math.exp(0.16 / per_log_token))
    assert curve_math.tokens_to_reach(5.0, FRONTIER) == (800_000.0, "<")


def test_the_lower_bound_falls_back_to_the_largest_budget_where_random_does_not_flatten():
    steepening = [(800_000, 4.70), (3_200_000, 4.50), (16_000_000, 3.30)]
    assert not curve_math.flattens(steepening) and curve_math.flattens(FRONTIER)
    assert curve_math.tokens_to_reach(3.0, steepening) == (16_000_000.0, ">")
    assert curve_math.tokens_to_reach(3.0, FRONTIER[1:]) == (16_000_000.0, ">")  # one segment: no trend to rely on


def test_head_start_is_the_start_loss_placed_on_the_frontier_and_kept_compares_the_final_loss_with_it():
    """A grown model starting at random's loss halfway (in loss) between 0.8M and 3.2M has a head start of their
    geometric mean, 1.6M tokens; at budget 3.2M, keeping it is worth 1 + 1.6/3.2 = 1.5x, and a final loss that
    random needs 4.0M tokens for kept (4.0 - 3.2) / 1.6 = half of it."""
    row = curve_math.head_start((4.70 + 3.81) / 2, 4_000_000.0, "", 3_200_000, FRONTIER)
    assert row["head_start_tokens"] == pytest.approx(1_600_000) and row["head_start_bound"] == ""
    assert row["speedup_if_kept"] == pytest.approx(1.5) and row["kept"] == pytest.approx(0.5)
    assert row["kept_bound"] == ""
    assert ladder.head_start_cells(row) == "1.60M | 1.50 | 0.50"


def test_kept_carries_the_bounds_of_its_terms_and_is_withheld_when_they_conflict():
    """kept = (needed - B) / head start: a needed lower bound and a head-start upper bound (a start above random's
    smallest budget) both make a gain's fraction a lower bound; a needed upper bound against a head-start upper
    bound says nothing; for a loss (needed < B) a smaller head start makes the fraction more negative."""
    above = 5.0  # above random's loss at 0.8M: head start < 0.8M
    gained = curve_math.head_start(above, 20_000_000.0, ">", 16_000_000, FRONTIER)
    assert gained["head_start_bound"] == "<" and gained["kept_bound"] == ">"
    assert gained["kept"] == pytest.approx(4_000_000 / 800_000)
    assert ladder.head_start_cells(gained) == "<0.80M | <1.05 | >5.00"
    assert curve_math.head_start(above, 20_000_000.0, "<", 16_000_000, FRONTIER)["kept"] is None
    lost = curve_math.head_start(above, 12_000_000.0, "", 16_000_000, FRONTIER)
    assert lost["kept_bound"] == "<" and lost["kept"] == pytest.approx(-5.0)
    assert curve_math.head_start(None, 1.0, "", 1, FRONTIER) == {}


def test_random_arm_of_a_budget_is_the_best_seed0_learning_rate():
    arms = {
        "random-a": {"init": "random", "tokens": 10, "lr": 1e-3, "final_val_loss": {0: 4.0, 1: 3.0}},
        "random-b": {"init": "random", "tokens": 10, "lr": 2e-3, "final_val_loss": {0: 3.5}},
        "random-c": {"init": "random", "tokens": 20, "lr": 2e-3, "final_val_loss": {}},
        "grown": {"init": "grown", "tokens": 10, "lr": 2e-3, "final_val_loss": {0: 1.0}},
    }
    assert curve_math.pick_random(arms, 10) == "random-b"
    assert curve_math.pick_random(arms, 20) is None


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
    assert min(budgets) == 400_000 and max(budgets) == 16_000_000
    assert all(a.grow == {"mode": "noisy", "noise_db": 0} for a in sweep.arms if a.init == "grown")


def test_the_make_it_last_sweep_reuses_the_ladders_runs():
    """sweeps/cpu-ladder-last.yaml runs in the ladder's folder: every arm named like a ladder arm is defined exactly
    as the ladder's (else the sweep would refuse the folder's runs as changed), and its candidates train the
    ladder's largest budget, except the probe beside the ladder's default arm at 0.8M tokens, the cosine pair at
    1.6M tokens (the prose confirmation's budget) and random init one rung above the ladder (25.6M tokens), which
    measures the frontier the 16M-token arms below random's 16M loss are read on."""
    from pathlib import Path

    from hyperclone.experiments.sweep_spec import load_sweep

    search = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "cpu-ladder-last.yaml")
    ladder_arms = {a.name: a.as_dict() for a in ladder.ladder_sweep("cpu-ladder").arms}
    shared = [a for a in search.arms if a.name in ladder_arms]
    assert {a.name for a in shared} == {"random-16m-lr0.002", "grown-16m-lr0.002", "random-16m-lr0.001",
                                        "random-16m-lr0.004", "grown-0.8m-lr0.002"}
    for arm in shared:
        assert arm.as_dict() == ladder_arms[arm.name]
    largest = max(a["tokens"] for a in ladder_arms.values())
    assert {a.name: a.tokens for a in search.arms if a.tokens != largest} == {
        "grown-0.8m-lr0.002": 800_000, "uneven-0.8m": 800_000, "grown-1.6m-cosine": 1_600_000,
        "random-1.6m-cosine": 1_600_000, "random-25.6m-lr0.001": 25_600_000, "random-25.6m-lr0.002": 25_600_000,
        "random-40m-lr0.001": 40_000_000}
    assert {a.small_tokens for a in search.arms} == {None, 3_200_000, 12_800_000, 51_200_000}


def _fake_run(out, name: str, tokens: int, loss: float, start: float = 9.0) -> None:
    import json

    run = out / "runs" / name
    (run / "final").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "tokens": 0, "val_loss": start, "elapsed_s": 0.0}) + "\n"
                                       + json.dumps({"step": 9, "tokens": tokens, "val_loss": loss, "elapsed_s": 1.0})
                                       + "\n")
    (run / "final" / "trainer_state.json").write_text("{}")


def test_a_search_in_the_ladders_folder_is_placed_on_the_ladders_random_frontier(tmp_path):
    """ladder_search on a folder laid out as the ladder and a search leave it (runs' metrics and final states,
    models' configs): each arm's mean final loss goes through curve_math.tokens_to_reach on the ladder's random
    frontier, incl. small charges the small model the arm grew from, unfinished seeds are pending and the best
    arm stays provisional while any are."""
    import json

    from transformers import LlamaConfig

    from hyperclone.experiments import ladder_search
    from hyperclone.experiments.presets import get_preset
    from hyperclone.experiments.setup import model_stats
    from hyperclone.experiments.sweep_spec import load_sweep

    preset = get_preset("cpu-ladder")
    for folder, hidden in (("small-init", 32), ("grown-w2-symmetric", 64)):
        LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=256).save_pretrained(tmp_path / "models" / folder)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "corpus.json").write_text(json.dumps({"description": "a test corpus", "bytes": 10**6}))
    frontier = {400_000: 4.6, 800_000: 4.0, 1_600_000: 3.5, 3_200_000: 3.1, 6_400_000: 2.8, 16_000_000: 2.5}
    for arm in ladder.ladder_sweep("cpu-ladder").arms:
        for seed in arm.seeds:
            if arm.init == "random":
                _fake_run(tmp_path, f"{arm.name}-s{seed}", arm.tokens, frontier[arm.tokens] + (arm.lr != 2e-3) * 0.1)
    _fake_run(tmp_path, "small", 800_000, 5.0)
    _fake_run(tmp_path, "small-12800000-s0", 12_800_000, 4.0)
    for name, loss in (("grown-16m-lr0.002-s0", 2.45), ("grown-16m-lr0.002-s1", 2.47)):
        _fake_run(tmp_path, name, 16_000_000, loss)
    _fake_run(tmp_path, "last-small12.8m-s0", 16_000_000, 2.2, start=3.3)  # halfway between random's 1.6M and 3.2M
    spec = tmp_path / "search.yaml"
    spec.write_text("preset: cpu-ladder\nseeds: [0, 1]\narms:\n"
                    "  - {name: grown-16m, init: grown, grow: {mode: noisy, noise_db: 0}, tokens: 16000000, "
                    "lr: [2.0e-3]}\n"
                    "  - {name: last-small12.8m, init: grown, grow: {mode: noisy, noise_db: 0}, tokens: 16000000, "
                    "lr: 2.0e-3, small_tokens: 12800000}\n"
                    "  - {name: random-6.4m, init: random, tokens: 6400000, lr: [4.0e-3], seeds: [0]}\n"
                    "  - {name: kd, init: grown, kd: {alpha: 0.5}, tokens: 16000000, lr: 2.0e-3, seeds: [0]}\n")
    _fake_run(tmp_path, "random-6.4m-lr0.004-s0", 6_400_000, 2.7)  # the sweep's own LR beats the ladder's at 6.4M
    _fake_run(tmp_path, "kd-s0", 16_000_000, 2.45)
    (tmp_path / "runs" / "kd-s0" / "train_summary.json").write_text(json.dumps({"teacher": {
        "forward_tokens": 4_800_000}}))
    results = ladder_search.analyse(preset, load_sweep(spec), tmp_path)
    rows = {r["arm"]: r for r in results["arms"]}
    points = sorted({**frontier, 6_400_000: 2.7}.items())
    assert results["frontier"] == points
    default, better = rows["grown-16m-lr0.002"], rows["last-small12.8m"]
    assert default["speedup_tokens"] == pytest.approx(curve_math.tokens_to_reach(2.46, points)[0] / 16e6)
    assert default["bound"] == ">" and default["loss_gap"] == pytest.approx((2.5 - 2.46) / 2.5)
    assert better["pending"] == [1] and better["speedup_tokens"] > default["speedup_tokens"]
    big, small = model_stats(tmp_path / "models" / "grown-w2-symmetric", preset.seq_len), model_stats(
        tmp_path / "models" / "small-init", preset.seq_len)
    def trained(tokens: int) -> int:  # whole batches: the tokens the small model's run trains on
        return tokens // preset.batch_tokens * preset.batch_tokens

    for row, small_tokens in ((default, trained(800_000)), (better, trained(12_800_000))):
        needed = row["speedup_tokens"] * 16e6 * big["flops_per_token"]
        assert row["speedup_flops_incl_small"] == pytest.approx(
            needed / (16e6 * big["flops_per_token"] + small_tokens * small["flops_per_token"]))
    kd = rows["kd"]  # a distilled arm also pays its teacher's forward passes: a third of the small model's FLOPs
    assert kd["speedup_flops_incl_small"] == pytest.approx(kd["speedup_tokens"] * 16e6 * big["flops_per_token"] / (
        16e6 * big["flops_per_token"] + (trained(800_000) + 4_800_000 / 3) * small["flops_per_token"]))
    assert results["best"]["16000000"] == {"arm": "last-small12.8m", "mean": 2.2, "provisional": True}
    head_start = math.sqrt(1.6e6 * 3.2e6)
    assert better["start_loss"] == 3.3 and better["head_start_tokens"] == pytest.approx(head_start)
    assert better["kept"] == pytest.approx((better["speedup_tokens"] - 1) * 16e6 / head_start)
    assert default["head_start_bound"] == "<" and default["head_start_tokens"] == 400_000  # starts above all
    report = ladder_search.write(results, tmp_path).read_text()
    assert "| last-small12.8m |" in report and "| s1 |" in report and f"| {head_start / 1e6:.2f}M | " in report
    assert "search_val_loss_16m.png" in report and (tmp_path / "search_val_loss_16m.png").exists()
    # the frontier names how many seeds stand behind each point: the sweep's one-seed LR arm at 6.4M
    assert results["random_seeds"]["6400000"] == [0] and results["random_seeds"]["16000000"] == [0, 1]
    assert "6.4M: 2.700 (1 seed), 16M: 2.500 (2 seeds)." in report
    assert [p["val_loss"] for p in results["curves"]["grown-16m-lr0.002"]] == [9.0, 2.46]  # seed mean
    # a sweep's `report:` names its own files, so two searches in one ladder folder do not overwrite each other
    named = ladder_search.write({**results, "report": "keep"}, tmp_path)
    assert named == tmp_path / "keep.md" and (tmp_path / "keep.json").exists()
    assert (tmp_path / "keep_val_loss_16m.png").exists() and "## Diagnosis" in named.read_text()


def test_the_prose_sweep_repeats_the_ladders_budget_on_another_corpus():
    """sweeps/prose-confirm.yaml: the ladder's 1.6M-token arms, defined exactly as in the ladder (so the code and
    prose figures differ only in the corpus), with random's LR search, random at the budgets either side and at
    0.4M (below the small model's loss, so the head start is bracketed), and the code search's winner (cosine) beside
    random init on cosine."""
    from pathlib import Path

    from hyperclone.experiments.sweep_spec import load_sweep

    prose = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "prose-confirm.yaml")
    ladder_arms = {a.name: a.as_dict() for a in ladder.ladder_sweep("cpu-ladder").arms}
    assert prose.preset == "cpu-ladder"
    for arm in prose.arms:  # the same recipe; the seeds may differ
        if arm.name in ladder_arms:
            assert {**arm.as_dict(), "seeds": None} == {**ladder_arms[arm.name], "seeds": None}
    assert prose.compare == "ladder"
    assert {a.name for a in prose.arms} == {"random-1.6m-lr0.002", "grown-1.6m-lr0.002", "random-1.6m-lr0.001",
                                            "random-1.6m-lr0.004", "random-0.4m-lr0.002", "random-0.8m-lr0.002",
                                            "random-3.2m-lr0.002", "grown-1.6m-cosine", "random-1.6m-cosine"}
    cosine = {a.name for a in prose.arms if a.schedule == "cosine"}
    assert cosine == {"grown-1.6m-cosine", "random-1.6m-cosine"}  # the search's winner, and random's schedule


def test_snapshot_keeps_finished_runs_and_leaves_small_models_to_be_retrained(tmp_path):
    """benchmarks/ladder_snapshot.py: finished runs (and the search report) go into the repository and come back
    into a fresh folder; unfinished runs do not, nor do small models' runs (whose weights the snapshot does not
    hold: only their curves are kept, for the reports' small-model cost)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ladder_snapshot.py"
    spec = importlib.util.spec_from_file_location("ladder_snapshot", path)
    snapshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(snapshot)
    out, dest, fresh = tmp_path / "out", tmp_path / "dest", tmp_path / "fresh"
    for name in ("grown-16m-lr0.002-s0", "small", "small-12800000-s0"):
        _fake_run(out, name, 16_000_000, 2.0)
    (out / "runs" / "random-16m-lr0.002-s1").mkdir(parents=True)  # started, not finished
    (out / "search.md").write_text("report")
    assert snapshot.save(out, dest) == ["grown-16m-lr0.002-s0"]
    assert (dest / "search.md").read_text() == "report"
    small = dest / "runs" / "small-12800000-s0"  # its curve (the small model's cost for the reports), not finished
    assert (small / "metrics.jsonl").is_file() and not (small / "final").exists()
    assert snapshot.restore(fresh, dest) == ["grown-16m-lr0.002-s0"]
    assert (fresh / "runs" / "grown-16m-lr0.002-s0" / "metrics.jsonl").read_text() == (
        out / "runs" / "grown-16m-lr0.002-s0" / "metrics.jsonl").read_text()


def test_snapshot_keeps_a_named_small_model_whole_so_a_fresh_folder_grows_from_the_same_weights(tmp_path):
    """--keep-small RUN: that small model's final folder (weights, moments, the finished mark) and the folder's
    tokenizer go into the repository and come back, so the sweep reuses it instead of retraining; a name that is
    not a finished small-model run is refused in one line before anything is written."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ladder_snapshot.py"
    spec = importlib.util.spec_from_file_location("ladder_snapshot", path)
    snapshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(snapshot)
    out, dest, fresh = tmp_path / "out", tmp_path / "dest", tmp_path / "fresh"
    for name in ("small", "small-51200000-s0"):
        _fake_run(out, name, 51_200_000, 1.6)
    weights = out / "runs" / "small-51200000-s0" / "final" / "model.safetensors"
    weights.write_bytes(b"weights")
    (out / "runs" / "small-51200000-s0" / "final" / "moments.pt").write_bytes(b"moments")
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(SystemExit, match="no finished small-model run small-3200000-s0"):
        snapshot.save(out, dest, ("small-3200000-s0",))
    assert not dest.exists()
    assert snapshot.save(out, dest, ("small-51200000-s0",)) == []
    assert not (dest / "runs" / "small" / "final").exists()  # not named: its curve only, retrained on restore
    assert snapshot.restore(fresh, dest) == ["small-51200000-s0"]
    kept = fresh / "runs" / "small-51200000-s0" / "final"
    assert (kept / "model.safetensors").read_bytes() == b"weights" and (kept / "moments.pt").read_bytes() == b"moments"
    assert (kept / "trainer_state.json").is_file() and (fresh / "tokenizer" / "tokenizer.json").read_text() == "{}"


REPORTS = {"ladder.md": (["--preset", "cpu-ladder"]), "search.md": ["--sweep", "sweeps/cpu-ladder-last.yaml"],
           "keep.md": ["--sweep", "sweeps/cpu-ladder-keep.yaml"],
           "disjoint.md": ["--sweep", "sweeps/cpu-ladder-disjoint.yaml"],
           "rewarm.md": ["--sweep", "sweeps/cpu-ladder-rewarm.yaml"],
           "methods.md": ["--sweep", "sweeps/cpu-ladder-methods.yaml"],
           "lrgroups.md": ["--sweep", "sweeps/cpu-ladder-lrgroups.yaml"]}


@pytest.mark.parametrize("report", sorted(REPORTS))
def test_committed_ladder_reports_regenerate_from_the_committed_runs(tmp_path, report):
    """Every cpu-ladder report in results/cpu-ladder is what `--report-only` writes from the runs, model configs,
    settings and wall-clock tallies committed beside it (benchmarks/ladder_snapshot.py save): the same text but
    for the date, command and machine lines (the report names where, when and on what it was written; the
    machine line counts this process's torch threads)."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from hyperclone.cli import app

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "cpu-ladder"
    shutil.copytree(root / "results" / "cpu-ladder", out)
    result = CliRunner().invoke(app, ["experiment", *[str(root / a) if a.startswith("sweeps/") else a
                                                      for a in REPORTS[report]], "--out", str(out), "--report-only"])
    assert result.exit_code == 0, result.output

    def body(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines()
                if not line.startswith(("date: ", "command: ", "machine: "))]

    assert body(out / report) == body(root / "results" / "cpu-ladder" / report)


def test_the_committed_prose_report_regenerates_without_its_corpus(tmp_path):
    """results/prose-pypi (a sweep trained with --data PYPI_DOCS.jsonl) regenerates with --report-only from the
    committed runs alone: the report reads the corpus description the runs recorded, so neither the corpus file nor
    the path it had is needed (a training run still compares --data's path with the stored one)."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from hyperclone.cli import app

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "prose-pypi"
    shutil.copytree(root / "results" / "prose-pypi", out)
    result = CliRunner().invoke(app, ["experiment", "--sweep", str(root / "sweeps" / "prose-pypi.yaml"), "--out",
                                      str(out), "--report-only"])
    assert result.exit_code == 0, result.output

    def body(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines()
                if not line.startswith(("date: ", "command: ", "machine: "))]

    assert body(out / "prose-pypi.md") == body(root / "results" / "prose-pypi" / "prose-pypi.md")


def test_settings_compare_data_when_training_and_the_preset_alone_for_a_report(tmp_path):
    """experiments.setup.check_settings: a folder keeps the settings it was made with; training again with another
    --data path is refused, a report (keys=("preset",)) compares the preset only, and another preset is refused."""
    from hyperclone.common.errors import HyperCloneError
    from hyperclone.experiments.setup import check_settings

    check_settings(tmp_path, {"preset": {"name": "a"}, "data": ["/x/docs.jsonl"]})
    check_settings(tmp_path, {"preset": {"name": "a"}, "data": ["/x/docs.jsonl"]})
    check_settings(tmp_path, {"preset": {"name": "a"}, "data": None}, keys=("preset",))
    for settings, keys in (({"preset": {"name": "a"}, "data": ["/y/docs.jsonl"]}, None),
                           ({"preset": {"name": "b"}, "data": ["/x/docs.jsonl"]}, ("preset",))):
        with pytest.raises(HyperCloneError, match="holds an experiment with other settings"):
            check_settings(tmp_path, settings, keys=keys)


def test_report_only_on_a_folder_without_model_configs_is_refused_in_one_line(tmp_path, capsys):
    """--report-only builds nothing: a folder that lacks what the report reads (the corpus's description, the
    models' configs) is refused in one line, and nothing is written into it."""
    from hyperclone.cli import main

    out = tmp_path / "ladder"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "--preset", "cpu-ladder", "--out", str(out), "--report-only"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--report-only:" in err and "lacks corpus/corpus.json" in err
    assert len(err.strip().splitlines()) == 1 and list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["prose-docs", "prose-pypi"])
def test_the_docs_prose_sweep_repeats_the_ladders_largest_budget(name):
    """sweeps/prose-docs.yaml (and prose-pypi.yaml, its restart on a corpus that rebuilds byte for byte): the ladder's
    16M-token arms on English documentation, defined exactly as in the ladder, beside the code search's winner
    (cosine) for both inits, and random's LR search and frontier around 16M."""
    from pathlib import Path

    from hyperclone.experiments.sweep_spec import load_sweep

    prose = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / f"{name}.yaml")
    ladder_arms = {a.name: a.as_dict() for a in ladder.ladder_sweep("cpu-ladder").arms}
    shared = [arm for arm in prose.arms if arm.name in ladder_arms]
    assert {a.name for a in shared} >= {"grown-16m-lr0.002", "random-16m-lr0.002"}
    for arm in shared:  # the same recipe; the seeds may differ
        assert {**arm.as_dict(), "seeds": None} == {**ladder_arms[arm.name], "seeds": None}
    assert prose.compare == "ladder" and prose.report == name
    cosine = {a.name.split("-lr")[0] for a in prose.arms if a.schedule == "cosine"}
    assert cosine == {"grown-16m-cosine", "random-16m-cosine"}
    assert {a.tokens for a in prose.arms if a.init == "random"} >= {6_400_000, 16_000_000, 25_600_000}


def _benchmark_module(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_corpus_reads_html_as_text_and_skips_the_whole_book_page(tmp_path):
    """benchmarks/docs_corpus.py: HTML pages become their text (no scripts, styles or navigation; one blank line
    between blocks), a package's documents are the files of its suffix, its whole-book page and stubs left out."""
    docs_corpus = _benchmark_module("docs_corpus")
    page = ("<html><head><title>T</title><style>p {}</style></head><body><nav>Home | Next</nav>"
            "<h1>Tables</h1><p>A table holds &amp; keeps rows.</p><script>var x;</script><p>Second</p></body></html>")
    assert docs_corpus.html_text(page) == "Tables\nA table holds & keeps rows.\nSecond"
    long = "<p>" + "word " * 200 + "</p>"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ch01.en.html").write_text(long)
    (tmp_path / "index.en.html").write_text(long + long)
    (tmp_path / "stub.en.html").write_text("<p>short</p>")
    (tmp_path / "notes.txt").write_text("word " * 200)
    found = docs_corpus.documents(tmp_path, ".html", "index.en.html")
    assert [name for name, _ in found] == ["a/ch01.en.html"]
    assert found[0][1] == ("word " * 200).strip()


def _sdist(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_pypi_docs_corpus_reads_the_doc_folders_and_refuses_a_changed_sdist(tmp_path, monkeypatch):
    """benchmarks/pypi_docs_corpus.py: the documents are the .rst/.txt/.md files under the sdist's top-level doc/ or
    docs/ folder (not its code, its changelog beside them, stubs or non-UTF-8 files), sorted by path; a cached sdist
    is used without the network, and one whose bytes differ from the pinned sha256 is refused, not read."""
    import hashlib

    corpus = _benchmark_module("pypi_docs_corpus")
    long = b"word " * 200
    sdist = _sdist({"pkg-1.0/docs/b.rst": long + b"b", "pkg-1.0/docs/sub/a.md": long + b"a",
                    "pkg-1.0/docs/stub.rst": b"short", "pkg-1.0/docs/latin1.txt": b"\xe9" * 600,
                    "pkg-1.0/docs/img.png": long, "pkg-1.0/CHANGES.rst": long, "pkg-1.0/pkg/doc/x.rst": long})
    assert corpus.documents(sdist) == [(long + b"b").decode(), (long + b"a").decode()]

    def offline(*args, **kwargs):
        raise AssertionError("the cached sdist must be read without the network")

    monkeypatch.setattr(corpus.urllib.request, "urlopen", offline)
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(sdist)
    digest = hashlib.sha256(sdist).hexdigest()
    assert corpus.fetch("pkg", "pkg-1.0.tar.gz", digest, tmp_path) == sdist
    with pytest.raises(corpus.FetchError, match="is not the pinned"):
        corpus.fetch("pkg", "pkg-1.0.tar.gz", "0" * 64, tmp_path)


def test_random_frontier_leaves_out_a_budget_that_ends_no_lower():
    """A larger budget whose best run ends no lower than a smaller budget's was searched at the wrong learning rates
    (prose at 25.6M on 1e-3: 1.690 against 16M's 1.678 on 2e-3): it is left out of the frontier, so a grown loss
    between the two reads as a bound past the smaller budget, not as tokens on a rising curve."""
    from hyperclone.experiments.curve_math import envelope, tokens_to_reach

    points = [(6_400_000, 1.80), (16_000_000, 1.678), (25_600_000, 1.690)]
    assert envelope(points) == points[:2]
    assert tokens_to_reach(1.661, envelope(points)) == (16_000_000.0, ">")  # one segment falling: no extension
    assert tokens_to_reach(1.683, envelope(points))[1] == ""  # bracketed by 6.4M and 16M
    assert envelope([(1, 3.0), (2, 2.5), (3, 2.5), (4, 2.4)]) == [(1, 3.0), (2, 2.5), (4, 2.4)]
