"""Recipes searched at a budget ladder's budgets ("make it last"): a sweep file whose preset is a ladder preset,
run in the ladder's own folder, is reported against the ladder's random frontier instead of one random curve.

Every grown arm's final loss is placed on random init's final-loss-versus-budget curve exactly as the ladder
places its default recipe (curve_math.tokens_to_reach: budget-matched, not read off one WSD run's curve, whose loss
falls mostly in its final decay). `incl. small` charges each arm the pretraining of the small model it grew
from (an arm's small_tokens or small_decay has a small model of its own) and, for a distilled arm, its teacher's
forward passes. Writes search.md and search.json (or the sweep's `report:` stem); runs that have not finished are
listed as pending, so the report can be written while the search trains. The report's Diagnosis section
(hyperclone.experiments.diagnosis) reads learning speed at equal loss and the copy divergence off the runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyperclone.experiments import curve_math, diagnosis, ladder, report
from hyperclone.experiments.folder import ExperimentDir
from hyperclone.experiments.output import write_page, write_results
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.setup import curve, model_stats, small_arm
from hyperclone.experiments.sweep_models import reference_model
from hyperclone.experiments.sweep_report import describe
from hyperclone.experiments.sweep_spec import Sweep, SweepArm

REPORT = "search"  # default file stem: search.md, search.json, search_*.png (a sweep's `report:` names another)
METHOD = ("Each grown arm's final loss (mean over its finished seeds) is placed on random init's frontier: its "
          "final loss at every budget the ladder or this sweep trained, each a full schedule, at the budget's best "
          "seed-0 learning rate: "
          "speedup_tokens = tokens random needs to reach it / the arm's budget. " + ladder.METHOD.split(
              "speedup_tokens(B) = tokens random needs to reach that loss / B. ")[1])


def _small_flops(preset: Preset, arm: SweepArm, flops_per_token: float) -> float:
    """The small model's pretraining FLOPs, from the tokens its schedule trains on (its run's last logged tokens),
    so a report charges it also where the small model's run folder is gone."""
    return small_arm(preset, *arm.small_model).trained_tokens(preset) * flops_per_token


def _teacher_tokens(out: Path, arm: SweepArm, seeds: Any) -> float:
    """Mean tokens a distilled arm's teacher ran forward on (train_summary.json), 0 for other arms."""
    found = []
    for seed in seeds:
        path = ExperimentDir(out).arm_run(arm.name, seed) / "train_summary.json"
        teacher = json.loads(path.read_text()).get("teacher") if path.exists() else None
        found.append(teacher["forward_tokens"] if teacher else 0)
    return sum(found) / len(found) if found else 0.0


def analyse(preset: Preset, sweep: Sweep, out: Path) -> dict[str, Any]:
    """search.json: every grown arm of `sweep` against the random frontier of the ladder's and the sweep's random
    arms (the best learning rate per budget, curve_math.pick_random), and the best arm per budget
    (lowest mean final loss among arms whose seeds have all finished, `provisional` while any has one seed)."""
    folder = ExperimentDir(out)
    arms = ladder.final_losses(sweep, out)
    # random init: the ladder's arms and the sweep's own (more learning rates, other budgets), best LR per budget
    randoms = {**ladder.final_losses(ladder.ladder_sweep(preset.name), out),
               **{name: a for name, a in arms.items() if a["init"] == "random"}}
    chosen, frontier = curve_math.random_frontier(randoms)
    left_out = [(b, curve_math.mean(randoms[n]["final_val_loss"])) for b, n in chosen.items()
                if n and b not in dict(frontier)]  # no lower than a smaller budget (curve_math.envelope)
    small = model_stats(folder.small_init, preset.seq_len)
    rows: list[dict[str, Any]] = []
    for arm in sweep.arms:
        if arm.init != "random" and not any(r["arm"] == arm.name for r in rows):
            rows.append(_arm_row(preset, out, arm, arms[arm.name], randoms, chosen, frontier, small))
    curves = {name: curve_math.mean_curve([curve(folder.arm_run(name, seed), 0.0) for seed in a["final_val_loss"]])
              for name, a in arms.items() if a["final_val_loss"]}
    curves.update({chosen[b]: curve_math.mean_curve([curve(folder.arm_run(chosen[b], seed), 0.0)
                                                 for seed in randoms[chosen[b]]["final_val_loss"]])
                   for b in {r["budget_tokens"] for r in rows} if chosen.get(b)})
    return {"report": sweep.report, "preset": preset.as_dict(), "frontier": frontier, "frontier_left_out": left_out,
            "arms": rows, "best": best(rows),
            "diagnosis": diagnose(out, rows, chosen, {name: {**a, "schedule": a["schedule"] or preset.schedule}
                                                      for name, a in {**randoms, **arms}.items()}),
            "curves": {name: [{"tokens": p["tokens"], "val_loss": p["val_loss"]} for p in c]
                       for name, c in curves.items()}, "random_arms": {str(b): n for b, n in chosen.items() if n},
            "random_seeds": {str(b): sorted(randoms[n]["final_val_loss"]) for b, n in chosen.items() if n},
            **_random_arms_fields(preset, sweep, folder, arms),
            "corpus": json.loads((folder.corpus_info).read_text()),
            "definitions": {"method": METHOD, "head_start": ladder.HEAD_START, "flops": report.FLOPS_FORMULA}}


def _random_arms_fields(preset: Preset, sweep: Sweep, folder: ExperimentDir,
                        arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's own finished random arms: final losses per seed, what each trained (a reader groups them by
    budget and rule, not by name), and their final training loss per seed."""
    finished = {name: a for name, a in arms.items() if a["init"] == "random" and a["final_val_loss"]}
    return {"random_finals": {name: a["final_val_loss"] for name, a in finished.items()},
            "random_recipes": {arm.name: {"budget_tokens": arm.tokens, "lr": arm.lr, "lr_scale": arm.lr_scale,
                                          "schedule": arm.schedule or preset.schedule}
                               for arm in sweep.arms if arm.name in finished},
            "random_train": {name: {s: diagnosis.final_train_loss(folder.arm_run(name, s))
                                    for s in a["final_val_loss"]}
                             for name, a in finished.items()}}


def _arm_row(preset: Preset, out: Path, arm: SweepArm, a: dict[str, Any], randoms: dict[str, dict[str, Any]],
             chosen: dict[int, str | None], frontier: list[Any], small: dict[str, Any]) -> dict[str, Any]:
    """One grown arm's row of search.json: its recipe, final losses, the random arm of its budget, and once it
    has a final loss its place on random's frontier (speed-ups, head start, the part kept)."""
    folder = ExperimentDir(out)
    big = model_stats(folder.model(reference_model(arm, preset)), preset.seq_len)
    gm = curve_math.mean(a["final_val_loss"])
    random_arm = chosen.get(arm.tokens)
    rm = curve_math.mean(randoms[random_arm]["final_val_loss"]) if random_arm else None
    row: dict[str, Any] = {
        "arm": arm.name, "recipe": describe(arm, preset), "lr": arm.lr, "budget_tokens": arm.tokens,
        "tokens_per_parameter": arm.tokens / big["params"], "small_tokens": arm.small_tokens or preset.small_tokens,
        "small_decay": arm.small_decay, "schedule": arm.schedule or preset.schedule, "lr_scale": arm.lr_scale,
        "final": a["final_val_loss"], "mean": gm, "pending": a["pending"], "random_arm": random_arm,
        "final_train": {s: diagnosis.final_train_loss(folder.arm_run(arm.name, s)) for s in a["final_val_loss"]},
        "random_mean": rm, "loss_gap": None if gm is None or rm is None else (rm - gm) / rm}
    if gm is None or not frontier:
        return row
    needed, bound = curve_math.tokens_to_reach(gm, frontier)
    small_flops = _small_flops(preset, arm, small["flops_per_token"])
    # a distilled arm also pays its teacher's forward passes (a third of a training step's FLOPs per token)
    grown_flops = arm.tokens * big["flops_per_token"] + _teacher_tokens(out, arm, a["final_val_loss"]) * (
        small["flops_per_token"] / 3)
    row.update({"bound": bound, "speedup_tokens": needed / arm.tokens,
                "speedup_tokens_per_seed": curve_math.spread(
                    [curve_math.tokens_to_reach(v, frontier)[0] / arm.tokens for v in a["final_val_loss"].values()]),
                "speedup_flops_incl_small": needed * big["flops_per_token"] / (grown_flops + small_flops)})
    row.update(curve_math.head_start(ladder.start_loss(out, arm.name, a["seeds"]), needed, bound, arm.tokens,
                                     frontier))
    return row


def diagnose(out: Path, rows: list[dict[str, Any]], chosen: dict[int, str | None],
             finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Learning speed at equal loss per budget (random's arm of that budget and every grown arm, on the training
    and the validation loss, seed means) and the copy divergence of every grown arm that logged it (seed 0)."""
    folder = ExperimentDir(out)
    def dirs(name: str) -> list[Path]:
        return [folder.arm_run(name, seed) for seed in sorted(finals.get(name, {}).get("final_val_loss", {}))]

    speed = {}
    for budget in sorted({r["budget_tokens"] for r in rows}):
        random_arm = chosen.get(budget)
        # random's frontier arm first, then random init's other runs at this budget (other schedules and learning
        # rates: a WSD arm's peer is random on WSD), then the grown arms
        randoms = [n for n, a in finals.items() if a["init"] == "random" and a["tokens"] == budget
                   and a["final_val_loss"] and n != random_arm]
        names = ([random_arm] if random_arm else []) + sorted(randoms) + [
            r["arm"] for r in rows if r["budget_tokens"] == budget and r["final"]]
        speed[str(budget)] = {"random_arm": random_arm, "random_arms": [random_arm, *sorted(randoms)], "speed": {
            kind: {n: diagnosis.learning_speed(dirs(n), kind) for n in names} for kind in ("train", "val")}}
    leads = {}
    for r in rows:  # against random init on the same recipe (budget, schedule, peak LR, per-group LR), seed by seed
        peer = next((n for n in speed[str(r["budget_tokens"])]["random_arms"] if n and finals[n]["schedule"] ==
                     r["schedule"] and finals[n]["lr"] == r["lr"] and finals[n]["lr_scale"] == r["lr_scale"]), None)
        pairs = [(folder.arm_run(r['arm'], s), folder.arm_run(peer, s)) for s in r["final"]
                 if peer and s in finals[peer]["final_val_loss"]]
        if pairs:
            leads[r["arm"]] = {"random_arm": peer, "seeds": len(pairs), "lead": diagnosis.seed_mean_lead(pairs)}
    # seed 0's copy divergence, once that run has finished (a run still training is not reported half-way)
    traces = {r["arm"]: diagnosis.divergence_trace(folder.run(f"{r['arm']}-s0")) for r in rows if 0 in r["final"]}
    traces = {name: t for name, t in traces.items() if t}
    return {"learning_speed": speed, "lead": leads, "divergence": traces,
            "divergence_summary": {name: diagnosis.divergence_summary(t) for name, t in traces.items()},
            "definitions": {"learning_speed": diagnosis.SPEED_METHOD, "drop": curve_math.DROP}}


def diagnosis_lines(results: dict[str, Any], out: Path) -> list[str]:
    """The report's diagnosis section: learning-speed tables and plots per budget, the copy-divergence table."""
    diag = results.get("diagnosis")
    if not diag:
        return []
    lines = ["## Diagnosis", "", diag["definitions"]["learning_speed"], ""]
    for budget, entry in diag["learning_speed"].items():
        for kind in ("train", "val"):
            table_lines = diagnosis.speed_table(entry["speed"][kind], entry["random_arm"])
            if table_lines:
                lines += [f"{int(budget) / 1e6:g}M-token runs, {kind} loss (seed means):", "", *table_lines, ""]
        png = diagnosis.plot_speed(entry["speed"], entry["random_arm"], int(budget), out, results.get("report", REPORT))
        if png:
            lines += [f"![learning speed at equal loss]({png.name})", ""]
    if diag.get("lead"):
        fracs = list(next(iter(diag["lead"].values()))["lead"])
        lines += ["Lead over random init: the tokens random init (same budget, schedule, peak LR and seed) needs "
                  "to reach the grown arm's smoothed training loss at each point of the grown run, minus the "
                  "tokens the grown arm has trained; at step 0 it is the head start (table above). A lead that "
                  "stays flat after the re-warmup is a head start kept; one that shrinks is a grown model learning "
                  "slower.", "",
                  "| arm | random peer (seeds) | " + " | ".join(f"lead at {float(f):.0%} of the run"
                                                               for f in fracs) + " |",
                  "|---|---|" + "---:|" * len(fracs)]
        for name, entry in diag["lead"].items():
            cells = ["—" if v is None else f"{v / 1e6:+.2f}M" for v in entry["lead"].values()]
            lines.append(f"| {name} | {entry['random_arm']} ({entry['seeds']}) | " + " | ".join(cells) + " |")
        lines.append("")
    if diag["divergence_summary"]:
        lines += ["Copy divergence (seed 0): per-token cosine between the copies of the hidden units (mean over the "
                  "layers' hidden states, and the lowest layer), and the weights' copied rows (mean over tensor "
                  "groups), at the first and the last evaluation.", "",
                  "| arm | hidden cos, start | hidden cos, end (lowest layer) | weight cos, start | weight cos, end |",
                  "|---|---:|---:|---:|---:|"]
        for name, summ in diag["divergence_summary"].items():
            a, b = summ["start"], summ["end"]
            lines.append(f"| {name} | {_num(a['activation_mean'])} | {_num(b['activation_mean'])} "
                         f"({_num(b['activation_min'])}) | {_num(a['weights_mean'])} | {_num(b['weights_mean'])} |")
        png = diagnosis.plot_divergence(diag["divergence"], out, results.get("report", REPORT))
        lines += ["", f"![copy divergence]({png.name})", ""] if png else [""]
    return lines


def _train_text(final_train: dict[Any, float | None]) -> str:
    values = {s: v for s, v in final_train.items() if v is not None}
    return ladder.losses_text(values) if values else "—"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per budget: the arm with the lowest mean final loss; provisional unless every seed of every arm of that
    budget has finished and it has at least two."""
    found = {}
    for budget in sorted({r["budget_tokens"] for r in rows}):
        same = [r for r in rows if r["budget_tokens"] == budget and r["mean"] is not None]
        if same:
            top = min(same, key=lambda r: r["mean"])
            settled = all(not r["pending"] for r in rows if r["budget_tokens"] == budget) and len(top["final"]) >= 2
            found[str(budget)] = {"arm": top["arm"], "mean": top["mean"], "provisional": not settled}
    return found


def frontier_text(results: dict[str, Any]) -> str:
    """"0.4M: 3.857 (2 seeds), ...": random's frontier with the seeds behind each point (its chosen arm's)."""
    points = []
    for budget, loss in results["frontier"]:
        n = len(results.get("random_seeds", {}).get(str(budget), []))
        points.append(f"{budget / 1e6:g}M: {loss:.3f}" + (f" ({n} seed{'s' if n != 1 else ''})" if n else ""))
    left_out = [f"{budget / 1e6:g}M: {loss:.3f}" for budget, loss in results.get("frontier_left_out", [])]
    return ", ".join(points) + (f" (left out, ending no lower than a smaller budget, so not searched enough yet: "
                                f"{', '.join(left_out)})" if left_out else "")


def table(results: dict[str, Any]) -> list[str]:
    train = any(r.get("final_train") for r in results["arms"])  # reports since issue 25 have the training loss
    lines = ["| arm | recipe | peak LR | tokens / parameter | final loss (seeds) | gap to random | speedup_tokens "
             "(budget-matched) | per seed | incl. small | head start | if kept | kept |"
             + (" train loss, last 10 logs (seeds) |" if train else "") + " pending seeds |",
             "|---|---|" + "---:|" * (11 if train else 10) + "---|"]
    for r in results["arms"]:
        gap = "—" if r["loss_gap"] is None else f"{r['loss_gap']:.1%}"
        per = r.get("speedup_tokens_per_seed")
        per_text = "—" if not per or per["mean"] is None else f"{per['mean']:.2f} ± {per['std']:.2f}"
        small = r.get("speedup_flops_incl_small")
        lines.append(f"| {r['arm']} | {r['recipe']} | {r['lr']:g} | {r['tokens_per_parameter']:.1f} | "
                     f"{ladder.losses_text(r['final'])} | {gap} | {ladder.speed_text(r)} | {per_text} | "
                     f"{'—' if small is None else format(small, '.2f')} | {ladder.head_start_cells(r)} | "
                     + (f"{_train_text(r.get('final_train') or {})} | " if train else "")
                     + f"{', '.join(f's{s}' for s in r['pending']) or '—'} |")
    return lines


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """search_val_loss_<budget>.png: the validation loss of every finished arm of a budget (seed mean) against
    tokens, random init's arm of that budget dashed."""
    plt = report.pyplot()

    paths = []
    for budget in sorted({r["budget_tokens"] for r in results["arms"]}):
        names = [r["arm"] for r in results["arms"] if r["budget_tokens"] == budget and r["arm"] in results["curves"]]
        random_arm = results.get("random_arms", {}).get(str(budget))
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for name in ([random_arm] if random_arm in results["curves"] else []) + names:
            c = results["curves"][name]
            ax.plot([p["tokens"] for p in c], [p["val_loss"] for p in c], "--" if name == random_arm else "-",
                    lw=1.4, label=name)
        lo = min(p["val_loss"] for name in names for p in results["curves"][name])
        ax.set_ylim(lo - 0.05, lo + 1.5)
        ax.set_xlabel("tokens (big model)")
        ax.set_ylabel("validation loss")
        ax.set_title(f"recipes at {budget / 1e6:g}M tokens (seed mean); dashed = random init")
        ax.legend(fontsize=7)
        path = out / f"{results.get('report', REPORT)}_val_loss_{budget / 1e6:g}m.png"
        report.save_figure(fig, path)
        paths.append(path)
    return paths


def write(results: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    stem = results.get("report", REPORT)
    write_results(out / f"{stem}.json", results)
    pngs = plot(results, out)
    frontier = frontier_text(results)
    lines = [f"# Recipes at the budget ladder's budgets, preset `{results['preset']['name']}`", "",
             f"On {results['corpus']['description']} ({results['corpus']['bytes'] / 1e6:.1f} MB). Random init's "
             f"frontier (budget: final loss): {frontier}.", "", METHOD, "", ladder.HEAD_START, "", *table(results), ""]
    if results.get("random_finals"):
        lines += ["Random init's arms in this sweep (final loss, seeds): " + ", ".join(
            f"{name} {ladder.losses_text(finals)}" for name, finals in results["random_finals"].items()) + ".", ""]
    if results.get("random_train"):
        lines += ["Their training loss over the last 10 logs: " + ", ".join(
            f"{name} {_train_text(t)}" for name, t in results["random_train"].items()) + ".", ""]
    for budget, top in results["best"].items():
        state = "provisional (seeds pending or only one)" if top["provisional"] else "settled"
        lines.append(f"Lowest final loss at {int(budget):,} tokens: {top['arm']} ({top['mean']:.3f}; {state}).")
    lines.append("")
    lines += [f"![validation loss against tokens]({png.name})" for png in pngs] + ([""] if pngs else [])
    lines += diagnosis_lines(results, out)
    for key in ("machine", "date", "command"):
        if key in results:
            lines.append(f"{key}: {results[key]}")
    return write_page(out / f"{stem}.md", lines)

