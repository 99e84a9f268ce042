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
TIMING_PARTS = ("elapsed", "time", "tokens_per_s", "_s_")


def is_timing(key: str) -> bool:
    return key in TIMING_KEYS or key.endswith("_s") or any(part in key for part in TIMING_PARTS)


def compare(a: Any, b: Any, path: str = "") -> tuple[int, list[tuple[str, Any, Any]], list[str]]:
    """(values compared, [(path, a, b) that differ], [paths present on one side only])."""
    if isinstance(a, dict) and isinstance(b, dict):
        count, diffs, one_sided = 0, [], []
        for key in sorted(set(a) | set(b)):
            if is_timing(key):
                continue
            if key not in a or key not in b:
                one_sided.append(f"{path}/{key}")
                continue
            c, d, o = compare(a[key], b[key], f"{path}/{key}")
            count, diffs, one_sided = count + c, diffs + d, one_sided + o
        return count, diffs, one_sided
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        count, diffs, one_sided = 0, [], []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            c, d, o = compare(x, y, f"{path}[{i}]")
            count, diffs, one_sided = count + c, diffs + d, one_sided + o
        return count, diffs, one_sided
    return 1, [] if a == b else [(path, a, b)], []


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
