"""The studies `hyperclone experiment` runs, as a registry: which arms (build), what is read from their runs
(analyse) and what is written (write). Every study trains its arms with the one engine,
hyperclone.experiments.sweep.run_sweep; choose() maps the command line's flags to a study.

  preset  --preset cpu-tiny            grown vs random at one budget, budget fractions    report.md, results.json
  ladder  --preset cpu-ladder          grown vs random at every rung of the budget ladder  ladder.md, ladder.json
  search  --sweep FILE (compare: ladder)  recipes on the ladder's random frontier          <report>.md, .json
  sweep   --sweep FILE                 recipes against the best random init                sweep.md, sweep.json
  arms    --arms a,b,c --preset P      growth methods head to head at one final shape      report.md, results.json
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.experiments import headtohead, ladder, ladder_search, report, runner, sweep_report
from hyperclone.experiments.presets import Preset, get_preset
from hyperclone.experiments.sweep import run_sweep
from hyperclone.experiments.sweep_spec import Sweep, load_sweep


@dataclass(frozen=True)
class Study:
    name: str
    analyse: Callable[[Preset, Sweep, Path], dict[str, Any]] | None  # None: sweep_report.collect
    write: Callable[[dict[str, Any], Path], Path]
    report_only: bool  # may write its report from the runs that have finished, training nothing
    summary: Callable[[dict[str, Any], Path, Sweep], str]  # the line the command prints at the end


def _preset_line(results: dict[str, Any], out: Path, sweep: Sweep) -> str:
    st = results["speedup_tokens"]
    return f"speedup_tokens {st if st is None else round(st, 3)}; report: {out / 'report.md'}"


STUDIES: dict[str, Study] = {
    "preset": Study("preset", runner.collect_results, report.write_report, False, _preset_line),
    "ladder": Study("ladder", ladder.analyse, ladder.write, True, lambda r, out, s: f"report: {out / ladder.REPORT}"),
    "search": Study("search", ladder_search.analyse, ladder_search.write, True,
                    lambda r, out, s: f"report: {out / (s.report + '.md')}"),
    "sweep": Study("sweep", None, sweep_report.write, False,
                   lambda r, out, s: f"winners: {r['winner']}; report: {out / 'sweep.md'}"),
    "arms": Study("arms", None, headtohead.write, True,
                  lambda r, out, s: f"{headtohead.one_line(r)}; report: {out / 'report.md'}"),
}


@dataclass(frozen=True)
class Chosen:
    """A study with what it runs: the preset, its arms, and the name of its wall-clock tally."""

    study: Study
    preset: Preset
    sweep: Sweep
    kind: str
    flags: str  # the command line's flags that choose it: the report's command when run through the Python API


def choose(preset: str | None, sweep_file: Path | None, arms: str | None, layers: int | None) -> Chosen:
    """The study the command line asks for, or a one-line refusal of a combination that names none."""
    if sweep_file is not None and arms is not None:
        raise HyperCloneError("give --sweep or --arms, not both")
    if layers is not None and arms is None:
        raise HyperCloneError("--layers only applies with --arms")
    if arms is not None:
        if preset is None:
            raise HyperCloneError("--arms needs --preset")
        chosen = get_preset(preset)
        return Chosen(STUDIES["arms"], chosen, headtohead.build_sweep(chosen, headtohead.parse_arms(arms), layers),
                      "arms", f"--preset {preset} --arms {arms}" + ("" if layers is None else f" --layers {layers}"))
    if sweep_file is not None:
        spec = load_sweep(sweep_file)
        if preset is not None and preset != spec.preset:
            raise HyperCloneError(f"--preset {preset} differs from the sweep file's preset {spec.preset}")
        kind = f"sweep_{Path(sweep_file).stem}"  # one tally per sweep file: several may share a folder
        if spec.compare != "ladder":
            return Chosen(STUDIES["sweep"], get_preset(spec.preset), spec, kind, f"--sweep {sweep_file}")
        if spec.preset not in ladder.LADDERS:
            raise HyperCloneError(f"{sweep_file}: compare: ladder needs a ladder preset "
                                  f"({', '.join(ladder.LADDERS)}), got {spec.preset}")
        return Chosen(STUDIES["search"], get_preset(spec.preset), spec, kind, f"--sweep {sweep_file}")
    if preset is None:
        raise HyperCloneError("experiment needs --preset or --sweep")
    if preset in ladder.LADDERS:
        return Chosen(STUDIES["ladder"], get_preset(preset), ladder.ladder_sweep(preset), "ladder",
                      f"--preset {preset}")
    return _preset_study(get_preset(preset))


def _preset_study(preset: Preset) -> Chosen:
    return Chosen(STUDIES["preset"], preset, runner.preset_sweep(preset), "", f"--preset {preset.name}")


def run(chosen: Chosen, out: Path, data: list[Path] | None = None, jobs: int = 1, command: str | None = None,
        report_only: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train the chosen study's arms (resuming), analyse their runs and write its report; returns the results."""
    study = chosen.study
    if report_only and not study.report_only:
        raise HyperCloneError("--report-only applies to a ladder preset (cpu-ladder), to a sweep file with "
                              "compare: ladder, and to --arms")
    command = command or f"hyperclone experiment {chosen.flags} --out {out}" + "".join(
        f" --data {path}" for path in data or [])
    return run_sweep(chosen.preset, chosen.sweep, out, data=data, jobs=jobs, command=command,
                     writer=study.write, kind=chosen.kind, collect=study.analyse, train_runs=not report_only,
                     progress=progress)


def run_experiment(preset: Preset, out: str | Path, data: list[Path] | None = None, progress: bool = True,
                   command: str | None = None) -> dict[str, Any]:
    """The preset study (Python API): run or finish it in `out`; returns the results written to results.json."""
    return run(_preset_study(preset), Path(out), data=data, command=command, progress=progress)
