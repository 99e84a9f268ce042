#!/usr/bin/env bash
# The GPU kit against the GPU machine's package set, checked here before a loan (a broken kit would spend the
# loan's minutes): a fresh virtual environment holding only what that machine's Python is said to have
# (transformers 5.17.0, accelerate, tokenizers, matplotlib, typer, tqdm and what they pull in: no gguf, pyarrow or
# pytest), hyperclone installed the way run.sh installs it (pip install --no-deps --no-build-isolation -e .), then
# run.sh --smoke with that interpreter. PyTorch: the machine has 2.11; this uses the torch pip resolves here for
# TORCH_SPEC (default the project's pin, the only CPU wheel on the development VM) and records which.
#
#   bash benchmarks/gpu/device_env_check.sh [VENV_DIR] [JSON_OUT]
# defaults: /tmp/hyperclone-device-env, results/gpu_kit_env_check.json (written only when the smoke run passes)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${1:-/tmp/hyperclone-device-env}
json=${2:-$repo/results/gpu_kit_env_check.json}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
started=$(date +%s)

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "$torch_spec"
"$venv/bin/python" -m pip install -q "transformers==5.17.0" accelerate tokenizers matplotlib typer tqdm
# a copy of the tracked tree, so the editable install points at files nobody edits while it runs
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp --parents -t "$src")
install="failed"
if (cd "$src" && "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .); then
  install="ok"
fi
out=$(mktemp -d)
(cd "$src" && PYTHON="$venv/bin/python" OUT="$out" bash benchmarks/gpu/run.sh --smoke)
PYTHONPATH="$src" "$venv/bin/python" - "$out/gpu_kit.json" "$json" "$install" "$started" "$(git -C "$repo" rev-parse HEAD)" <<'PY'
import importlib.util
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from hyperclone.common.outputs import write_text_atomic

kit = json.load(open(sys.argv[1]))
tp = kit["throughput"]["variants"]
record = {
    "what": "benchmarks/gpu/run.sh --smoke in a fresh venv with the GPU machine's package set",
    "command": "bash benchmarks/gpu/device_env_check.sh", "commit": sys.argv[5],
    "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    "python": platform.python_version(),
    "packages": {p: metadata.version(p) for p in ("torch", "transformers", "accelerate", "tokenizers",
                                                    "safetensors", "huggingface_hub", "numpy", "PyYAML")},
    "absent": [m for m in ("gguf", "pyarrow", "pytest") if importlib.util.find_spec(m) is None],
    "editable_install": sys.argv[3], "kit_errors": kit["errors"],
    "loops_measured": sorted(k for k, v in tp.items() if v.get("tokens_per_s") and not v.get("error")),
    "ladder_runs_ok": sorted(k for k, v in kit["ladder"]["runs"].items() if v["status"] == "ok"),
    "wall_s": round(time.time() - int(sys.argv[4])),
}
if kit["errors"] or len(record["loops_measured"]) != 4:
    sys.exit(f"the kit did not pass in the device's package set: {record['kit_errors'] or record['loops_measured']}")
write_text_atomic(Path(sys.argv[2]), json.dumps(record, indent=1) + "\n")
print(json.dumps(record, indent=1))
PY
rm -rf "$out"
