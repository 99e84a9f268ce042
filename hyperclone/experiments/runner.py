"""`hyperclone experiment`: pretrain a small model, grow it, and race it against random init.

Steps, all local (nothing is downloaded):

1. corpus    the running interpreter's standard library sources (or --data), capped at the preset's size,
             written to DIR/corpus/corpus.jsonl in a fixed shuffled order
2. tokenizer byte-level BPE trained with `tokenizers` on that corpus, saved as a PreTrainedTokenizerFast
3. small     a llama-style model from scratch, trained with `hyperclone.train.loop`
4. grow      `hyperclone.grow.engine.grow` widens it (function-preserving)
5. arms      grown vs random init of the identical config, same recipe and data order, for every seed;
             the grown model also at fractions of the budget, each with its own full schedule
6. report    DIR/results.json, DIR/report.md and PNG plots (hyperclone.experiments.report)

The preset is a sweep of its arms (grown and random init at the full budget for every seed, the grown model at
fractions of it): hyperclone.experiments.sweep trains them, as it trains every study's arms
(hyperclone.experiments.studies: the registry, and run_experiment), and this module says which arms and what the
preset's report reads from their runs. Each training run lives in DIR/runs/<arm>-s<seed>
and is resumed rather than redone when the experiment is run again with the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyperclone.common.files import read_provenance
from hyperclone.experiments import curve_math, report
from hyperclone.experiments.folder import ExperimentDir
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.setup import Arm, curve, model_stats, small_arm
from hyperclone.experiments.sweep_models import model_for
from hyperclone.experiments.sweep_spec import Sweep, SweepArm
from hyperclone.train.metrics import SUMMARY_FILE

# The preset experiment measures HyperCloning as published (identical copies); recipes are compared with
# --sweep, where arms without a mode get hyperclone grow's default. Said in results.json and report.md.
GROW_MODE = "symmetric"
FRACTION_NAMES = {0.5: "half", 0.25: "quarter"}


def preset_sweep(preset: Preset) -> Sweep:
    """The preset's arms as a sweep: grown and random init of the same shape at the preset's budget and learning
    rate for every seed, then the grown model at each budget fraction (its own full schedule) for the first
    budget_seeds seeds."""
    grow = {"mode": GROW_MODE}
    seeds = tuple(preset.seeds)
    arms = [SweepArm("grown", "grown", preset.lr, seeds, grow=grow), SweepArm("random", "random", preset.lr, seeds)]
    for frac in preset.budget_fractions:
        arms.append(SweepArm(f"grown-{FRACTION_NAMES.get(frac, f'{frac:g}x')}", "grown", preset.lr,
                             seeds[: preset.budget_seeds], tokens=int(preset.tokens * frac), grow=grow))
    return Sweep(preset.name, tuple(arms))


def plan_arms(preset: Preset) -> list[Arm]:
    """Every run of the preset experiment, the small model's first, in the order they are reported."""
    arms = [small_arm(preset)]
    sweep_arms = preset_sweep(preset).arms
    for seed in preset.seeds:
        arms += [Arm(a.name, a.init, seed, preset.tokens, a.lr) for a in sweep_arms[:2]]
    for a in sweep_arms[2:]:
        arms += [Arm(a.name, a.init, seed, a.tokens, a.lr) for seed in a.seeds]
    return arms


def collect_results(preset: Preset, sweep: Sweep, out: Path) -> dict[str, Any]:
    """results.json of a finished preset experiment (curves of every arm, the headline speed-ups, costs).
    Long: one dict, read top to bottom, whose keys are the file's documented fields."""
    folder = ExperimentDir(out)
    grown_model = folder.model(model_for(sweep.arms[0], preset.seeds[0], preset))
    small_stats = model_stats(folder.small_init, preset.seq_len)
    big_stats = model_stats(grown_model, preset.seq_len)
    grow_s = read_provenance(grown_model)["grow_s"]  # recorded by grow itself, so reruns keep it
    summary = json.loads((folder.run("small") / SUMMARY_FILE).read_text())
    results_arms: dict[str, Any] = {}
    curves: dict[str, dict[int, curve_math.Curve]] = {}
    for arm in plan_arms(preset):
        stats = small_stats if arm.name == "small" else big_stats
        c = curve(folder.run(arm.run_name), stats["flops_per_token"])
        curves.setdefault(arm.name, {})[arm.seed] = c
        model = "small" if arm.name == "small" else arm.model
        entry = results_arms.setdefault(arm.name, {"model": model, "from_small": arm.model == "grown",
                                                   "budget_tokens": arm.tokens, "lr": arm.lr, "seeds": {}})
        entry["seeds"][str(arm.seed)] = {"final_val_loss": c[-1]["val_loss"], "wall_s": c[-1]["elapsed_s"],
                                         "curve": c}
    small_curve = curves["small"][0]
    small_cost = {"tokens": small_curve[-1]["tokens"], "flops": small_curve[-1]["flops"],
                  "elapsed_s": small_curve[-1]["elapsed_s"] + grow_s}
    headline = curve_math.summarize({k: v for k, v in curves.items() if k != "small"}, small_curve,
                                    small_elapsed=small_cost["elapsed_s"])
    results = {
        "preset": preset.as_dict(),
        **{k: headline[k] for k in ("speedup_tokens", "speedup_flops", "speedup_tokens_incl_small",
                                    "speedup_wall_clock_incl_small", "target_val_loss", "grown_tokens_to_target",
                                    "reached_at_start")},
        "seed_spread": headline["seed_spread"],
        "per_seed": headline["per_seed"],
        "definitions": {
            "speedup_tokens": "random's tokens / tokens the grown model needs to reach random's final val loss "
                              "(seed-mean curves, linear interpolation); null if never reached",
            "speedup_tokens_incl_small": "as speedup_tokens, with the small model's pretraining tokens added to "
                                         "the grown model's",
            "speedup_flops": "random's training FLOPs / (grown model's FLOPs to the target + small model's "
                             "pretraining FLOPs)",
            "speedup_wall_clock_incl_small": "as speedup_flops, in wall-clock seconds (grow time included)",
            "flops": report.FLOPS_FORMULA,
        },
        "small_tokens": small_cost["tokens"],
        "random_tokens": curves["random"][preset.seeds[0]][-1]["tokens"],
        "small_cost": small_cost,
        "grow_s": grow_s,
        "grow_mode": GROW_MODE,
        "growth": "HyperCloning as published (hyperclone grow --mode symmetric: identical copies)",
        "models": {"small": small_stats, "grown": big_stats},
        "corpus": {**json.loads(folder.corpus_info.read_text()), "tokens": summary["data"]["tokens"],
                   "val_tokens": summary["data"]["val_tokens"], "eval_tokens": summary["data"]["eval_tokens"]},
        "arms": results_arms,
    }
    return results
