"""Keep a long budget ladder across machines: copy its report and the light files of every finished run into the
repository, and put them back into a new run folder so the ladder skips what is done.

    python benchmarks/ladder_snapshot.py save --out /tmp/hc/ladder --dest results/cpu-ladder
    python benchmarks/ladder_snapshot.py restore --out /tmp/hc/ladder --dest results/cpu-ladder
    OMP_NUM_THREADS=1 hyperclone experiment --preset cpu-ladder --out /tmp/hc/ladder --jobs 2

A run is finished when its final/trainer_state.json exists; the sweep skips such runs, and the report reads only
their metrics.jsonl. With the runs go the settings (experiment.json), the wall-clock tallies, the corpus's
description and every model's config.json: all that `--report-only` reads, so every report regenerates from the
repository's copy alone (tests/test_ladder.py checks the committed ones):

    hyperclone experiment --sweep sweeps/cpu-ladder-last.yaml --out results/cpu-ladder --report-only
 Corpus, tokenizer, small model and grown models are rebuilt deterministically by the command
(same machine type and library versions). Weights and optimizer states are not copied, except for the small
models named with --keep-small RUN (repeatable): that run's whole final folder (weights, AdamW moments,
trainer_state.json; about 6 MB for cpu-ladder) and the folder's tokenizer, so a later machine grows from the very
same small model instead of retraining it. Worth it for the long ones: the 51.2M-token small model takes an hour of
one core, and retrained on another machine it started the grown model at validation loss 1.592 against 1.606.

    python benchmarks/ladder_snapshot.py save --out /tmp/hc/ladder --dest results/cpu-ladder \
        --keep-small small-51200000-s0
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

RUN_FILES = ("metrics.jsonl", "train_summary.json", "sweep_arm.json", "final/trainer_state.json")
SMALL_RUN_FILES = ("metrics.jsonl", "train_summary.json")


def save(out: Path, dest: Path, keep_small: tuple[str, ...] = ()) -> list[str]:
    """Copy the reports and the finished runs' light files of `out` into `dest`, and the small-model runs named in
    `keep_small` whole; returns the finished runs saved (small models' runs not counted)."""
    missing = [name for name in keep_small if not (out / "runs" / name / "final" / "trainer_state.json").exists()]
    if missing:
        raise SystemExit(f"ladder_snapshot: no finished small-model run {', '.join(missing)} in {out / 'runs'}")
    dest.mkdir(parents=True, exist_ok=True)
    # the ladder's and every search's report (search.md, a sweep's `report:` stem such as keep.md) and plots
    # with the settings, the wall-clock tallies, the corpus's description and every model's config: what
    # `--report-only` reads besides the runs, so a report regenerates from the repository's copy alone
    reports = sorted(out.glob("*.md")) + sorted(out.glob("*.json")) + sorted(out.glob("*.png"))
    reports += sorted(out.glob("corpus/*.json")) + sorted(out.glob("models/*/config.json"))  # not corpus/expected/
    for path in reports:
        target = dest / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    saved = []
    for run in sorted((out / "runs").iterdir()):
        if not (run / "final" / "trainer_state.json").exists():
            continue
        # small models' runs (the preset's, and a search's small-<tokens>-s0) are retrained on restore (their
        # weights are what the grown models are made from), so they are kept without the file that marks them
        # finished: their curves still give the reports the small model's cost (incl. small) with --report-only
        small = run.name == "small" or run.name.startswith("small-")
        if run.name in keep_small:  # weights, moments and the mark of a finished run: restored, not retrained
            shutil.copytree(run / "final", dest / "runs" / run.name / "final", dirs_exist_ok=True)
        for name in SMALL_RUN_FILES if small else RUN_FILES:
            if (run / name).exists():
                target = dest / "runs" / run.name / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target)
        if not small:
            saved.append(run.name)
    if keep_small:  # the kept small models' tokenizer: a grown model's token ids must mean what they meant
        shutil.copytree(out / "tokenizer", dest / "tokenizer", dirs_exist_ok=True)
    return saved


def restore(out: Path, dest: Path) -> list[str]:
    """Put the finished runs of `dest` (and the small models kept whole, with their tokenizer) into `out`, where
    they are not already, and the descriptions of their corpora in out/corpus/expected/ (the experiment refuses a
    corpus that differs); returns the runs restored."""
    if (dest / "tokenizer").is_dir() and not (out / "tokenizer").exists():
        shutil.copytree(dest / "tokenizer", out / "tokenizer")
    for info in sorted((dest / "corpus").glob("*.json")) if (dest / "corpus").is_dir() else []:
        # the corpora the runs were trained on (the experiment's, a public one a small model read): the experiment
        # refuses to build, or to go on with, another one beside them
        (out / "corpus" / "expected").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(info, out / "corpus" / "expected" / info.name)
    restored = []
    for run in sorted((dest / "runs").iterdir()) if (dest / "runs").is_dir() else []:
        target = out / "runs" / run.name
        if (target / "final" / "trainer_state.json").exists() or not (run / "final" / "trainer_state.json").exists():
            continue  # done already, or a small model's curve (retrained by the command)
        shutil.copytree(run, target, dirs_exist_ok=True)
        restored.append(run.name)
    return restored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("--out", type=Path, required=True, help="the ladder's experiment folder")
    parser.add_argument("--dest", type=Path, default=Path("results/cpu-ladder"), help="the folder in the repository")
    parser.add_argument("--keep-small", action="append", default=[], metavar="RUN",
                        help="save: a small model's run (e.g. small-51200000-s0) to keep whole, weights and moments")
    args = parser.parse_args()
    done = save(args.out, args.dest, tuple(args.keep_small)) if args.action == "save" else restore(args.out, args.dest)
    print(f"{args.action}d {len(done)} finished runs: {', '.join(done) or 'none'}")


if __name__ == "__main__":
    main()
