"""Benchmark: writing a large file through plain buffered writes vs hyperclone.grow.stream_file.StreamFile.

Writes the same bytes (a random 256 MiB buffer, repeated) both ways, fsyncs, deletes, in alternating
rounds, and prints the seconds of each. This is the measurement behind StreamFile: with plain writes
the page cache fills with dirty pages until the kernel throttles the writer.

Usage: python benchmarks/bench_write.py [--gb 8.4] [--rounds 2] [--dir /tmp] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from hyperclone.grow.stream_file import StreamFile

CHUNK = 256 * 2**20


def plain(path: Path, data: memoryview, count: int) -> float:
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(count):
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def streamed(path: Path, data: memoryview, count: int) -> float:
    start = time.perf_counter()
    out = StreamFile(path)
    for _ in range(count):
        out.write(data)
    out.close()
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=8.4, help="bytes to write per run, in GB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="a folder on the disk to measure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    data = memoryview(os.urandom(CHUNK))
    count = max(1, round(args.gb * 1e9 / CHUNK))
    path = args.dir / "hyperclone-bench-write.bin"
    runs: dict[str, list[float]] = {"plain": [], "stream_file": []}
    for _ in range(args.rounds):
        runs["plain"].append(plain(path, data, count))
        runs["stream_file"].append(streamed(path, data, count))
        print({k: [round(v, 1) for v in vs] for k, vs in runs.items()}, flush=True)
    nbytes = count * CHUNK
    machine = f"{platform.machine()} {os.cpu_count()} cores"
    print(f"\n{nbytes / 1e9:.2f} GB per run on {machine}, {time.strftime('%Y-%m-%d')}")
    for name, values in runs.items():
        print(f"{name:12s} " + " / ".join(f"{v:.1f} s" for v in values))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d"), "bytes": nbytes,
                                         "seconds": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
