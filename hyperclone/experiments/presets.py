"""Experiment presets: one row of data per preset, no code branches.

Sizes and budgets were chosen so that `cpu-tiny` (whole experiment, all arms, 2 seeds) finishes
within 15 minutes on a 2-core CPU. `gpu-small` is sized for one H100; it has not been run on a GPU, so
no run time is claimed for it. `cpu-ladder` is the cpu-tiny pair with a corpus large enough that its
largest budget (16M tokens, about 10 tokens per parameter of the grown model) stays within one epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hyperclone.common.errors import HyperCloneError


@dataclass(frozen=True)
class Preset:
    """Everything an experiment run depends on, apart from the corpus."""

    name: str
    description: str
    corpus_bytes: int  # the corpus is capped at this many bytes of text
    vocab_size: int  # byte-level BPE vocabulary, special token included
    # the small llama-style model, pretrained from scratch
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    # growth: hidden, heads, kv heads and FFN all multiplied by width
    width: int
    # training recipe (shared by every arm; the small model has its own lr and budget)
    seq_len: int
    batch_tokens: int
    small_tokens: int
    tokens: int  # token budget of the full-budget arms (grown, random)
    small_lr: float
    lr: float
    warmup: float  # fraction of each run's steps
    schedule: str
    evals_per_run: int  # validation points per run (sets the curve resolution)
    eval_tokens: int
    seeds: tuple[int, ...]  # seeds of the headline comparison (grown vs random)
    budget_fractions: tuple[float, ...] = (0.5, 0.25)  # extra grown arms with a shorter full schedule
    budget_seeds: int = 1  # how many of `seeds` the shorter-budget arms are run with
    dtype: str = "auto"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="cpu-tiny",
            description="a 64-wide 4-layer llama grown to 128 wide; minutes on a laptop CPU",
            corpus_bytes=6_000_000, vocab_size=2048,
            hidden=64, layers=4, heads=2, kv_heads=2, ffn=256, width=2,
            seq_len=128, batch_tokens=16 * 128, small_tokens=800_000, tokens=800_000,
            small_lr=3e-3, lr=2e-3, warmup=0.05, schedule="cosine",
            evals_per_run=16, eval_tokens=8 * 1024, seeds=(0, 1),
        ),
        Preset(
            name="cpu-ladder",
            description="the cpu-tiny pair (64 -> 128 wide, 4 layers) on a 100 MB corpus, for token budgets up to 16M",
            corpus_bytes=100_000_000, vocab_size=2048,
            hidden=64, layers=4, heads=2, kv_heads=2, ffn=256, width=2,
            seq_len=128, batch_tokens=16 * 128, small_tokens=800_000, tokens=16_000_000,
            small_lr=3e-3, lr=2e-3, warmup=0.05, schedule="wsd",
            evals_per_run=16, eval_tokens=8 * 1024, seeds=(0, 1),
        ),
        Preset(
            name="gpu-small",
            description="a 256-wide 8-layer llama grown to 512 wide, sized for one H100 (not yet run on a GPU)",
            corpus_bytes=40_000_000, vocab_size=8192,
            hidden=256, layers=8, heads=4, kv_heads=4, ffn=1024, width=2,
            seq_len=512, batch_tokens=64 * 512, small_tokens=10_000_000, tokens=10_000_000,
            small_lr=2e-3, lr=1e-3, warmup=0.05, schedule="cosine",
            evals_per_run=25, eval_tokens=128 * 1024, seeds=(0, 1),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise HyperCloneError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
