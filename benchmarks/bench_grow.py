"""Benchmark: out-of-core growth against the disk's write speed and against the in-memory approach.

1. Writes a synthetic bf16 checkpoint (default shaped like a 1.1B Llama: hidden 2048, FFN 5632,
   22 layers, 32 heads, 4 KV heads, vocabulary 32000; random weights), streaming, shard by shard.
2. Measures this disk's write speed for the grown size with dd (conv=fdatasync, buffered and with
   oflag=direct) in the same run, once per round (--repeats rounds of dd + every method; each
   method's fastest round against the fastest dd).
3. Runs the `hyperclone grow --width 2` command in a child process (symmetric, then noisy at its default 0 dB; the
   noise level does not change the work) and reports wall
   time and the peak RSS the operating system reports for it (getrusage ru_maxrss).
4. On a shape that fits in memory (--small-*), compares with the in-memory approach of the reference
   code: load the source with transformers, build the destination with from_config, copy the grown
   weights in, save_pretrained.

Usage: python benchmarks/bench_grow.py --workdir /tmp/bench [--json results/bench_grow.json]
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

import torch

from hyperclone.grow.checkpoint_io import OutputTensor, ShardedWriter
from hyperclone.grow.plan import GrowthSpec, make_plan
from hyperclone.grow.source import open_source

GIB = 2**30


def llama_config(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": hidden // heads, "vocab_size": vocab,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "hidden_act": "silu", "dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def write_synthetic(folder: Path, config: dict, shard_size: int = 2 * 10**9) -> int:
    """Random bf16 checkpoint with the tensor names transformers expects, written tensor by tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    h, f, v, hd = config["hidden_size"], config["intermediate_size"], config["vocab_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                       p + "mlp.down_proj.weight": (h, f), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    tensors = [OutputTensor(name, shape, torch.bfloat16) for name, shape in shapes.items()]
    writer = ShardedWriter(folder, tensors, shard_size)
    gen = torch.Generator().manual_seed(0)
    for t in tensors:
        value = torch.randn(t.shape, generator=gen).mul_(0.02) if len(t.shape) == 2 else 1 + 0.1 * torch.randn(t.shape)
        writer.write(t.name, value.to(torch.bfloat16))
    writer.close()
    return sum(t.nbytes for t in tensors)


def dd_write_seconds(path: Path, nbytes: int, direct: bool = False) -> float:
    """Seconds dd takes to write nbytes and fdatasync them: through the page cache, or with O_DIRECT
    (oflag=direct, no page cache: on machines where dirty-page throttling slows buffered writes, the
    disk's own speed)."""
    block = (64 if direct else 16) * 2**20
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", f"bs={block}", f"count={max(1, nbytes // block)}",
                    "conv=fdatasync", *(["oflag=direct"] if direct else [])], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def run_child(code: str) -> tuple[float, float]:
    """Run python code in a child process; return (wall seconds, that child's peak RSS in GiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)  # per-child rusage: ru_maxrss in KiB on Linux
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with status {proc.returncode}")
    return seconds, usage.ru_maxrss * 1024 / GIB


def streaming_grow(src: Path, out: Path, mode: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    # the command users run (its process-wide malloc setting included: hyperclone.common.allocator)
    code = ("from hyperclone.cli import main; "
            f"main(['grow', {str(src)!r}, {str(out)!r}, '--width', '2', '--mode', {mode!r}, '--quiet'])")
    result = run_child(code)
    shutil.rmtree(out)
    return result


IN_MEMORY = """
import torch
from transformers import AutoModelForCausalLM
from hyperclone.grow.tensor_rule import grow_tensor
from hyperclone.grow.plan import GrowthSpec, make_plan
from hyperclone.grow.source import open_source
src, out = {src!r}, {out!r}
source = open_source(__import__('pathlib').Path(src))
spec = GrowthSpec(width=2)
plan = make_plan(source.family, source.config, source.weights.infos, spec)
small = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
config = small.config.__class__.from_dict({{**small.config.to_dict(), **plan.config_updates}})
big = AutoModelForCausalLM.from_config(config)  # random init in float32, as the reference code does
state = small.state_dict()
with torch.no_grad():
    params = dict(big.named_parameters())
    for recipe in plan.recipes:
        params[recipe.out_name].copy_(grow_tensor(recipe, state[recipe.src_name], spec))
big.to(torch.bfloat16).save_pretrained(out)
"""


def in_memory_grow(src: Path, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    result = run_child(IN_MEMORY.format(src=str(src), out=str(out)))
    shutil.rmtree(out)
    return result


def plan_sizes(src: Path) -> tuple[int, int]:
    source = open_source(src)
    plan = make_plan(source.family, source.config, source.weights.infos, GrowthSpec(width=2))
    sizes = [t.nbytes for t in plan.outputs]
    return sum(sizes), max(sizes)


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    """The synthetic Llama's shape (default: a 1.1B model), shared with bench_verify.py."""
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hyperclone-bench"))
    add_shape_args(parser)
    parser.add_argument("--small-layers", type=int, default=4, help="layers of the in-memory comparison shape")
    parser.add_argument("--skip-noisy", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of dd + every method (fastest counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    shapes = [("large", args.layers, False), ("small", args.small_layers, True)]
    for label, layers, compare_in_memory in shapes:
        src = work / f"src-{label}"
        config = llama_config(args.hidden, args.ffn, layers, args.heads, args.kv_heads, args.vocab)
        src_bytes = write_synthetic(src, config)
        out_bytes, largest = plan_sizes(src)
        bound_gib = 1.5 + 2 * largest / GIB
        methods = {f"hyperclone grow ({mode})": (streaming_grow, mode)
                   for mode in ["symmetric"] + ([] if args.skip_noisy else ["noisy"])}  # noisy: the default 0 dB
        if compare_in_memory:
            methods["in-memory (from_pretrained + from_config)"] = (lambda s, o, _: in_memory_grow(s, o), None)
        # the disk's speed drifts a lot (dirty-page throttling, other tenants of the host), so every round
        # measures dd (buffered and direct) and then each method; each method's figure is its fastest round
        # and the baseline is the fastest dd of all rounds: best against best, the strictest fair comparison
        dd_runs: dict[str, list[float]] = {"buffered": [], "direct": []}
        runs: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for kind, direct in (("buffered", False), ("direct", True)):
                dd_runs[kind].append(dd_write_seconds(work / "dd.bin", out_bytes, direct))
            for method, (fn, mode) in methods.items():
                runs[method].append(fn(src, work / "out", mode))
        dd_seconds = min(dd_runs["buffered"] + dd_runs["direct"])
        for method, measured in runs.items():
            seconds = min(s for s, _ in measured)
            rows.append(dict(shape=label, layers=layers, method=method, source_gb=src_bytes / 1e9,
                             output_gb=out_bytes / 1e9, seconds=seconds, seconds_runs=[s for s, _ in measured],
                             dd_seconds=dd_seconds, dd_runs=dd_runs, time_vs_dd=seconds / dd_seconds,
                             peak_rss_gib=max(r for _, r in measured), rss_bound_gib=bound_gib))
            print(rows[-1], flush=True)
        shutil.rmtree(src)
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    machine = f"{platform.machine()} {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM"
    print(f"\nmachine: {machine}; date: {time.strftime('%Y-%m-%d')}; torch {torch.__version__}\n")
    print("| shape | method | source GB | output GB | wall s per round | dd buffered s | dd direct s | "
          "fastest wall / fastest dd | "
          "peak RSS GiB | RSS bound GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def joined(values: list[float]) -> str:
            return " / ".join(f"{x:.1f}" for x in values)

        print(f"| {r['layers']} layers | {r['method']} | {r['source_gb']:.2f} | {r['output_gb']:.2f} | "
              f"{joined(r['seconds_runs'])} | {joined(r['dd_runs']['buffered'])} | {joined(r['dd_runs']['direct'])} | "
              f"{r['time_vs_dd']:.2f} | {r['peak_rss_gib']:.2f} | {r['rss_bound_gib']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
