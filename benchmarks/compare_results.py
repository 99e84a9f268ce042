"""Compare two experiment results files number by number: does a rerun reproduce a committed result to the last
digit? Every number and string is compared except those that measure time or name the run (dates, commands,
machine, wall-clock and throughput figures, which differ between any two runs); keys present on one side only are
listed (a newer report may add fields) but not counted as differences.

    OMP_NUM_THREADS=1 hyperclone experiment --preset cpu-tiny --out /tmp/hc/cpu-tiny --no-progress
    python benchmarks/compare_results.py results/cpu-tiny/results.json /tmp/hc/cpu-tiny/results.json

Exit status 0 when every compared value is equal, 1 otherwise (the largest differences are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# what differs between any two runs of the same command: when, where, how long
TIMING_KEYS = {"date", "command", "machine", "wall_clock_s", "grow_s", "speedup_wall_clock_incl_small"}
TIMING_PARTS = ("elapsed", "time", "_s_")


def is_timing(key: str) -> bool:
    return key in TIMING_KEYS or key.endswith("_s") or any(part in key for part in TIMING_PARTS)


def compare(a: Any, b: Any, path: str = "") -> tuple[int, list[tuple[str, Any, Any]], list[str]]:
    """(values compared, [(path, a, b) that differ], [paths present on one side only])."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [key for key in sorted(set(a) | set(b)) if not is_timing(key)]
        one_sided = [f"{path}/{key}" for key in keys if key not in a or key not in b]
        pairs = [(a[key], b[key], f"{path}/{key}") for key in keys if key in a and key in b]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        one_sided, pairs = [], [(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))]
    else:
        return 1, [] if a == b else [(path, a, b)], []
    count, diffs = 0, []
    for x, y, where in pairs:
        c, d, o = compare(x, y, where)
        count, diffs, one_sided = count + c, diffs + d, one_sided + o
    return count, diffs, one_sided


def size(diff: tuple[str, Any, Any]) -> float:
    _, a, b = diff
    try:
        return abs(float(a) - float(b))
    except (TypeError, ValueError):
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expected", type=Path, help="the committed results file")
    parser.add_argument("actual", type=Path, help="the rerun's results file")
    args = parser.parse_args()
    try:
        a, b = (json.loads(p.read_text()) for p in (args.expected, args.actual))
    except (OSError, json.JSONDecodeError) as exc:
        sys.exit(f"compare_results: {exc}")
    count, diffs, one_sided = compare(a, b)
    if one_sided:
        print(f"{len(one_sided)} keys on one side only (not compared): {', '.join(one_sided[:8])}"
              f"{' ...' if len(one_sided) > 8 else ''}")
    if not diffs:
        print(f"identical: {count} values compared, timing fields left out")
        return
    diffs.sort(key=size, reverse=True)
    print(f"{len(diffs)} of {count} values differ; the largest:")
    for path, x, y in diffs[:10]:
        print(f"  {path}: {x} != {y}")
    sys.exit(1)


if __name__ == "__main__":
    main()
