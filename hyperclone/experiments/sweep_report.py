"""The sweep's comparison: every arm against the best random-init arm of its final shape, as sweep.json/.md and plots.

Fair baseline: the random arms get their own learning-rate search; "best" is the lowest seed-mean
final validation loss among the random arms of a shape at the full budget. Each grown arm is compared
with it on the seeds both ran (same tokens, same data order per seed): speedup_tokens is read off
the seed-mean curves (hyperclone.experiments.curve_math.speedups), the per-seed speedups give the spread.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from hyperclone.baselines.msg.layout import RAMP_FRAC
from hyperclone.experiments import curve_math, report
from hyperclone.experiments.folder import ExperimentDir
from hyperclone.experiments.output import write_page, write_results
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.setup import curve, model_stats, small_arm
from hyperclone.experiments.sweep_models import arm_layers, arm_shape, arm_width, reference_model
from hyperclone.experiments.sweep_spec import PRESET_SMALL, Sweep, SweepArm
from hyperclone.grow.plan import DEFAULT_MODE, DEFAULT_NOISE_DB, NOISE_MODES
from hyperclone.train.config import default as train_default
from hyperclone.train.metrics import read_metrics

GOAL = {"shape": "2", "speedup_tokens": 2.0, "loss_gap": 0.03, "seeds": 2}


def describe(arm: SweepArm, preset: Preset) -> str:
    """The recipe in a few words (what differs from the preset's defaults)."""
    deeper = arm_layers(arm, preset)
    if arm.init == "random":
        parts = ["random init"]
    elif arm.init == "msg":
        m = arm.msg
        parts = [f"MSG, masks ramped over {m.get('ramp_frac', RAMP_FRAC):g} of the run"]
        if deeper and m.get("depth_start_frac", 0.0) > 0:
            parts.append(f"layers from {m['depth_start_frac']:g} of the run")
    else:
        g = arm.grow
        mode = g.get("mode", DEFAULT_MODE)
        noise = g.get("noise_db", DEFAULT_NOISE_DB)
        parts = [f"grown {mode}" + (f" {noise:g} dB" if mode in NOISE_MODES else "")]
        parts += [f"{k}={g[k]}" for k in ("tie", "ffn", "seed") if k in g]
        if deeper:
            parts.append("new layers " + ("stacked (G_stack)" if g.get("depth_mode") == "stack" else "as identity"))
        if arm.moments == "carry":
            parts.append("carried moments" + {"first": " (first reset)", "copies": " (copy block 0 only)"}.get(
                arm.moments_reset, ""))
        if g.get("perturb"):
            parts.append(f"perturbed {g['perturb']} (not exact)")
        if arm.copies:
            parts.append(f"asymmetric continuation (copies re-warm to {arm.copies['lr']:g}x the LR over "
                         f"{arm.copies.get('warmup', train_default('copies_warmup')):g} of the run)")
        if arm.kd:
            parts.append(f"distilled from the small model (alpha {arm.kd['alpha']:g} to 0 at "
                         f"{arm.kd.get('until', train_default('kd_until')):g} of the run)")
    if arm.lr_scale:
        parts.append("LR " + ", ".join(f"x{mult:g} on {glob}" for glob, mult in arm.lr_scale.items()))
    if arm.small_tokens:
        parts.append(f"small model pretrained {arm.small_tokens:,} tokens"
                     + (f" on {arm.small_corpus}" if arm.small_corpus else ""))
    elif arm.small_corpus:
        parts.append(f"small model pretrained on {arm.small_corpus}")
    if not arm.small_decay:
        parts.append("small model without its learning-rate decay")
    warm = preset.warmup if arm.warmup is None else arm.warmup
    parts.append(f"{arm.schedule or preset.schedule}, warmup {warm:g}")
    if arm.tokens:
        parts.append(f"{arm.tokens:,} tokens")
    return ", ".join(parts)


def shape_text(shape: str) -> str:
    """"2" -> "width ×2"; "2-L8" -> "width ×2, 8 layers"; "2-L8-e4k1" -> "width ×2, 8 layers, 4 experts top-1"."""
    shape, _, moe = shape.partition("-e")
    width, _, layers = shape.partition("-L")
    experts, _, top_k = moe.partition("k")
    return (f"width ×{width}" + (f", {layers} layers" if layers else "")
            + (f", {experts} experts top-{top_k}" if moe else ""))


def _mean_std(vals: list[float]) -> tuple[float, float]:
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _arm_summary(arm: SweepArm, preset: Preset, shape: str,
                 arm_curves: dict[int, curve_math.Curve]) -> dict[str, Any]:
    """An arm's entry in sweep.json before the comparison: its recipe and final loss over its seeds."""
    finals = [c[-1]["val_loss"] for c in arm_curves.values()]
    m, sd = _mean_std(finals)
    return {"init": arm.init, "shape": shape, "width": arm_width(arm, preset), "layers": arm.layers or preset.layers,
            "lr": arm.lr, "recipe": describe(arm, preset), "spec": arm.as_dict(), "seeds": list(arm.seeds),
            "tokens": arm_curves[arm.seeds[0]][-1]["tokens"],
            "final_val_loss": {"mean": m, "std": sd, "per_seed": finals},
            "wall_s": statistics.fmean(c[-1]["elapsed_s"] for c in arm_curves.values()),
            "start_val_loss": statistics.fmean(c[0]["val_loss"] for c in arm_curves.values())}


def _vs_random(a: dict[str, Any], ref: str, arms: dict[str, Any], curves: dict[str, dict[int, curve_math.Curve]],
               name: str, own_small: tuple[float, float, float]) -> dict[str, Any] | None:
    """A grown arm against the best random arm of its shape, on the seeds both have (None when they share none)."""
    common = sorted(set(a["seeds"]) & set(arms[ref]["seeds"]))
    if not common:
        return None
    g_mean = curve_math.mean_curve([curves[name][s] for s in common])
    r_mean = curve_math.mean_curve([curves[ref][s] for s in common])
    top = curve_math.speedups(g_mean, r_mean, *own_small)
    per_seed = [curve_math.speedups(curves[name][s], curves[ref][s], *own_small)["speedup_tokens"] for s in common]
    gap = (r_mean[-1]["val_loss"] - g_mean[-1]["val_loss"]) / r_mean[-1]["val_loss"]
    return {"random_arm": ref, "seeds": common, "loss_gap": gap, **top,
            "speedup_tokens_per_seed": curve_math.spread(per_seed)}


def _winners_and_goal(arms: dict[str, Any], shapes: list[str]) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Per shape the compared arm with the most seeds, then meeting the goal, then the lowest loss; and the goal's
    verdict for the goal's shape."""
    winners: dict[str, str] = {}
    for shape in shapes:
        cands = [n for n, a in arms.items() if a["shape"] == shape and "vs_best_random" in a]
        if cands:
            winners[shape] = max(cands, key=lambda n: (
                len(arms[n]["seeds"]), (arms[n]["vs_best_random"]["speedup_tokens"] or 0.0) >= GOAL["speedup_tokens"],
                -arms[n]["final_val_loss"]["mean"]))
    if GOAL["shape"] not in winners:
        return winners, None
    v = arms[winners[GOAL["shape"]]]["vs_best_random"]
    met = ((v["speedup_tokens"] or 0) >= GOAL["speedup_tokens"] and v["loss_gap"] >= GOAL["loss_gap"]
           and len(v["seeds"]) >= GOAL["seeds"])
    return winners, {**GOAL, "arm": winners[GOAL["shape"]], "measured_speedup_tokens": v["speedup_tokens"],
                     "measured_loss_gap": v["loss_gap"], "measured_seeds": len(v["seeds"]), "met": bool(met)}


def collect(preset: Preset, sweep: Sweep, out: Path, small_final: Path) -> dict[str, Any]:
    """Curves of every run and the comparison numbers (pure bookkeeping once the runs exist).

    Arms are compared within a final shape ("2", "2-L8": see sweep_models). Every arm of a shape is
    costed with that shape's FLOPs per token from its first step: MSG trains the full target model
    with masks, so its masked compute counts as compute."""
    folder = ExperimentDir(out)
    small_run = small_final.parent
    small_stats = model_stats(folder.small_init, preset.seq_len)
    small_curve = curve(small_run, small_stats["flops_per_token"])
    stats: dict[str, dict[str, Any]] = {}
    arms: dict[str, Any] = {}
    curves: dict[str, dict[int, curve_math.Curve]] = {}
    for arm in sweep.arms:
        shape = arm_shape(arm, preset)
        if shape not in stats:
            stats[shape] = model_stats(folder.model(reference_model(arm, preset)), preset.seq_len)
        curves[arm.name] = {s: curve(folder.arm_run(arm.name, s), stats[shape]["flops_per_token"])
                            for s in arm.seeds}
        arms[arm.name] = _arm_summary(arm, preset, shape, curves[arm.name])
    full = {name: a for name, a in arms.items() if a["tokens"] >= max(x["tokens"] for x in arms.values()) * 0.99}
    best_random: dict[str, str] = {}
    for shape in sorted(stats):
        randoms = [n for n, a in full.items() if a["init"] == "random" and a["shape"] == shape]
        if randoms:
            best_random[shape] = min(randoms, key=lambda n: arms[n]["final_val_loss"]["mean"])
    small_cost = (small_curve[-1]["tokens"], small_curve[-1]["flops"], small_curve[-1]["elapsed_s"])
    small_costs = {PRESET_SMALL: small_cost}  # per small model (an arm's small_tokens, _decay and _corpus)
    for arm in sweep.arms:
        if arm.init != "random" and arm.small_model not in small_costs:
            own = curve(folder.run(small_arm(preset, *arm.small_model).run_name), small_stats["flops_per_token"])
            small_costs[arm.small_model] = (own[-1]["tokens"], own[-1]["flops"], own[-1]["elapsed_s"])
    for arm in sweep.arms:
        a = arms[arm.name]
        ref = best_random.get(a["shape"])
        if ref is None or a["init"] == "random":
            continue
        a["small_cost"] = dict(zip(("tokens", "flops", "elapsed_s"), small_costs[arm.small_model], strict=True))
        versus = _vs_random(a, ref, arms, curves, arm.name, small_costs[arm.small_model])
        if versus is not None:
            a["vs_best_random"] = versus
    winners, goal = _winners_and_goal(arms, sorted(stats))
    return {"preset": preset.as_dict(), "arms": arms, "best_random": best_random, "winner": winners, "goal": goal,
            "models": {"small": small_stats, "shapes": stats},
            "small_cost": {"tokens": small_cost[0], "flops": small_cost[1], "elapsed_s": small_cost[2]},
            "corpus": json.loads((folder.corpus_info).read_text()),
            "curves": {n: {str(s): c for s, c in cs.items()} for n, cs in curves.items()},
            "small_curve": small_curve, "small_run_metrics": len(read_metrics(small_run))}


def _f(v: float | None, d: int = 2) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| arm | shape | recipe | peak lr | seeds | final val loss (mean ± std) | vs best random: loss gap | "
             "speedup_tokens (seed-mean) | per seed (mean ± std) | incl. small | speedup_flops | wall s |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(results["arms"].items(), key=lambda kv: (kv[1]["shape"], kv[1]["init"] != "random",
                                                            kv[1]["final_val_loss"]["mean"]))
    for name, a in order:
        v = a.get("vs_best_random", {})
        fl = a["final_val_loss"]
        mark = " **(best random)**" if name in results["best_random"].values() else (
            " **(winner)**" if name in results["winner"].values() else "")
        ps = v.get("speedup_tokens_per_seed")
        per_seed = "—" if not ps or ps["mean"] is None else f"{ps['mean']:.2f} ± {ps['std']:.2f} ({ps['reached']}/" \
                                                             f"{ps['n']})"
        lines.append(f"| {name}{mark} | {shape_text(a['shape'])} | {a['recipe']} | {a['lr']:g} | "
                     f"{','.join(map(str, a['seeds']))} | {fl['mean']:.4f} ± {fl['std']:.4f} | "
                     f"{_f(100 * v['loss_gap'], 1) + ' %' if v else '—'} | "
                     f"{'∞ (at start)' if v.get('reached_at_start') else _f(v.get('speedup_tokens'))} | "
                     f"{per_seed} | {_f(v.get('speedup_tokens_incl_small'))} | {_f(v.get('speedup_flops'))} | "
                     f"{a['wall_s']:.0f} |")
    return lines


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    plt = report.pyplot()

    paths = []
    for shape in sorted({a["shape"] for a in results["arms"].values()}):
        fig, ax = plt.subplots(figsize=(8, 5))
        best = {results["best_random"].get(shape), results["winner"].get(shape)}
        for name, a in results["arms"].items():
            if a["shape"] != shape:
                continue
            c = curve_math.mean_curve(list(results["curves"][name].values()))
            lw, alpha = (2.2, 1.0) if name in best else (0.9, 0.55)
            style = "--" if a["init"] == "random" else "-"
            ax.plot([p["tokens"] for p in c], [p["val_loss"] for p in c], style, lw=lw, alpha=alpha, label=name)
        ax.set_xlabel("tokens (big model)")
        ax.set_ylabel("validation loss")
        ax.set_title(f"sweep, {shape_text(shape)}: every arm (seed mean); dashed = random init")
        ax.legend(fontsize=6, ncol=2)
        lo = min(min(p["val_loss"] for p in c) for cs in results["curves"].values() for c in cs.values())
        ax.set_ylim(lo - 0.05, lo + 1.5)
        path = out / f"sweep_val_loss_w{shape}.png"
        report.save_figure(fig, path)
        paths.append(path)
    return paths


def write(results: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    write_results(out / "sweep.json", results)
    plots = plot(results, out)
    p = results["preset"]
    m = results["models"]
    lines = [f"# HyperCloning post-growth recipe sweep: preset `{p['name']}`", "",
             f"Small model: {m['small']['hidden']} wide, {m['small']['layers']} layers, {m['small']['params']:,} "
             f"parameters, pretrained for {results['small_cost']['tokens']:,} tokens. "
             + "; ".join(f"{shape_text(k)}: {s['hidden']} wide, {s['layers']} layers, {s['params']:,} parameters"
                         for k, s in m["shapes"].items()) + ". "
             f"Every arm trains for {p['tokens']:,} tokens ({p['batch_tokens']:,} per step, sequences of "
             f"{p['seq_len']}) on {results['corpus']['description']}; a seed sets the data order (and the random "
             "init), so arms with the same seed see the same batches in the same order.", "",
             "The baseline is the best random-init arm of each final shape after its own learning-rate search; "
             "speedups compare each grown arm with it on the seeds both ran. speedup_tokens = random's tokens / "
             "tokens the grown arm needs to reach random's final validation loss (seed-mean curves, interpolated; "
             "— = never reached); per seed: each seed against the random run with the same seed; loss gap = how "
             "much lower the grown arm's final loss is; incl. small adds the small model's pretraining tokens; "
             "speedup_flops also charges the small model's FLOPs.", ""]
    if results["goal"]:
        g = results["goal"]
        met = "met" if g["met"] else "not met"
        lines += [f"**Goal** ({shape_text(g['shape'])}: speedup_tokens ≥ {g['speedup_tokens']}, final loss ≥ "
                  f"{100 * g['loss_gap']:.0f}% below random, ≥ {g['seeds']} seeds): **{met}**"
                  f" by `{g['arm']}` (speedup_tokens {_f(g['measured_speedup_tokens'])}, loss gap "
                  f"{100 * g['measured_loss_gap']:.1f}%, seeds: {g['measured_seeds']}).", ""]
    best = ", ".join(f"{shape_text(k)}: `{v}`" for k, v in results["best_random"].items())
    winners = ", ".join(f"{shape_text(k)}: `{v}`" for k, v in results["winner"].items())
    lines += [f"Best random arm per shape, among this sweep's random arms (runs of other sweep files in the same "
              f"folder are not compared): {best}. "
              + (f"Winner per shape (most seeds, then speedup_tokens ≥ {GOAL['speedup_tokens']:g}, then the lowest "
                 f"final loss: the head start that lasts): {winners}." if winners else
                 "This sweep has no grown arm: it compares random-init runs only, so it names no winner."),
              "", *table(results), ""]
    lines += [f"![{pl.stem}]({pl.name})" for pl in plots]
    lines += ["", f"Machine: {results['machine']}; sweep wall time {results['wall_clock_s']:.0f} s over every "
              f"invocation; date {results['date']}.", "", f"Reproduce: `{results['command']}`", ""]
    path = out / "sweep.md"
    return write_page(path, lines)
