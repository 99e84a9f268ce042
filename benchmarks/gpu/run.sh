#!/usr/bin/env bash
# GPU evidence kit (issue 13, item 3): one command, about 9 minutes on one H100/H200, no network.
#
#   bash benchmarks/gpu/run.sh [--no-install] [--smoke] [--budget-s S] [--keep-work] [--work DIR]
#
# 1. installs hyperclone into the machine's Python: pip install --no-deps --no-build-isolation -e .
#    (skipped by --no-install or --smoke; if it fails, the kit runs from the source tree via PYTHONPATH and
#    records that)
# 2. runs benchmarks/gpu/kit.py: (a) tokens/s and MFU of `hyperclone train` against a bare bf16 PyTorch loop,
#    eager and torch.compile, on a ~125M-parameter Llama; (b) one ladder point, random init against the default
#    growth recipe at >= 10 tokens per parameter of the grown model, 2 seeds, sized to the time left.
# Writes $OUT/gpu_kit.json, $OUT/gpu_kit.md, $OUT/gpu_kit.png, $OUT/logs/, $OUT/runs/ (OUT defaults to ./gpu-out).
# --smoke: the same code paths at tiny sizes on the CPU, about a minute on 2 cores (tests/test_gpu_kit.py).
# PYTHON picks the interpreter (default: python3, else python).
set -euo pipefail

started=$(date +%s.%N)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

install=1
smoke=0
extra=()
while (($#)); do
  case "$1" in
    --no-install) install=0 ;;
    --smoke) smoke=1; install=0 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done

PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

install_status="skipped"
if ((install)); then
  echo "[run.sh] pip install --no-deps --no-build-isolation -e $repo (log: $OUT/install.log)" >&2
  if (cd "$repo" && "$PYTHON" -m pip install --no-deps --no-build-isolation -e .) >"$OUT/install.log" 2>&1; then
    install_status="ok: pip install --no-deps --no-build-isolation -e ."
  else
    install_status="failed (see install.log): ran from the source tree via PYTHONPATH"
    echo "[run.sh] pip install failed; running from the source tree (PYTHONPATH=$repo)" >&2
  fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

args=(--out "$OUT" --started-at "$started" --install "$install_status")
if ((smoke)); then
  args+=(--smoke)
  export CUDA_VISIBLE_DEVICES=""  # the smoke run is the CPU check, on any machine
fi
exec "$PYTHON" "$here/kit.py" "${args[@]}" ${extra[@]+"${extra[@]}"}
