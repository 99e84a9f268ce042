"""End-to-end `experiment` on a micro preset (seconds), plus preset sanity."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from train_helpers import make_corpus

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments import curve_math
from hyperclone.experiments.presets import PRESETS, Preset, get_preset
from hyperclone.experiments.runner import plan_arms
from hyperclone.experiments.studies import run_experiment
from hyperclone.train.metrics import read_metrics

MICRO = Preset(name="micro", description="test only", corpus_bytes=200_000, vocab_size=300,
               hidden=32, layers=2, heads=2, kv_heads=2, ffn=64, width=2,
               seq_len=32, batch_tokens=8 * 32, small_tokens=256 * 40, tokens=256 * 32,
               small_lr=3e-3, lr=2e-3, warmup=0.1, schedule="cosine",
               evals_per_run=4, eval_tokens=512, seeds=(0, 1))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    corpus = make_corpus(root / "corpus")
    out = root / "out"
    return out, corpus, run_experiment(MICRO, out, data=[corpus], progress=False)


def test_report_files_and_keys(experiment):
    out, _, results = experiment
    assert (out / "report.md").read_text().startswith("# HyperCloning experiment")
    for name in ("val_loss_vs_tokens.png", "val_loss_vs_flops.png", "val_loss_vs_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "results.json").read_text())
    for key in ("speedup_tokens", "speedup_flops", "speedup_tokens_incl_small", "seed_spread", "per_seed", "arms",
                "models", "definitions"):
        assert key in on_disk
    assert set(on_disk["arms"]) == {"small", "grown", "random", "grown-half", "grown-quarter"}
    assert set(on_disk["arms"]["grown"]["seeds"]) == set(on_disk["arms"]["random"]["seeds"]) == {"0", "1"}
    for arm in on_disk["arms"].values():
        for run in arm["seeds"].values():
            assert run["curve"] and run["final_val_loss"] == run["curve"][-1]["val_loss"]
    report_md = (out / "report.md").read_text()
    assert "6·N" in report_md and "randomly initialised model of the identical configuration" in report_md


def test_results_are_consistent(experiment):
    out, _, results = experiment
    arms = results["arms"]
    small_final = arms["small"]["seeds"]["0"]["final_val_loss"]
    for name in ("grown", "grown-half", "grown-quarter"):
        for run in arms[name]["seeds"].values():
            # the grown model starts exactly where the small one ended: growth preserved the function
            assert run["curve"][0]["val_loss"] == pytest.approx(small_final, abs=1e-4)
    assert results["models"]["grown"]["hidden"] == 2 * MICRO.hidden
    assert results["models"]["grown"]["flops_per_token"] > 2 * results["models"]["small"]["flops_per_token"]
    # grown and random of one seed: same budget, same steps; shorter arms have their own full schedule
    for seed in ("0", "1"):
        g, r = arms["grown"]["seeds"][seed]["curve"], arms["random"]["seeds"][seed]["curve"]
        assert [p["tokens"] for p in g] == [p["tokens"] for p in r]
    half = read_metrics(out / "runs" / "grown-half-s0")
    assert half[-1]["tokens"] == MICRO.tokens // 2 and half[-1]["lr"] == pytest.approx(MICRO.lr * 0.1)
    # the headline numbers are what curve_math.summarize computes from the stored curves
    curves = {name: {int(s): run["curve"] for s, run in arm["seeds"].items()}
              for name, arm in arms.items() if name != "small"}
    again = curve_math.summarize(curves, arms["small"]["seeds"]["0"]["curve"],
                             small_elapsed=results["small_cost"]["elapsed_s"])
    for key in ("speedup_tokens", "speedup_flops", "speedup_tokens_incl_small", "target_val_loss"):
        assert again[key] == results[key]
    random_final = sum(r["final_val_loss"] for r in arms["random"]["seeds"].values()) / 2
    assert results["target_val_loss"] == pytest.approx(random_final)


def test_rerun_resumes_instead_of_retraining(experiment):
    out, corpus, results = experiment
    before = (out / "runs" / "grown-s0" / "metrics.jsonl").read_text()
    again = run_experiment(MICRO, out, data=[corpus], progress=False)
    assert (out / "runs" / "grown-s0" / "metrics.jsonl").read_text() == before
    assert again["speedup_tokens"] == results["speedup_tokens"]
    with pytest.raises(HyperCloneError, match="other settings"):
        run_experiment(replace(MICRO, lr=1e-3), out, data=[corpus], progress=False)


def test_presets_are_a_table():
    assert set(PRESETS) >= {"cpu-tiny", "gpu-small"}
    for p in PRESETS.values():
        assert p.hidden % p.heads == 0 and p.heads % p.kv_heads == 0 and p.batch_tokens % p.seq_len == 0
        assert len(p.seeds) >= 2 and p.tokens >= p.batch_tokens * 8
    names = [a.run_name for a in plan_arms(get_preset("cpu-tiny"))]
    assert names == ["small", "grown-s0", "random-s0", "grown-s1", "random-s1", "grown-half-s0", "grown-quarter-s0"]
    with pytest.raises(HyperCloneError, match="unknown preset"):
        get_preset("huge")


def test_compare_results_leaves_out_timing_and_reports_the_largest_difference(tmp_path):
    """benchmarks/compare_results.py (a rerun against a committed result): timing fields never count, a changed
    loss does, and the exit status says which."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"
    committed = {"speedup_tokens": 2.6485, "wall_clock_s": 600.0, "date": "2026-11-28",
                 "arms": {"grown": {"seeds": [{"curve": [{"tokens": 0, "val_loss": 4.99, "elapsed_s": 1.0}]}]}}}
    rerun = json.loads(json.dumps(committed)) | {"wall_clock_s": 700.0, "date": "2026-12-05", "new_key": 1}
    rerun["arms"]["grown"]["seeds"][0]["curve"][0]["elapsed_s"] = 2.0
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, data in zip(paths, (committed, rerun), strict=True):
        path.write_text(json.dumps(data))
    same = subprocess.run([sys.executable, str(script), *map(str, paths)], capture_output=True, text=True)
    assert same.returncode == 0 and "identical: 3 values compared" in same.stdout and "/new_key" in same.stdout
    rerun["arms"]["grown"]["seeds"][0]["curve"][0]["val_loss"] = 4.98
    paths[1].write_text(json.dumps(rerun))
    differ = subprocess.run([sys.executable, str(script), *map(str, paths)], capture_output=True, text=True)
    assert differ.returncode == 1 and "1 of 3 values differ" in differ.stdout
    assert "/arms/grown/seeds[0]/curve[0]/val_loss: 4.99 != 4.98" in differ.stdout


def test_a_rebuilt_corpus_must_be_the_restored_runs_one(tmp_path):
    """A folder restored from committed runs (benchmarks/ladder_snapshot.py restore writes their corpus
    descriptions to corpus/expected/) refuses a corpus rebuilt from data that changed since (Debian's documentation
    packages moved between two sessions: 2,102 documents became 2,100), in one line, keeping nothing of it, and
    refuses to go on with a corpus already built that differs; the same data builds as before (its description now
    with the file's sha256; a committed description without one is compared on documents and bytes)."""
    from hyperclone.experiments.setup import prepare

    corpus = make_corpus(tmp_path / "corpus")
    first = prepare(MICRO, tmp_path / "first", [corpus], lambda _: None).corpus_info
    assert len(first["sha256"]) == 64 and first["documents"] > 0
    old = {key: first[key] for key in ("description", "documents", "bytes")}
    changed = dict(first, documents=first["documents"] + 2, sha256="0")
    for name, expected in (("same", first), ("old", old), ("changed", changed)):
        folder = tmp_path / name
        (folder / "corpus" / "expected").mkdir(parents=True)
        (folder / "corpus" / "expected" / "corpus.json").write_text(json.dumps(expected))
        if name != "changed":
            assert prepare(MICRO, folder, [corpus], lambda _: None).corpus_info == first
            continue
        with pytest.raises(HyperCloneError, match="is not the one this folder's restored runs were trained on") as err:
            prepare(MICRO, folder, [corpus], lambda _: None)
        assert "\n" not in str(err.value)
        assert not (folder / "corpus" / "corpus.jsonl").exists() and not (folder / "corpus" / "corpus.json").exists()
    # restored into a folder whose corpus was built before: compared, refused, left as it was
    (tmp_path / "same" / "corpus" / "expected" / "corpus.json").write_text(json.dumps(changed))
    with pytest.raises(HyperCloneError, match=r"the corpus in .* is not the one this folder's restored runs"):
        prepare(MICRO, tmp_path / "same", [corpus], lambda _: None)
    assert (tmp_path / "same" / "corpus" / "corpus.jsonl").exists()
