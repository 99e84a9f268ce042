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
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from hyperclone import experiment as ex
from hyperclone import sweep_report
from hyperclone.errors import HyperCloneError
from hyperclone.presets import Preset
from hyperclone.sweep_spec import Sweep, SweepArm
from hyperclone.train import TrainConfig, train

ARM_FILE = "sweep_arm.json"


def grown_name(width: int, opts: dict[str, Any]) -> str:
    mode = opts.get("mode", "symmetric")
    name = f"grown-w{width}-{mode}"
    if mode == "noisy":
        name += f"-{opts.get('noise_db', 'default')}db"
    for key in ("seed", "tie", "ffn"):
        if opts.get(key) is not None:
            name += f"-{key}{opts[key]}"
    return name


def run_name(arm: SweepArm, seed: int) -> str:
    return f"{arm.name}-s{seed}"


def arm_width(arm: SweepArm, preset: Preset) -> int:
    return arm.width or preset.width


def model_for(arm: SweepArm, seed: int, preset: Preset) -> str:
    w = arm_width(arm, preset)
    return grown_name(w, arm.grow) if arm.init == "grown" else f"random-w{w}-s{seed}"


def train_config(preset: Preset, arm: SweepArm, seed: int, out: Path, small_final: Path) -> TrainConfig:
    tokens = arm.tokens or preset.tokens
    base = ex._train_config(preset, ex.Arm(arm.name, arm.init, seed, tokens, arm.lr),
                            out / "models" / model_for(arm, seed, preset), out, out / "corpus" / "corpus.jsonl",
                            progress=False)
    return replace(base, out=out / "runs" / run_name(arm, seed),
                   warmup=preset.warmup if arm.warmup is None else arm.warmup,
                   schedule=arm.schedule or preset.schedule, decay_frac=arm.decay_frac, min_lr_ratio=arm.min_lr_ratio,
                   moments_from=small_final if arm.moments == "carry" else None, moments_reset=arm.moments_reset,
                   extra={"arm": arm.name, "sweep": arm.as_dict()})


def _check_arm(run_dir: Path, arm: SweepArm) -> None:
    path = run_dir / ARM_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if {k: v for k, v in old.items() if k != "seeds"} != {k: v for k, v in arm.as_dict().items() if k != "seeds"}:
            raise HyperCloneError(f"arm {arm.name!r} changed since {run_dir} was trained; rename the arm or delete "
                                  "that folder")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(arm.as_dict(), indent=1))


def _run(cfg: TrainConfig) -> str:
    train(cfg)
    return cfg.out.name


def prepare(preset: Preset, out: Path, data: list[Path] | None, say) -> Path:
    """Corpus, tokenizer and the small model (with its final moments); returns the small run's final folder."""
    from transformers import AutoTokenizer

    corpus = out / "corpus" / "corpus.jsonl"
    info = out / "corpus" / "corpus.json"
    if not info.exists():
        say("building the corpus")
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps(ex.build_corpus(corpus, data, preset.corpus_bytes), indent=1))
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        say(f"training a {preset.vocab_size}-token tokenizer")
        ex.train_tokenizer(corpus, preset.vocab_size, tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    (out / "models").mkdir(exist_ok=True)
    ex.init_model(ex.small_config(preset, tokenizer), 0, tokenizer, out / "models" / "small-init")
    small = ex.Arm("small", "small-init", 0, preset.small_tokens, preset.small_lr)
    say("training the small model (reused when already trained)")
    cfg = replace(ex._train_config(preset, small, out / "models" / "small-init", out, corpus, progress=False),
                  save_moments=True)
    return train(cfg).final


def make_models(preset: Preset, sweep: Sweep, out: Path, small_final: Path, say) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from hyperclone.grow import grow

    models = out / "models"
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    widths = {arm_width(a, preset) for a in sweep.arms}
    needed = {(arm_width(a, preset), json.dumps(a.grow, sort_keys=True)) for a in sweep.arms if a.init == "grown"}
    needed |= {(w, "{}") for w in widths}  # the symmetric model gives each width's config for random init
    for width, opts_json in sorted(needed):
        opts = json.loads(opts_json)
        folder = models / grown_name(width, opts)
        if not (folder / "config.json").exists():
            say(f"growing {folder.name}")
            grow(small_final, folder, width=width, **{"mode": "symmetric", **opts})  # no mode given: HyperCloning
    for arm in sweep.arms:
        if arm.init == "random":
            w = arm_width(arm, preset)
            config = AutoConfig.from_pretrained(models / grown_name(w, {}))
            for seed in arm.seeds:
                ex.init_model(config, 1000 + seed, tokenizer, models / f"random-w{w}-s{seed}")


def run_sweep(preset: Preset, sweep: Sweep, out: str | Path, data: list[Path] | None = None, jobs: int = 1,
              command: str | None = None) -> dict[str, Any]:
    """Run every arm x seed of the sweep in `out` (resuming), then write sweep.md, sweep.json and plots."""
    out = Path(out)
    t0 = time.perf_counter()
    data = [Path(p).resolve() for p in data] if data else None
    ex._check_settings(out, {"preset": preset.as_dict(), "data": [str(p) for p in data] if data else None})

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    small_final = prepare(preset, out, data, say)
    make_models(preset, sweep, out, small_final, say)
    configs = []
    for arm in sweep.arms:
        for seed in arm.seeds:
            cfg = train_config(preset, arm, seed, out, small_final)
            _check_arm(cfg.out, arm)
            configs.append(cfg)
    todo = [c for c in configs if not (c.out / "final" / "trainer_state.json").exists()]
    say(f"{len(configs)} runs, {len(configs) - len(todo)} already finished; {len(todo)} to train, {jobs} at a time")
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            for i, name in enumerate(pool.map(_run, todo), 1):
                say(f"[{i}/{len(todo)}] finished {name}")
    else:
        for i, cfg in enumerate(todo, 1):
            say(f"[{i}/{len(todo)}] training {cfg.out.name}")
            _run(cfg)
    results = sweep_report.collect(preset, sweep, out, small_final, model_for)
    results.update({"machine": ex.machine(), "date": time.strftime("%Y-%m-%d"),
                    "wall_clock_s": ex._add_wall_clock(out, time.perf_counter() - t0),
                    "command": command or f"hyperclone experiment --sweep FILE --out {out}"})
    sweep_report.write(results, out)
    say(f"done: {out / 'sweep.md'}")
    return results
