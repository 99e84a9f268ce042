"""`hyperclone train` on a grown image-text checkpoint (hyperclone.train.model_class): it trains as
AutoModelForImageTextToText on text alone, its language model learning and the vision tower, projector and
image_newline frozen and saved bit for bit; it starts at the source's loss (growth kept the function), resumes
exactly, and two processes (DDP, FSDP2) train it as one does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_multimodal
from train_helpers import make_corpus

from hyperclone.grow.engine import grow
from hyperclone.train.config import TrainConfig
from hyperclone.train.loop import train
from hyperclone.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # tiny image-text models trained for a few steps in process, two under torchrun

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
REL = 1e-4  # fp32 losses: growth is exact to float rounding, two processes only reorder sums


def word_tokenizer(folder: Path, corpus: Path) -> None:
    """A word-level tokenizer of 80 ids: the tiny multimodal models have 97 (90 and up are image and video tokens),
    fewer than a byte-level BPE's 256 bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(p) for p in sorted(corpus.glob("*.py"))],
              trainers.WordLevelTrainer(vocab_size=80, special_tokens=["<unk>", "<|endoftext|>"], show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                            unk_token="<unk>").save_pretrained(folder)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mm-train")
    make_corpus(root / "corpus")
    return root


def pair(root: Path, model_type: str) -> tuple[Path, Path]:
    """A tiny source with a tokenizer and its x2 growth (the tokenizer travels with it)."""
    src, out = root / f"{model_type}-src", root / f"{model_type}-x2"
    if not out.exists():
        make_tiny_multimodal(model_type, src)
        word_tokenizer(src, root / "corpus")
        grow(src, out, width=2)
    return src, out


def config(root: Path, model: Path, out: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(model=model, data=[root / "corpus"], out=out, tokens=256 * STEPS, batch_tokens=256, seq_len=32,
                      eval_every=4, eval_tokens=512, save_every=4, log_every=1, lr=3e-3, warmup=2,
                      cache_dir=root / "cache", progress=False, seed=0)
    return replace(cfg, **kw)


def launch(root: Path, model: Path, out: Path, procs: int, *extra: str) -> None:
    """The same run under torchrun with `procs` processes."""
    cfg = config(root, model, out)
    args = ["-m", "hyperclone.cli", "train", str(model), "--data", str(cfg.data[0]), "--out", str(out), "--tokens",
            str(cfg.tokens), "--batch-tokens", "256", "--seq-len", "32", "--eval-every", "4", "--eval-tokens", "512",
            "--save-every", "4", "--log-every", "1", "--lr", "3e-3", "--warmup", "2", "--cache-dir",
            str(cfg.cache_dir), "--seed", "0", "--no-progress", *extra]
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([*prefix, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def loaded(folder: Path) -> dict[str, torch.Tensor]:
    """The model's parameters by their in-memory names, as AutoModelForImageTextToText holds them."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# what a text-only run must leave as grown, by name (written out here, not taken from the code under test)
FROZEN = {"qwen2_5_vl": r"^model\.visual\.", "qwen3_5_moe": r"^model\.visual\.", "glm4v_moe": r"^model\.visual\.",
          "llava_next": r"^model\.(vision_tower|multi_modal_projector|image_newline)",
          "mllama": r"^model\.(vision_model|multi_modal_projector)\.|^model\.language_model\.layers\.1\.",
          "llama4": r"^(vision_model|multi_modal_projector)\."}


def split(model_dir: Path, model_type: str) -> tuple[set[str], set[str]]:
    """(language model parameter names, frozen ones) of the model in model_dir: the frozen ones are those
    freeze_outside_language_model names, checked against the FROZEN pattern (Mllama's layer 1 is its cross-attention
    layer, which a text-only forward skips)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from hyperclone.train.model_class import freeze_outside_language_model

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(model_dir))
    frozen = set(freeze_outside_language_model(model))
    names = {n for n, _ in model.named_parameters()}
    assert frozen == {n for n in names if re.search(FROZEN[model_type], n)}
    return names - frozen, frozen


def losses(run: Path, key: str = "train_loss") -> dict[int, float]:
    return {m["step"]: m[key] for m in read_metrics(run) if m[key] is not None}


def run_of(root: Path, model_type: str) -> Path:
    """The grown model of this type trained uninterrupted on one process (trained once, then reused)."""
    _, out = pair(root, model_type)
    run = root / f"{model_type}-run"
    if not run.exists():
        train(config(root, out, run))
    return run


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava_next", "mllama", "llama4"])
def test_a_grown_image_text_model_trains_its_language_model_on_text(root, model_type):
    """Qwen2.5-VL (vision merger in model.visual, lm_head), LLaVA-NeXT (projector and image_newline), Llama 3.2
    Vision (cross-attention layers, skipped without images) and Llama 4 (its language model a causal LM inside it):
    the grown model's first validation loss is the source's; every language-model tensor learns, everything else is
    saved as grown."""
    src, out = pair(root, model_type)
    run = run_of(root, model_type)
    train(config(root, src, root / f"{model_type}-run-src", tokens=256 * 2))
    start_src, start = losses(root / f"{model_type}-run-src", "val_loss")[0], losses(run, "val_loss")[0]
    assert abs(start - start_src) <= REL * start_src, (start, start_src)
    curve = losses(run)
    assert sorted(curve) == list(range(1, STEPS + 1)) and curve[STEPS] < curve[1]

    language, frozen = split(out, model_type)
    before, after = loaded(out), loaded(run / "final")
    assert set(before) == set(after)
    for name in frozen:
        assert torch.equal(before[name], after[name]), name  # no gradient, no AdamW step, no weight decay
    changed = [name for name in language if not torch.equal(before[name], after[name])]
    assert len(changed) == len(language), set(language) - set(changed)


def test_resume_is_exact(root):
    """Stopped after 6 steps (last checkpoint at 4), resumed from that checkpoint: the same final weights as the
    uninterrupted run."""
    _, out = pair(root, "qwen2_5_vl")
    resumed = root / "resume-parts"
    train(config(root, out, resumed, stop_after=6))
    assert not (resumed / "final").exists() and (resumed / "checkpoints" / "step-0000004").is_dir()
    train(config(root, out, resumed, resume=True))
    steps = [m["step"] for m in read_metrics(resumed)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # steps 5-6 done again once, not from 0
    a, b = loaded(run_of(root, "qwen2_5_vl") / "final"), loaded(resumed / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("strategy,model_type", [("ddp", "mllama"), ("fsdp", "qwen2_5_vl")])
def test_two_processes_train_it_as_one(root, strategy, model_type):
    """DDP on Llama 3.2 Vision (frozen parameters, its skipped cross-attention layer's too, take no part in the
    gradient reduction, which would otherwise wait for them) and FSDP2 on Qwen2.5-VL (the frozen vision blocks are
    sharded too): per-step losses within 1e-4 of one process with the same global batch; frozen tensors unchanged."""
    _, out = pair(root, model_type)
    two = root / f"two-{strategy}"
    launch(root, out, two, 2, "--strategy", strategy)
    a, b = losses(run_of(root, model_type)), losses(two)
    assert sorted(a) == sorted(b)
    for step in a:
        assert abs(a[step] - b[step]) <= REL * a[step], (step, a[step], b[step])
    _, frozen = split(out, model_type)
    before, after = loaded(out), loaded(two / "final")
    assert all(torch.equal(before[name], after[name]) for name in frozen)


def test_dry_run_counts_what_learns(root, capsys):
    from hyperclone.cli import main

    _, out = pair(root, "qwen2_5_vl")
    language, frozen = split(out, "qwen2_5_vl")
    params = loaded(out)
    with pytest.raises(SystemExit) as done:
        main(["train", str(out), "--data", "x", "--out", "y", "--tokens", "1M", "--dry-run"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    learning = sum(params[name].numel() for name in language)
    total = learning + sum(params[name].numel() for name in frozen)
    assert f"parameters   {total:,} ({learning:,} learn: the language model; the rest is frozen)" in text, text


@pytest.mark.parametrize("model_type", ["llava_next", "mllama", "qwen3_5_moe", "glm4v_moe"])
def test_moments_carry_through_growth(root, model_type):
    """A small image-text model trained with save_moments keys its moments by the class's in-memory names
    (model.language_model.*, lm_head.*) while transformers stores its weights in the release layout
    (language_model.model.*); grow --moments-from renames them through the wrapper's table: every parameter that
    learns in the grown model gets moments of its shape (Mllama's frozen cross-attention layer none), the embedding's
    are the source's halved per copy (first moment) and quartered (second; 2 copies of each element, as
    tests/test_moments.py derives), and a run started from them continues AdamW's step count."""
    src = root / f"{model_type}-msrc"
    make_tiny_multimodal(model_type, src)
    word_tokenizer(src, root / "corpus")
    small = train(config(root, src, root / f"{model_type}-msmall", save_moments=True))
    saved = torch.load(small.final / "moments.pt", weights_only=True)
    grown = grow(small.final, root / f"{model_type}-mx2", width=2, moments_from=small.final)
    carried = torch.load(grown / "moments.pt", weights_only=True)
    language, _ = split(grown, model_type)
    params = loaded(grown)
    assert set(carried) == language
    assert all(carried[n]["exp_avg"].shape == params[n].shape and carried[n]["step"] == STEPS for n in language)
    embed = "model.language_model.embed_tokens.weight"
    for key, divisor in (("exp_avg", 2), ("exp_avg_sq", 4)):
        expected = torch.cat([saved[embed][key].flatten() / divisor] * 2).sort().values
        torch.testing.assert_close(carried[embed][key].flatten().sort().values, expected)
    run = root / f"{model_type}-mrun"
    train(config(root, grown, run, moments_from=grown, stop_after=4))
    state = torch.load(run / "checkpoints" / "step-0000004" / "optimizer.pt", weights_only=True)["state"]
    assert len(state) == len(language) and all(float(s["step"]) == STEPS + 4 for s in state.values())
