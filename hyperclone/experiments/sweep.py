"""`hyperclone experiment --sweep FILE`: run a set of post-growth recipes against random init.

Everything expensive is shared: one corpus, one tokenizer and one small model (pretrained once, its
AdamW moments kept for `moments: carry` arms), one grown model per distinct set of grow options,
one random init per width and seed. Each arm x seed trains in DIR/runs/<arm>-s<seed>; a finished
run is reused and an unfinished one resumed, so a sweep file can be extended and rerun. An arm whose
definition changed under the same name is refused (rename it or delete its runs).
Arms run `jobs` at a time in separate processes (each with the caller's OMP_NUM_THREADS).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from hyperclone.baselines.msg.layout import RAMP_FRAC
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import MOMENTS_FILE
from hyperclone.common.outputs import write_text_atomic
from hyperclone.common.ownership import exit_with_parent, folder_lock
from hyperclone.experiments import setup, sweep_report
from hyperclone.experiments.folder import ExperimentDir
from hyperclone.experiments.presets import Preset
from hyperclone.experiments.sweep_models import (
    arm_layers,
    arm_width,
    grown_name,
    model_for,
    reference_growth,
    reference_model,
    small_suffix,
)
from hyperclone.experiments.sweep_spec import PRESET_SMALL, SmallModel, Sweep, SweepArm
from hyperclone.train.config import TrainConfig
from hyperclone.train.config import default as train_default
from hyperclone.train.loop import train

ARM_FILE = "sweep_arm.json"


def run_name(arm: SweepArm, seed: int) -> str:
    return f"{arm.name}-s{seed}"


def msg_job(arm: SweepArm, cfg: TrainConfig, small_final: Path, preset: Preset) -> dict[str, Any]:
    """What run_msg_arm needs besides the recipe: the small model, the start folder and the stages."""
    from hyperclone.baselines.msg.run import msg_stages

    total = max(1, cfg.tokens // cfg.batch_tokens)
    stages = msg_stages(total, arm_width(arm, preset), arm_layers(arm, preset),
                        ramp_frac=arm.msg.get("ramp_frac", RAMP_FRAC),
                        depth_start_frac=arm.msg.get("depth_start_frac", 0.0))
    return {"small": small_final, "start_dir": cfg.model, "stages": stages}


def train_config(preset: Preset, arm: SweepArm, seed: int, out: Path, small_final: Path,
                 progress: bool = False) -> TrainConfig:
    folder = ExperimentDir(out)
    tokens = arm.tokens or preset.tokens
    base = setup.arm_train_config(preset, setup.Arm(arm.name, arm.init, seed, tokens, arm.lr),
                            folder.model(model_for(arm, seed, preset)), out, folder.corpus,
                            progress=progress)
    return replace(base, out=folder.run(run_name(arm, seed)),
                   warmup=preset.warmup if arm.warmup is None else arm.warmup,
                   schedule=arm.schedule or preset.schedule, decay_frac=arm.decay_frac, min_lr_ratio=arm.min_lr_ratio,
                   moments_from=base.model if arm.moments == "carry" else None, moments_reset=arm.moments_reset,
                   teacher=small_final if arm.kd else None, kd_alpha=float(arm.kd.get("alpha", 0.0)),
                   kd_until=float(arm.kd.get("until", train_default("kd_until"))), copies_lr=arm.copies.get("lr"),
                   copies_warmup=float(arm.copies.get("warmup", train_default("copies_warmup"))),
                   lr_scale=tuple(f"{glob}={mult!r}" for glob, mult in arm.lr_scale.items()),
                   extra={"arm": arm.name, "sweep": arm.as_dict()})


def _check_arm(run_dir: Path, arm: SweepArm, record: bool = True) -> None:
    """Refuse an arm whose recipe changed since its run folder was trained; record the recipe in a new one
    (record=False, a report that trains nothing, writes nothing)."""
    path = run_dir / ARM_FILE
    if path.exists():
        # keys added after the first sweeps, at the value that means what those sweeps did
        old = {"layers": None, "msg": {}, "small_tokens": None, "small_decay": True, "small_corpus": None, "kd": {},
               "copies": {}, "lr_scale": {},
               **json.loads(path.read_text())}
        if {k: v for k, v in old.items() if k != "seeds"} != {k: v for k, v in arm.as_dict().items() if k != "seeds"}:
            raise HyperCloneError(f"arm {arm.name!r} changed since {run_dir} was trained; rename the arm or delete "
                                  "that folder")
    elif record:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(arm.as_dict(), indent=1))


def _run(job: tuple[TrainConfig, dict[str, Any] | None]) -> str:
    cfg, msg = job
    if msg is None:
        train(cfg)
    else:
        from hyperclone.baselines.msg.run import run_msg_arm

        run_msg_arm(cfg, **msg)
    return cfg.out.name


def prepare(preset: Preset, out: Path, data: list[Path] | None, say,
            small_models: tuple[SmallModel, ...] = ()) -> Path:
    """Corpus, tokenizer and the small model (with its final moments), and one more small model per entry of
    `small_models` (arms' small_tokens, small_decay and small_corpus; setup.small_arm names their runs);
    returns the preset's small run's final folder."""
    prepared = setup.prepare(preset, out, data, say)
    say("training the small model (reused when already trained)")
    finals = {}
    for tokens, decay, corpus in (PRESET_SMALL, *small_models):
        arm = setup.small_arm(preset, tokens, decay, corpus)
        if arm.run_name not in finals:
            text = prepared.corpus if corpus is None else setup.public_corpus_file(out, corpus, say)
            cfg = replace(setup.arm_train_config(preset, arm, prepared.small_init, out, text, progress=False),
                          save_moments=True)
            finals[arm.run_name] = train(cfg).final
    return finals["small"]


def small_final_for(out: Path, preset: Preset, small: SmallModel = PRESET_SMALL) -> Path:
    """The final folder of the small model an arm grows from (trained by prepare)."""
    return ExperimentDir.final(ExperimentDir(out).run(setup.small_arm(preset, *small).run_name))


def small_models(sweep: Sweep) -> tuple[SmallModel, ...]:
    """Every small model the sweep's arms grow from other than the preset's own."""
    return tuple(sorted({a.small_model for a in sweep.arms if a.small_model != PRESET_SMALL},
                        key=lambda m: (m.tokens or 0, m.decay, m.corpus or "")))


def make_models(preset: Preset, sweep: Sweep, out: Path, say) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from hyperclone.grow.engine import grow

    folder = ExperimentDir(out)
    models = folder.models
    tokenizer = AutoTokenizer.from_pretrained(folder.tokenizer)

    def key(arm: SweepArm, opts: dict[str, Any], small: SmallModel) -> tuple[int, int, str, int, bool, str]:
        return (arm_width(arm, preset), arm_layers(arm, preset) or 0, json.dumps(opts, sort_keys=True),
                small.tokens or 0, small.decay, small.corpus or "")

    needed = {key(a, a.grow, a.small_model) for a in sweep.arms if a.init == "grown"}
    carried = {key(a, a.grow, a.small_model) for a in sweep.arms if a.init == "grown" and a.moments == "carry"}
    needed |= {key(a, reference_growth(a), PRESET_SMALL) for a in sweep.arms}  # each shape's config: random, stats
    for needed_key in sorted(needed):
        width, layers, opts_json, small_tokens, small_decay, small_corpus = needed_key
        small = SmallModel(small_tokens or None, small_decay, small_corpus or None)
        opts = json.loads(opts_json)
        folder = models / (grown_name(width, opts, layers or None) + small_suffix(*small))
        source = small_final_for(out, preset, small)
        moments = needed_key in carried
        if not (folder / "config.json").exists() or (moments and not (folder / MOMENTS_FILE).exists()):
            say(f"growing {folder.name}")
            depth = {"layers": layers} if layers else {}
            grow(source, folder, width=width, **depth, **opts, overwrite=True,
                 moments_from=source if moments else None)
    for arm in sweep.arms:
        if arm.init == "random":
            config = AutoConfig.from_pretrained(models / reference_model(arm, preset))
            for seed in arm.seeds:
                setup.init_model(config, 1000 + seed, tokenizer, models / model_for(arm, seed, preset))


def _check_reportable(preset: Preset, sweep: Sweep, out: Path) -> None:
    """--report-only reads runs and model configs only: refuse in one line a folder that lacks them."""
    folder = ExperimentDir(out)
    needed = [folder.corpus_info, folder.small_init / "config.json",
              *{folder.model(reference_model(arm, preset)) / "config.json" for arm in sweep.arms}]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise HyperCloneError(f"--report-only: {out} lacks {missing[0].relative_to(out)} (and {len(missing) - 1} "
                              "more); run the command without --report-only to build them")


def _plan_jobs(preset: Preset, sweep: Sweep, out: Path, record: bool,
               progress: bool) -> list[tuple[TrainConfig, dict[str, Any] | None]]:
    """Every arm x seed as (training config, MSG settings or None): the first seed of every arm before the second
    of any, in file order, so a long sweep stopped halfway has compared every arm once instead of some twice and
    others not at all. record=False (a report) leaves new run folders unwritten."""
    order = sorted(((rank, a, seed) for a, arm in enumerate(sweep.arms) for rank, seed in enumerate(arm.seeds)),
                   key=lambda job: job[:2])
    jobs_list = []
    for _, a, seed in order:
        arm = sweep.arms[a]
        small = small_final_for(out, preset, arm.small_model)
        cfg = train_config(preset, arm, seed, out, small, progress)
        _check_arm(cfg.out, arm, record=record)
        jobs_list.append((cfg, msg_job(arm, cfg, small, preset) if arm.init == "msg" else None))
    return jobs_list


def _train_jobs(todo: list[tuple[TrainConfig, dict[str, Any] | None]], jobs: int, say) -> None:
    """Train the runs, `jobs` processes at a time; a failed run is reported at once and the others go on."""
    if jobs > 1 and len(todo) > 1:
        failed = []
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:  # a killed sweep leaves no worker training
            futures = {pool.submit(_run, job): job[0].out.name for job in todo}  # run in this order
            for i, done in enumerate(as_completed(futures), 1):
                try:
                    done.result()
                    say(f"[{i}/{len(todo)}] finished {futures[done]}")
                except Exception as exc:  # report it now, let the other runs go on
                    failed.append(futures[done])
                    say(f"[{i}/{len(todo)}] FAILED {futures[done]}: {str(exc).splitlines()[0] if str(exc) else exc!r}")
        if failed:
            raise HyperCloneError(f"{len(failed)} of {len(todo)} runs failed: {', '.join(failed)} (rerun to retry)")
    else:
        for i, job in enumerate(todo, 1):
            say(f"[{i}/{len(todo)}] training {job[0].out.name}")
            _run(job)


def run_sweep(preset: Preset, sweep: Sweep, out: str | Path, data: list[Path] | None = None, jobs: int = 1,
              command: str | None = None, writer: Callable[[dict[str, Any], Path], Path] = sweep_report.write,
              kind: str = "sweep", collect: Callable[..., dict[str, Any]] | None = None,
              train_runs: bool = True, progress: bool = False) -> dict[str, Any]:
    """Run every arm x seed of the sweep in `out` (resuming), then write the report with `writer`
    (default: sweep.md, sweep.json and plots) and return the results it was given. `kind` names the
    wall-clock tally (wall_clock_<kind>.json) this invocation adds to. `collect(preset, sweep, out)` replaces
    sweep_report.collect (the budget ladder reports unfinished runs as pending); train_runs=False writes the
    report from the runs that exist, training nothing. progress: progress bars while training (one job at a time).
    Every study trains its arms here: the preset experiment (hyperclone.experiments.runner) is a sweep of its arms."""
    with folder_lock(Path(out), "experiment") if train_runs else nullcontext():  # one sweep per folder
        return _sweep(preset, sweep, Path(out), data, jobs, command, writer, kind, collect, train_runs, progress)


def _sweep(preset: Preset, sweep: Sweep, out: Path, data: list[Path] | None, jobs: int, command: str | None,
           writer: Callable[[dict[str, Any], Path], Path], kind: str, collect: Callable[..., dict[str, Any]] | None,
           train_runs: bool, progress: bool) -> dict[str, Any]:
    """run_sweep's work, in the folder's lock where it trains."""
    t0 = time.perf_counter()
    data = [Path(p).resolve() for p in data] if data else None
    if not train_runs:  # a report reads runs and model configs, builds nothing (a committed snapshot will do)
        _check_reportable(preset, sweep, out)
    # a report reads the corpus the runs recorded (corpus/corpus.json): only the preset must match, not --data's path
    setup.check_settings(out, {"preset": preset.as_dict(), "data": [str(p) for p in data] if data else None},
                         keys=None if train_runs else ("preset",))

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    if train_runs:
        small_final = prepare(preset, out, data, say, small_models(sweep))
        make_models(preset, sweep, out, say)
    else:
        small_final = small_final_for(out, preset)
    jobs_list = _plan_jobs(preset, sweep, out, record=train_runs, progress=progress and jobs == 1)
    todo = [j for j in jobs_list if not ExperimentDir.finished(j[0].out)]
    done = len(jobs_list) - len(todo)
    if train_runs:
        say(f"{len(jobs_list)} runs, {done} already finished; {len(todo)} to train, {jobs} at a time")
        _train_jobs(todo, jobs, say)
    else:
        say(f"{len(jobs_list)} runs, {done} finished; {len(todo)} not (a report trains nothing)")
        if todo and collect is None:  # only the ladder's report shows unfinished runs (as pending)
            names = ", ".join(cfg.out.name for cfg, _ in todo[:3])
            raise HyperCloneError(f"--report-only: {len(todo)} runs have not finished ({names}...); run the "
                                  "command without --report-only to train them")
    results = (sweep_report.collect(preset, sweep, out, small_final) if collect is None
               else collect(preset, sweep, out))
    results.update({"machine": setup.machine(), "date": time.strftime("%Y-%m-%d"),
                    "wall_clock_s": setup.add_wall_clock(out, time.perf_counter() - t0 if train_runs else None, kind),
                    "command": command or f"hyperclone experiment --sweep FILE --out {out}"})
    say(f"done: {writer(results, out)}")
    return results
