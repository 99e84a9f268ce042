"""A training run's configuration (`TrainConfig`, every default stated once here: `hyperclone train`'s options
and sweep files read them), its validation, and what a run returns (`TrainResult`)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.train.lr_groups import parse_lr_scale
from hyperclone.train.options import ATTENTION, DTYPES, LOG_SINKS, RESETS, SAVE_DTYPES, SCHEDULES, STRATEGIES
from hyperclone.train.parallel import strategy_class

# Recipe fields that must not change when a run is resumed (they change the result).
RECIPE_KEYS = ("tokens", "lr", "min_lr_ratio", "warmup", "schedule", "decay_frac", "batch_tokens", "seq_len",
                "seed", "weight_decay", "grad_clip", "beta1", "beta2", "val_fraction", "eval_tokens", "text_field",
                "moments_from", "moments_reset", "teacher", "kd_alpha", "kd_until", "copies_lr", "copies_warmup",
                "lr_scale")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Intervals are optimizer steps."""

    model: Path
    data: list[Path]
    out: Path
    tokens: int
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: float = 0.05  # < 1: fraction of the run's steps; >= 1: number of steps
    schedule: str = "cosine"
    decay_frac: float = 0.2  # wsd: share of steps spent decaying at the end
    batch_tokens: int = 16384
    seq_len: int = 256
    micro_batch: int | None = None  # sequences per forward pass per process (gradient accumulation)
    eval_every: int = 100
    eval_tokens: int = 65536
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    dtype: str = "auto"
    resume: bool = False
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    val_fraction: float = 0.05
    text_field: str = "text"
    cache_dir: Path | None = None
    progress: bool = True
    stop_after: int | None = None  # stop, as a kill would (no final save), after this many steps of this session
    save_moments: bool = False  # also write final/moments.pt (AdamW moments by parameter name) for a grown run
    moments_from: Path | None = None  # a folder with moments.pt of this model's shapes: start AdamW from them
    moments_reset: str = "none"  # none | first: zero the carried first moment (asymmetric reset)
    # "module:function" called as fn(model, step, total_steps) after loading, before every optimizer step and
    # before every save (e.g. "hyperclone.baselines.msg.masked:train_hook": ramps MSG masks, folds them when done)
    step_hook: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form tags copied into the summary
    strategy: str = "ddp"  # ddp: a replica per process | fsdp: FSDP2, everything sharded (train/parallel.py)
    cpu_offload: bool = False  # fsdp: keep the shards in host memory
    activation_checkpointing: bool = False  # recompute each block's activations in the backward
    attn: str | None = None  # attention implementation passed to transformers (sdpa, eager, flash_attention_2)
    save_dtype: str = "fp32"  # dtype of the exported plain checkpoints (final/, hf/step-*)
    save_hf_every: int | None = None  # also export a plain checkpoint every N steps (under hf/)
    save_stable: bool = False  # wsd: also export the model its decay starts from (under stable/), to grow from
    compile: bool = False  # torch.compile every decoder block (nn.Module.compile: parameter names unchanged)
    log: tuple[str, ...] = ()  # sinks besides metrics.jsonl: tensorboard (events under out/tensorboard)
    # distillation anchor (knowledge inheritance, arXiv 2105.13880): loss = (1 - a) CE + a KL(teacher || model),
    # a = kd_alpha at step 0 decaying linearly to 0 at kd_until of the run's steps; the teacher (a checkpoint
    # folder with the same vocabulary, e.g. the small model a grown model came from) runs forward only
    teacher: Path | None = None
    kd_alpha: float = 0.0
    kd_until: float = 0.3
    # asymmetric continuation of a grown model (train/asymmetric.py): the copies outside copy block 0 train at
    # a learning rate rising to copies_lr x the schedule's over copies_warmup of the steps; None: off
    copies_lr: float | None = None
    copies_warmup: float = 0.02
    # per-group learning rates (train/lr_groups.py): "GLOB=MULT" rules, the first whose glob matches a parameter's
    # name sets its multiplier of the schedule's learning rate
    lr_scale: tuple[str, ...] = ()

    def recipe(self) -> dict[str, Any]:
        d = asdict(self)
        plain = {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {k: plain[k] for k in RECIPE_KEYS}



def default(name: str) -> Any:
    """TrainConfig's default for the field `name`, for the places that restate an option (sweep files, reports)."""
    found = next(f for f in fields(TrainConfig) if f.name == name)
    if found.default is MISSING:
        raise KeyError(f"TrainConfig.{name} has no plain default")
    return found.default


@dataclass
class TrainResult:
    out: Path
    final: Path
    steps: int
    tokens: int
    final_val_loss: float
    elapsed_s: float


def validate(cfg: TrainConfig) -> None:
    if cfg.schedule not in SCHEDULES:
        raise HyperCloneError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {cfg.schedule!r}")
    if cfg.dtype not in DTYPES:
        raise HyperCloneError(f"--dtype must be one of {', '.join(DTYPES)}, not {cfg.dtype!r}")
    for name in ("tokens", "batch_tokens", "seq_len", "eval_every", "save_every", "log_every", "eval_tokens"):
        if getattr(cfg, name) <= 0:
            raise HyperCloneError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.warmup < 0:
        raise HyperCloneError("--lr must be positive and --warmup non-negative")
    if cfg.batch_tokens % cfg.seq_len:
        raise HyperCloneError(f"--batch-tokens ({cfg.batch_tokens}) must be a multiple of --seq-len ({cfg.seq_len})")
    if cfg.tokens < cfg.batch_tokens:
        raise HyperCloneError(f"token budget {cfg.tokens} is smaller than one batch ({cfg.batch_tokens} tokens)")
    if not 0 < cfg.val_fraction < 1:
        raise HyperCloneError(f"--val-fraction must be between 0 and 1, got {cfg.val_fraction}")
    if cfg.moments_reset not in RESETS:
        raise HyperCloneError(f"--moments-reset must be one of {', '.join(RESETS)}, not {cfg.moments_reset!r}")
    if cfg.moments_reset != "none" and cfg.moments_from is None:
        raise HyperCloneError("--moments-reset needs --moments-from")
    if cfg.copies_lr is not None and not cfg.copies_lr > 0:
        raise HyperCloneError(f"--copies-lr must be positive, got {cfg.copies_lr}")
    if not 0 <= cfg.copies_warmup <= 1:
        raise HyperCloneError(f"--copies-warmup must be in [0, 1] (a fraction of the run's steps), got "
                              f"{cfg.copies_warmup}")
    parse_lr_scale(cfg.lr_scale)
    bad_sinks = [s for s in cfg.log if s not in LOG_SINKS]
    if bad_sinks:
        raise HyperCloneError(f"--log must be one of {', '.join(LOG_SINKS)}, not {bad_sinks[0]!r}")
    if cfg.strategy not in STRATEGIES:
        raise HyperCloneError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}")
    if cfg.save_dtype not in SAVE_DTYPES:
        raise HyperCloneError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)}, not {cfg.save_dtype!r}")
    if cfg.attn is not None and cfg.attn not in ATTENTION:
        raise HyperCloneError(f"--attn must be one of {', '.join(ATTENTION)}, not {cfg.attn!r}")
    strategy_class(cfg.strategy).refuse(cfg)
    if cfg.save_hf_every is not None and cfg.save_hf_every <= 0:
        raise HyperCloneError(f"--save-hf-every must be positive, got {cfg.save_hf_every}")
    if cfg.teacher is not None and not 0 < cfg.kd_alpha <= 1:
        raise HyperCloneError(f"--kd-alpha must be in (0, 1] with --teacher, got {cfg.kd_alpha}")
    if cfg.teacher is None and cfg.kd_alpha != 0:
        raise HyperCloneError("--kd-alpha needs --teacher (the model to distil from)")
    if not 0 < cfg.kd_until <= 1:
        raise HyperCloneError(f"--kd-until must be in (0, 1] (a fraction of the run's steps), got {cfg.kd_until}")
    if cfg.save_stable and cfg.schedule != "wsd":
        raise HyperCloneError("--save-stable needs --schedule wsd (it saves the model the wsd decay starts from)")
    load_step_hook(cfg.step_hook)


def load_step_hook(spec: str | None):
    """The callable a "module:function" string names, or None."""
    if spec is None:
        return None
    import importlib

    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise HyperCloneError(f"step hook {spec!r}: no such module:function") from None


