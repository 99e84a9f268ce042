"""Benchmark: the fixed cost of `hyperclone grow` (its wall time on a tiny checkpoint) against the imports it
cannot avoid, each the median of several fresh processes, measured in the same run.

    python benchmarks/bench_startup.py [--runs 7] [--json results/bench_startup.json]

Rows: `python -c "import torch"`; `import torch, transformers`; reading the tiny checkpoint's config with
transformers' AutoConfig (what grow does to learn the defaults of a family); `hyperclone grow --help`; and
`hyperclone grow TINY OUT --width 2` on a 2-layer Llama (hidden 64, vocab 256, about 0.2 MB of weights), whose
time is almost all fixed cost. Issue 15's goal is grow within 0.5 s of `import torch`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(folder: Path) -> None:
    code = ("import torch, sys\nfrom transformers import AutoModelForCausalLM, LlamaConfig\n"
            "torch.manual_seed(0)\n"
            "c = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, "
            "num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)\n"
            "AutoModelForCausalLM.from_config(c).save_pretrained(sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True)


def seconds(cmd: list[str], before=None) -> float:
    if before is not None:
        before()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh processes per row (the median is reported)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    py = sys.executable
    try:
        tiny_llama(root / "tiny")
        out = root / "out"
        rows = {
            "import torch": ([py, "-c", "import torch"], None),
            "import torch, transformers": ([py, "-c", "import torch, transformers"], None),
            "AutoConfig.from_pretrained(tiny)": (
                [py, "-c", f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(root / 'tiny')!r})"],
                None),
            "hyperclone grow --help": ([py, "-m", "hyperclone.cli", "grow", "--help"], None),
            "hyperclone grow tiny --width 2": ([py, "-m", "hyperclone.cli", "grow", str(root / "tiny"), str(out),
                                                "--width", "2"], lambda: shutil.rmtree(out, ignore_errors=True)),
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.runs):  # interleaved, so a slow moment of the machine hits every row alike
            for name, (cmd, before) in rows.items():
                times[name].append(seconds(cmd, before))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
              "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
              "command": " ".join(["python", "benchmarks/bench_startup.py", *sys.argv[1:]]), "runs": args.runs,
              "median_s": {k: round(v, 3) for k, v in medians.items()},
              "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
              "grow_minus_import_torch_s": round(medians["hyperclone grow tiny --width 2"] - medians["import torch"],
                                                 3)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
