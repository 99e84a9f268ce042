"""CLI verbs `train` and `experiment` (the work is in hyperclone.train.loop and hyperclone.experiments)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from hyperclone.cli import choices
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.sizes import parse_count

MSG_HOOK = "hyperclone.baselines.msg.masked:train_hook"

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
    schedule: Annotated[choices.Schedule, typer.Option(
        "--schedule", help="cosine, or wsd (warmup-stable-decay).")] = choices.Schedule.cosine,
    decay_frac: Annotated[float, typer.Option("--decay-frac", help="wsd: fraction of steps in the final decay.")] = 0.2,
    batch_tokens: Annotated[str, typer.Option(
        "--batch-tokens", help="Tokens per optimizer step, all processes, e.g. 16384 or 512K.")] = "16384",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Sequence length in tokens.")] = 256,
    micro_batch: Annotated[int | None, typer.Option(
        "--micro-batch", help="Sequences per forward pass per process (gradient accumulation).")] = None,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", help="Validation every N optimizer steps (and at the end).")] = 100,
    eval_tokens: Annotated[str, typer.Option(
        "--eval-tokens", help="Validation tokens per evaluation (max), e.g. 65536 or 1M.")] = "65536",
    save_every: Annotated[int, typer.Option(
        "--save-every", help="Resumable checkpoint every N optimizer steps.")] = 500,
    keep_checkpoints: Annotated[int, typer.Option(
        "--keep-checkpoints", help="How many periodic checkpoints to keep.")] = 2,
    log_every: Annotated[int, typer.Option("--log-every", help="A metrics.jsonl line every N optimizer steps.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data order and of the RNGs.")] = 0,
    dtype: Annotated[choices.TrainDtype, typer.Option(
        "--dtype", help="auto (bf16 autocast on capable GPUs, else fp32), fp32, bf16.")] = choices.TrainDtype.auto,
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
        "--save-moments", help="Also write final/moments.pt (AdamW moments), for grow --moments-from.")
    ] = False,
    moments_from: Annotated[Path | None, typer.Option(
        "--moments-from", help="Start AdamW from the moments.pt in this folder (shapes of MODEL_DIR): a folder "
                               "written by grow --moments-from, or a run's final/ folder of the same model.")] = None,
    moments_reset: Annotated[choices.MomentsReset, typer.Option(
        "--moments-reset", help="none | first: zero the carried first moment, keep the second | copies: zero both "
                                "outside copy block 0 of a grown model (asymmetric continuation).")
    ] = choices.MomentsReset.none,
    msg: Annotated[bool, typer.Option(
        "--msg", help="MODEL_DIR is an MSG start (grow --method msg): ramp its masks during training and fold "
                      "them when the ramp ends, so every checkpoint after it is a plain model.")] = False,
    strategy: Annotated[choices.Strategy, typer.Option(
        "--strategy", help="ddp: a full replica per process (models that fit one device) | fsdp: PyTorch FSDP2, "
                           "weights, gradients and AdamW state sharded over the processes (grown models that do "
                           "not fit); checkpoints are torch.distributed.checkpoint shards.")] = choices.Strategy.ddp,
    cpu_offload: Annotated[bool, typer.Option("--cpu-offload", help="fsdp: keep the shards in host memory.")
                           ] = False,
    activation_checkpointing: Annotated[bool, typer.Option(
        "--activation-checkpointing", help="Recompute each block's activations in the backward.")] = False,
    attn: Annotated[choices.Attention | None, typer.Option(
        "--attn", help="Attention implementation passed to transformers (default: transformers' choice).")] = None,
    save_dtype: Annotated[choices.SaveDtype, typer.Option(
        "--save-dtype", help="dtype of the exported plain checkpoints (final/ and hf/step-*).")
    ] = choices.SaveDtype.fp32,
    save_hf_every: Annotated[int | None, typer.Option(
        "--save-hf-every", help="Also export a plain checkpoint folder every N steps, under OUT/hf/.")] = None,
    save_stable: Annotated[bool, typer.Option(
        "--save-stable", help="wsd: also export the model the decay starts from (the end of the stable phase), "
                              "under OUT/stable/: a small model to grow from before its anneal.")] = False,
    compile_blocks: Annotated[bool, typer.Option(
        "--compile", help="torch.compile every decoder block (inductor; the first steps pay the compile time).")
    ] = False,
    log: Annotated[list[choices.LogSink] | None, typer.Option(
        "--log", help="Also log to: tensorboard (events under OUT/tensorboard; needs the tensorboard package). "
                      "metrics.jsonl is always written.")] = None,
    teacher: Annotated[Path | None, typer.Option(
        "--teacher", help="Distillation anchor: a checkpoint folder with the same vocabulary (the small model a "
                          "grown model came from); loss = (1 - a) CE + a KL(teacher || model), forward only.")
    ] = None,
    kd_alpha: Annotated[float, typer.Option(
        "--kd-alpha", help="--teacher: the distillation weight a at step 0, in (0, 1].")] = 0.5,
    kd_until: Annotated[float, typer.Option(
        "--kd-until", help="--teacher: a falls linearly to 0 at this fraction of the run's steps.")] = 0.3,
    copies_lr: Annotated[float | None, typer.Option(
        "--copies-lr", help="Asymmetric continuation of a grown model (SPARKLING): the copies outside copy block 0 "
                            "(the small model's own elements) train at a learning rate rising to this multiple of "
                            "the schedule's (e.g. 1.3); with --moments-from and --moments-reset copies, only block 0 "
                            "keeps the carried AdamW moments. ddp only.")] = None,
    copies_warmup: Annotated[float, typer.Option(
        "--copies-warmup", help="--copies-lr: fraction of the run's steps over which the copies' multiplier rises "
                                "from 1.")] = 0.02,
    lr_scale: Annotated[list[str] | None, typer.Option(
        "--lr-scale", metavar="GLOB=MULT",
        help="Per-group learning rate, repeatable: the parameters whose names match the glob train at MULT x the "
             "schedule's rate (first match wins, e.g. '*proj.weight=0.5' for a llama's attention and MLP "
             "matrices); a glob matching nothing is refused.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print parameters, tokens per step and bytes per process for weights, gradients and "
                          "AdamW state under ddp and fsdp for this many processes ($WORLD_SIZE, or --processes); "
                          "train nothing.")] = False,
    processes: Annotated[int | None, typer.Option(
        "--processes", help="--dry-run: the number of processes to plan for (default $WORLD_SIZE or 1).")] = None,
) -> None:
    """Pre-train a causal LM checkpoint folder on local text (works under torchrun / accelerate launch); an
    image-text checkpoint trains its language model on text, the vision tower and projector frozen."""
    from hyperclone.baselines.msg.layout import CONFIG_KEY
    from hyperclone.train.config import TrainConfig
    from hyperclone.train.loop import train

    if dry_run:
        from hyperclone.train.plan_memory import dry_run_report

        typer.echo(dry_run_report(model_dir, parse_count(batch_tokens, "--batch-tokens"), seq_len,
                                  processes or int(os.environ.get("WORLD_SIZE", "1"))))
        return
    masked = (model_dir / "config.json").is_file() and CONFIG_KEY in json.loads((model_dir / "config.json").read_text())
    if masked and not msg:
        raise HyperCloneError(f"{model_dir} is an MSG start (masks in config.json, from grow --method msg): pass --msg")
    result = train(TrainConfig(
        model=model_dir, data=list(data), out=out, tokens=parse_count(tokens), lr=lr, min_lr_ratio=min_lr_ratio,
        warmup=warmup, schedule=choices.value(schedule), decay_frac=decay_frac,
        batch_tokens=parse_count(batch_tokens, "--batch-tokens"), seq_len=seq_len, micro_batch=micro_batch,
        eval_every=eval_every, eval_tokens=parse_count(eval_tokens, "--eval-tokens"), save_every=save_every,
        keep_checkpoints=keep_checkpoints, log_every=log_every, seed=seed, dtype=choices.value(dtype), resume=resume,
        weight_decay=weight_decay, grad_clip=grad_clip, val_fraction=val_fraction, text_field=text_field,
        cache_dir=cache_dir, progress=progress, stop_after=stop_after, save_moments=save_moments,
        moments_from=moments_from, moments_reset=choices.value(moments_reset),
        step_hook=MSG_HOOK if msg else None, strategy=choices.value(strategy), cpu_offload=cpu_offload,
        activation_checkpointing=activation_checkpointing, attn=choices.value(attn),
        save_dtype=choices.value(save_dtype), save_hf_every=save_hf_every, save_stable=save_stable,
        compile=compile_blocks, teacher=teacher, kd_alpha=kd_alpha if teacher is not None else 0.0,
        kd_until=kd_until, copies_lr=copies_lr, copies_warmup=copies_warmup,
        lr_scale=tuple(lr_scale or ()), log=tuple(choices.value(x) for x in log or ())))
    if stop_after is None and int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"final val loss {result.final_val_loss:.4f} after {result.tokens:,} tokens; model in "
                   f"{result.final}")


def experiment_command(
    out: Annotated[Path, typer.Option("--out", help="Experiment folder; rerunning resumes unfinished runs.")],
    preset: Annotated[str | None, typer.Option(
        "--preset", help="cpu-tiny (the preset comparison; timings in results/cpu-tiny), cpu-ladder (the budget "
                         "ladder: random vs grown at 0.4M-16M tokens, hours on a CPU; resumable), or gpu-small "
                         "(sized for one H100, not yet run).")] = None,
    sweep: Annotated[Path | None, typer.Option(
        "--sweep", help="YAML/JSON file of arms (recipes) to compare with random init; writes sweep.md/.json.")
    ] = None,
    arms: Annotated[str | None, typer.Option(
        "--arms", help="Growth methods head to head at one final shape, e.g. random,hyperclone,msg,stack "
                       "(also: symmetric, upcycle, random-moe: 4 experts top-1 upcycled vs random init of that "
                       "shape); writes report.md/results.json.")] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="--arms: layers of the final shape (default: twice the small model's).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="--sweep/--arms: runs trained at the same time.")] = 1,
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="Corpus (files, folders, .jsonl); default: Python's stdlib.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Ladder presets, sweep files with compare: ladder (search.md) and --arms: write the "
                              "report from the runs that have finished (a ladder or search shows the others as "
                              "pending), training nothing.")] = False,
) -> None:
    """Pretrain a small model, grow it, train grown vs random init, write report.md/results.json/plots.

    --sweep compares post-growth recipes; --arms compares growth methods at one final shape."""
    from hyperclone.experiments import studies

    command = None
    if sys.argv[1:2] == ["experiment"]:
        threads = os.environ.get("OMP_NUM_THREADS")
        command = (f"OMP_NUM_THREADS={threads} " if threads else "") + "hyperclone " + " ".join(
            shlex.quote(a) for a in sys.argv[1:] if a != "--report-only")  # the command that trains the runs
    if jobs < 1:
        raise HyperCloneError(f"--jobs must be positive, got {jobs}")
    chosen = studies.choose(preset, sweep, arms, layers)
    results = studies.run(chosen, out, data=list(data) if data else None, jobs=jobs, command=command,
                          report_only=report_only, progress=progress)
    typer.echo(chosen.study.summary(results, Path(out), chosen.sweep))


def tokenize_command(
    data: Annotated[list[Path], typer.Argument(help="Text files, folders, .jsonl(.gz/.zst), .parquet, .arrow or "
                                                    "save_to_disk folders.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="A model folder whose tokenizer to use.")],
    out: Annotated[Path, typer.Option("--out", help="The token cache folder to write (must not exist).")],
    text_field: Annotated[str, typer.Option("--text-field", help="Field or column holding the text.")] = "text",
) -> None:
    """Tokenize a corpus once into a token cache that train --data CACHE reads directly (no process waits for
    tokenization when many start at once)."""
    from hyperclone.train.data import tokenize
    from hyperclone.train.inputs import load_tokenizer

    data_out = tokenize(list(data), load_tokenizer(tokenizer), out, text_field)
    typer.echo(f"wrote {out}: {data_out.n_tokens:,} tokens in {data_out.n_docs:,} documents")


def register(app: typer.Typer) -> None:
    """Add the `train`, `tokenize` and `experiment` verbs to the hyperclone app."""
    app.command("train")(train_command)
    app.command("tokenize")(tokenize_command)
    app.command("experiment")(experiment_command)
