"""Throughput of `hyperclone train` against a minimal hand-written PyTorch loop (same model, same batch), or
of its two strategies on several processes.

    python benchmarks/bench_train.py [--hidden 128 --layers 4 --vocab 2048 --seq-len 128 --batch 16 --steps 60]
    python benchmarks/bench_train.py --strategy ddp --strategy fsdp --procs 2 --hidden 384 --layers 6 \
        --steps 20 --repeats 1 --json results/bench_train_strategies.json

With --strategy, each strategy is launched with torchrun on --procs processes (gloo on CPUs, one torch thread
each) and timed the same way; peak RSS per process is each rank's own (train_summary.json), from the longer run.

The minimal loop is what any pre-training script does per step: slice a batch from the token
memmap, forward, cross-entropy, backward, clip, AdamW step, zero_grad. The harness is timed from
outside: two runs of different length, and the difference in wall time divided by the
difference in tokens, which cancels start-up, tokenization, the start/end evaluation and the
final save. Each side is measured `--repeats` times, alternating, and the best is kept.
Not a timed test: numbers depend on the machine (printed with the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperclone.experiments.corpora import stdlib_files  # noqa: E402
from hyperclone.experiments.setup import train_tokenizer  # noqa: E402
from hyperclone.train.config import TrainConfig  # noqa: E402
from hyperclone.train.data import WindowSampler, load_corpus  # noqa: E402
from hyperclone.train.loop import train  # noqa: E402
from hyperclone.train.losses import causal_lm_loss  # noqa: E402
from hyperclone.train.lr_groups import param_groups  # noqa: E402


def build(root: Path, args) -> tuple[Path, Path]:
    from transformers import AutoModelForCausalLM, LlamaConfig

    text, size = [], 0
    for f in stdlib_files():
        t = f.read_text(encoding="utf-8", errors="replace")
        text.append(t)
        size += len(t)
        if size > 2_000_000:
            break
    (root / "corpus").mkdir()
    with open(root / "corpus" / "c.jsonl", "w") as fh:
        for t in text:
            fh.write(json.dumps({"text": t}) + "\n")
    model_dir = root / "model"
    tok = train_tokenizer(root / "corpus" / "c.jsonl", args.vocab, model_dir)
    heads = max(1, args.hidden // 32)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=args.seq_len, tie_word_embeddings=False,
                         eos_token_id=0, bos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    return model_dir, root / "corpus"


def harness(model_dir: Path, corpus: Path, root: Path, args, steps: int) -> float:
    out = root / f"run-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(model=model_dir, data=[corpus], out=out, tokens=steps * args.batch * args.seq_len,
                      batch_tokens=args.batch * args.seq_len, seq_len=args.seq_len, eval_every=10**9,
                      eval_tokens=args.seq_len, save_every=10**9, log_every=10, cache_dir=root / "cache",
                      progress=False, lr=1e-3, warmup=5)
    t = time.perf_counter()
    train(cfg)
    return time.perf_counter() - t


def launched(model_dir: Path, corpus: Path, root: Path, args, steps: int, strategy: str) -> tuple[float, dict]:
    """Wall seconds of `hyperclone train --strategy S` on --procs processes under torchrun, and its summary."""
    out = root / f"run-{strategy}-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.procs),
           "-m", "hyperclone.cli", "train", str(model_dir), "--data", str(corpus), "--out", str(out),
           "--tokens", str(steps * args.batch * args.seq_len), "--batch-tokens", str(args.batch * args.seq_len),
           "--seq-len", str(args.seq_len), "--eval-every", str(10**9), "--eval-tokens", str(args.seq_len),
           "--save-every", str(10**9), "--log-every", "10", "--cache-dir", str(root / "cache"), "--no-progress",
           "--lr", "1e-3", "--warmup", "5", "--strategy", strategy]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t, json.loads((out / "train_summary.json").read_text())


def strategies(model_dir: Path, corpus: Path, root: Path, args) -> list[dict]:
    step_tokens = args.batch * args.seq_len
    launched(model_dir, corpus, root, args, 2, args.strategy[0])  # tokenize once, outside the timing
    rows = []
    for strategy in args.strategy:
        best, summary = 0.0, {}
        for _ in range(args.repeats):
            short, _ = launched(model_dir, corpus, root, args, 5, strategy)
            long, summary = launched(model_dir, corpus, root, args, 5 + args.steps, strategy)
            best = max(best, args.steps * step_tokens / (long - short))
        per_proc = summary["state_bytes_per_process"]
        rows.append({"strategy": strategy, "processes": args.procs, "tokens_per_s": round(best, 1),
                     "peak_rss_gib": [round(p["peak_rss_bytes"] / 2**30, 3) for p in per_proc],
                     "state_gib": [round((p["param_bytes"] + p["optimizer_bytes"]) / 2**30, 3) for p in per_proc]})
    return rows


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores, no GPU"
    return f"{platform.processor() or platform.machine()} ({dev}), torch {torch.__version__}"


def strategies_main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        model_dir, corpus = build(root, args)
        from safetensors.torch import load_file
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        params = sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())
        rows = strategies(model_dir, corpus, root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    model = {"family": "llama", "hidden": args.hidden, "layers": args.layers, "vocab": config.vocab_size,
             "parameters": params}
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]), "model": model,
              "batch_tokens": args.batch * args.seq_len, "seq_len": args.seq_len, "timed_steps": args.steps,
              "repeats": args.repeats, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def minimal(model_dir: Path, corpus: Path, root: Path, args, steps: int) -> float:
    """Seconds for `steps` optimizer steps of a bare loop (after 3 warm-up steps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tokens = np.asarray(load_corpus([corpus], tok, root / "cache").tokens)
    sampler = WindowSampler(tokens, args.seq_len, seed=0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95))
    params = list(model.parameters())
    t = 0.0
    for step in range(steps + 3):
        if step == 3:
            t = time.perf_counter()
        x, y = sampler.batch(sampler.windows(step * args.batch, args.batch))
        loss = causal_lm_loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategy", action="append", choices=("ddp", "fsdp"),
                    help="compare hyperclone train's strategies on --procs processes instead (repeatable)")
    ap.add_argument("--procs", type=int, default=2, help="--strategy: processes (torchrun)")
    ap.add_argument("--json", help="--strategy: also write the result here")
    args = ap.parse_args()
    if args.strategy:
        strategies_main(args)
        return
    step_tokens = args.batch * args.seq_len
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        model_dir, corpus = build(root, args)
        best_min, best_h = 0.0, 0.0
        for _ in range(args.repeats):
            best_min = max(best_min, args.steps * step_tokens / minimal(model_dir, corpus, root, args, args.steps))
            short = harness(model_dir, corpus, root, args, 10)
            long = harness(model_dir, corpus, root, args, 10 + args.steps)
            best_h = max(best_h, args.steps * step_tokens / (long - short))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"machine: {platform.processor() or platform.machine()} ({dev}), torch {torch.__version__}, "
          f"date {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"model: llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} x "
          f"{args.seq_len} tokens; best of {args.repeats} x {args.steps} steps")
    print(f"{'loop':<28}{'tokens/s':>12}{'relative':>10}")
    print(f"{'minimal PyTorch loop':<28}{best_min:>12,.0f}{1.0:>10.3f}")
    print(f"{'hyperclone train':<28}{best_h:>12,.0f}{best_h / best_min:>10.3f}")


if __name__ == "__main__":
    main()
