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

Each training run lives in DIR/runs/<arm>-s<seed> and is resumed rather than redone when the
experiment is run again with the same settings.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hyperclone.common.files import read_provenance
from hyperclone.experiments import curve_math, report
from hyperclone.experiments.folder import SMALL_INIT, ExperimentDir
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.setup import (
    Arm,
    add_wall_clock,
    arm_train_config,
    check_settings,
    curve,
    init_model,
    machine,
    model_stats,
    prepare,
    small_arm,
)
from hyperclone.train.loop import train
from hyperclone.train.metrics import SUMMARY_FILE

# The preset experiment measures HyperCloning as published (identical copies); recipes are compared with
# --sweep, where arms without a mode get hyperclone grow's default. Said in results.json and report.md.
GROW_MODE = "symmetric"


def plan_arms(preset: Preset) -> list[Arm]:
    arms = [small_arm(preset)]
    for seed in preset.seeds:
        arms += [Arm("grown", "grown", seed, preset.tokens, preset.lr), Arm("random", "random", seed, preset.tokens,
                                                                            preset.lr)]
    names = {0.5: "half", 0.25: "quarter"}
    for frac in preset.budget_fractions:
        for seed in preset.seeds[: preset.budget_seeds]:
            arms.append(Arm(f"grown-{names.get(frac, f'{frac:g}x')}", "grown", seed, int(preset.tokens * frac),
                            preset.lr))
    return arms


def collect_results(preset: Preset, out: Path, arms: list[Arm], grow_s: float,
                    corpus_info: dict[str, Any]) -> dict[str, Any]:
    """results.json of a finished preset experiment (curves of every arm, the headline speed-ups, costs).
    Long: one dict, read top to bottom, whose keys are the file's documented fields."""
    folder = ExperimentDir(out)
    models = folder.models
    small_stats = model_stats(folder.small_init, preset.seq_len)
    big_stats = model_stats(models / "grown", preset.seq_len)
    summary = json.loads((folder.run("small") / SUMMARY_FILE).read_text())
    results_arms: dict[str, Any] = {}
    curves: dict[str, dict[int, curve_math.Curve]] = {}
    for arm in arms:
        stats = small_stats if arm.name == "small" else big_stats
        c = curve(folder.run(arm.run_name), stats["flops_per_token"])
        curves.setdefault(arm.name, {})[arm.seed] = c
        entry = results_arms.setdefault(arm.name, {"model": arm.model if arm.model != SMALL_INIT else "small",
                                                   "from_small": arm.model == "grown", "budget_tokens": arm.tokens,
                                                   "lr": arm.lr, "seeds": {}})
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
        "corpus": {**corpus_info, "tokens": summary["data"]["tokens"], "val_tokens": summary["data"]["val_tokens"],
                   "eval_tokens": summary["data"]["eval_tokens"]},
        "arms": results_arms,
    }
    return results


def run_experiment(preset: Preset, out: str | Path, data: list[Path] | None = None, progress: bool = True,
                   command: str | None = None) -> dict[str, Any]:
    """Run (or finish) the whole experiment in `out`; returns the results written to out/results.json."""
    from transformers import AutoConfig

    from hyperclone.grow.engine import grow

    out = Path(out)
    t0 = time.perf_counter()
    data = [Path(p).resolve() for p in data] if data else None
    check_settings(out, {"preset": preset.as_dict(), "data": [str(p) for p in data] if data else None})

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    prepared = prepare(preset, out, data, say)
    corpus, corpus_info, tokenizer = prepared.corpus, prepared.corpus_info, prepared.tokenizer
    models = ExperimentDir(out).models
    arms = plan_arms(preset)
    runs: dict[str, Any] = {}
    for i, arm in enumerate(arms, 1):
        if arm.model == "grown" and not (models / "grown" / "config.json").exists():
            say(f"growing the small model {preset.width}x (--mode {GROW_MODE})")
            grow(runs["small"].final, models / "grown", width=preset.width, mode=GROW_MODE)
        if arm.model == "random":
            config = AutoConfig.from_pretrained(models / "grown")
            init_model(config, 1000 + arm.seed, tokenizer, models / f"random-s{arm.seed}")
        start = models / (f"random-s{arm.seed}" if arm.model == "random" else arm.model)
        say(f"[{i}/{len(arms)}] training {arm.run_name} from {start.name} for {arm.tokens:,} tokens")
        runs[arm.run_name] = train(arm_train_config(preset, arm, start, out, corpus, progress))
    grow_s = read_provenance(models / "grown")["grow_s"]  # recorded by grow itself, so reruns keep it

    results = collect_results(preset, out, arms, grow_s, corpus_info)
    results.update({"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                    "wall_clock_s": add_wall_clock(out, time.perf_counter() - t0),
                    "command": command or f"hyperclone experiment --preset {preset.name} --out {out}"})
    report.write_report(results, out)
    say(f"done: {out / 'report.md'}")
    return results
