"""What the three differential fuzzers (fuzz_safetensors.py, fuzz_index.py, fuzz_gguf.py) share: the dictionary of
counts a run returns and the command line around a run (--cases, --seed, --json; the versions, machine, date and
command recorded beside the counts; exit status 1 on any disagreement or traceback)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLES_KEPT = 20  # disagreements and tracebacks listed in a result, the first ones met


def counts_result(seed: int, names: tuple[str, ...], counts: Counter, kinds: Counter,
                  examples: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's result: the number of cases, the seed, each count in `names` (0 where none happened), the cases per
    mutation kind and the first examples."""
    return {"cases": sum(kinds.values()), "seed": seed, **{name: counts[name] for name in names},
            "mutations": dict(sorted(kinds.items())), "examples": examples[:EXAMPLES_KEPT]}


def fuzz_main(doc: str, script: str, default_cases: int, run: Callable[[int, int], dict[str, Any]],
              versions: Callable[[], dict[str, str]]) -> None:
    """The command line of a fuzzer: run `run(cases, seed)`, add how long it took and what it ran with, write the
    JSON where --json says, print it (less the per-mutation counts) and exit 1 if any case disagreed or raised."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=default_cases)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(args.cases, args.seed)
    result.update({"seconds": round(time.perf_counter() - start, 1), **versions(),
                   "machine": f"{platform.machine()}, {platform.system()}", "date": time.strftime("%Y-%m-%d"),
                   "command": f"python benchmarks/{script} --cases {args.cases} --seed {args.seed}"
                              + (f" --json {args.json}" if args.json else "")})
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "mutations"}, indent=1))
    sys.exit(1 if result["disagreements"] or result["tracebacks"] else 0)
