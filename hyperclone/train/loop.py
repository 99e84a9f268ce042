"""Pre-training loop for any causal-LM or image-text checkpoint folder on local text (train/model_class.py).

One process, or several under ``torchrun`` / ``accelerate launch`` (both set RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT). We use torch.distributed + DistributedDataParallel directly rather than accelerate's Accelerator:
the loop needs exact control over which process sees which sample, over gradient synchronisation during
accumulation and over every RNG state, so that a resumed run is bit-identical to an uninterrupted one; DDP gives
that with no extra layer, and accelerate's launcher sets the same environment variables. One writer per run folder.
Recipe: AdamW (no weight decay on 1-D params), global-norm gradient clipping, linear warmup then cosine or WSD
(warmup-stable-decay) learning rate, bf16 autocast on GPUs that support it (fp32 master weights; CPUs train in fp32
by default because bf16 matmuls are rarely faster there). Intervals (warmup, eval, save, log) are in optimizer steps.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hyperclone.common.copies import read_copies
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import MOMENTS_FILE
from hyperclone.common.outputs import write_text_atomic
from hyperclone.common.ownership import hold, release
from hyperclone.train import asymmetric, grown, parallel
from hyperclone.train import state as ts
from hyperclone.train.config import TrainConfig, TrainResult, load_step_hook, validate
from hyperclone.train.data import TokenData, WindowSampler, load_corpus, val_windows
from hyperclone.train.inputs import batch_layout, check_model, check_token_ids, resume_state
from hyperclone.train.losses import causal_lm_loss, distillation_loss
from hyperclone.train.lr_groups import param_groups, parse_lr_scale
from hyperclone.train.metrics import METRICS_FILE, SUMMARY_FILE, MetricsLog, peak_rss_bytes, read_metrics
from hyperclone.train.moments import optimizer_moments
from hyperclone.train.processes import Processes
from hyperclone.train.schedule import decay_start, kd_steps, kd_weight, lr_at

STABLE_DIR = "stable"  # --save-stable: the model a wsd run's decay starts from


def bf16_on(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) one training run; returns where the final checkpoint is."""
    validate(cfg)
    procs = Processes()
    try:
        result = _train(cfg, procs)
    except BaseException:
        procs.close()
        raise
    finally:
        release(Path(cfg.out))  # the folder's lock (Run takes it): a second process training it is refused
    procs.close(clean=True)
    return result


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
            hold(self.out, "training run")  # released by train() however the run ends
        data = procs.on_main(lambda: load_corpus(cfg.data, self.tokenizer, cfg.cache_dir, cfg.text_field))
        self.data: TokenData = data if procs.main else load_corpus(cfg.data, self.tokenizer, cfg.cache_dir,
                                                                    cfg.text_field, build=False)
        check_token_ids(self.data.largest_id(), getattr(self.config.get_text_config(), "vocab_size", None))
        self.layout = batch_layout(cfg, procs.world)
        self.data.split(cfg.val_fraction, cfg.seq_len)
        self.sampler = WindowSampler(self.data.train, cfg.seq_len, cfg.seed)
        if self.sampler.n_windows < self.layout.global_seqs:
            raise HyperCloneError(f"corpus too small: {self.data.n_tokens} tokens leave {self.sampler.n_windows} "
                                  f"training sequences of {cfg.seq_len} tokens after the validation split, but one "
                                  f"batch needs {self.layout.global_seqs}")
        self.n_val = val_windows(self.data.val, cfg.seq_len, cfg.eval_tokens)
        torch.manual_seed(cfg.seed)
        state = resume_state(cfg, self.start_ckpt, self.data, self.layout.total)
        self.step, self.tokens, self.elapsed0 = int(state["step"]), int(state["tokens"]), float(state["elapsed_s"])
        self.session_start = time.perf_counter()
        self.last_good = self.start_ckpt
        self.val_loss: float | None = None
        self.strategy = parallel.make_strategy(cfg.strategy, procs, bf16_on(cfg, procs.device))

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
        strategy = self.strategy
        self.model = strategy.load(self.model_dir, self.start_ckpt, cfg)
        if cfg.activation_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay,
                                                        parse_lr_scale(cfg.lr_scale)), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2), eps=1e-8)
        if self.start_ckpt is not None:
            strategy.load_state(self.start_ckpt, self.model, self.optimizer)
            ts.load_rank_rng(self.start_ckpt, procs.rank)
        self.copy_factors = grown.start_optimizer(cfg, self.model, self.model_dir, self.optimizer,
                                                  fresh=self.start_ckpt is None)
        self.step_hook = load_step_hook(cfg.step_hook) or (lambda *_: None)
        self.step_hook(self.model, self.step, self.layout.total)
        self.fwd = strategy.wrap(self.model)
        self.metrics = MetricsLog(self.out / METRICS_FILE, procs.main,
                                  self.step if self.start_ckpt is not None else None, tuple(cfg.log))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # a grown model's copy layout (copies.json): how far its copies have drifted apart is logged at every
        # evaluation; not where each rank holds a shard of every tensor (FSDP)
        self.copies = read_copies(self.model_dir) if strategy.whole_model else None
        self.teacher_tokens = kd_steps(self.step, self.layout.total, cfg) * self.layout.step_tokens  # so far
        self.teacher = None if cfg.teacher is None else grown.load_teacher(Path(cfg.teacher), self.config, cfg.attn,
                                                                           procs.device)

    def divergence(self) -> dict[str, Any]:
        """A grown model's copy divergence for the metrics line (rank 0 writes it); {} for other models."""
        if self.copies is None or not self.procs.main:
            return {}
        seq, n = self.cfg.seq_len, min(grown.DIVERGENCE_SEQS, self.n_val)
        rows = np.stack([self.data.val[w * seq : w * seq + seq] for w in range(n)]).astype(np.int64)
        return grown.divergence(self.model, self.copies, torch.from_numpy(rows).to(self.procs.device),
                                self.strategy.autocast)

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.session_start

    def evaluate(self) -> float:
        procs, seq, micro = self.procs, self.cfg.seq_len, self.layout.micro
        self.model.eval()
        acc = torch.zeros(2, dtype=torch.float64, device=procs.device)
        ids = list(range(procs.rank, self.n_val, procs.world))
        chunks = self.strategy.eval_chunks([ids[i : i + micro] for i in range(0, len(ids), micro)], self.n_val, micro)
        with torch.no_grad():
            for chunk in chunks:
                rows = [self.data.val[w * seq : w * seq + seq + 1] for w in chunk or [0]]
                batch = torch.from_numpy(np.stack(rows).astype(np.int64)).to(procs.device)
                with self.strategy.autocast():
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
        procs, total, strategy = self.procs, self.layout.total, self.strategy
        if procs.main:
            ts.begin_save(dest)
        procs.barrier()
        if resumable:
            ts.save_rank_rng(tmp, procs.rank)
            strategy.save_state(tmp, self.model, self.optimizer)
        full = None if resumable else strategy.export_state(self.model, self.cfg.save_dtype)
        procs.barrier()
        if procs.main:
            st = {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed(), "total_steps": total,
                  "world_size": procs.world, "strategy": self.cfg.strategy, "data_cache": str(self.data.folder),
                  "base_model": str(self.model_dir), "recipe": self.cfg.recipe(), "data_sha256": self.data.sha256}
            if not resumable and self.cfg.save_moments:  # before the state file, which marks the folder complete
                torch.save(optimizer_moments(self.model, self.optimizer), tmp / MOMENTS_FILE)
            if full is not None:
                parallel.export_hf(tmp, self.model_dir, full, self.tokenizer, self.cfg.save_dtype)
                self.final_digest = parallel.params_digest_of(full)
            weights, optimizer = strategy.checkpoint_files(self.model, self.optimizer, resumable)
            ts.finish_save(tmp, dest, None if full is not None else weights, self.tokenizer, optimizer, st)
            ts.prune(self.out, self.cfg.keep_checkpoints)
        procs.barrier()

    def export(self, step: int, dest: Path | None = None) -> None:
        """A plain checkpoint folder (gathered from the shards): out/hf/step-N for --save-hf-every, or dest."""
        procs = self.procs
        full = self.strategy.full_state(self.model)
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
            group["lr"] = lr * group.get("lr_scale", 1.0)  # --lr-scale: this group's multiplier
        wins = self.sampler.windows(self.step * layout.global_seqs + procs.rank * layout.per_rank, layout.per_rank)
        alpha = kd_weight(self.step, layout.total, self.cfg)  # 0 without a teacher and past kd_until
        if alpha > 0:
            self.teacher_tokens += layout.step_tokens
        step_loss = torch.zeros((), dtype=torch.float64, device=procs.device)
        for m in range(layout.accum):
            x, y = self.sampler.batch(wins[m * layout.micro : (m + 1) * layout.micro])
            x, y = x.to(procs.device, non_blocking=True), y.to(procs.device, non_blocking=True)
            with self.strategy.no_sync(self.fwd, m == layout.accum - 1):
                with self.strategy.autocast():
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
        digests = self.strategy.digests(self.model, self.final_digest)
        sizes = procs.gather({**parallel.state_bytes(self.model, self.optimizer), "peak_rss_bytes": peak_rss_bytes()})
        if procs.main:
            data, layout = self.data, self.layout
            summary = {"steps": self.step, "tokens": self.tokens, "final_val_loss": self.val_loss,
                       "elapsed_s": round(self.elapsed(), 3), "world_size": procs.world, "param_digests": digests,
                       "ranks_in_sync": len(set(digests)) == 1, "accumulation_steps": layout.accum,
                       "micro_batch": layout.micro, "device": str(procs.device),
                       "autocast_bf16": self.strategy.autocasts, "bf16": self.strategy.bf16,
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


def _log_interval(run: Run, procs: Processes, loss_acc: torch.Tensor, step: int, lr: float, tok_s: float,
                  do_eval: bool) -> float:
    """One metrics.jsonl line (mean train loss over the processes, stopping at nan/inf; val loss when do_eval)."""
    stats = procs.sum_(loss_acc.clone())
    if stats[2] > 0 or not math.isfinite(float(stats[0])):
        where = f"the last good checkpoint is {run.last_good}" if run.last_good else "no checkpoint had been saved"
        raise HyperCloneError(f"training loss became nan/inf by step {step} (lr {lr:.3g}); stopped, {where}")
    train_loss = float(stats[0] / stats[1])  # both summed over the processes: the mean loss per step
    loss_acc.zero_()
    run.val_loss = run.evaluate() if do_eval else None
    run.metrics.write({"step": step, "tokens": run.tokens, "train_loss": round(train_loss, 6),
                       "val_loss": None if run.val_loss is None else round(run.val_loss, 6), "lr": lr,
                       "tokens_per_s": round(tok_s, 1), "elapsed_s": round(run.elapsed(), 3),
                       **({"kd_alpha": round(kd_weight(step - 1, run.layout.total, run.cfg), 6)}
                          if run.cfg.teacher else {}),
                       **(run.divergence() if do_eval else {})})
    return train_loss


def _train(cfg: TrainConfig, procs: Processes) -> TrainResult:
    run = Run(cfg, procs)
    if run.finished:  # the run had finished: nothing to do
        return run.finished_result()
    run.build()
    if run.step == 0:
        run.val_loss = run.evaluate()
        run.metrics.write({"step": 0, "tokens": 0, "train_loss": None, "val_loss": round(run.val_loss, 6), "lr": 0.0,
                           "tokens_per_s": None, "elapsed_s": round(run.elapsed(), 3), **run.divergence()})
    loss_acc = torch.zeros(3, dtype=torch.float64, device=procs.device)  # sum of losses, steps, non-finite count
    interval_tokens, interval_start, session_steps = 0, time.perf_counter(), 0
    total = run.layout.total
    stable_step = decay_start(total, cfg) if cfg.save_stable else None  # --save-stable: export after this step
    bar = tqdm(total=total, initial=run.step, disable=not (procs.main and cfg.progress), unit="step",
               dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    try:
        while run.step < total:
            if cfg.stop_after is not None and session_steps >= cfg.stop_after:
                return TrainResult(run.out, run.last_good or run.out, run.step, run.tokens, float("nan"), run.elapsed())
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
            tok_s = interval_tokens / max(time.perf_counter() - interval_start, 1e-9)
            train_loss = _log_interval(run, procs, loss_acc, step, lr, tok_s, do_eval)
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
