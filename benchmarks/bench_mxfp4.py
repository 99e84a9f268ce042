"""Benchmark: reading MXFP4 expert weights (gpt-oss) as the bf16 tensors they stand for.

Writes one safetensors file holding a gpt-oss layer's two expert projections as the releases store them
(`mlp1_weight` and `mlp2_weight`... here under transformers' names gate_up_proj and down_proj, `_blocks` uint8
codes and `_scales` E8M0 exponents, random), then reads each projection, in rounds, three ways:

- `bytes`: the stored codes and exponents only, copied out of the memory map (what reading the file costs);
- `hyperclone`: hyperclone.grow.mxfp4.Mxfp4Weights.read, the dequantized [experts, in, out] bf16 tensor growth uses;
- `transformers`: transformers.integrations.mxfp4.convert_moe_packed_tensors on the same codes (its own layout,
  [experts, rows, groups x 32], not transposed), for comparison.

The file is read once before timing, so the figures are from the page cache: the dequantization's own speed
against the bytes' (a disk's read speed is bench_grow's business). Reported: seconds per read (the best round),
MB/s of stored bytes consumed and GB/s of bf16 produced. The default shape is gpt-oss-20b's (32 experts, hidden
2880, expert width 2880); --experts 128 is one gpt-oss-120b layer.

Usage: python benchmarks/bench_mxfp4.py [--experts 32] [--rounds 3] [--dir /tmp] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from hyperclone.grow.checkpoint_io import SourceWeights
from hyperclone.grow.mxfp4 import BLOCK_BYTES, BLOCKS, SCALES, Mxfp4Weights

HIDDEN = FFN = 2880  # gpt-oss-20b and -120b
PROJECTIONS = {"gate_up_proj": (2 * FFN, HIDDEN), "down_proj": (HIDDEN, FFN)}  # stored rows, values per row
PREFIX = "model.layers.0.mlp.experts."


def write_layer(path: Path, experts: int, seed: int = 0) -> int:
    """One layer's expert projections as MXFP4 pairs, random codes and exponents near 2^0; returns the bytes."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (rows, values) in PROJECTIONS.items():
        groups = values // (2 * BLOCK_BYTES)
        tensors[PREFIX + name + BLOCKS] = torch.randint(0, 256, (experts, rows, groups, BLOCK_BYTES),
                                                        dtype=torch.uint8, generator=gen)
        tensors[PREFIX + name + SCALES] = torch.randint(117, 130, (experts, rows, groups), dtype=torch.uint8,
                                                        generator=gen)
    save_file(tensors, path)
    return sum(t.numel() for t in tensors.values())


def best(read, rounds: int) -> float:
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        read()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=32, help="experts per projection (20b: 32, 120b: 128)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the file is written")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        stored = write_layer(folder / "model.safetensors", args.experts)
        plain = SourceWeights(folder)
        weights = Mxfp4Weights(plain)
        names = [PREFIX + name for name in PROJECTIONS]
        produced = sum(torch.Size(weights.infos[n].shape).numel() * 2 for n in names)

        def read_bytes():
            for n in names:
                plain.read(n + BLOCKS).clone(), plain.read(n + SCALES).clone()

        def read_hyperclone():
            for n in names:
                weights.read(n)

        def read_transformers():
            for n in names:
                convert_moe_packed_tensors(plain.read(n + BLOCKS).clone(), plain.read(n + SCALES).clone())

        read_bytes()  # into the page cache
        seconds = {way: best(read, args.rounds) for way, read in
                   (("bytes", read_bytes), ("hyperclone", read_hyperclone), ("transformers", read_transformers))}
    report = {
        "benchmark": "bench_mxfp4", "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "experts": args.experts, "stored_bytes": stored, "bf16_bytes": produced, "rounds": args.rounds,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "stored_mb_per_s": {k: round(stored / v / 1e6, 1) for k, v in seconds.items()},
        "bf16_gb_per_s": {k: round(produced / v / 1e9, 3) for k, v in seconds.items() if k != "bytes"},
        "command": f"python benchmarks/bench_mxfp4.py --experts {args.experts} --rounds {args.rounds}",
    }
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
