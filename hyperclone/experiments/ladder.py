"""The budget ladder: does the saving last? Random init against grown at budgets from about 0.25 to 10+ tokens
per parameter, each budget a full schedule of its own (no reading a shorter budget off a longer run's curve).

A ladder is a sweep (hyperclone.experiments.sweep) whose arms differ in `tokens`: `random-<budget>` and
`grown-<budget>` arms, random's peak learning rate searched at some budgets (the arm with the lowest final loss
on seed 0 is that budget's random). The speed-up at budget B compares budgets, not points of one curve: the
grown model's final loss at B is located on random's final-loss-versus-budget curve (piecewise linear in
log-tokens between the measured budgets), and

    speedup_tokens(B) = (tokens random needs to reach it) / B

If the grown loss is below random's loss at the largest budget, only a lower bound is known: random's last
segment extended in log-tokens where random's frontier flattens with budget over the measured budgets (a curve
that keeps flattening needs at least that many tokens), else B_max / B; if it is above random's loss at the
smallest budget, only an upper bound (< B_min / B). FLOPs use the grown model's
FLOPs per token for both (same shape); `incl. small` adds the small model's pretraining FLOPs to the grown side.
The head start is what growth hands the big model before its first step: the tokens random needs, on the same
frontier, to reach the loss the grown model starts at. 1 + head start / B is the speed-up of a grown model that
keeps that head start and gains nothing more (it falls as 1/B), and `kept` says how much of it the final loss
kept. Runs that have not finished are reported as pending, so the report can be written while the ladder runs.
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments import curve_math, report
from hyperclone.experiments.folder import ExperimentDir
from hyperclone.experiments.output import write_page, write_results
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.setup import curve, model_stats
from hyperclone.experiments.sweep_models import reference_model
from hyperclone.experiments.sweep_spec import Sweep, SweepArm, load_sweep

METHOD = ("Each budget is a full schedule of its own. The speed-up at budget B compares budgets, not points of one "
          "curve: the grown model's final loss at B is placed on random init's final-loss-versus-budget curve "
          "(piecewise linear in log-tokens between the measured budgets; random's peak learning rate is the best "
          "seed-0 one where several were tried), and speedup_tokens(B) = tokens random needs to reach that loss / B. "
          "\">x\" is a lower bound: the grown loss is below random's at the largest budget, and x extends random's "
          "last segment in log-tokens when random's curve flattened with every budget measured (one that keeps "
          "flattening needs at least that many tokens), else the largest budget; \"<x\" an upper bound. "
          "speedup_flops uses the grown shape's FLOPs per token on both sides; incl. small also charges the small "
          "model's pretraining. Per seed: each grown seed's loss placed on the seed-mean random curve.")
HEAD_START = ("Head start: the tokens random needs, on the same frontier, to reach the loss the grown model starts at "
              "(its validation loss before its first step); 1 + head start / B is the speed-up of a grown model that "
              "keeps its head start and gains nothing more; kept = (tokens random needs to reach the grown final "
              "loss - B) / head start: 1 keeps the head start, below 1 loses part of it, above 1 gains on top of it.")
LADDERS = {"cpu-ladder": "cpu-ladder.yaml"}  # presets that are ladders, and their arms (package data)
REPORT, RESULTS = "ladder.md", "ladder.json"


def ladder_sweep(preset_name: str) -> Sweep:
    """The packaged ladder definition of a ladder preset."""
    if preset_name not in LADDERS:
        raise HyperCloneError(f"preset {preset_name!r} is not a budget ladder; ladders: {', '.join(LADDERS)}")
    with resources.as_file(resources.files("hyperclone.experiments.ladders") / LADDERS[preset_name]) as path:
        return load_sweep(path)


def _finished(out: Path, arm: SweepArm, seed: int) -> bool:
    return ExperimentDir.finished(ExperimentDir(out).arm_run(arm.name, seed))


def final_losses(sweep: Sweep, out: Path) -> dict[str, dict[str, Any]]:
    """Per arm: init, budget, lr and the final validation loss of every finished seed (pending seeds listed)."""
    arms = {}
    for arm in sweep.arms:
        done = {s: curve(ExperimentDir(out).arm_run(arm.name, s), 0.0)[-1]["val_loss"] for s in arm.seeds
                if _finished(out, arm, s)}
        arms[arm.name] = {"init": arm.init, "tokens": arm.tokens, "lr": arm.lr, "schedule": arm.schedule,
                          "lr_scale": arm.lr_scale,
                          "seeds": list(arm.seeds),
                          "final_val_loss": done, "pending": [s for s in arm.seeds if s not in done]}
    return arms


def start_loss(out: Path, name: str, seeds: Any) -> float | None:
    """The validation loss an arm starts at (logged before its first step), mean over the seeds that logged it."""
    curves = [curve(ExperimentDir(out).arm_run(name, seed), 0.0) for seed in seeds]
    starts = [c[0]["val_loss"] for c in curves if c and c[0]["tokens"] == 0]
    return statistics.fmean(starts) if starts else None


def analyse(preset: Preset, sweep: Sweep, out: Path) -> dict[str, Any]:
    """ladder.json: per budget, random (LR-searched where it was) against grown, and the budget-matched speed-ups.
    Long: one record per budget with its documented fields, then the costs."""
    folder = ExperimentDir(out)
    arms = final_losses(sweep, out)
    grown_arm = next(a for a in sweep.arms if a.init == "grown")
    big = model_stats(folder.model(reference_model(grown_arm, preset)), preset.seq_len)
    small = model_stats(folder.small_init, preset.seq_len)
    small_run = curve(folder.run("small"), small["flops_per_token"])
    small_flops = small_run[-1]["flops"] if small_run else None
    budgets = sorted({a["tokens"] for a in arms.values()})
    chosen, frontier = curve_math.random_frontier(arms)
    rows = []
    for budget in budgets:
        grown = [n for n, a in arms.items() if a["init"] == "grown" and a["tokens"] == budget]
        g = arms[grown[0]] if grown else None
        r = arms[chosen[budget]] if chosen[budget] else None
        row: dict[str, Any] = {
            "budget_tokens": budget, "tokens_per_parameter": budget / big["params"],
            "random_arm": chosen[budget], "random_lr": r["lr"] if r else None,
            "random_lrs_tried": sorted(a["lr"] for a in arms.values() if a["init"] == "random"
                                       and a["tokens"] == budget),
            "random_final": r["final_val_loss"] if r else {}, "grown_arm": grown[0] if grown else None,
            "grown_final": g["final_val_loss"] if g else {},
            "pending": sorted(f"{n}-s{s}" for n, a in arms.items() if a["tokens"] == budget for s in a["pending"]),
        }
        rm, gm = curve_math.mean(row["random_final"]), curve_math.mean(row["grown_final"])
        row["random_mean"], row["grown_mean"] = rm, gm
        row["loss_gap"] = None if rm is None or gm is None else (rm - gm) / rm
        if gm is not None and frontier:
            needed, bound = curve_math.tokens_to_reach(gm, frontier)
            row["random_tokens_to_grown_loss"], row["bound"] = needed, bound
            row["speedup_tokens"] = needed / budget
            row["speedup_tokens_per_seed"] = curve_math.spread(
                [curve_math.tokens_to_reach(v, frontier)[0] / budget for v in row["grown_final"].values()])
            grown_flops = budget * big["flops_per_token"]
            row["speedup_flops"] = needed * big["flops_per_token"] / grown_flops
            row["speedup_flops_incl_small"] = (None if small_flops is None else
                                               needed * big["flops_per_token"] / (grown_flops + small_flops))
            row.update(curve_math.head_start(start_loss(out, grown[0], g["seeds"]), needed, bound, budget, frontier))
        rows.append(row)
    return {"preset": preset.as_dict(), "models": {"small": small, "grown": big},
            "small_cost": {"tokens": small_run[-1]["tokens"] if small_run else None, "flops": small_flops},
            "corpus": json.loads((folder.corpus_info).read_text()), "frontier": frontier,
            "budgets": rows, "definitions": {"method": METHOD, "head_start": HEAD_START, "flops": report.FLOPS_FORMULA}}


def speed_text(row: dict[str, Any], key: str = "speedup_tokens") -> str:
    """"pending", or a speed-up with its bound (">1.17": random's frontier never reached the grown loss)."""
    value = row.get(key)
    if value is None:
        return "pending"
    return f"{row.get('bound', '')}{value:.2f}" if key == "speedup_tokens" else f"{value:.2f}"


def losses_text(final: dict[Any, float]) -> str:
    if not final:
        return "pending"
    values = list(final.values())
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} ({len(values)})"


def head_start_cells(row: dict[str, Any]) -> str:
    """The head start, the speed-up keeping it would give, and how much was kept, as three table cells."""
    if row.get("head_start_tokens") is None:
        return "— | — | —"
    bound = row["head_start_bound"]
    kept = "—" if row["kept"] is None else f"{row['kept_bound']}{row['kept']:.2f}"
    return f"{bound}{row['head_start_tokens'] / 1e6:.2f}M | {bound}{row['speedup_if_kept']:.2f} | {kept}"


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| budget (tokens) | tokens / parameter | random: LR (tried) | random final loss (seeds) | grown final "
             "loss (seeds) | gap | speedup_tokens (budget-matched) | per seed | speedup_flops | incl. small | "
             "head start | if kept | kept | pending runs |", "|---:|---:|---|" + "---:|" * 10 + "---|"]
    for row in results["budgets"]:
        tried = "/".join(f"{lr:g}" for lr in row["random_lrs_tried"])
        gap = "—" if row["loss_gap"] is None else f"{row['loss_gap']:.1%}"
        per = row.get("speedup_tokens_per_seed")
        per_text = "—" if not per or per["mean"] is None else f"{per['mean']:.2f} ± {per['std']:.2f}"
        lines.append(f"| {row['budget_tokens']:,} | {row['tokens_per_parameter']:.1f} | "
                     f"{'—' if row['random_lr'] is None else format(row['random_lr'], 'g')} ({tried}) | "
                     f"{losses_text(row['random_final'])} | {losses_text(row['grown_final'])} | {gap} | "
                     f"{speed_text(row)} | {per_text} | {speed_text(row, 'speedup_flops')} | "
                     f"{speed_text(row, 'speedup_flops_incl_small')} | "
                     f"{head_start_cells(row)} | {', '.join(row['pending']) or '—'} |")
    return lines


def plot(results: dict[str, Any], out: Path) -> Path | None:
    plt = report.pyplot()

    points = [(r["tokens_per_parameter"], r["speedup_tokens"], r.get("bound", "")) for r in results["budgets"]
              if r.get("speedup_tokens") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="C1", label="grown (default recipe)")
    kept = [(r["tokens_per_parameter"], r["speedup_if_kept"]) for r in results["budgets"] if r.get("speedup_if_kept")]
    if kept:
        ax.plot([p[0] for p in kept], [p[1] for p in kept], ":", color="C0",
                label="1 + head start / B (the head start kept, nothing more)")
    for x, y, bound in points:
        if bound:
            ax.annotate(bound, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="random init")
    ax.set_xscale("log")
    ax.set_xlabel("tokens per parameter of the grown model")
    ax.set_ylabel("speedup_tokens (budget-matched)")
    ax.set_title(f"Does the saving last? preset {results['preset']['name']}")
    ax.legend()
    path = out / "ladder_speedup.png"
    report.save_figure(fig, path, dpi=120)
    return path


def write(results: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    write_results(out / RESULTS, results)
    png = plot(results, out)
    p, big = results["preset"], results["models"]["grown"]
    lines = [f"# Does the saving last? Budget ladder, preset `{p['name']}`", "",
             f"Random init against the grown model ({big['hidden']} wide, {big['layers']} layers, "
             f"{big['params']:,} parameters; grown from a {results['models']['small']['params']:,}-parameter model "
             f"pretrained for {results['small_cost']['tokens'] or 0:,} tokens) at every budget, each a full "
             f"{p['schedule']} schedule of its own, {p['batch_tokens']:,} tokens per step, on "
             f"{results['corpus']['description']} ({results['corpus']['bytes'] / 1e6:.1f} MB).", "",
             METHOD, "", HEAD_START, "", *table(results), ""]
    if png is not None:
        lines += [f"![speed-up against budget]({png.name})", ""]
    for key in ("machine", "date", "command"):
        if key in results:
            lines.append(f"{key}: {results[key]}")
    return write_page(out / REPORT, lines)
