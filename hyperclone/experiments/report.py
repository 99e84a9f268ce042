"""Experiment results: speedups read off validation curves, results.json, report.md and plots.

Everything here is pure bookkeeping on curves (lists of points with tokens, val_loss, flops and
elapsed seconds), so it is unit-tested on synthetic curves.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from hyperclone.experiments import curve_math
from hyperclone.experiments.output import write_page, write_results

FLOPS_FORMULA = ("C = (6·N + 6·n_layers·seq_len·d_attn) · tokens, with N the parameter count without the input "
                 "embedding table (the output projection is counted, it is a matmul per token) and d_attn = "
                 "heads × head_dim; the second term is the attention-score cost (Kaplan et al. 2020, forward "
                 "2·n_layers·n_ctx·d_attn, ×3 for training)")


# ----------------------------------------------------------------------------- files

ARM_STYLE = {"small": ("tab:gray", "small (pretraining)"), "grown": ("tab:blue", "grown"),
             "random": ("tab:red", "random init"), "grown-half": ("tab:green", "grown, ½ budget"),
             "grown-quarter": ("tab:purple", "grown, ¼ budget")}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (reports are written on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out fig, write it as PNG to a temporary file beside path and rename it into place, then close it."""
    plt = pyplot()
    fig.tight_layout()
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path


def _style(arm: str) -> tuple[str, str]:
    return ARM_STYLE.get(arm, ("tab:olive", arm))


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """Validation loss against tokens, FLOPs and wall-clock time, every arm on each plot."""
    plt = pyplot()

    small = results["arms"]["small"]["seeds"]
    offsets = results["small_cost"]
    files = []
    axes = [("tokens", "tokens", "tokens seen by this model", "val_loss_vs_tokens.png", False),
            ("flops", "training FLOPs", "training FLOPs (grown arms include the small model's pretraining)",
             "val_loss_vs_flops.png", True),
            ("elapsed_s", "wall-clock time", "wall-clock seconds (grown arms include the small model's pretraining)",
             "val_loss_vs_time.png", True)]
    for key, title, label, name, offset in axes:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        for arm, info in results["arms"].items():
            color, legend = _style(arm)
            shift = offsets[key] if offset and info.get("from_small") else 0.0
            n = len(info["seeds"])
            for i, (_seed, run) in enumerate(sorted(info["seeds"].items())):
                xs = [pt[key] + shift for pt in run["curve"]]
                ys = [pt["val_loss"] for pt in run["curve"]]
                lab = (legend if n == 1 else f"{legend} ({n} seeds)") if i == 0 else None
                ax.plot(xs, ys, color=color, alpha=1.0 if i == 0 else 0.6, lw=1.5, ls="-" if i == 0 else "--",
                        label=lab)
        if results.get("target_val_loss") is not None:
            ax.axhline(results["target_val_loss"], color="tab:red", lw=0.8, ls=":", label="random's final val loss")
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"{results['preset']['name']}: validation loss vs {title}")
        finals = [p["val_loss"] for info in results["arms"].values() for r in info["seeds"].values()
                  for p in r["curve"][-1:]]
        lo = min(finals)
        hi = max(p["val_loss"] for r in small.values() for p in r["curve"][len(r["curve"]) // 4:])
        ax.set_ylim(lo - 0.1 * (hi - lo) - 0.05, max(hi, lo + 0.5))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / name
        save_figure(fig, path)
        files.append(path)
    return files


def _fmt(v: float | None, digits: int = 2) -> str:
    return "never (null)" if v is None else f"{v:.{digits}f}"


def _fmt_spread(s: dict[str, Any], digits: int = 2) -> str:
    if s["mean"] is None:
        return "never reached"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (min {s['min']:.{digits}f}, max {s['max']:.{digits}f}, " \
           f"{s['reached']}/{s['n']} seeds reached)"


def warmup_bump_lines(results: dict[str, Any]) -> list[str]:
    """Say so when the grown model's validation loss first rises (the learning rate warms up past what it tolerates)."""
    out = []
    for arm, info in results["arms"].items():
        if not info.get("from_small"):
            continue
        for seed, run in sorted(info["seeds"].items()):
            c = run["curve"]
            early = [p["val_loss"] for p in c[1 : max(2, len(c) // 3 + 1)]]
            if early and max(early) > c[0]["val_loss"] + 0.01:
                end = c[-1]["val_loss"]
                after = "falling below the start again" if end < c[0]["val_loss"] else "never getting back below it"
                out.append(f"- {arm} (seed {seed}): validation loss rose from {c[0]['val_loss']:.3f} (the small "
                           f"model's) to {max(early):.3f} early in training, as the learning rate warmed up to its "
                           f"peak, before {after} (final {end:.3f}).")
    if out:
        out = ["Observation: a grown model starts at the small model's loss, but the first steps at a high learning "
               "rate cost some of it:", "", *out, ""]
    return out


def _compared_lines(results: dict[str, Any]) -> list[str]:
    """The report's title and "What was compared": the pair of models, the corpus and the recipe."""
    p = results["preset"]
    m = results["models"]
    return [
        f"# HyperCloning experiment: preset `{p['name']}`",
        "",
        "## What was compared",
        "",
        f"A small llama-style model ({m['small']['hidden']} wide, {m['small']['layers']} layers, "
        f"{m['small']['params']:,} parameters) was pretrained from scratch for {results['small_tokens']:,} tokens on "
        f"{results['corpus']['description']}, with a byte-level BPE tokenizer of {p['vocab_size']} tokens trained on "
        f"the same corpus. It was then grown {p['width']}× in width with `hyperclone.grow.engine --mode symmetric` "
        f"(HyperCloning's identical copies; hidden size, attention "
        f"heads, key/value heads and FFN width all ×{p['width']}) into a {m['grown']['hidden']}-wide model with "
        f"{m['grown']['params']:,} parameters that computes the same function as the small one.",
        "",
        f"The grown model and a randomly initialised model of the identical configuration were then trained with the "
        f"identical recipe ({p['schedule']} schedule, peak lr {p['lr']}, {p['batch_tokens']:,} tokens per step, "
        f"sequences of {p['seq_len']} tokens) on the identical data in the identical order for "
        f"{p['tokens']:,} tokens each, with {len(p['seeds'])} seeds ({', '.join(map(str, p['seeds']))}; the seed sets "
        f"the data order and the random model's initialisation). The grown model was also trained with "
        + " and ".join(f"{f:g}×" for f in p["budget_fractions"])
        + " of that budget, each run with its own complete learning-rate schedule. Validation loss is the mean "
        f"next-token cross-entropy on a fixed held-out {results['corpus']['val_tokens']:,}-token slice of the "
        "corpus that no run trains on.",
        "",
    ]


def _headline_lines(results: dict[str, Any]) -> list[str]:
    """The headline speed-ups (seed means and per-seed spread) and the re-warmup's bump."""
    return [
        "## Headline",
        "",
        f"- Target: the random model's final validation loss, **{results['target_val_loss']:.4f}** (mean over seeds).",
        f"- **speedup_tokens = {_fmt(results['speedup_tokens'])}**: random's {results['random_tokens']:,} tokens "
        "divided by the "
        f"tokens the grown model needed to reach the target ({_fmt(results['grown_tokens_to_target'], 0)}), "
        "read off the seed-mean curves with linear interpolation.",
        f"- speedup_tokens_incl_small = {_fmt(results['speedup_tokens_incl_small'])}: the same, charging the grown "
        f"model for the small model's {results['small_tokens']:,} pretraining tokens.",
        f"- speedup_flops = {_fmt(results['speedup_flops'])}: training FLOPs of random divided by the FLOPs of "
        "the grown model to the target plus the small model's pretraining FLOPs. (Without the small model's cost "
        "it would equal speedup_tokens, since the two big models are the same size.)",
        f"- speedup_wall_clock_incl_small = {_fmt(results['speedup_wall_clock_incl_small'])} (the same in "
        "wall-clock seconds on this machine).",
        "",
        "Seed spread (per-seed speedups: grown seed s against random seed s):",
        "",
        f"- speedup_tokens: {_fmt_spread(results['seed_spread']['speedup_tokens'])}",
        f"- speedup_flops: {_fmt_spread(results['seed_spread']['speedup_flops'])}",
        "",
        *warmup_bump_lines(results),
    ]


def _arm_lines(results: dict[str, Any]) -> list[str]:
    """The table of every arm's final validation loss."""
    lines = [
        "## Final validation loss per arm",
        "",
        "| arm | starts from | token budget | seeds | final val loss (mean ± std) | wall s per run |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for arm, info in results["arms"].items():
        s = results["seed_spread"]["final_val_loss"].get(arm) or curve_math.spread(
            [r["final_val_loss"] for r in info["seeds"].values()])
        wall = statistics.fmean(r["wall_s"] for r in info["seeds"].values())
        start = {"small": "random init (small)", "grown": "grown small model", "random": "random init"}
        lines.append(f"| {arm} | {start.get(info['model'], info['model'])} | {info['budget_tokens']:,} | "
                     f"{len(info['seeds'])} | {s['mean']:.4f} ± {s['std']:.4f} | {wall:.0f} |")
    return lines


def _notes_lines(results: dict[str, Any], plots: list[Path]) -> list[str]:
    """The plots and the method notes: FLOPs, corpus, machine, the command that reproduces the report."""
    m = results["models"]
    return [
        "",
        "## Plots",
        "",
        "Grown arms are drawn against their own tokens in the first plot; in the FLOPs and wall-clock plots they "
        "start at the small model's pretraining cost, so the comparison includes it.",
        "",
        *[f"![{f.stem}]({f.name})" for f in plots],
        "",
        "## Method notes",
        "",
        f"- FLOPs: {FLOPS_FORMULA}. Per token: small model {m['small']['flops_per_token']:,.0f}, big models "
        f"{m['grown']['flops_per_token']:,.0f}.",
        "- speedup values are null when the grown model never reaches the target within its budget.",
        f"- Corpus: {results['corpus']['description']}; {results['corpus']['tokens']:,} tokens "
        f"({results['corpus']['documents']:,} documents).",
        f"- Machine: {results['machine']}; experiment wall time {results['wall_clock_s']:.0f} s "
        "(whole experiment: corpus, tokenizer, every run, evaluations, report); "
        f"date {results['date']}.",
        "- Reproduce: `" + results["command"] + "`.",
        "",
    ]


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Write results.json, the PNG plots and report.md into out."""
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    plots = plot(results, out)
    lines = _compared_lines(results) + _headline_lines(results) + _arm_lines(results) + _notes_lines(results, plots)
    return write_page(out / "report.md", lines)
