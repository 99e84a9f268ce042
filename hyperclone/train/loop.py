"""Pre-training loop for any AutoModelForCausalLM checkpoint folder on local text.

One process, or several under ``torchrun`` / ``accelerate launch`` (both set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT). We use torch.distributed + DistributedDataParallel directly
rather than accelerate's Accelerator: the loop needs exact control over which process sees
which sample, over gradient synchronisation during accumulation and over every RNG state, so
that a resumed run is bit-identical to an uninterrupted one; DDP gives that with no extra
layer, and since accelerate's launcher sets the same environment variables the command works
under either launcher.

Recipe: AdamW (no weight decay on 1-D params), global-norm gradient clipping, linear warmup
then cosine or WSD (warmup-stable-decay) learning rate, bf16 autocast on GPUs that support it
(fp32 master weights; CPUs train in fp32 by default because bf16 matmuls are rarely faster
there). Intervals (warmup, eval, save, log) are counted in optimizer steps.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from hyperclone.common.copies import activation_divergence, copy_divergence, read_copies
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import MOMENTS_FILE
from hyperclone.common.outputs import write_text_atomic
from hyperclone.train import asymmetric, parallel
from hyperclone.train import state as ts
from hyperclone.train.data import TokenData, WindowSampler, load_corpus, val_windows
from hyperclone.train.moments import apply_moments, load_moments, optimizer_moments
from hyperclone.train.options import DTYPES, LOG_SINKS, RESETS, SCHEDULES  # noqa: F401 (re-exported)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
STABLE_DIR = "stable"  # --save-stable: the model a wsd run's decay starts from
DIVERGENCE_SEQS = 4  # validation sequences whose hidden states measure a grown model's copy divergence

# Recipe fields that must not change when a run is resumed (they change the result).
_RECIPE_KEYS = ("tokens", "lr", "min_lr_ratio", "warmup", "schedule", "decay_frac", "batch_tokens", "seq_len",
                "seed", "weight_decay", "grad_clip", "beta1", "beta2", "val_fraction", "eval_tokens", "text_field",
                "moments_from", "moments_reset", "teacher", "kd_alpha", "kd_until", "copies_lr", "copies_warmup")


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

    def recipe(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(d[k]) if isinstance(d[k], Path) else d[k] for k in _RECIPE_KEYS}


@dataclass
class TrainResult:
    out: Path
    final: Path
    steps: int
    tokens: int
    final_val_loss: float
    elapsed_s: float


def decay_start(total: int, cfg: TrainConfig) -> int:
    """wsd: the first optimizer step of the final decay; the steps before it run at warmup or peak."""
    return max(warmup_steps(cfg, total), total - max(1, round(cfg.decay_frac * total)))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`."""
    warm = warmup_steps(cfg, total)
    lo = cfg.lr * cfg.min_lr_ratio
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        p = (step - warm + 1) / max(1, total - warm)
        return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    start = decay_start(total, cfg)
    if step < start:
        return cfg.lr
    p = (step - start + 1) / max(1, total - start)
    return cfg.lr + (lo - cfg.lr) * min(1.0, p)


def kd_weight(step: int, total: int, cfg: TrainConfig) -> float:
    """The distillation weight a of optimizer step `step` (0-based) of `total`: kd_alpha falling linearly to 0
    at kd_until * total steps; 0 without a teacher."""
    if cfg.teacher is None or cfg.kd_alpha <= 0:
        return 0.0
    end = cfg.kd_until * total
    return cfg.kd_alpha * max(0.0, 1.0 - step / end) if end > 0 else 0.0


def kd_steps(step: int, total: int, cfg: TrainConfig) -> int:
    """How many of the first `step` optimizer steps ran the teacher (a > 0)."""
    return sum(1 for s in range(step) if kd_weight(s, total, cfg) > 0)


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    return min(total, round(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup))


# ----------------------------------------------------------------------------- inputs


def check_model_dir(path: Path):
    """Validate a checkpoint folder and return its config, or raise a one-line error."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = Path(path)
    if not path.is_dir():
        raise HyperCloneError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise HyperCloneError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise HyperCloneError(f"{path} has no weight files (*.safetensors or pytorch_model.bin)")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as err:
        raise HyperCloneError(f"cannot read {path}/config.json: {str(err).splitlines()[0]}") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise HyperCloneError(f"{path} holds a {config.model_type!r} model, which is not a causal LM "
                              "(AutoModelForCausalLM cannot load it)")
    return config


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((Path(path) / n).exists() for n in names):
        raise HyperCloneError(f"{path} has no tokenizer files (tokenizer.json...); training needs the model's "
                              "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError, KeyError) as err:
        raise HyperCloneError(f"cannot load the tokenizer in {path}: {str(err).splitlines()[0]}") from None


def load_model(path: Path, device: torch.device, attn: str | None = None):
    return parallel.load_config_model(path, attn, meta=False).to(device)


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
    bad_sinks = [s for s in cfg.log if s not in LOG_SINKS]
    if bad_sinks:
        raise HyperCloneError(f"--log must be one of {', '.join(LOG_SINKS)}, not {bad_sinks[0]!r}")
    if cfg.strategy not in parallel.STRATEGIES:
        raise HyperCloneError(f"--strategy must be one of {', '.join(parallel.STRATEGIES)}, not {cfg.strategy!r}")
    if cfg.save_dtype not in parallel.SAVE_DTYPES:
        raise HyperCloneError(f"--save-dtype must be one of {', '.join(parallel.SAVE_DTYPES)}, not {cfg.save_dtype!r}")
    if cfg.attn is not None and cfg.attn not in parallel.ATTENTION:
        raise HyperCloneError(f"--attn must be one of {', '.join(parallel.ATTENTION)}, not {cfg.attn!r}")
    if cfg.strategy == "fsdp":
        unsupported = [flag for flag, on in (("--moments-from", cfg.moments_from is not None),
                                              ("--save-moments", cfg.save_moments), ("--msg", cfg.step_hook),
                                              ("--copies-lr", cfg.copies_lr is not None))
                       if on]
        if unsupported:
            raise HyperCloneError(f"{unsupported[0]} is not supported with --strategy fsdp yet; use --strategy ddp")
    elif cfg.cpu_offload:
        raise HyperCloneError("--cpu-offload needs --strategy fsdp")
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


# ----------------------------------------------------------------------------- processes


PATIENT_TIMEOUT = datetime.timedelta(days=7)


class Processes:
    """This process's place in a (possibly single-process) torch.distributed group."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.own_group = False
        self.patient_group = None  # made on first use by on_main (new_group is collective: every rank calls it)
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast: TF32 is plenty
            torch.backends.cudnn.allow_tf32 = True
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.own_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def ensure_group(self) -> None:
        """A process group even for one process (FSDP shards over a device mesh, which needs one)."""
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
            self.own_group = True

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def on_main(self, fn):
        """Run fn on rank 0 only; its HyperCloneError is raised on every rank. Returns fn's result on rank 0.
        fn may take hours (tokenizing a large corpus): the other ranks wait for it in a gloo group of their own
        whose timeout is a week, not in the training group, whose timeout (10-30 min) would end the run."""
        value, error = None, [None]
        if self.world > 1 and self.patient_group is None:  # before fn: making a group is itself collective
            self.patient_group = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        if self.main:
            try:
                value = fn()
            except HyperCloneError as err:
                error[0] = str(err)
        if self.world > 1:
            dist.broadcast_object_list(error, src=0, group=self.patient_group)
        if error[0] is not None:
            raise HyperCloneError(error[0])
        return value

    def close(self, clean: bool = False) -> None:
        """clean: the run ended normally on every rank, so all meet once more before the group goes (tearing
        gloo down while a peer still talks to it aborted a process now and then: "terminate called without an
        active exception"); after an error no rank waits for the others."""
        if self.own_group and dist.is_initialized():
            if clean and self.world > 1:
                dist.barrier()
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- loop


def causal_lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, alpha: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """((1 - alpha) CE + alpha KL(p_teacher || p_model), CE), both means over the tokens, in float32. Where the
    teacher's vocabulary is narrower than the model's (a padded embedding), the model's extra logits count in
    its softmax and the teacher gives them probability 0."""
    flat = logits.float().view(-1, logits.size(-1))
    ce = F.cross_entropy(flat, y.reshape(-1))
    if alpha == 0:
        return ce, ce
    log_p = F.log_softmax(flat, dim=-1)[:, : teacher_logits.size(-1)]
    log_t = F.log_softmax(teacher_logits.float().view(-1, teacher_logits.size(-1)), dim=-1)
    kl = (log_t.exp() * (log_t - log_p)).sum(-1).mean()
    return (1 - alpha) * ce + alpha * kl, ce


def _bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def _autocast(cfg: TrainConfig, device: torch.device):
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if _bf16(cfg, device) else contextlib.nullcontext


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def params_digest(model) -> str:
    return params_digest_of(model.state_dict())


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def params_digest_of(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class MetricsLog:
    """metrics.jsonl, appended by rank 0 only; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_up_to_step: int | None, sinks: tuple[str, ...] = ()):
        self.path = path
        self.enabled = enabled
        self.also = []  # other sinks (TensorBoard), rank 0 only
        if enabled and "tensorboard" in sinks:
            from hyperclone.train.tensorboard_log import TensorBoardLog

            self.also.append(TensorBoardLog(path.parent, keep_up_to_step))
        if enabled and keep_up_to_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= keep_up_to_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)
        elif enabled and keep_up_to_step is None:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        for sink in self.also:
            sink.write(record)

    def close(self) -> None:
        for sink in self.also:
            sink.close()


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS_FILE
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) one training run; returns where the final checkpoint is."""
    validate(cfg)
    procs = Processes()
    try:
        result = _train(cfg, procs)
    except BaseException:
        procs.close()
        raise
    procs.close(clean=True)
    return result


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's batch is split: sequences over processes, then micro-batches."""

    global_seqs: int  # sequences per optimizer step, all processes together
    per_rank: int
    micro: int  # sequences per forward/backward
    accum: int  # micro-batches per optimizer step
    step_tokens: int
    total: int  # optimizer steps of the run


def batch_layout(cfg: TrainConfig, world: int) -> BatchLayout:
    global_seqs = cfg.batch_tokens // cfg.seq_len
    if global_seqs % world:
        raise HyperCloneError(f"--batch-tokens / --seq-len = {global_seqs} sequences cannot be split evenly over "
                              f"{world} processes")
    per_rank = global_seqs // world
    micro = min(cfg.micro_batch or per_rank, per_rank)
    if per_rank % micro:
        raise HyperCloneError(f"--micro-batch {micro} does not divide the {per_rank} sequences each process gets")
    step_tokens = global_seqs * cfg.seq_len
    return BatchLayout(global_seqs, per_rank, micro, per_rank // micro, step_tokens, cfg.tokens // step_tokens)


def check_model(cfg: TrainConfig, model_dir: Path):
    """The model's config and tokenizer, checked against the recipe."""
    config = check_model_dir(model_dir)
    tokenizer = load_tokenizer(model_dir)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise HyperCloneError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is only {vocab}")
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if max_pos is not None and cfg.seq_len > max_pos:
        raise HyperCloneError(f"--seq-len {cfg.seq_len} exceeds the model's maximum of {max_pos} positions")
    return config, tokenizer


def resume_state(cfg: TrainConfig, start_ckpt: Path | None, data_folder: Path, total: int) -> dict[str, Any]:
    """Step, tokens and elapsed time to start from: zeros, or the checkpoint's (checked against the recipe)."""
    if start_ckpt is None:
        return {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    state = ts.read_state(start_ckpt)
    changed = {k: (v, cfg.recipe()[k]) for k, v in state["recipe"].items() if cfg.recipe().get(k) != v}
    if changed:
        desc = ", ".join(f"{k} was {a}, now {b}" for k, (a, b) in changed.items())
        raise HyperCloneError(f"cannot resume {cfg.out} with a different recipe: {desc}")
    if state.get("strategy", "ddp") != cfg.strategy:
        raise HyperCloneError(f"cannot resume {cfg.out}: its checkpoints were written with --strategy "
                              f"{state.get('strategy', 'ddp')}, not {cfg.strategy}")
    if Path(state["data_cache"]).name != data_folder.name:
        raise HyperCloneError(f"cannot resume {cfg.out}: the data (or the tokenizer) changed since the checkpoint")
    return state


class Run:
    """One training run in this process: data, batch layout, model, optimizer and the counters, with the
    operations the loop is made of (a step, an evaluation, a checkpoint, the final save)."""

    def __init__(self, cfg: TrainConfig, procs: Processes):
        self.cfg, self.procs = cfg, procs
        self.out, self.model_dir = Path(cfg.out), Path(cfg.model)
        self.config, self.tokenizer = check_model(cfg, self.model_dir)
        self.start_ckpt = ts.latest_checkpoint(self.out) if cfg.resume else None
        if not cfg.resume and ts.list_checkpoints(self.out):
            raise HyperCloneError(f"{self.out} already holds a training run; pass --resume to continue it or pick a "
                                  "new --out")
        if procs.main:
            self.out.mkdir(parents=True, exist_ok=True)
        data = procs.on_main(lambda: load_corpus(cfg.data, self.tokenizer, cfg.cache_dir, cfg.text_field))
        self.data: TokenData = data if procs.main else load_corpus(cfg.data, self.tokenizer, cfg.cache_dir,
                                                                    cfg.text_field, build=False)
        self.layout = batch_layout(cfg, procs.world)
        self.data.split(cfg.val_fraction, cfg.seq_len)
        self.sampler = WindowSampler(self.data.train, cfg.seq_len, cfg.seed)
        if self.sampler.n_windows < self.layout.global_seqs:
            raise HyperCloneError(f"corpus too small: {self.data.n_tokens} tokens leave {self.sampler.n_windows} "
                                  f"training sequences of {cfg.seq_len} tokens after the validation split, but one "
                                  f"batch needs {self.layout.global_seqs}")
        self.n_val = val_windows(self.data.val, cfg.seq_len, cfg.eval_tokens)
        torch.manual_seed(cfg.seed)
        state = resume_state(cfg, self.start_ckpt, self.data.folder, self.layout.total)
        self.step, self.tokens, self.elapsed0 = int(state["step"]), int(state["tokens"]), float(state["elapsed_s"])
        self.session_start = time.perf_counter()
        self.last_good = self.start_ckpt
        self.val_loss: float | None = None

    @property
    def finished(self) -> bool:
        return self.start_ckpt is not None and self.step >= self.layout.total

    def finished_result(self) -> TrainResult:
        vals = [m["val_loss"] for m in read_metrics(self.out) if m.get("val_loss") is not None]
        return TrainResult(self.out, self.start_ckpt, self.step, self.tokens, vals[-1] if vals else float("nan"),
                           self.elapsed0)

    def build(self) -> None:
        """Model, optimizer (fresh, resumed, or with given moments), step hook, DDP wrapper, metrics log."""
        cfg, procs = self.cfg, self.procs
        if self.start_ckpt is not None and procs.main:
            print(f"resuming from {self.start_ckpt} (step {self.step} of {self.layout.total})", file=sys.stderr)
        fsdp = cfg.strategy == "fsdp"
        bf16 = _bf16(cfg, procs.device)
        if fsdp:  # weights from the base model (rank 0 reads, the others receive their shards)
            procs.ensure_group()
            self.model = parallel.load_sharded(self.model_dir, procs.device, procs.rank, procs.world, bf16,
                                               cfg.cpu_offload, cfg.attn, cfg.compile)
        else:
            self.model = load_model(self.start_ckpt or self.model_dir, procs.device, cfg.attn)
            if cfg.compile:
                parallel.compile_blocks(self.model)
        if cfg.activation_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2), eps=1e-8)
        if self.start_ckpt is not None:
            if fsdp:
                parallel.load_dcp(self.start_ckpt, self.model, self.optimizer)
            else:
                ts.load_optimizer(self.start_ckpt, self.optimizer, procs.device)
            ts.load_rank_rng(self.start_ckpt, procs.rank)
        self.copy_factors: dict[str, torch.Tensor] = {}
        if cfg.copies_lr is not None or cfg.moments_reset == "copies":
            layout = read_copies(self.model_dir)
            if layout is None or not layout.maps:
                raise HyperCloneError(f"--copies-lr and --moments-reset copies need a grown model: {self.model_dir} "
                                      "has no copies.json with its copy maps (grow it with this hyperclone)")
            self.copy_factors = asymmetric.copy_factors(self.model, layout)
        if self.start_ckpt is None and cfg.moments_from is not None:
            reset = "none" if cfg.moments_reset == "copies" else cfg.moments_reset
            apply_moments(self.model, self.optimizer, load_moments(Path(cfg.moments_from)), reset)
            if cfg.moments_reset == "copies":
                asymmetric.zero_copy_moments(self.optimizer, self.model, self.copy_factors)
        self.step_hook = load_step_hook(cfg.step_hook) or (lambda *_: None)
        self.step_hook(self.model, self.step, self.layout.total)
        self.fwd = self.model
        if procs.world > 1 and not fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.fwd = DDP(self.model, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
        # FSDP computes in bf16 through its mixed-precision policy; DDP through autocast
        self.autocast = contextlib.nullcontext if fsdp else _autocast(cfg, procs.device)
        self.bf16 = bf16
        self.metrics = MetricsLog(self.out / METRICS_FILE, procs.main,
                                  self.step if self.start_ckpt is not None else None, tuple(cfg.log))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # a grown model's copy layout (copies.json): how far its copies have drifted apart is logged at every
        # evaluation; not under FSDP, where each rank holds a shard of every tensor
        self.copies = None if fsdp else read_copies(self.model_dir)
        self.teacher = None
        self.teacher_tokens = kd_steps(self.step, self.layout.total, cfg) * self.layout.step_tokens  # so far
        if cfg.teacher is not None:  # every process holds the whole teacher: it is the small model
            teacher_config = check_model_dir(Path(cfg.teacher))
            if teacher_config.vocab_size > self.config.vocab_size:
                raise HyperCloneError(f"--teacher {cfg.teacher} has a vocabulary of {teacher_config.vocab_size}, more "
                                      f"than the model's {self.config.vocab_size}: distillation needs the same tokens")
            self.teacher = load_model(Path(cfg.teacher), procs.device, cfg.attn).eval().requires_grad_(False)

    def divergence(self) -> dict[str, Any]:
        """For a grown model's metrics line: how far its copies have drifted apart, in the weights (per tensor
        group, "copy_divergence") and in the hidden states of the first DIVERGENCE_SEQS validation sequences
        (per layer, "activation_divergence"); {} for a model that was not grown."""
        if self.copies is None or not self.procs.main:  # only rank 0 writes metrics.jsonl
            return {}
        found: dict[str, Any] = {"copy_divergence": copy_divergence(self.model.state_dict(), self.copies.axes)}
        if self.copies.residual is not None:
            seq, n = self.cfg.seq_len, min(DIVERGENCE_SEQS, self.n_val)
            rows = np.stack([self.data.val[w * seq : w * seq + seq] for w in range(n)]).astype(np.int64)
            self.model.eval()
            with torch.no_grad(), self.autocast():
                states = self.model(input_ids=torch.from_numpy(rows).to(self.procs.device), use_cache=False,
                                    output_hidden_states=True).hidden_states
            self.model.train()
            found["activation_divergence"] = activation_divergence(list(states), self.copies.residual)
        return found

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.session_start

    def evaluate(self) -> float:
        procs, seq, micro = self.procs, self.cfg.seq_len, self.layout.micro
        self.model.eval()
        acc = torch.zeros(2, dtype=torch.float64, device=procs.device)
        ids = list(range(procs.rank, self.n_val, procs.world))
        chunks = [ids[i : i + micro] for i in range(0, len(ids), micro)]
        if self.cfg.strategy == "fsdp":  # every forward is a collective: all ranks run as many, extras count 0
            most = math.ceil(math.ceil(self.n_val / procs.world) / micro)
            chunks += [[]] * (most - len(chunks))
        with torch.no_grad():
            for chunk in chunks:
                rows = [self.data.val[w * seq : w * seq + seq + 1] for w in chunk or [0]]
                batch = torch.from_numpy(np.stack(rows).astype(np.int64)).to(procs.device)
                with self.autocast():
                    loss = causal_lm_loss(self.model, batch[:, :-1], batch[:, 1:])
                acc[0] += loss.double() * len(chunk)
                acc[1] += len(chunk)
        procs.sum_(acc)
        self.model.train()
        return float(acc[0] / acc[1])

    def save(self, dest: Path, resumable: bool = True) -> None:
        """A resumable checkpoint (weights or DCP shards, optimizer, every rank's RNG, trainer state written
        last), or the final plain model (resumable=False)."""
        self.step_hook(self.model, self.step, self.layout.total)
        tmp = ts.tmp_dir(dest)
        with ts.saving(tmp, dest, self.last_good):  # a full disk: one line, the partial folder removed
            self._write(tmp, dest, resumable)

    def _write(self, tmp: Path, dest: Path, resumable: bool) -> None:
        """The files of save(), written into tmp and swapped into dest."""
        procs, total, fsdp = self.procs, self.layout.total, self.cfg.strategy == "fsdp"
        if procs.main:
            ts.begin_save(dest)
        procs.barrier()
        if resumable:
            ts.save_rank_rng(tmp, procs.rank)
            if fsdp:
                parallel.save_dcp(tmp, self.model, self.optimizer)
        full = None
        if not resumable and (fsdp or self.cfg.save_dtype != "fp32"):
            full = parallel.full_state_dict(self.model) if fsdp else self.model.state_dict()
        procs.barrier()
        if procs.main:
            st = {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed(), "total_steps": total,
                  "world_size": procs.world, "strategy": self.cfg.strategy, "data_cache": str(self.data.folder),
                  "base_model": str(self.model_dir), "recipe": self.cfg.recipe()}
            if not resumable and self.cfg.save_moments:  # before the state file, which marks the folder complete
                torch.save(optimizer_moments(self.model, self.optimizer), tmp / MOMENTS_FILE)
            if full is not None:
                parallel.export_hf(tmp, self.model_dir, full, self.tokenizer, self.cfg.save_dtype)
                self.final_digest = params_digest_of(full)
            weights = None if (fsdp or full is not None) else self.model
            ts.finish_save(tmp, dest, weights, self.tokenizer, self.optimizer if resumable and not fsdp else None, st)
            ts.prune(self.out, self.cfg.keep_checkpoints)
        procs.barrier()

    def export(self, step: int, dest: Path | None = None) -> None:
        """A plain checkpoint folder (gathered from the shards): out/hf/step-N for --save-hf-every, or dest."""
        procs = self.procs
        full = parallel.full_state_dict(self.model) if self.cfg.strategy == "fsdp" else self.model.state_dict()
        if procs.main:
            dest = dest or self.out / "hf" / f"step-{step:07d}"
            tmp = ts.begin_save(dest)
            parallel.export_hf(tmp, self.model_dir, full, self.tokenizer, self.cfg.save_dtype)
            ts.finish_save(tmp, dest, None, self.tokenizer, None, {"step": step, "tokens": self.tokens,
                                                                   "exported_from": str(self.out)})
        procs.barrier()

    def optimizer_step(self, lr: float) -> torch.Tensor:
        """One optimizer step at learning rate lr over this process's share of the batch; returns its loss."""
        procs, layout = self.procs, self.layout
        self.step_hook(self.model, self.step, layout.total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        wins = self.sampler.windows(self.step * layout.global_seqs + procs.rank * layout.per_rank, layout.per_rank)
        alpha = kd_weight(self.step, layout.total, self.cfg)  # 0 without a teacher and past kd_until
        if alpha > 0:
            self.teacher_tokens += layout.step_tokens
        step_loss = torch.zeros((), dtype=torch.float64, device=procs.device)
        for m in range(layout.accum):
            x, y = self.sampler.batch(wins[m * layout.micro : (m + 1) * layout.micro])
            x, y = x.to(procs.device, non_blocking=True), y.to(procs.device, non_blocking=True)
            with parallel.no_sync(self.fwd, self.cfg.strategy, procs.world, m == layout.accum - 1):
                with self.autocast():
                    if alpha == 0:
                        loss = ce = causal_lm_loss(self.fwd, x, y)
                    else:
                        with torch.no_grad():
                            teacher_logits = self.teacher(input_ids=x, use_cache=False).logits
                        loss, ce = distillation_loss(self.fwd(input_ids=x, use_cache=False).logits, teacher_logits,
                                                     y, alpha)
                (loss / layout.accum).backward()
            step_loss += (ce / layout.accum).detach().double()  # the logged training loss is the CE part
        if self.cfg.grad_clip > 0:
            gnorm = parallel.clip_norm(self.params, self.cfg.grad_clip)
            step_loss = step_loss + (gnorm.double() - gnorm.double())  # nan/inf norm poisons the loss
        if self.cfg.copies_lr is None:
            self.optimizer.step()
        else:  # the copies' step at copies_multiplier x lr (exact: AdamW's step is linear in lr)
            before = asymmetric.snapshot(self.model, self.copy_factors)
            self.optimizer.step()
            mult = asymmetric.copies_multiplier(self.step, layout.total, self.cfg.copies_lr, self.cfg.copies_warmup)
            asymmetric.scale_update(self.model, before, self.copy_factors, mult)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += layout.step_tokens
        return step_loss

    def finish(self) -> TrainResult:
        """The final save (plain checkpoint, no optimizer), a check that every rank holds the same weights,
        and the run's summary."""
        procs = self.procs
        final = self.out / ts.FINAL
        self.final_digest = None
        self.save(final, resumable=False)
        if self.cfg.strategy == "fsdp":  # one gathered model, digested on rank 0: the shards cannot disagree
            digests = [self.final_digest]
        else:
            digests = [params_digest(self.model)] * procs.world
            if procs.world > 1:
                gathered: list[Any] = [None] * procs.world
                dist.all_gather_object(gathered, digests[0])
                digests = gathered
        mine = {**parallel.state_bytes(self.model, self.optimizer), "peak_rss_bytes": peak_rss_bytes()}
        sizes = [mine]
        if procs.world > 1:
            sizes = [None] * procs.world
            dist.all_gather_object(sizes, mine)
        if procs.main:
            data, layout = self.data, self.layout
            summary = {"steps": self.step, "tokens": self.tokens, "final_val_loss": self.val_loss,
                       "elapsed_s": round(self.elapsed(), 3), "world_size": procs.world, "param_digests": digests,
                       "ranks_in_sync": len(set(digests)) == 1, "accumulation_steps": layout.accum,
                       "micro_batch": layout.micro, "device": str(procs.device),
                       "autocast_bf16": self.autocast is not contextlib.nullcontext, "bf16": self.bf16,
                       "strategy": self.cfg.strategy, "state_bytes_per_process": sizes, "extra": self.cfg.extra,
                       "teacher": None if self.teacher is None else {
                           "model": str(self.cfg.teacher), "forward_tokens": self.teacher_tokens,
                           "parameters": sum(p.numel() for p in self.teacher.parameters())},
                       "data": {"cache": str(data.folder), "documents": data.n_docs, "tokens": data.n_tokens,
                                "train_tokens": data.val_start, "val_tokens": data.n_tokens - data.val_start,
                                "eval_tokens": self.n_val * self.cfg.seq_len}}
            write_text_atomic(self.out / SUMMARY_FILE, json.dumps(summary, indent=1))
        if len(set(digests)) != 1:
            raise HyperCloneError("processes ended with different weights (DDP ranks out of sync)")
        val = float(self.val_loss) if self.val_loss is not None else float("nan")
        return TrainResult(self.out, final, self.step, self.tokens, val, self.elapsed())


def _train(cfg: TrainConfig, procs: Processes) -> TrainResult:
    run = Run(cfg, procs)
    if run.finished:  # the run had finished: nothing to do
        return run.finished_result()
    run.build()
    if run.step == 0:
        run.val_loss = run.evaluate()
        run.metrics.write({"step": 0, "tokens": 0, "train_loss": None, "val_loss": round(run.val_loss, 6),
                           "lr": 0.0, "tokens_per_s": None, "elapsed_s": round(run.elapsed(), 3),
                           **run.divergence()})
    loss_acc = torch.zeros(3, dtype=torch.float64, device=procs.device)  # sum of losses, steps, non-finite count
    interval_tokens, interval_start, session_steps = 0, time.perf_counter(), 0
    total = run.layout.total
    stable_step = decay_start(total, cfg) if cfg.save_stable else None  # --save-stable: export after this step
    bar = tqdm(total=total, initial=run.step, disable=not (procs.main and cfg.progress), unit="step",
               dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    try:
        while run.step < total:
            if cfg.stop_after is not None and session_steps >= cfg.stop_after:
                return TrainResult(run.out, run.last_good or run.out, run.step, run.tokens, float("nan"),
                                   run.elapsed())
            lr = lr_at(run.step, total, cfg)
            step_loss = run.optimizer_step(lr)
            session_steps += 1
            interval_tokens += run.layout.step_tokens
            loss_acc += torch.stack([step_loss, torch.ones_like(step_loss), (~torch.isfinite(step_loss)).double()])
            bar.update(1)
            step = run.step
            do_eval = step % cfg.eval_every == 0 or step == total
            do_save = step % cfg.save_every == 0 and step < total
            do_export = bool(cfg.save_hf_every) and step % cfg.save_hf_every == 0
            do_stable = step == stable_step
            if not (step % cfg.log_every == 0 or do_eval or do_save or do_export or do_stable or step == total):
                continue
            stats = procs.sum_(loss_acc.clone())
            if stats[2] > 0 or not math.isfinite(float(stats[0])):
                where = (f"the last good checkpoint is {run.last_good}" if run.last_good
                         else "no checkpoint had been saved")
                raise HyperCloneError(f"training loss became nan/inf by step {step} (lr {lr:.3g}); stopped, {where}")
            train_loss = float(stats[0] / stats[1])  # both summed over the processes: the mean loss per step
            tok_s = interval_tokens / max(time.perf_counter() - interval_start, 1e-9)
            loss_acc.zero_()
            run.val_loss = run.evaluate() if do_eval else None
            run.metrics.write({"step": step, "tokens": run.tokens, "train_loss": round(train_loss, 6),
                               "val_loss": None if run.val_loss is None else round(run.val_loss, 6), "lr": lr,
                               "tokens_per_s": round(tok_s, 1), "elapsed_s": round(run.elapsed(), 3),
                               **({"kd_alpha": round(kd_weight(step - 1, total, cfg), 6)} if cfg.teacher else {}),
                               **(run.divergence() if do_eval else {})})
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if do_stable:  # before the checkpoint of this step, so a resumed run past it has always exported it
                run.export(step, run.out / STABLE_DIR)
            if do_save:
                run.save(ts.step_dir(run.out, step))
                run.last_good = ts.step_dir(run.out, step)
            if do_export and step < total:
                run.export(step)
            interval_tokens, interval_start = 0, time.perf_counter()
    finally:
        bar.close()
        run.metrics.close()
    return run.finish()
