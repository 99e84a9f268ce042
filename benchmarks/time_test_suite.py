"""The CI run from a fresh clone, timed: `git clone` this repository, run `bash .ci/run` there (install into a
new .venv, then the README's test command), and record how long it took, what pytest reported, and the seconds
spent per test file (pytest's own durations of every phase of every test, through PYTEST_ADDOPTS), so the slowest
files are known when the suite nears its limit.

    python benchmarks/time_test_suite.py --json results/test_suite.json [--clone /tmp/ci-check]

It exits with the CI run's status, so it doubles as the pre-push check the contributing notes ask for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="where to write the timing")
    parser.add_argument("--clone", type=Path, default=Path("/tmp/ci-check"))
    args = parser.parse_args()
    shutil.rmtree(args.clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(args.clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.clone, capture_output=True,
                            text=True, check=True).stdout.strip()
    load = os.getloadavg()[0]  # other work on the machine slows the run: recorded beside the time
    start = time.perf_counter()
    env = {**os.environ, "PYTEST_ADDOPTS": "--durations=0 --durations-min=0"}  # every phase of every test timed
    done = subprocess.run(["bash", ".ci/run"], cwd=args.clone, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    (args.clone / "ci.log").write_text(output)
    failures = re.findall(r"^(?:FAILED|ERROR) .*$", output, re.M)
    sys.stdout.write(done.stdout[-3000:] + "\n".join(failures) + "\n")
    summary = re.findall(r"^=*\s*((?:\d+ failed, )?\d+ passed.*?) in ([\d.]+)s", output, re.M)
    tests, pytest_s = (summary[-1][0], float(summary[-1][1])) if summary else (None, None)
    per_file: dict[str, float] = {}
    for seconds_, path in re.findall(r"^([\d.]+)s (?:setup|call|teardown)\s+(tests/[^:\s]+)::", output, re.M):
        per_file[path] = per_file.get(path, 0.0) + float(seconds_)
    per_file = {path: round(t, 1) for path, t in sorted(per_file.items(), key=lambda item: -item[1])}
    if args.json:
        record = {"benchmark": "time_test_suite", "date": time.strftime("%Y-%m-%d"), "commit": commit,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores", "ci_exit": done.returncode,
                  "ci_wall_s": round(seconds, 1), "pytest_summary": tests, "pytest_s": pytest_s,
                  "load_average_at_start": round(load, 2), "seconds_per_file": per_file,
                  "command": "python benchmarks/time_test_suite.py --json results/test_suite.json"}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
