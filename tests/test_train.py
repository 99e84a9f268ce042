"""`hyperclone train`: metrics, checkpoints, exact resume (also after SIGKILL), DDP on gloo, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_corpus, make_model, make_tokenizer

import hyperclone.train.loop as train_mod
from hyperclone.common.errors import HyperCloneError
from hyperclone.train.config import TrainConfig
from hyperclone.train.loop import train
from hyperclone.train.metrics import read_metrics
from hyperclone.train.schedule import decay_start, lr_at

REPO = Path(__file__).resolve().parents[1]
STEPS = 60
FIELDS = {"step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus = make_corpus(root / "corpus")
    model = make_model(root / "model", corpus)
    return root, corpus, model


def base_config(setup, out: Path, **kw) -> TrainConfig:
    root, corpus, model = setup
    cfg = TrainConfig(model=model, data=[corpus], out=out, tokens=256 * STEPS, batch_tokens=256, seq_len=32,
                      eval_every=10, eval_tokens=512, save_every=10, log_every=5, lr=3e-3, warmup=5,
                      cache_dir=root / "cache", progress=False, seed=0)
    return replace(cfg, **kw)


def cli_args(cfg: TrainConfig) -> list[str]:
    return ["train", str(cfg.model), "--data", str(cfg.data[0]), "--out", str(cfg.out), "--tokens", str(cfg.tokens),
            "--batch-tokens", str(cfg.batch_tokens), "--seq-len", str(cfg.seq_len), "--eval-every",
            str(cfg.eval_every), "--eval-tokens", str(cfg.eval_tokens), "--save-every", str(cfg.save_every),
            "--log-every", str(cfg.log_every), "--lr", str(cfg.lr), "--warmup", str(int(cfg.warmup)),
            "--cache-dir", str(cfg.cache_dir), "--seed", str(cfg.seed), "--no-progress"]


def env(threads: int = 2) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def comparable(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s")} for m in metrics]


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """One uninterrupted run that the resume and DDP tests compare against."""
    cfg = base_config(setup, tmp_path_factory.mktemp("ref") / "run")
    result = train(cfg)
    return cfg, result


def test_run_writes_metrics_checkpoints_and_learns(reference):
    cfg, result = reference
    out = cfg.out
    metrics = read_metrics(out)
    assert all(FIELDS <= set(m) for m in metrics)
    assert metrics[0]["step"] == 0 and metrics[0]["val_loss"] is not None
    assert metrics[-1]["step"] == STEPS and metrics[-1]["tokens"] == STEPS * 256
    vals = [m["val_loss"] for m in metrics if m["val_loss"] is not None]
    assert len(vals) == STEPS // 10 + 1
    assert vals[-1] < vals[0] - 1.0  # it learns
    assert all(m["tokens_per_s"] > 0 and m["elapsed_s"] >= 0 for m in metrics[1:])
    assert result.final == out / "final" and result.final_val_loss == pytest.approx(vals[-1], abs=1e-5)
    # periodic checkpoints: only the newest ones are kept, each a resumable plain model folder
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-0000040", "step-0000050"]
    ckpt = out / "checkpoints" / "step-0000050"
    assert {"optimizer.pt", "rng-rank0.pt", "trainer_state.json", "tokenizer.json", "config.json"} <= {
        p.name for p in ckpt.iterdir()}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.model_type == "llama" and tok.eos_token_id == 0
    assert not (out / "final" / "optimizer.pt").exists()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["steps"] == STEPS


def test_resume_after_stop_matches_uninterrupted_run(setup, reference, tmp_path):
    ref_cfg, ref = reference
    cfg = base_config(setup, tmp_path / "run")
    train(replace(cfg, stop_after=27))  # stops like a kill: last checkpoint is step 20, steps 21..27 are lost
    assert not (cfg.out / "final").exists()
    assert max(m["step"] for m in read_metrics(cfg.out)) == 25
    result = train(replace(cfg, resume=True))
    assert result.steps == STEPS
    a, b = weights(ref.final), weights(result.final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(read_metrics(cfg.out)) == comparable(read_metrics(ref_cfg.out))


def test_resume_on_a_rebuilt_corpus_matches_uninterrupted_run(setup, reference, tmp_path):
    """Another machine: the corpus rebuilt byte for byte at another path (so another mtime) and tokenized into
    another cache folder; the checkpoint's data_sha256 recognises the same token stream, and resume is exact."""
    ref_cfg, ref = reference
    cfg = base_config(setup, tmp_path / "run")
    train(replace(cfg, stop_after=27))
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(setup[1], rebuilt)  # copytree gives the files new mtimes
    result = train(replace(cfg, resume=True, data=[rebuilt], cache_dir=tmp_path / "other-cache"))
    assert Path(json.loads((ref.final / "trainer_state.json").read_text())["data_cache"]).name != \
        Path(json.loads((result.final / "trainer_state.json").read_text())["data_cache"]).name
    a, b = weights(ref.final), weights(result.final)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(read_metrics(cfg.out)) == comparable(read_metrics(ref_cfg.out))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(setup, reference, tmp_path):
    """A real `kill -9` of the CLI process right after its first checkpoint, then --resume."""
    ref_cfg, ref = reference
    cfg = base_config(setup, tmp_path / "run", save_every=7)
    proc = subprocess.Popen([sys.executable, "-m", "hyperclone.cli", *cli_args(cfg)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = cfg.out / "checkpoints" / "step-0000007" / "trainer_state.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (cfg.out / "final").exists(), "the run finished before it could be killed"
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *cli_args(cfg), "--resume"], env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    a, b = weights(ref.final), weights(cfg.out / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ours = [m for m in comparable(read_metrics(cfg.out))]
    theirs = comparable(read_metrics(ref_cfg.out))
    key = {(m["step"], m["val_loss"]) for m in theirs if m["val_loss"] is not None}
    assert {(m["step"], m["val_loss"]) for m in ours if m["val_loss"] is not None} == key
    assert len({m["step"] for m in ours}) == len(ours)  # no step logged twice


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
    # --multi_gpu selects accelerate's torchrun-based launcher; with no GPU the processes use gloo on the CPU
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_on_gloo(setup, reference, tmp_path, launcher):
    ref_cfg, ref = reference
    cfg = base_config(setup, tmp_path / "ddp")
    done = subprocess.run([*LAUNCHERS[launcher], "-m", "hyperclone.cli", *cli_args(cfg)], env=env(threads=1),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((cfg.out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"]
    assert len(set(summary["param_digests"])) == 1  # both ranks ended with bit-identical weights
    metrics = read_metrics(cfg.out)
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps))  # written once, by rank 0
    vals = [m["val_loss"] for m in metrics if m["val_loss"] is not None]
    assert vals[-1] < vals[0] - 1.0
    # same global batch split over two ranks: the same training, up to float summation order
    assert vals[-1] == pytest.approx(ref.final_val_loss, abs=2e-3)
    # the logged train loss is the mean over both ranks, as one process logs it (not divided by the world size)
    ours = {m["step"]: m["train_loss"] for m in metrics if m["train_loss"] is not None}
    theirs = {m["step"]: m["train_loss"] for m in read_metrics(ref_cfg.out) if m["train_loss"] is not None}
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[k] - theirs[k]) <= 1e-3 * theirs[k] for k in ours)


def test_any_causal_lm_family_trains(setup, tmp_path):
    from tiny_models import make_tiny

    root, corpus, _ = setup
    folder = make_tiny("gpt2", tmp_path / "gpt2", vocab_size=320)
    make_tokenizer(folder, corpus)
    result = train(base_config(setup, tmp_path / "run", model=folder, tokens=256 * 10, lr=1e-3))
    assert result.steps == 10 and math.isfinite(result.final_val_loss)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(setup, tmp_path, monkeypatch):
    real = train_mod.causal_lm_loss
    calls = {"n": 0}

    def poisoned(model, x, y):
        calls["n"] += 1
        loss = real(model, x, y)
        return loss * float("nan") if calls["n"] > 23 else loss

    monkeypatch.setattr(train_mod, "causal_lm_loss", poisoned)
    cfg = base_config(setup, tmp_path / "run", eval_every=1000)  # only training forwards are counted
    with pytest.raises(HyperCloneError, match=r"nan/inf by step 25.*step-0000020"):
        train(cfg)
    assert not (cfg.out / "final").exists()
    good = cfg.out / "checkpoints" / "step-0000020"
    assert json.loads((good / "trainer_state.json").read_text())["step"] == 20
    assert all(torch.isfinite(t).all() for t in weights(good).values())


def _not_causal(folder: Path) -> Path:
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       image_size=8, patch_size=4)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, message", [
    ("tiny_budget", "smaller than one batch"),
    ("no_folder", "does not exist"),
    ("no_config", "no config.json"),
    ("no_weights", "no weight files"),
    ("no_tokenizer", "no tokenizer files"),
    ("not_causal", "neither a causal LM nor an image-text model"),
    ("small_corpus", "corpus too small"),
    ("binary_corpus", "binary file"),
    ("existing_run", "already holds a training run"),
    ("bad_schedule", "--schedule must be one of"),
    ("stable_on_cosine", "--save-stable needs --schedule wsd"),
    ("resume_other_recipe", "different recipe: lr was 0.003, now 0.001"),
    ("resume_other_data", "data .* changed"),
])
def test_bad_input_is_one_clear_error(setup, reference, tmp_path, case, message):
    root, corpus, model = setup
    cfg = base_config(setup, tmp_path / "run")
    if case == "tiny_budget":
        cfg = replace(cfg, tokens=100)
    elif case == "no_folder":
        cfg = replace(cfg, model=tmp_path / "missing")
    elif case == "no_config":
        (tmp_path / "m").mkdir()
        cfg = replace(cfg, model=tmp_path / "m")
    elif case == "no_weights":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text((model / "config.json").read_text())
        cfg = replace(cfg, model=tmp_path / "m")
    elif case == "no_tokenizer":
        from tiny_models import make_tiny

        cfg = replace(cfg, model=make_tiny("llama", tmp_path / "m"))
    elif case == "not_causal":
        cfg = replace(cfg, model=_not_causal(tmp_path / "vit"))
    elif case == "small_corpus":
        (tmp_path / "small.txt").write_text("def f(): return 1\n" * 5)
        cfg = replace(cfg, data=[tmp_path / "small.txt"])
    elif case == "binary_corpus":
        (tmp_path / "x.bin").write_bytes(b"\0\1\2" * 100)
        cfg = replace(cfg, data=[tmp_path / "x.bin"])
    elif case == "existing_run":
        cfg = replace(reference[0])
    elif case == "resume_other_recipe":
        cfg = replace(reference[0], resume=True, lr=1e-3)
    elif case == "resume_other_data":
        other = make_corpus(tmp_path / "other", n_files=2, seed=1)
        cfg = replace(reference[0], resume=True, data=[other])
    elif case == "stable_on_cosine":
        cfg = replace(cfg, save_stable=True)
    else:
        cfg = replace(cfg, schedule="linear")
    with pytest.raises(HyperCloneError, match=message):
        train(cfg)


def test_cli_error_is_one_line_and_exit_status_2(setup, tmp_path):
    cfg = base_config(setup, tmp_path / "run", tokens=100)
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *cli_args(cfg)], env=env(), capture_output=True,
                          text=True)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "smaller than one batch" in lines[0] and "Traceback" not in done.stderr


def test_cli_help_lists_the_options():
    from typer.testing import CliRunner

    from hyperclone.cli import app

    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for opt in ("--data", "--out", "--tokens", "--lr", "--warmup", "--schedule", "--batch-tokens", "--seq-len",
                "--eval-every", "--save-every", "--seed", "--dtype", "--resume"):
        assert opt in out
    assert "--preset" in CliRunner().invoke(app, ["experiment", "--help"], terminal_width=200).output


def test_lr_schedules():
    cfg = TrainConfig(model=Path("m"), data=[], out=Path("o"), tokens=1, lr=1.0, warmup=10, min_lr_ratio=0.1)
    cos = [lr_at(s, 100, cfg) for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:], strict=False)) and cos[-1] == pytest.approx(0.1)
    wsd = [lr_at(s, 100, replace(cfg, schedule="wsd", decay_frac=0.2)) for s in range(100)]
    assert wsd[9:80] == [1.0] * 71 and wsd[80] < 1.0 and wsd[-1] == pytest.approx(0.1)
    assert lr_at(0, 100, replace(cfg, warmup=0.05)) == pytest.approx(0.2)  # fraction of the steps
    assert decay_start(100, replace(cfg, schedule="wsd", decay_frac=0.2)) == 80


def test_save_stable_exports_the_model_the_wsd_decay_starts_from(setup, tmp_path):
    """--save-stable: OUT/stable holds the model after the steps before WSD's decay, equal to the same recipe
    trained without decay (min_lr_ratio 1.0) exported at that step, also when the run was stopped and resumed
    before it; the decayed final model is another."""
    cfg = base_config(setup, tmp_path / "wsd", schedule="wsd", save_stable=True)
    start = decay_start(STEPS, cfg)
    assert 0 < start < STEPS and start % cfg.save_every != 0
    train(replace(cfg, stop_after=start - 3))  # killed after a checkpoint before the decay, then resumed
    assert not (cfg.out / "stable").exists()
    train(replace(cfg, resume=True))
    flat = base_config(setup, tmp_path / "flat", schedule="wsd", min_lr_ratio=1.0, save_hf_every=start)
    train(flat)
    stable, reference = weights(cfg.out / "stable"), weights(flat.out / "hf" / f"step-{start:07d}")
    assert stable.keys() == reference.keys() and all(torch.equal(stable[k], reference[k]) for k in stable)
    assert json.loads((cfg.out / "stable" / "trainer_state.json").read_text())["step"] == start
    final = weights(cfg.out / "final")
    assert any(not torch.equal(final[k], stable[k]) for k in stable)


def test_rng_files_load_without_pickle_code_old_and_new(tmp_path):
    """RNG states are tensors and lists (weights_only=True reads them); a file of the earlier format (numpy
    array inside) still loads, through numpy's allow-listed array reconstruction only."""
    import random as pyrandom

    import numpy as np

    from hyperclone.train import state as ts

    torch.save(ts.rng_state(), tmp_path / "new.pt")
    torch.save({"python": pyrandom.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               tmp_path / "old.pt")
    expected = (pyrandom.random(), float(np.random.rand()), float(torch.rand(1)))
    for name in ("new.pt", "old.pt"):
        ts.set_rng_state(ts.load_rng_file(tmp_path / name))
        assert (pyrandom.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(Exception):  # noqa: B017 - any refusal; never executed
        ts.load_rng_file(tmp_path / "evil.pt")


def tensorboard_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_equal_metrics_also_after_resume(setup, tmp_path):
    """--log tensorboard: every metrics.jsonl value is a scalar at its step; a stop (steps 21..27 lost) and
    --resume leave one event per step, purged past the checkpoint like metrics.jsonl."""
    cfg = base_config(setup, tmp_path / "run", tokens=256 * 40, log=("tensorboard",))
    train(replace(cfg, stop_after=27))
    train(replace(cfg, resume=True))
    scalars = tensorboard_scalars(cfg.out)
    metrics = read_metrics(cfg.out)
    for key, tag in (("train_loss", "train/loss"), ("val_loss", "val/loss"), ("lr", "train/lr")):
        expected = [(m["step"], m[key]) for m in metrics if m[key] is not None]
        got = scalars[tag]
        assert [s for s, _ in got] == [s for s, _ in expected]  # one event per step, none left from before the stop
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, expected, strict=True))  # float32


def test_log_sink_must_be_known(setup, tmp_path):
    with pytest.raises(HyperCloneError, match="--log must be one of tensorboard"):
        train(base_config(setup, tmp_path / "run", log=("wandb",)))


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(setup, tmp_path):
    """--compile (inductor, every decoder block): the same per-step losses and final weights as eager, fp32.
    Inductor fuses and reorders float32 arithmetic, so equality is within a tolerance: measured on the 2-core
    CPU VM (torch 2.13) the largest relative loss difference over 10 steps was 1.9e-7 and the largest weight
    difference 1.2e-7; the bounds leave about 50x of room."""
    eager = train(base_config(setup, tmp_path / "eager", tokens=256 * 10, eval_every=5))
    compiled = train(base_config(setup, tmp_path / "compiled", tokens=256 * 10, eval_every=5, compile=True))
    a, b = read_metrics(eager.out), read_metrics(compiled.out)
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            if x[key] is not None:
                assert math.isclose(x[key], y[key], rel_tol=1e-5), (x, y)
    wa, wb = weights(eager.final), weights(compiled.final)
    assert wa.keys() == wb.keys()  # parameter names are the checkpoint's (no _orig_mod prefix)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
