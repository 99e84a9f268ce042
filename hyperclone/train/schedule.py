"""The learning-rate schedule (linear warmup, then cosine or WSD: warmup-stable-decay) and the distillation
weight's decay, as pure functions of the optimizer step."""

from __future__ import annotations

import math

from hyperclone.train.config import TrainConfig


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
