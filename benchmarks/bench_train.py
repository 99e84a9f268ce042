"""Throughput of `hyperclone train` against a minimal hand-written PyTorch loop (same model, same batch).

    python benchmarks/bench_train.py [--hidden 128 --layers 4 --vocab 2048 --seq-len 128 --batch 16 --steps 60]

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
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperclone.experiments.runner import stdlib_files, train_tokenizer  # noqa: E402
from hyperclone.train.data import WindowSampler, load_corpus  # noqa: E402
from hyperclone.train.loop import TrainConfig, causal_lm_loss, param_groups, train  # noqa: E402


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
    args = ap.parse_args()
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
