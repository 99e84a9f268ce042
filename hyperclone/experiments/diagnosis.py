"""Why a grown model keeps (or loses) its head start, read off the runs a search trained (issue 25, item 1).

Two measurements, both from the runs' metrics.jsonl:

* **Learning speed at equal loss**: for every level L of a grid, the tokens a run needs to go from loss L to
  L - DROP, read off its curve (linear interpolation, curve_math.x_to_reach). Only the points at the peak learning
  rate count (WSD's stable phase), so that a run's final decay, where the loss falls fastest, does not pass for
  learning speed; a run without a stable phase (cosine) uses every point after step 0. A level is measured only
  where the curve starts above it. Fewer tokens = faster learning. Two curves are read: the validation loss (16
  evaluations a run in the ladder presets, and measured on the first eval_tokens of the validation split) and
  the training loss (logged every log_every steps on the run's own batches, the same batches for every arm of a
  seed; smoothed by a centred running mean of TRAIN_WINDOW points), which resolves about 30k tokens.
* **Copy divergence** of grown runs (hyperclone.common.copies, logged by the training loop at every evaluation):
  the per-token cosine between copies of the hidden units in each layer's hidden state (1: the copies are still
  one neuron) and the weight cosine per tensor group.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from hyperclone.experiments import curve_math, report
from hyperclone.train.metrics import read_metrics

TRAIN_LEVELS = tuple(round(4.0 - 0.1 * i, 2) for i in range(21))  # training loss 4.0 ... 2.0
SPEED_METHOD = ("Learning speed at equal loss: the tokens a run needs to fall 0.1 from loss L, read off its curve "
                "at the peak learning rate only (WSD's stable phase; every point for cosine), seed means; fewer is "
                "faster. On the training loss (the run's own batches, the same for every arm of a seed, logged every "
                "15 steps and smoothed over 11 log points: ~30k-token resolution) and on the validation loss (16 "
                "evaluations a run, on the first 8,192 tokens of the validation split).")


END_LOGS = 10  # log points of the training loss averaged for a run's end (150 steps, ~300k tokens in cpu-ladder)


def final_train_loss(run_dir: Path, logs: int = END_LOGS) -> float | None:
    """The mean training loss of a run's last `logs` log points: on the same batches for every arm of a seed, and
    within the first epoch a held-out estimate 37x the size of the cpu-ladder's 8,192-token validation set."""
    losses = [m["train_loss"] for m in read_metrics(run_dir) if m.get("train_loss") is not None]
    return statistics.fmean(losses[-logs:]) if len(losses) >= logs else None


def smoothed_train(run_dir: Path, window: int = curve_math.TRAIN_WINDOW) -> list[tuple[float, float]]:
    """(tokens, training loss) over the whole run, smoothed by a centred running mean of `window` log points."""
    return curve_math.running_mean([(m["tokens"], m["train_loss"]) for m in read_metrics(run_dir)
                                if m.get("train_loss") is not None], window)


def seed_mean_lead(pairs: list[tuple[Path, Path]]) -> dict[str, float | None]:
    """lead() averaged over (grown run, random run) pairs of the same seed."""
    per = [curve_math.lead(smoothed_train(g), smoothed_train(r)) for g, r in pairs]
    keys = [f"{f:g}" for f in curve_math.LEAD_AT]
    return {k: (statistics.fmean(v[k] for v in per if v.get(k) is not None)
                if any(v.get(k) is not None for v in per) else None) for k in keys}


def learning_speed(run_dirs: list[Path], curve: str = "val") -> dict[str, float]:
    """Seed mean of tokens_per_drop over the runs that measure each level; curve: val | train."""
    if curve == "val":
        per_run = [curve_math.tokens_per_drop(curve_math.stable_points(read_metrics(d))) for d in run_dirs]
    else:
        per_run = [curve_math.tokens_per_drop(curve_math.train_points(read_metrics(d)), TRAIN_LEVELS) for d in run_dirs]
    levels = sorted({k for r in per_run for k in r}, key=float, reverse=True)
    return {k: statistics.fmean(r[k] for r in per_run if k in r) for k in levels}


def divergence_trace(run_dir: Path) -> list[dict[str, Any]]:
    """[{tokens, activation: {h<i>: cos}, weights: {group: cos}}] at every evaluation that logged it."""
    trace = []
    for m in read_metrics(run_dir):
        if "activation_divergence" in m or "copy_divergence" in m:
            trace.append({"tokens": m["tokens"],
                          "activation": {k: v["cos"] for k, v in m.get("activation_divergence", {}).items()},
                          "weights": {k: v["cos"] for k, v in m.get("copy_divergence", {}).items()}})
    return trace


def divergence_summary(trace: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean and lowest hidden-state cosine over the layers and mean weight cosine, at the start and the end."""
    if not trace:
        return None

    def at(point: dict[str, Any]) -> dict[str, Any]:
        acts = list(point["activation"].values())
        return {"tokens": point["tokens"], "activation_mean": statistics.fmean(acts) if acts else None,
                "activation_min": min(acts) if acts else None,
                "weights_mean": statistics.fmean(point["weights"].values()) if point["weights"] else None}

    return {"start": at(trace[0]), "end": at(trace[-1])}


def speed_table(speeds: dict[str, dict[str, float]], random_arm: str | None) -> list[str]:
    """Markdown: one row per loss level, one column per arm (tokens in millions to fall 0.1)."""
    names = ([random_arm] if random_arm in speeds else []) + [n for n in speeds if n != random_arm]
    levels = sorted({k for s in speeds.values() for k in s}, key=float, reverse=True)
    if not names or not levels:
        return []
    lines = ["| loss L | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for level in levels:
        cells = [f"{speeds[n][level] / 1e6:.2f}M" if level in speeds[n] else "—" for n in names]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def plot_speed(speeds: dict[str, dict[str, dict[str, float]]], random_arm: str | None, budget: int,
               out: Path, stem: str = "search") -> Path | None:
    """speeds: {"train": {arm: {L: tokens}}, "val": ...}; one panel per curve."""
    if not any(speeds.values()):
        return None
    plt = report.pyplot()
    fig, axes = plt.subplots(1, len(speeds), figsize=(6 * len(speeds), 4.5))
    for ax, (curve, by_arm) in zip(list(getattr(axes, "flat", [axes])), speeds.items(), strict=True):
        for name, s in by_arm.items():
            if s:
                levels = sorted(s, key=float)
                ax.plot([float(level) for level in levels], [s[level] / 1e6 for level in levels],
                        "--o" if name == random_arm else "-o", ms=3, lw=1.3, label=name)
        ax.invert_xaxis()
        ax.set_xlabel(f"{'training' if curve == 'train' else 'validation'} loss L (falling to the right)")
        ax.set_ylabel(f"tokens to fall from L to L - {curve_math.DROP:g} (M), peak LR")
        ax.set_title(f"{curve} loss, {budget / 1e6:g}M-token runs; dashed = random init", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=6)
    return report.save_figure(fig, out / f"{stem}_learning_speed_{budget / 1e6:g}m.png")


def plot_divergence(traces: dict[str, list[dict[str, Any]]], out: Path, stem: str = "search") -> Path | None:
    traces = {n: t for n, t in traces.items() if t}
    if not traces:
        return None
    plt = report.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, trace in traces.items():
        xs = [p["tokens"] / 1e6 for p in trace]
        acts = [statistics.fmean(p["activation"].values()) if p["activation"] else float("nan") for p in trace]
        weights = [statistics.fmean(p["weights"].values()) if p["weights"] else float("nan") for p in trace]
        left.plot(xs, acts, lw=1.3, label=name)
        right.plot(xs, weights, lw=1.3, label=name)
    left.set_title("hidden units: cosine of copies (mean over layers)")
    right.set_title("weights: cosine of copied rows (mean over groups)")
    for ax in (left, right):
        ax.set_xlabel("tokens (M)")
        ax.set_ylabel("cosine")
        ax.legend(fontsize=7)
    return report.save_figure(fig, out / f"{stem}_copy_divergence.png")
