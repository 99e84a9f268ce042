"""Benchmark: out-of-core verify of a large grown checkpoint (wall time and peak RSS).

Writes the synthetic bf16 checkpoint of bench_grow.py (default shaped like a 1.1B Llama: hidden 2048,
FFN 5632, 22 layers, 32 heads, 4 KV heads, vocabulary 32000), grows it 2x with `hyperclone grow`
(default recipe: exact zero-sum noise at 0 dB; bf16 out), then runs
`hyperclone verify SRC GROWN --out-of-core` in a child process and reports its wall time, its peak RSS
as the kernel reports it (wait4 ru_maxrss) and its verdict. The in-memory verify would hold both models
in float32 (4.4 + 16.6 GB here); the goal is within 3 GiB.

Usage: python benchmarks/bench_verify.py [--workdir /tmp/hc-bench-verify] [--json results/bench_verify.json]
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_grow import GIB, add_shape_args, llama_config, write_synthetic  # noqa: E402


def run_child(args: list[str]) -> tuple[float, float, int, str]:
    """Run a command; return (wall seconds, peak RSS GiB, exit status, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # per-child rusage: ru_maxrss in KiB on Linux
    seconds = time.perf_counter() - start
    stdout = proc.stdout.read() if proc.stdout else ""
    return seconds, usage.ru_maxrss * 1024 / GIB, os.waitstatus_to_exitcode(status), stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hc-bench-verify"))
    add_shape_args(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    try:
        src, out = work / "src", work / "out"
        config = llama_config(args.hidden, args.ffn, args.layers, args.heads, args.kv_heads, args.vocab)
        src_bytes = write_synthetic(src, config)
        cli = [sys.executable, "-m", "hyperclone.cli"]
        grow_s, grow_rss, code, _ = run_child([*cli, "grow", str(src), str(out), "--width", "2", "--quiet"])
        if code:
            raise SystemExit(f"grow failed with status {code}")
        out_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        seconds, rss, code, stdout = run_child([*cli, "verify", str(src), str(out), "--out-of-core"])
        result = json.loads(stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    import torch

    row = {"benchmark": "bench_verify", "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()} {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM",
           "torch": torch.__version__, "shape": config, "source_gb": src_bytes / 1e9, "grown_gb": out_bytes / 1e9,
           "grow_s": round(grow_s, 1), "grow_peak_rss_gib": round(grow_rss, 2),
           "verify_s": round(seconds, 1), "verify_peak_rss_gib": round(rss, 2), "verify_exit": code,
           "ok": result["ok"], "logits_rel_err": result["rel_err"],
           "worst_block_rel_err": max(result["block_rel_err"]), "blocks": len(result["block_rel_err"]),
           "command": "python benchmarks/bench_verify.py --json results/bench_verify.json"}
    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
