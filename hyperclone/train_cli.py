"""CLI verbs `train` and `experiment` (the heavy lifting is in hyperclone.train and hyperclone.experiment)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from hyperclone.errors import HyperCloneError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def parse_count(text: str, what: str = "--tokens") -> int:
    """'2000000', '2M', '500k', '1.5e6' -> int."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*", str(text))
    if not m:
        raise HyperCloneError(f"{what} must be a number like 2000000, 2M or 500k, got {text!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def train_command(
    model_dir: Annotated[Path, typer.Argument(
        help="Checkpoint folder to train (config.json, safetensors, tokenizer).")],
    data: Annotated[list[Path], typer.Option("--data", help="Text file, folder of text files or .jsonl; repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: metrics.jsonl, checkpoints/, final/.")],
    tokens: Annotated[str, typer.Option("--tokens", help="Token budget, e.g. 20M; steps = tokens // batch tokens.")],
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 3e-4,
    min_lr_ratio: Annotated[float, typer.Option(
        "--min-lr-ratio", help="Final learning rate as a fraction of --lr.")] = 0.1,
    warmup: Annotated[float, typer.Option(
        "--warmup", help="Warmup: a fraction of the steps if < 1, else steps.")] = 0.05,
    schedule: Annotated[str, typer.Option("--schedule", help="cosine, or wsd (warmup-stable-decay).")] = "cosine",
    decay_frac: Annotated[float, typer.Option("--decay-frac", help="wsd: fraction of steps in the final decay.")] = 0.2,
    batch_tokens: Annotated[int, typer.Option(
        "--batch-tokens", help="Tokens per optimizer step, all processes.")] = 16384,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Sequence length in tokens.")] = 256,
    micro_batch: Annotated[int | None, typer.Option(
        "--micro-batch", help="Sequences per forward pass per process (gradient accumulation).")] = None,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", help="Validation every N optimizer steps (and at the end).")] = 100,
    eval_tokens: Annotated[int, typer.Option("--eval-tokens", help="Validation tokens per evaluation (max).")] = 65536,
    save_every: Annotated[int, typer.Option(
        "--save-every", help="Resumable checkpoint every N optimizer steps.")] = 500,
    keep_checkpoints: Annotated[int, typer.Option(
        "--keep-checkpoints", help="How many periodic checkpoints to keep.")] = 2,
    log_every: Annotated[int, typer.Option("--log-every", help="A metrics.jsonl line every N optimizer steps.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data order and of the RNGs.")] = 0,
    dtype: Annotated[str, typer.Option(
        "--dtype", help="auto (bf16 autocast on capable GPUs, else fp32), fp32, bf16.")] = "auto",
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", help="AdamW weight decay (not on norms/biases).")] = 0.1,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Gradient norm clip; 0 disables.")] = 1.0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of the token stream held out.")] = 0.05,
    text_field: Annotated[str, typer.Option("--text-field", help="Field holding the text in .jsonl lines.")] = "text",
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Token cache folder (default $HYPERCLONE_CACHE or ~/.cache/hyperclone).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    stop_after: Annotated[int | None, typer.Option(
        "--stop-after",
        help="Stop after N steps of this session without a final save, as a kill would (to test --resume).")] = None,
    save_moments: Annotated[bool, typer.Option(
        "--save-moments", help="Also write final/moments.pt (AdamW moments), for --moments-from of a grown run.")
    ] = False,
    moments_from: Annotated[Path | None, typer.Option(
        "--moments-from", help="Start AdamW from the moments in this run's final/ folder; grown with the same "
                               "rules as the weights when MODEL_DIR was grown from it.")] = None,
    moments_reset: Annotated[str, typer.Option(
        "--moments-reset", help="none, or first: zero the carried first moment, keep the second.")] = "none",
) -> None:
    """Pre-train a causal LM checkpoint folder on local text (works under torchrun / accelerate launch)."""
    from hyperclone.train import TrainConfig, train

    result = train(TrainConfig(
        model=model_dir, data=list(data), out=out, tokens=parse_count(tokens), lr=lr, min_lr_ratio=min_lr_ratio,
        warmup=warmup, schedule=schedule, decay_frac=decay_frac, batch_tokens=batch_tokens, seq_len=seq_len,
        micro_batch=micro_batch, eval_every=eval_every, eval_tokens=eval_tokens, save_every=save_every,
        keep_checkpoints=keep_checkpoints, log_every=log_every, seed=seed, dtype=dtype, resume=resume,
        weight_decay=weight_decay, grad_clip=grad_clip, val_fraction=val_fraction, text_field=text_field,
        cache_dir=cache_dir, progress=progress, stop_after=stop_after, save_moments=save_moments,
        moments_from=moments_from, moments_reset=moments_reset))
    if stop_after is None and int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"final val loss {result.final_val_loss:.4f} after {result.tokens:,} tokens; model in "
                   f"{result.final}")


def experiment_command(
    out: Annotated[Path, typer.Option("--out", help="Experiment folder; rerunning resumes unfinished runs.")],
    preset: Annotated[str | None, typer.Option(
        "--preset", help="cpu-tiny (11 min on 2 CPU cores; with --arms 17 min) or gpu-small (estimated "
                         "5 min on an H100, not yet run).")] = None,
    sweep: Annotated[Path | None, typer.Option(
        "--sweep", help="YAML/JSON file of arms (recipes) to compare with random init; writes sweep.md/.json.")
    ] = None,
    arms: Annotated[str | None, typer.Option(
        "--arms", help="Growth methods head to head at one final shape, e.g. random,hyperclone,msg,stack "
                       "(also: symmetric); writes report.md/results.json.")] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="--arms: layers of the final shape (default: twice the small model's).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="--sweep/--arms: runs trained at the same time.")] = 1,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="Corpus (files, folders, .jsonl); default: Python's stdlib.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Pretrain a small model, grow it, train grown vs random init, write report.md/results.json/plots.

    --sweep compares post-growth recipes; --arms compares growth methods at one final shape."""
    from hyperclone.experiment import run_experiment
    from hyperclone.presets import get_preset

    command = None
    if sys.argv[1:2] == ["experiment"]:
        threads = os.environ.get("OMP_NUM_THREADS")
        command = (f"OMP_NUM_THREADS={threads} " if threads else "") + "hyperclone " + " ".join(
            shlex.quote(a) for a in sys.argv[1:])
    if jobs < 1:
        raise HyperCloneError(f"--jobs must be positive, got {jobs}")
    if sweep is not None and arms is not None:
        raise HyperCloneError("give --sweep or --arms, not both")
    if layers is not None and arms is None:
        raise HyperCloneError("--layers only applies with --arms")
    if arms is not None:
        from hyperclone import headtohead
        from hyperclone.sweep import run_sweep

        if preset is None:
            raise HyperCloneError("--arms needs --preset")
        chosen = get_preset(preset)
        spec = headtohead.build_sweep(chosen, headtohead.parse_arms(arms), layers)
        res = run_sweep(chosen, spec, out, data=list(data) if data else None, jobs=jobs, command=command,
                        writer=headtohead.write, kind="arms")
        rows = headtohead.summarize(res)["arms"]
        def speedup(r: dict) -> str:
            if r["reached_at_start"]:
                return "inf (at start)"
            return "never" if r["speedup_tokens"] is None else f"{r['speedup_tokens']:.2f}"

        typer.echo("; ".join(f"{n}: final {r['final_val_loss']['mean']:.4f}, speedup_tokens {speedup(r)}"
                             for n, r in rows.items()) + f"; report: {Path(out) / 'report.md'}")
        return
    if sweep is not None:
        from hyperclone.sweep import run_sweep
        from hyperclone.sweep_spec import load_sweep

        spec = load_sweep(sweep)
        if preset is not None and preset != spec.preset:
            raise HyperCloneError(f"--preset {preset} differs from the sweep file's preset {spec.preset}")
        # one wall-clock tally per sweep file: several sweeps may share a folder (and its finished runs)
        res = run_sweep(get_preset(spec.preset), spec, out, data=list(data) if data else None, jobs=jobs,
                        command=command, kind=f"sweep_{Path(sweep).stem}")
        win = res["winner"]
        typer.echo(f"winners: {win}; report: {Path(out) / 'sweep.md'}")
        return
    if preset is None:
        raise HyperCloneError("experiment needs --preset or --sweep")
    results = run_experiment(get_preset(preset), out, data=list(data) if data else None, progress=progress,
                             command=command)
    st = results["speedup_tokens"]
    typer.echo(f"speedup_tokens {st if st is None else round(st, 3)}; report: {Path(out) / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add the `train` and `experiment` verbs to the hyperclone app."""
    app.command("train")(train_command)
    app.command("experiment")(experiment_command)
