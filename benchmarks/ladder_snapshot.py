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
(same machine type and library versions). Weights and optimizer states are not copied.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

RUN_FILES = ("metrics.jsonl", "train_summary.json", "sweep_arm.json", "final/trainer_state.json")
SMALL_RUN_FILES = ("metrics.jsonl", "train_summary.json")


def save(out: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    # the ladder's and every search's report (search.md, a sweep's `report:` stem such as keep.md) and plots
    # with the settings, the wall-clock tallies, the corpus's description and every model's config: what
    # `--report-only` reads besides the runs, so a report regenerates from the repository's copy alone
    reports = sorted(out.glob("*.md")) + sorted(out.glob("*.json")) + sorted(out.glob("*.png"))
    reports += sorted(out.glob("corpus/*.json")) + sorted(out.glob("models/*/config.json"))
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
        for name in SMALL_RUN_FILES if small else RUN_FILES:
            if (run / name).exists():
                target = dest / "runs" / run.name / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target)
        if not small:
            saved.append(run.name)
    return saved


def restore(out: Path, dest: Path) -> list[str]:
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
    args = parser.parse_args()
    done = save(args.out, args.dest) if args.action == "save" else restore(args.out, args.dest)
    print(f"{args.action}d {len(done)} finished runs: {', '.join(done) or 'none'}")


if __name__ == "__main__":
    main()
