"""`hyperclone experiment --preset P --arms random,hyperclone,msg,stack`: growth methods head to head.

Every arm ends at the same final shape (the preset's width factor and, by default, twice the small
model's layers), trains for the same tokens with the same recipe (the preset's schedule and peak
learning rate) on the same data in the same order per seed. Arms:

- random      random init of the final shape (the baseline)
- hyperclone  `hyperclone grow` with its defaults: width by HyperCloning with exact zero-sum noise
              (0 dB), new layers as identity blocks (function-preserving)
- symmetric   HyperCloning as published (identical copies), new layers as identity blocks
- stack       width as in `hyperclone`, depth by stacking the grown layers again (G_stack: the
              function changes at growth)
- msg         Masked Structural Growth (hyperclone.baselines.msg.masked): new dimensions, heads, neurons and layers
              freshly initialised and masked in over the first 10% of the run
- upcycle     the hyperclone arm with every MLP upcycled into 4 experts, top-1 (exact; a shape of its own,
              whose FLOPs count the active parameters)
- random-moe  random init of the upcycle arm's shape (what upcycle is also measured against)

The arms run through the sweep machinery (hyperclone.experiments.sweep), so runs resume and models are shared;
this module only names the arms and writes report.md, results.json and the plot. Costs: every arm
trains the final shape from its first step (MSG's masked compute counts as compute); every growth
arm is also charged the small model's pretraining.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from hyperclone.baselines.msg.layout import RAMP_FRAC
from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments import curve_math, report
from hyperclone.experiments.output import write_page, write_results
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.sweep_report import shape_text
from hyperclone.experiments.sweep_spec import Sweep, SweepArm

# arm name -> (what it is, SweepArm fields besides name/lr/seeds/width/layers)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random init of the final shape", {"init": "random"}),
    "hyperclone": ("hyperclone grow defaults: noisy HyperCloning (exact, 0 dB), identity layers",
                   {"init": "grown", "grow": {"mode": "noisy", "noise_db": 0}}),
    "symmetric": ("HyperCloning as published (identical copies), identity layers",
                  {"init": "grown", "grow": {"mode": "symmetric"}}),
    "stack": ("noisy HyperCloning for width, layer stacking (G_stack) for depth",
              {"init": "grown", "grow": {"mode": "noisy", "noise_db": 0, "depth_mode": "stack"}}),
    "msg": ("Masked Structural Growth, masks ramped over the first 10% of the run",
            {"init": "msg", "msg": {"ramp_frac": RAMP_FRAC}}),
    "upcycle": ("the hyperclone arm with every MLP upcycled into 4 experts, top-1 (exact: the same function; "
                "the active parameters per token are the dense arms')",
                {"init": "grown", "grow": {"mode": "noisy", "noise_db": 0, "experts": 4, "top_k": 1}}),
    "random-moe": ("random init of the upcycle arm's mixture-of-experts shape",
                   {"init": "random", "grow": {"experts": 4, "top_k": 1}}),
}
MOE_BASELINE = "random-moe"  # what the upcycle arm is also measured against
RESULTS_FILE = "results.json"


def parse_arms(text: str) -> list[str]:
    """"random,hyperclone,msg" -> names, checked: known, no repeats, random included (it is the baseline)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ARMS]
    if bad:
        raise HyperCloneError(f"unknown arm {bad[0]!r} in --arms; choose from {', '.join(ARMS)}")
    if len(set(names)) != len(names):
        raise HyperCloneError(f"--arms names an arm twice: {text}")
    if "random" not in names:
        raise HyperCloneError("--arms must include random: every other arm is measured against it")
    return names


def build_sweep(preset: Preset, names: list[str], layers: int | None = None) -> Sweep:
    """The arms as a sweep, all at the final shape: width ×preset.width, `layers` layers (default 2× the
    small model's)."""
    layers = 2 * preset.layers if layers is None else layers
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < preset.layers:
        raise HyperCloneError(f"--layers must be an integer ≥ the small model's {preset.layers}, got {layers!r}")
    if "stack" in names and layers == preset.layers:
        raise HyperCloneError("the stack arm grows depth: give --layers more than the small model's "
                              f"{preset.layers}")
    arms = []
    for name in names:
        fields = json.loads(json.dumps(ARMS[name][1]))  # a copy
        arms.append(SweepArm(name=name, lr=preset.lr, seeds=tuple(preset.seeds), width=preset.width,
                             layers=layers, **fields))
    return Sweep(preset=preset.name, arms=tuple(arms))


def _tokens_to(curve: curve_math.Curve, target: float) -> float | None:
    return curve_math.x_to_reach([p["tokens"] for p in curve], [p["val_loss"] for p in curve], target)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The head-to-head numbers from the sweep's collected results (pure bookkeeping): every arm against
    random with hyperclone.experiments.curve_math.speedups, growth arms charged the small model's pretraining."""
    arms = results["arms"]
    curves = results["curves"]
    small = results["small_cost"]
    random_mean = curve_math.mean_curve(list(curves["random"].values()))
    target = random_mean[-1]["val_loss"]
    growth = [n for n, a in arms.items() if a["init"] != "random"]

    def small_cost_of(arm: dict[str, Any]) -> tuple[float, float, float]:
        """Growth arms are charged the small model's pretraining, random arms nothing."""
        return (small["tokens"], small["flops"], small["elapsed_s"]) if arm["init"] != "random" else (0, 0.0, 0.0)

    # growth methods against each other: the highest final loss among them, which every growth arm reaches
    growth_target = max((arms[n]["final_val_loss"]["mean"] for n in growth), default=None)
    reference = "msg" if "msg" in growth else None
    rows: dict[str, Any] = {}
    means = {name: curve_math.mean_curve(list(curves[name].values())) for name in arms}
    for name, a in arms.items():
        mean = means[name]
        cost = small_cost_of(a)
        s = curve_math.speedups(mean, random_mean, *cost)
        flops, wall = s["grown_flops_to_target"], s["grown_elapsed_s_to_target"]
        # per seed: the one rule of every report (hyperclone.experiments.curve_math.summarize): each seed against
        # the random run with the same seed, whose own final loss is that seed's target
        seeds = [k for k in curves[name] if k in curves["random"]]
        per_seed = [curve_math.speedups(curves[name][k], curves["random"][k], *cost) for k in seeds]
        per_seed_tokens = [p["grown_tokens_to_target"] for p in per_seed]
        rows[name] = {
            "recipe": a["recipe"],
            "seeds": a["seeds"],
            "start_val_loss": a["start_val_loss"],
            "final_val_loss": a["final_val_loss"],
            "tokens_to_target": s["grown_tokens_to_target"],
            "tokens_to_target_per_seed": per_seed_tokens,
            "speedup_tokens": s["speedup_tokens"],
            "speedup_tokens_per_seed": curve_math.spread([p["speedup_tokens"] for p in per_seed]),
            "flops_to_target_incl_small": None if flops is None else flops + cost[1],
            "speedup_flops_incl_small": s["speedup_flops"],
            "speedup_tokens_incl_small": s["speedup_tokens_incl_small"],
            "wall_s_per_run": a["wall_s"],
            "wall_s_to_target_incl_small": None if wall is None else wall + cost[2],
            "speedup_wall_clock_incl_small": s["speedup_wall_clock_incl_small"],
            "reached_at_start": s["reached_at_start"],
            "tokens_to_growth_target": None if growth_target is None else _tokens_to(mean, growth_target),
            "loss_gap_vs_random": (target - a["final_val_loss"]["mean"]) / target,
        }
    if MOE_BASELINE in curves:  # mixture-of-experts arms against random init of their own shape too
        for name, a in arms.items():
            if a.get("shape") == arms[MOE_BASELINE].get("shape") and name != MOE_BASELINE:
                s = curve_math.speedups(means[name], means[MOE_BASELINE], *small_cost_of(a))
                rows[name]["speedup_tokens_vs_random_moe"] = s["speedup_tokens"]
                rows[name]["reached_random_moe_at_start"] = s["reached_at_start"]
    if reference is not None and rows[reference]["tokens_to_growth_target"]:
        for row in rows.values():
            row["speedup_tokens_vs_msg"] = curve_math.ratio(rows[reference]["tokens_to_growth_target"],
                                                        row["tokens_to_growth_target"])
    return {"target_val_loss": target, "growth_target_val_loss": growth_target, "random_tokens":
            random_mean[-1]["tokens"], "random_flops": random_mean[-1]["flops"], "arms": rows}


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def _speedup(r: dict[str, Any], key: str) -> str:
    return "∞ (at start)" if r["reached_at_start"] else _f(r[key])


def table(h2h: dict[str, Any]) -> list[str]:
    with_msg = any("speedup_tokens_vs_msg" in r for r in h2h["arms"].values())
    with_moe = any("speedup_tokens_vs_random_moe" in r for r in h2h["arms"].values())
    lines = ["| arm | start | final val loss (mean ± std) | tokens to random's final loss | speedup_tokens "
             "(seed-mean) | per seed (mean ± std, reached) | FLOPs to target incl. small | speedup_flops incl. "
             "small | tokens to the growth target | " + ("speedup vs MSG | " if with_msg else "")
             + ("speedup vs random-moe | " if with_moe else "") + "wall s per run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_msg else "")
             + ("---:|" if with_moe else "") + "---:|"]
    for name, r in sorted(h2h["arms"].items(), key=lambda kv: kv[1]["final_val_loss"]["mean"]):
        fl = r["final_val_loss"]
        ps = r["speedup_tokens_per_seed"]
        per_seed = "—" if ps["mean"] is None else f"{ps['mean']:.2f} ± {ps['std']:.2f} ({ps['reached']}/{ps['n']})"
        if name == "random":
            per_seed = "baseline"
        elif r["reached_at_start"]:
            per_seed = f"at start ({sum(t == 0.0 for t in r['tokens_to_target_per_seed'])}/{ps['n']})"
        vs_msg = f"{_f(r.get('speedup_tokens_vs_msg'))} | " if with_msg else ""
        if with_moe:
            vs_msg += ("baseline | " if name == MOE_BASELINE else "∞ (at start) | "
                       if r.get("reached_random_moe_at_start") else f"{_f(r.get('speedup_tokens_vs_random_moe'))} | ")
        lines.append(f"| {name} | {r['start_val_loss']:.3f} | {fl['mean']:.4f} ± {fl['std']:.4f} | "
                     f"{_f(r['tokens_to_target'], ',.0f')} | {_speedup(r, 'speedup_tokens')} | {per_seed} | "
                     f"{_f(r['flops_to_target_incl_small'], '.3g')} | {_f(r['speedup_flops_incl_small'])} | "
                     f"{_f(r['tokens_to_growth_target'], ',.0f')} | {vs_msg}{r['wall_s_per_run']:.0f} |")
    return lines


def plot(results: dict[str, Any], h2h: dict[str, Any], out: Path) -> Path:
    plt = report.pyplot()

    small = results["small_cost"]
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in h2h["arms"]:
        c = curve_math.mean_curve(list(results["curves"][name].values()))
        style = "--" if name == "random" else "-"
        extra = 0.0 if name == "random" else small["flops"]
        ax_t.plot([p["tokens"] for p in c], [p["val_loss"] for p in c], style, label=name)
        ax_f.plot([p["flops"] + extra for p in c], [p["val_loss"] for p in c], style, label=name)
    for ax in (ax_t, ax_f):
        ax.axhline(h2h["target_val_loss"], color="gray", lw=0.8, ls=":")
        ax.set_ylabel("validation loss (seed mean)")
        ax.legend()
        lo = min(min(p["val_loss"] for p in c) for cs in results["curves"].values() for c in cs.values())
        ax.set_ylim(lo - 0.05, lo + 1.2)
    ax_t.set_xlabel("tokens (final-shape model)")
    ax_f.set_xlabel("training FLOPs, growth arms charged the small model's pretraining")
    fig.suptitle("growth methods head to head: same final shape, same tokens; dotted = random's final loss")
    path = out / "headtohead_val_loss.png"
    report.save_figure(fig, path)
    return path


def one_line(results: dict[str, Any]) -> str:
    """Every arm's final loss and token speed-up in one line (what the command prints)."""
    def speedup(r: dict[str, Any]) -> str:
        if r["reached_at_start"]:
            return "inf (at start)"
        return "never" if r["speedup_tokens"] is None else f"{r['speedup_tokens']:.2f}"

    rows = summarize(results)["arms"]
    return "; ".join(f"{n}: final {r['final_val_loss']['mean']:.4f}, speedup_tokens {speedup(r)}"
                     for n, r in rows.items())


def write(results: dict[str, Any], out: Path) -> Path:
    """report.md, results.json and the plot for a head-to-head run; returns report.md's path."""
    out = Path(out)
    h2h = summarize(results)
    results = {**results, "headtohead": h2h}
    write_results(out / RESULTS_FILE, results)
    png = plot(results, h2h, out)
    p = results["preset"]
    small = results["models"]["small"]
    shapes = results["models"]["shapes"]
    shape = next(k for k in shapes if "-e" not in k)  # the dense final shape; mixture-of-experts shapes below
    big = shapes[shape]
    moe_text = "".join(
        f" The mixture-of-experts arms train {shape_text(k)} ({m['params']:,} parameters, {m['active_params']:,} "
        f"active per token); their FLOPs count the active parameters ({m['flops_per_token']:,.0f} per token), and "
        f"`speedup vs random-moe` compares them with random init of their own shape (`{MOE_BASELINE}`)."
        for k, m in shapes.items() if k != shape)
    arm_lines = [f"- `{name}`: {ARMS[name][0] if name in ARMS else a['recipe']} ({a['recipe']})"
                 for name, a in results["arms"].items()]
    walls = statistics.fmean(r["wall_s_per_run"] for r in h2h["arms"].values())
    lines = [
        f"# Growth methods head to head: preset `{p['name']}`", "",
        f"A small llama-style model ({small['hidden']} wide, {small['layers']} layers, {small['params']:,} "
        f"parameters) was pretrained for {results['small_cost']['tokens']:,} tokens on "
        f"{results['corpus']['description']}. Every arm then trains the same final shape, {shape_text(shape)} "
        f"({big['hidden']} wide, {big['layers']} layers, {big['heads']} heads, FFN {big['ffn']}, "
        f"{big['params']:,} parameters), for {p['tokens']:,} tokens with the same recipe ({p['schedule']}, peak lr "
        f"{p['lr']:g}, warmup {p['warmup']:g}, {p['batch_tokens']:,} tokens per step) on the same data in the same "
        f"order per seed (seeds {', '.join(map(str, p['seeds']))}):", "",
        *arm_lines, "",
        f"Target: random init's final validation loss, **{h2h['target_val_loss']:.4f}** (seed mean). Tokens and "
        "FLOPs to the target are read off the seed-mean curves (linear interpolation between evaluations; — = "
        "never reached); per seed, each seed is compared with the random run of the same seed, whose own final "
        "loss is the target. Every arm trains the final shape from its first step, so FLOPs per token are the same "
        f"for the dense arms ({big['flops_per_token']:,.0f}; MSG's masked compute counts in full); every growth arm "
        "is also "
        f"charged the small model's pretraining ({results['small_cost']['tokens']:,} tokens, "
        f"{results['small_cost']['flops']:.3g} FLOPs). start = validation loss before the first step. A growth "
        "arm that starts below random's final loss reaches it at step 0: its speedup is unbounded (∞), so the "
        "growth methods are also compared with each other: the growth target is the highest final loss among the "
        f"growth arms (**{_f(h2h['growth_target_val_loss'], '.4f')}**), which every one of them reaches, and "
        f"speedup vs MSG is MSG's tokens to it over the arm's.{moe_text}", "",
        *table(h2h), "",
        f"![head to head]({png.name})", "",
        f"Machine: {results['machine']}; mean wall time per run {walls:.0f} s; whole experiment "
        f"{results['wall_clock_s']:.0f} s over every invocation; date {results['date']}.", "",
        f"Reproduce: `{results['command']}`", "",
    ]
    path = out / "report.md"
    return write_page(path, lines)
