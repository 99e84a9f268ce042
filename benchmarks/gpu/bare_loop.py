"""A bare PyTorch training loop, the reference `hyperclone train` is measured against (no hyperclone code).

    python benchmarks/gpu/bare_loop.py --model DIR --tokens-file tokens.bin --tokens-dtype uint16 \
        --seq-len 1024 --batch 32 --variants eager,compile --json OUT.json

What any minimal pre-training script does per step, with the recipe of `hyperclone train`: a batch of random
windows from the token file, forward under torch.autocast (bf16) with fp32 master weights, cross-entropy on the
float logits, backward, global-norm clip at 1.0, AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only),
zero_grad. Variants: `eager`, and `compile` (the model wrapped in torch.compile; the optimizer stays eager).
Each variant loads the same checkpoint, runs --warmup steps (the first one compiles), then --steps timed steps
between two device synchronisations. The JSON is rewritten after every variant, so a variant killed for time
leaves the earlier ones measured.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(args: argparse.Namespace, variant: str, tokens: np.ndarray, device: torch.device):
    """The loop's step function for one variant (model loaded fresh from the checkpoint) and the model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device)
    model.config.use_cache = False
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    params = decay + no_decay
    fwd = torch.compile(model, backend=args.compile_backend) if variant == "compile" else model
    bf16 = args.dtype == "bf16"
    rng = np.random.default_rng(0)
    n_windows = (tokens.shape[0] - 1) // args.seq_len

    def step() -> torch.Tensor:
        wins = rng.integers(0, n_windows, size=args.batch)
        rows = np.stack([tokens[w * args.seq_len: w * args.seq_len + args.seq_len + 1] for w in wins])
        rows = torch.from_numpy(rows.astype(np.int64)).to(device, non_blocking=True)
        x, y = rows[:, :-1], rows[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = fwd(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step, model


def measure(args: argparse.Namespace, variant: str, tokens: np.ndarray, device: torch.device) -> dict:
    step, model = training_step(args, variant, tokens, device)
    bf16 = args.dtype == "bf16"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    first = step()
    sync(device)
    first_step_s = time.perf_counter() - t
    for _ in range(args.warmup - 1):
        step()
    sync(device)
    warmup_s = time.perf_counter() - t
    losses = []
    t = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    sync(device)
    elapsed = time.perf_counter() - t
    step_tokens = args.batch * args.seq_len
    result = {
        "variant": variant,
        "tokens_per_s": args.steps * step_tokens / elapsed,
        "step_s": elapsed / args.steps,
        "timed_steps": args.steps,
        "timed_s": elapsed,
        "warmup_steps": args.warmup,
        "first_step_s": first_step_s,  # with compile: the compilation
        "warmup_s": warmup_s,
        "step_tokens": step_tokens,
        "loss_first_step": float(first),
        "losses": [float(v) for v in losses],
        "autocast": "bf16" if bf16 else None,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "compile_backend": args.compile_backend if variant == "compile" else None,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if not all(math.isfinite(v) for v in result["losses"]):
        result["error"] = "non-finite loss"
    return result  # the model and optimizer go with this frame; main() empties the CUDA cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--tokens-file", type=Path, required=True)
    ap.add_argument("--tokens-dtype", default="uint16")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True, help="sequences per step")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (>= 1)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--variants", default="eager,compile")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    args.warmup = max(1, args.warmup)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as hyperclone train does
        torch.backends.cudnn.allow_tf32 = True
    tokens = np.memmap(args.tokens_file, dtype=np.dtype(args.tokens_dtype), mode="r")
    out: dict = {"device": str(device), "torch": torch.__version__, "variants": {}}
    write_json(args.json, out)
    for variant in args.variants.split(","):
        try:
            out["variants"][variant] = measure(args, variant, tokens, device)
        except Exception as err:  # recorded, and the next variant still runs
            out["variants"][variant] = {"variant": variant, "error": f"{type(err).__name__}: {err}"[:2000]}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        write_json(args.json, out)


if __name__ == "__main__":
    main()
