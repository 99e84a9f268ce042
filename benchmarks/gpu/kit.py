"""GPU evidence kit (issue 13, item 3). Run it through `bash benchmarks/gpu/run.sh`, which installs hyperclone first.

Measures, within a time budget (default 9 minutes from run.sh's start, install included):

(a) throughput: `hyperclone train` against a bare PyTorch loop (benchmarks/gpu/bare_loop.py: same model, same
    batch, AdamW, torch.autocast bf16), eager and under torch.compile, on a ~125M-parameter Llama; tokens/s and
    model FLOPs utilisation against a bf16 matmul peak measured on the spot and against 790 TFLOP/s.
(b) one ladder point: a small llama pretrained with `hyperclone train`, grown 2x with `hyperclone grow`'s default
    recipe, against random init of the grown shape, both trained with the same recipe at >= 10 tokens per
    parameter of the grown model, 2 seeds. The pair is the largest of a fixed list whose runs fit the time left:
    each candidate's grown shape is timed for a few steps of the same training loop first (`calibration`).

Corpus: Python sources found on the machine (standard library through hyperclone's experiment machinery, plus the
installed site-packages .py files), a byte-level BPE trained on a prefix of it; no network.
Writes OUT/gpu_kit.json, OUT/gpu_kit.md, OUT/gpu_kit.png, OUT/logs/ (every child's output) and OUT/runs/ (every
training run's metrics.jsonl and summary). `--smoke`: the same code paths at tiny sizes on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars, here and in every child
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network that is not there
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # hyperclone importable even where `pip install -e .` failed
    sys.path.insert(0, str(REPO))

import kit_report  # noqa: E402
import torch  # noqa: E402

REFERENCE_PEAK_TFLOPS = 790.0  # bf16 8192^3 matmul on the H200 this kit was sized for: the MFU ceiling there
FLOPS_FORMULA = ("(6·N + 6·n_layers·seq_len·d_attn) per token, N = parameters without the input embedding table "
                 "(the output projection counted), d_attn = heads × head_dim: hyperclone/experiments/report.py "
                 "FLOPS_FORMULA (Kaplan et al. 2020)")
SMALL_COST = 0.5  # time estimate only: the small model's run costs at most this many grown runs of the same tokens
RESULTS, REPORT, PLOT = "gpu_kit.json", "gpu_kit.md", "gpu_kit.png"


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int

    def wider(self, n: int) -> Shape:
        return Shape(self.hidden * n, self.layers, self.heads * n, self.ffn * n)


@dataclass(frozen=True)
class Sizes:
    name: str
    dtype: str  # bf16 (autocast, fp32 master weights) or fp32, for every loop and run
    peak_n: int  # square matmul of the peak measurement
    corpus_bytes: int
    tokenizer_bytes: int  # the BPE is trained on this prefix of the corpus
    vocab: int  # BPE size (the 125M model's vocabulary is tp_vocab regardless)
    site_packages: bool  # corpus: standard library plus installed .py files (else the standard library only)
    # (a) throughput
    tp_shape: Shape
    tp_vocab: int
    tp_seq: int
    tp_batch: int  # sequences per step, one forward pass
    tp_warmup: int
    tp_steps: int  # timed steps of each bare variant
    hc_steps: int  # steps of the hyperclone train run; its first log interval is warm-up
    hc_log_every: int
    compile_backend: str
    bare_timeout_s: float  # both bare variants, compilation included
    hc_timeout_s: float
    # (b) ladder point
    candidates: tuple[Shape, ...]  # small shapes, largest first; each grown 2x in width
    lad_seq: int
    lad_batch: int  # sequences per step
    tokens_per_param: float  # of the grown model (all parameters)
    min_steps: int
    small_lr: float
    lr: float
    evals_per_run: int
    eval_tokens: int
    seeds: tuple[int, ...]
    cal_steps: int
    cal_log_every: int
    run_overhead_s: float  # start-up allowance in the time estimate of the ladder runs
    feasible_mfu: float  # a candidate needing more than this MFU to fit is not even timed
    reserve_after_bare_s: float  # time the bare loops leave for hyperclone train and the ladder
    report_reserve_s: float  # runs still going this long before the deadline are stopped


GPU = Sizes(
    name="gpu", dtype="bf16", peak_n=8192, corpus_bytes=120_000_000, tokenizer_bytes=12_000_000, vocab=4096,
    site_packages=True,
    tp_shape=Shape(768, 12, 12, 2048), tp_vocab=32000, tp_seq=1024, tp_batch=32, tp_warmup=5, tp_steps=30,
    hc_steps=45, hc_log_every=5, compile_backend="inductor", bare_timeout_s=300, hc_timeout_s=150,
    candidates=(Shape(256, 8, 4, 1024), Shape(192, 8, 3, 768), Shape(128, 8, 2, 512), Shape(128, 4, 2, 512),
                Shape(96, 4, 3, 384)),
    lad_seq=512, lad_batch=128, tokens_per_param=10.0, min_steps=100, small_lr=3e-3, lr=2e-3, evals_per_run=20,
    eval_tokens=65536, seeds=(0, 1), cal_steps=30, cal_log_every=5, run_overhead_s=45.0, feasible_mfu=0.5,
    reserve_after_bare_s=240.0, report_reserve_s=20.0,
)
SMOKE = Sizes(
    name="smoke", dtype="fp32", peak_n=256, corpus_bytes=150_000, tokenizer_bytes=150_000, vocab=512,
    site_packages=False,
    tp_shape=Shape(64, 2, 2, 128), tp_vocab=1024, tp_seq=64, tp_batch=4, tp_warmup=2, tp_steps=4,
    hc_steps=8, hc_log_every=2, compile_backend="eager", bare_timeout_s=180, hc_timeout_s=120,
    candidates=(Shape(32, 2, 2, 64),),
    lad_seq=64, lad_batch=8, tokens_per_param=0.05, min_steps=12, small_lr=3e-3, lr=2e-3, evals_per_run=4,
    # one seed here: every run is a process start, and the test suite runs this on 2 busy cores
    eval_tokens=512, seeds=(0,), cal_steps=4, cal_log_every=2, run_overhead_s=0.0, feasible_mfu=0.5,
    reserve_after_bare_s=0.0, report_reserve_s=0.0,
)


class Clock:
    def __init__(self, started_at: float, budget_s: float):
        self.t0, self.deadline = started_at, started_at + budget_s
        self.timeline: list[dict[str, Any]] = []

    def now(self) -> float:
        return round(time.time() - self.t0, 2)

    def left(self) -> float:
        return self.deadline - time.time()

    def say(self, msg: str) -> None:
        print(f"[kit {self.now():6.1f}s] {msg}", file=sys.stderr, flush=True)

    def phase(self, name: str, start: float) -> None:
        self.timeline.append({"phase": name, "start_s": round(start, 2), "end_s": self.now()})


@dataclass
class Context:
    sizes: Sizes
    clock: Clock
    out: Path
    work: Path
    corpus: Path
    cache: Path
    tokenizer: Any
    eot: int
    tokens_file: Path
    tokens_dtype: str
    train_tokens: int
    peak_tflops: float


# ----------------------------------------------------------------------------- environment and peak


def environment(install: str) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "install": install,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), device_type="cuda", device_count=torch.cuda.device_count(),
                   device_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    else:
        env.update(device=f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
                          "threads)", device_type="cpu")
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10)
        if head.returncode == 0:
            env["git_commit"] = head.stdout.strip()
            env["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def measure_peak(n: int) -> dict[str, Any]:
    """Dense matmul throughput: bf16 on a GPU (the MFU denominator), fp32 on a CPU. Best of 3 timed blocks."""
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    iters = 10 if cuda else 3

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync()
        times.append((time.perf_counter() - t) / iters)
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    best = min(times)
    return {"tflops": 2 * n**3 / best / 1e12, "dtype": str(dtype).replace("torch.", ""), "n": n,
            "seconds_per_matmul": best, "method": f"{n}x{n} @ {n}x{n} {str(dtype).replace('torch.', '')} matmul, "
                                                  f"best of 3 blocks of {iters} after 3 warm-up calls",
            "reference_tflops": REFERENCE_PEAK_TFLOPS}


# ----------------------------------------------------------------------------- corpus, tokenizer, models


def python_sources(site_packages: bool) -> tuple[list[Path], str]:
    from hyperclone.experiments.corpora import stdlib_files

    files = set(stdlib_files())
    desc = f"the Python {platform.python_version()} standard library sources ({sysconfig.get_paths()['stdlib']})"
    if site_packages:
        roots = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
                files.update(Path(dirpath) / f for f in filenames if f.endswith(".py"))
        desc += " and the .py files installed in " + ", ".join(roots)
    ordered = sorted(files)
    random.Random(0).shuffle(ordered)
    return ordered, desc


def build_corpus(work: Path, sizes: Sizes) -> tuple[Path, Path, dict[str, Any]]:
    """corpus.jsonl (up to corpus_bytes, files of 1 MB or less, fixed shuffled order) and its tokenizer prefix."""
    files, desc = python_sources(sizes.site_packages)
    corpus, tok_corpus = work / "corpus.jsonl", work / "tokenizer-corpus.jsonl"
    n_docs = n_bytes = 0
    with open(corpus, "w", encoding="utf-8") as fh, open(tok_corpus, "w", encoding="utf-8") as th:
        for path in files:
            if n_bytes >= sizes.corpus_bytes:
                break
            try:
                if not 0 < path.stat().st_size <= 1_000_000:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if not text.strip():
                continue
            line = json.dumps({"text": text}) + "\n"
            fh.write(line)
            if n_bytes < sizes.tokenizer_bytes:
                th.write(line)
            n_docs += 1
            n_bytes += len(text.encode("utf-8"))
    info = {"description": f"{desc}, files of at most 1 MB in a fixed shuffled order, capped at "
                          f"{sizes.corpus_bytes / 1e6:g} MB", "documents": n_docs, "bytes": n_bytes,
            "files_available": len(files)}
    return corpus, tok_corpus, info


def llama_config(shape: Shape, vocab: int, seq_len: int, eot: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.heads, head_dim=shape.hidden // shape.heads,
                       max_position_embeddings=seq_len, rope_theta=10000.0, tie_word_embeddings=False,
                       bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)


def save_model(config, seed: int, tokenizer, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def model_stats(config, seq_len: int) -> dict[str, Any]:
    """Parameter counts (counted on a meta-device model) and training FLOPs per token (FLOPS_FORMULA)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    n = total - model.get_input_embeddings().weight.numel()
    d_attn = config.num_attention_heads * config.head_dim
    return {"hidden": config.hidden_size, "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "ffn": config.intermediate_size, "vocab": config.vocab_size,
            "params": total, "params_without_input_embedding": n,
            "flops_per_token": 6 * n + 6 * config.num_hidden_layers * seq_len * d_attn}


def prepare(sizes: Sizes, clock: Clock, out: Path, work: Path, peak: dict[str, Any], results: dict) -> Context:
    from transformers import AutoTokenizer

    from hyperclone.experiments.setup import EOT, train_tokenizer
    from hyperclone.train.data import load_corpus

    start = clock.now()
    clock.say("building the corpus")
    corpus, tok_corpus, info = build_corpus(work, sizes)
    clock.say(f"corpus: {info['documents']:,} files, {info['bytes'] / 1e6:.1f} MB; training a {sizes.vocab}-token BPE")
    train_tokenizer(tok_corpus, sizes.vocab, work / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    clock.say("tokenizing the corpus into the token cache the training runs share")
    t = time.perf_counter()
    data = load_corpus([corpus], tokenizer, work / "cache")
    tokenize_s = time.perf_counter() - t
    data.split(0.05, max(sizes.tp_seq, sizes.lad_seq))  # hyperclone train's default --val-fraction
    meta = json.loads((data.folder / "meta.json").read_text())
    info.update(tokens=data.n_tokens, train_tokens=data.val_start, val_tokens=data.n_tokens - data.val_start,
                bytes_per_token=info["bytes"] / data.n_tokens, tokenizer=f"byte-level BPE, {len(tokenizer)} tokens, "
                f"trained on the first {sizes.tokenizer_bytes / 1e6:g} MB of the corpus",
                tokenize_s=round(tokenize_s, 2))
    results["corpus"] = info
    clock.phase("corpus, tokenizer, token cache", start)
    return Context(sizes=sizes, clock=clock, out=out, work=work, corpus=corpus, cache=work / "cache",
                   tokenizer=tokenizer, eot=tokenizer.convert_tokens_to_ids(EOT),
                   tokens_file=data.folder / "tokens.bin",
                   tokens_dtype=meta["dtype"], train_tokens=data.val_start, peak_tflops=peak["tflops"])


# ----------------------------------------------------------------------------- child processes


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 4) // 4)))
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


class Child:
    """A child process in its own session, logged to a file, stopped by its process group on a deadline."""

    def __init__(self, name: str, cmd: list[str], log: Path):
        self.name, self.cmd, self.log = name, cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(log, "w")
        self.start = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO,
                                     start_new_session=True)
        self.rc: int | None = None
        self.end: float | None = None
        self.stopped = False

    def poll(self) -> int | None:
        if self.rc is None and self.proc.poll() is not None:
            self.rc, self.end = self.proc.returncode, time.time()
            self.fh.close()
        return self.rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.stopped = True
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.poll()

    def wait(self, limit_s: float) -> int | None:
        end = time.time() + max(1.0, limit_s)
        while self.poll() is None:
            if time.time() > end:
                self.stop()
                break
            time.sleep(0.2)
        return self.rc

    @property
    def wall_s(self) -> float:
        return round((self.end or time.time()) - self.start, 2)

    def status(self) -> str:
        if self.stopped:
            return "stopped at its time limit"
        return "ok" if self.rc == 0 else f"failed (exit {self.rc}, see {self.log.name})"


def hc_train(model: Path, ctx: Context, run: Path, tokens: int, batch_tokens: int, seq_len: int, lr: float,
             seed: int, eval_every: int, eval_tokens: int, log_every: int) -> list[str]:
    """The `hyperclone train` command line (run as `python -m hyperclone.cli train`, the same entry point)."""
    return [sys.executable, "-m", "hyperclone.cli", "train", str(model), "--data", str(ctx.corpus), "--out", str(run),
            "--tokens", str(tokens), "--batch-tokens", str(batch_tokens), "--seq-len", str(seq_len), "--lr", str(lr),
            "--seed", str(seed), "--eval-every", str(eval_every), "--eval-tokens", str(eval_tokens),
            "--save-every", str(10**9), "--keep-checkpoints", "1", "--log-every", str(log_every),
            "--dtype", ctx.sizes.dtype, "--cache-dir", str(ctx.cache), "--no-progress"]


def shown(cmd: list[str]) -> str:
    if cmd[1:4] == ["-m", "hyperclone.cli", "train"]:
        return "hyperclone " + shlex.join(cmd[3:])
    return shlex.join(["python", *cmd[1:]])


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def keep_run_files(run: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "train_summary.json"):
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)


def steady_rate(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """tokens/s of hyperclone train's own log intervals: the median after the first (warm-up) interval."""
    rates = [m["tokens_per_s"] for m in metrics if m.get("train_loss") is not None and m.get("tokens_per_s")]
    steady = rates[1:] or rates
    return {"tokens_per_s": statistics.median(steady) if steady else None, "interval_rates": rates,
            "intervals_used": len(steady)}


def add_mfu(row: dict[str, Any], flops_per_token: float, peak_tflops: float) -> None:
    rate = row.get("tokens_per_s")
    if rate:
        achieved = rate * flops_per_token / 1e12
        row.update(model_tflops=achieved, mfu=achieved / peak_tflops, mfu_vs_reference=achieved / REFERENCE_PEAK_TFLOPS)


# ----------------------------------------------------------------------------- (a) throughput


def part_throughput(ctx: Context, results: dict[str, Any]) -> None:
    s, clock = ctx.sizes, ctx.clock
    start = clock.now()
    config = llama_config(s.tp_shape, s.tp_vocab, s.tp_seq, ctx.eot)
    stats = model_stats(config, s.tp_seq)
    step_tokens = s.tp_batch * s.tp_seq
    res: dict[str, Any] = {
        "model": stats, "seq_len": s.tp_seq, "sequences_per_step": s.tp_batch, "tokens_per_step": step_tokens,
        "dtype": s.dtype, "flops_formula": FLOPS_FORMULA, "peak_tflops": ctx.peak_tflops,
        "reference_peak_tflops": REFERENCE_PEAK_TFLOPS, "variants": {},
    }
    results["throughput"] = res
    clock.say(f"(a) building the {stats['params'] / 1e6:.2f}M-parameter llama")
    model_dir = save_model(config, 0, ctx.tokenizer, ctx.work / "models" / "throughput")

    clock.say("(a) bare PyTorch loop, eager then torch.compile")
    bare_json = ctx.out / "logs" / "bare_loop.json"
    cmd = [sys.executable, str(HERE / "bare_loop.py"), "--model", str(model_dir), "--tokens-file", str(ctx.tokens_file),
           "--tokens-dtype", ctx.tokens_dtype, "--seq-len", str(s.tp_seq), "--batch", str(s.tp_batch),
           "--warmup", str(s.tp_warmup), "--steps", str(s.tp_steps), "--lr", "3e-4", "--dtype", s.dtype,
           "--variants", "eager,compile", "--compile-backend", s.compile_backend, "--json", str(bare_json)]
    child = Child("bare_loop", cmd, ctx.out / "logs" / "bare_loop.log")
    child.wait(min(s.bare_timeout_s, clock.left() - s.reserve_after_bare_s))
    bare = json.loads(bare_json.read_text()) if bare_json.exists() else {"variants": {}}
    for variant in ("eager", "compile"):
        row = bare["variants"].get(variant) or {"variant": variant, "error": f"not measured: {child.status()}"}
        how = f"torch.compile ({s.compile_backend})" if variant == "compile" else "eager"
        row.update(loop=f"bare PyTorch loop, {how}", command=shown(cmd), process_wall_s=child.wall_s)
        add_mfu(row, stats["flops_per_token"], ctx.peak_tflops)
        res["variants"][f"bare_{variant}"] = row

    for variant in ("eager", "compile"):
        clock.say(f"(a) hyperclone train, {variant}")
        key = "hyperclone_train" if variant == "eager" else "hyperclone_train_compile"
        res["variants"][key] = hc_throughput(ctx, model_dir, variant, stats, step_tokens)
    base = res["variants"]["bare_eager"].get("tokens_per_s")
    for r in res["variants"].values():
        if base and r.get("tokens_per_s"):
            r["vs_bare_eager"] = r["tokens_per_s"] / base
    shutil.rmtree(model_dir, ignore_errors=True)
    clock.phase("(a) throughput", start)


def hc_throughput(ctx: Context, model_dir: Path, variant: str, stats: dict[str, Any], step_tokens: int
                  ) -> dict[str, Any]:
    """One `hyperclone train` run on the throughput model, eager or with `--compile` (inductor, every decoder
    block): tokens/s from its own metrics.jsonl (steady_rate), MFU, losses; its light files kept under OUT."""
    s, clock = ctx.sizes, ctx.clock
    suffix = "" if variant == "eager" else f"-{variant}"
    run = ctx.work / "runs" / f"throughput-hyperclone{suffix}"
    cmd = hc_train(model_dir, ctx, run, s.hc_steps * step_tokens, step_tokens, s.tp_seq, 3e-4, 0, 10**9, step_tokens,
                   s.hc_log_every) + (["--compile"] if variant == "compile" else [])
    child = Child(f"hyperclone_train{suffix}", cmd, ctx.out / "logs" / f"throughput-hyperclone{suffix}.log")
    child.wait(min(s.hc_timeout_s, max(30.0, clock.left() - 150.0 - s.report_reserve_s)))
    metrics = read_metrics(run)
    keep_run_files(run, ctx.out / "runs" / f"throughput-hyperclone{suffix}")
    how = "eager" if variant == "eager" else "--compile: torch.compile (inductor) per decoder block"
    row: dict[str, Any] = {"variant": f"hyperclone{suffix}", "loop": f"hyperclone train ({how})", "command": shown(cmd),
                           "process_wall_s": child.wall_s, "status": child.status(), "log_every": s.hc_log_every,
                           "steps": max((m["step"] for m in metrics), default=0), "step_tokens": step_tokens,
                           "losses": [m["train_loss"] for m in metrics if m.get("train_loss") is not None],
                           "val_losses": [m["val_loss"] for m in metrics if m.get("val_loss") is not None]}
    row.update(steady_rate(metrics))
    if row["tokens_per_s"]:
        row["step_s"] = step_tokens / row["tokens_per_s"]
    if child.rc != 0 or not row["tokens_per_s"]:
        row["error"] = child.status()
    add_mfu(row, stats["flops_per_token"], ctx.peak_tflops)
    shutil.rmtree(run, ignore_errors=True)
    return row


# ----------------------------------------------------------------------------- (b) ladder point


def calibrate(ctx: Context, config, name: str, batch_tokens: int) -> dict[str, Any]:
    """tokens/s of the training loop on a shape: a few steps of hyperclone.train.loop.train, in this process."""
    from hyperclone.train.config import TrainConfig
    from hyperclone.train.loop import train

    s = ctx.sizes
    folder = ctx.work / "calibrate" / name
    t = time.perf_counter()
    model = save_model(config, 0, ctx.tokenizer, folder / "model")
    train(TrainConfig(model=model, data=[ctx.corpus], out=folder / "run", tokens=s.cal_steps * batch_tokens, lr=s.lr,
                      batch_tokens=batch_tokens, seq_len=s.lad_seq, eval_every=10**9, eval_tokens=s.lad_seq,
                      save_every=10**9, keep_checkpoints=1, log_every=s.cal_log_every, dtype=s.dtype,
                      cache_dir=ctx.cache, progress=False))
    rate = steady_rate(read_metrics(folder / "run"))
    shutil.rmtree(folder, ignore_errors=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"tokens_per_s": rate["tokens_per_s"], "steps": s.cal_steps, "seconds": round(time.perf_counter() - t, 2)}


def choose_pair(ctx: Context, batch_tokens: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The largest candidate pair whose runs are estimated to fit the time left (the smallest if none does)."""
    s, clock = ctx.sizes, ctx.clock
    options = []
    for small in s.candidates:
        grown = small.wider(2)
        small_cfg, grown_cfg = (llama_config(x, len(ctx.tokenizer), s.lad_seq, ctx.eot) for x in (small, grown))
        gst = model_stats(grown_cfg, s.lad_seq)
        steps = max(s.min_steps, math.ceil(s.tokens_per_param * gst["params"] / batch_tokens))
        options.append({"small": model_stats(small_cfg, s.lad_seq), "grown": gst, "steps": steps,
                        "tokens": steps * batch_tokens, "small_shape": small, "grown_config": grown_cfg})
    chosen = None
    for i, opt in enumerate(options):
        left = clock.left() - s.report_reserve_s
        flops = opt["tokens"] * (4 * opt["grown"]["flops_per_token"] + opt["small"]["flops_per_token"])
        opt["floor_s"] = flops / (s.feasible_mfu * ctx.peak_tflops * 1e12)
        if opt["floor_s"] + s.run_overhead_s > left:
            opt["decision"] = (f"skipped: needs {opt['floor_s']:.0f} s even at {s.feasible_mfu:.0%} of the measured "
                               f"peak, {left:.0f} s left")
            continue
        clock.say(f"(b) timing candidate {i + 1}: grown {opt['grown']['params'] / 1e6:.1f}M parameters")
        opt["calibration"] = calibrate(ctx, opt["grown_config"], f"cand{i}", batch_tokens)
        rate = opt["calibration"]["tokens_per_s"]
        left = clock.left() - s.report_reserve_s
        if not rate:
            opt["decision"] = "calibration measured nothing"
            continue
        opt["estimate_s"] = (4 + SMALL_COST) * opt["tokens"] / rate + s.run_overhead_s
        if opt["estimate_s"] <= left:
            opt["decision"] = f"chosen: estimated {opt['estimate_s']:.0f} s, {left:.0f} s left"
            chosen = opt
            break
        opt["decision"] = f"too slow: estimated {opt['estimate_s']:.0f} s, {left:.0f} s left"
    if chosen is None:
        chosen = options[-1]
        chosen["decision"] = ("chosen although no candidate fits by estimate (the smallest); runs still going at the "
                              "deadline are stopped and reported unfinished")
    return chosen, options


def curve_of(metrics: list[dict[str, Any]], flops_per_token: float) -> list[dict[str, Any]]:
    return [{"step": m["step"], "tokens": m["tokens"], "val_loss": m["val_loss"], "elapsed_s": m["elapsed_s"],
             "flops": m["tokens"] * flops_per_token} for m in metrics if m.get("val_loss") is not None]


def mean_curve(curves: list[list[dict[str, Any]]]) -> list[dict[str, float]]:
    n = min(len(c) for c in curves)
    return [{k: statistics.fmean(c[i][k] for c in curves) for k in ("tokens", "val_loss")} for i in range(n)]


def speedup(grown: list[dict[str, Any]], random_: list[dict[str, Any]], small_tokens: int, small_fpt: float,
            grown_fpt: float) -> dict[str, Any]:
    target = random_[-1]["val_loss"]
    from hyperclone.experiments.curve_math import x_to_reach

    need = x_to_reach([p["tokens"] for p in grown], [p["val_loss"] for p in grown], target)
    budget = random_[-1]["tokens"]
    out: dict[str, Any] = {"target_val_loss": target, "grown_tokens_to_target": need,
                           "reached_at_start": need == 0.0, "speedup_tokens": None,
                           "speedup_tokens_incl_small": None, "speedup_flops_incl_small": None}
    if need is not None:
        out["speedup_tokens"] = budget / need if need > 0 else None  # None with reached_at_start: unbounded
        out["speedup_tokens_incl_small"] = budget / (need + small_tokens)
        out["speedup_flops_incl_small"] = budget * grown_fpt / (need * grown_fpt + small_tokens * small_fpt)
    return out


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None), "values": values}


def summarize_ladder(runs: dict[str, dict[str, Any]], seeds: tuple[int, ...], small_tokens: int, small_fpt: float,
                     grown_fpt: float) -> dict[str, Any]:
    ok = {name: r for name, r in runs.items() if r["status"] == "ok" and r["curve"]}
    grown = {s: ok[f"grown-s{s}"]["curve"] for s in seeds if f"grown-s{s}" in ok}
    rand = {s: ok[f"random-s{s}"]["curve"] for s in seeds if f"random-s{s}" in ok}
    out: dict[str, Any] = {
        "final_val_loss": {"grown": spread([c[-1]["val_loss"] for c in grown.values()]),
                           "random": spread([c[-1]["val_loss"] for c in rand.values()])},
        "complete": len(grown) == len(seeds) and len(rand) == len(seeds),
        "definitions": {
            "speedup_tokens": "random's tokens / tokens the grown model needs to reach random's final val loss, "
                              "on the seed-mean curves (linear interpolation; both arms have the same budget and "
                              "schedule); null when never reached, and unbounded (null, reached_at_start) when the "
                              "grown model starts below it",
            "speedup_tokens_incl_small": "as speedup_tokens with the small model's pretraining tokens added",
            "speedup_flops_incl_small": "random's FLOPs / (grown FLOPs to the target + the small model's "
                                        "pretraining FLOPs)",
            "final_loss_gap": "(random - grown) / random, seed means",
        },
    }
    if grown and rand:
        out.update(speedup(mean_curve(list(grown.values())), mean_curve(list(rand.values())), small_tokens,
                           small_fpt, grown_fpt))
        g, r = out["final_val_loss"]["grown"]["mean"], out["final_val_loss"]["random"]["mean"]
        out["final_loss_gap"] = (r - g) / r
        out["per_seed"] = [{"seed": s, **speedup(grown[s], rand[s], small_tokens, small_fpt, grown_fpt)}
                           for s in seeds if s in grown and s in rand]
    small = ok.get("small")
    if small and grown:
        starts = [c[0]["val_loss"] for c in grown.values() if c[0]["step"] == 0]
        out["function_preserved_check"] = {
            "small_final_val_loss": small["curve"][-1]["val_loss"], "grown_val_loss_at_step_0": starts,
            "note": "the grown model's first evaluation (step 0, same validation windows) should equal the small "
                    "model's final one: growth keeps the function"}
    return out


@dataclass
class LadderPlan:
    """The chosen pair and the recipe every run of the ladder point shares."""

    small_config: Any
    grown_config: Any
    small: dict[str, Any]  # model_stats
    grown: dict[str, Any]
    steps: int
    tokens: int
    batch_tokens: int
    eval_every: int
    log_every: int


def plan_ladder(ctx: Context, lad: dict[str, Any]) -> LadderPlan:
    """Choose the pair (timing candidates) and record sizes, budget and recipe in `lad`."""
    s = ctx.sizes
    batch_tokens = s.lad_batch * s.lad_seq
    chosen, options = choose_pair(ctx, batch_tokens)
    lad["candidates"] = [{k: v for k, v in o.items() if k not in ("grown_config", "small_shape")} for o in options]
    lad["sizing"] = (f"largest of {len(options)} candidate pairs whose 4 grown-shape runs plus the small run "
                     f"(estimated at {SMALL_COST} of one) fit the time left at the tokens/s its calibration measured")
    steps, tokens = chosen["steps"], chosen["tokens"]
    sst, gst = chosen["small"], chosen["grown"]
    plan = LadderPlan(small_config=llama_config(chosen["small_shape"], len(ctx.tokenizer), s.lad_seq, ctx.eot),
                      grown_config=chosen["grown_config"], small=sst, grown=gst, steps=steps, tokens=tokens,
                      batch_tokens=batch_tokens, eval_every=max(1, steps // s.evals_per_run),
                      log_every=max(1, steps // 50))
    lad.update(small=sst, grown=gst, tokens_per_run=tokens, steps_per_run=steps, small_tokens=tokens,
               tokens_per_param_grown=tokens / gst["params"], tokens_per_param_small=tokens / sst["params"],
               epochs=tokens / ctx.train_tokens)
    lad["recipe"] = {"schedule": "cosine (hyperclone train default)", "warmup": "5% (default)",
                     "min_lr_ratio": "0.1 (default)", "lr_small": s.small_lr, "lr": s.lr,
                     "lr_note": "one peak learning rate for both arms (the CPU presets' best for random init); no "
                                "learning-rate search fits the budget",
                     "growth": "hyperclone grow --width 2 with every other option at its default",
                     "random_init_seeds": [1000 + x for x in s.seeds], "data_order_seed": "the run's seed",
                     "eval_every": plan.eval_every, "eval_tokens": s.eval_tokens, "log_every": plan.log_every,
                     "dtype": s.dtype}
    return plan


def grow_small(ctx: Context, final: Path, dest: Path) -> dict[str, Any]:
    """`hyperclone grow` with its defaults (width 2); what its record says about the growth."""
    from hyperclone.grow.engine import grow

    t = time.perf_counter()
    grow(final, dest, width=2)
    prov = json.loads((dest / "hyperclone.json").read_text())
    return {"seconds": round(time.perf_counter() - t, 3), "spec": prov.get("spec"),
            "function_preserving": prov.get("function_preserving"), "grown_parameters": prov.get("grown_parameters")}


def run_arms(ctx: Context, plan: LadderPlan, lad: dict[str, Any]) -> dict[str, Child]:
    """Small and random arms at once; the grown arms as soon as the small model is grown; all stopped at the
    deadline. Every run is a `hyperclone train` process."""
    s, clock = ctx.sizes, ctx.clock
    models, runs = ctx.work / "ladder" / "models", ctx.work / "ladder" / "runs"

    def launch(name: str, model: Path, lr: float, seed: int) -> Child:
        cmd = hc_train(model, ctx, runs / name, plan.tokens, plan.batch_tokens, s.lad_seq, lr, seed, plan.eval_every,
                       s.eval_tokens, plan.log_every)
        return Child(name, cmd, ctx.out / "logs" / f"ladder-{name}.log")

    small_init = save_model(plan.small_config, 0, ctx.tokenizer, models / "small-init")
    children = {"small": launch("small", small_init, s.small_lr, 0)}
    for seed in s.seeds:
        folder = save_model(plan.grown_config, 1000 + seed, ctx.tokenizer, models / f"random-s{seed}")
        children[f"random-s{seed}"] = launch(f"random-s{seed}", folder, s.lr, seed)
    stop_at = clock.deadline - s.report_reserve_s
    grown_started = False
    while True:
        small = children["small"]
        if not grown_started and small.poll() is not None:
            grown_started = True
            final = runs / "small" / "final"
            if small.rc == 0 and (final / "config.json").exists():
                lad["grow"] = grow_small(ctx, final, models / "grown")
                clock.say("(b) grown; grown arms")
                for seed in s.seeds:
                    children[f"grown-s{seed}"] = launch(f"grown-s{seed}", models / "grown", s.lr, seed)
            else:
                lad["grow"] = {"error": f"the small model's run {small.status()}: nothing to grow"}
        if grown_started and all(c.poll() is not None for c in children.values()):
            return children
        if time.time() > stop_at:
            clock.say("(b) deadline: stopping the runs still going")
            for c in children.values():
                c.stop()
            return children
        time.sleep(0.5)


def collect_arm(ctx: Context, name: str, child: Child | None, flops_per_token: float) -> dict[str, Any]:
    run = ctx.work / "ladder" / "runs" / name
    metrics = read_metrics(run)
    keep_run_files(run, ctx.out / "runs" / f"ladder-{name}")
    curve = curve_of(metrics, flops_per_token)
    entry: dict[str, Any] = {"status": "not started (no grown model)" if child is None else child.status(),
                             "curve": curve,
                             "train_losses": [m["train_loss"] for m in metrics if m.get("train_loss") is not None]}
    if child is not None:
        entry.update(command=shown(child.cmd), process_wall_s=child.wall_s,
                     started_s=round(child.start - ctx.clock.t0, 2))
        if child.rc == 0 and not (run / "final" / "config.json").exists():
            entry["status"] = "failed (no final checkpoint)"
    if curve:  # a run stopped early has a last evaluation, not a final one
        entry.update({"final_val_loss" if entry["status"] == "ok" else "last_val_loss": curve[-1]["val_loss"],
                      "val_loss_at_start": curve[0]["val_loss"],
                      "tokens_trained": max(m["tokens"] for m in metrics)})
    entry.update(steady_rate(metrics))
    return entry


def part_ladder(ctx: Context, results: dict[str, Any]) -> None:
    s, clock = ctx.sizes, ctx.clock
    start = clock.now()
    lad: dict[str, Any] = {"seq_len": s.lad_seq, "sequences_per_step": s.lad_batch,
                           "tokens_per_step": s.lad_batch * s.lad_seq, "seeds": list(s.seeds), "runs": {}}
    results["ladder"] = lad
    plan = plan_ladder(ctx, lad)
    clock.phase("(b) sizing", start)
    start = clock.now()
    clock.say(f"(b) small {plan.small['params'] / 1e6:.2f}M -> grown {plan.grown['params'] / 1e6:.2f}M parameters, "
              f"{plan.tokens:,} tokens per run ({plan.tokens / plan.grown['params']:.1f} per grown parameter); "
              "small + random arms")
    children = run_arms(ctx, plan, lad)
    for name in ["small", *(f"{a}-s{x}" for a in ("random", "grown") for x in s.seeds)]:
        fpt = plan.small["flops_per_token"] if name == "small" else plan.grown["flops_per_token"]
        lad["runs"][name] = collect_arm(ctx, name, children.get(name), fpt)
    lad["concurrency"] = ("the small run and the random runs share the device from the start, the grown runs from "
                          "the moment the small model is grown: per-run tokens/s and wall times are under sharing")
    lad["summary"] = summarize_ladder(lad["runs"], s.seeds, plan.tokens, plan.small["flops_per_token"],
                                      plan.grown["flops_per_token"])
    if not lad["summary"]["complete"]:
        clock.say("(b) WARNING: not every ladder run finished (see gpu_kit.md)")
    clock.phase("(b) ladder runs", start)


# ----------------------------------------------------------------------------- main


def write_outputs(results: dict[str, Any], out: Path, clock: Clock) -> None:
    results["wall_s"] = clock.now()
    results["timeline"] = clock.timeline
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, out / RESULTS)
    kit_report.write_report(results, out, REPORT, PLOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test suite's check)")
    ap.add_argument("--started-at", type=float, default=None, help="epoch seconds when run.sh started")
    ap.add_argument("--budget-s", type=float, default=None, help="total seconds from --started-at (default 540)")
    ap.add_argument("--install", default="not run by run.sh")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else GPU
    if not args.smoke and not torch.cuda.is_available():
        print("kit: no CUDA device; the GPU sizes would take hours on a CPU (use --smoke for the CPU check)",
              file=sys.stderr)
        return 2
    clock = Clock(args.started_at or time.time(), args.budget_s or (540.0 if not args.smoke else 900.0))
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="hyperclone-gpu-kit-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "kit": "benchmarks/gpu/run.sh", "smoke": args.smoke, "budget_s": clock.deadline - clock.t0,
        "command": "bash benchmarks/gpu/run.sh" + (" --smoke" if args.smoke else ""),
        "sizes": json.loads(json.dumps(asdict(sizes))), "errors": [],
    }
    clock.say(f"started ({sizes.name} sizes); scratch folder {work}")
    try:
        results["environment"] = environment(args.install)
        start = clock.now()
        results["peak"] = measure_peak(sizes.peak_n)
        clock.phase("peak matmul", start)
        clock.say(f"device {results['environment']['device']}: {results['peak']['tflops']:.1f} TFLOP/s peak matmul")
        ctx = prepare(sizes, clock, out, work, results["peak"], results)
        for name, part in (("throughput", part_throughput), ("ladder", part_ladder)):
            try:
                part(ctx, results)
            except Exception as err:  # recorded; the other part still runs
                results["errors"].append({"part": name, "error": f"{type(err).__name__}: {err}",
                                          "traceback": traceback.format_exc()[-4000:]})
                clock.say(f"{name} failed: {type(err).__name__}: {err}")
            write_outputs(results, out, clock)
    except Exception as err:
        results["errors"].append({"part": "setup", "error": f"{type(err).__name__}: {err}",
                                  "traceback": traceback.format_exc()[-4000:]})
        clock.say(f"setup failed: {type(err).__name__}: {err}")
    finally:
        write_outputs(results, out, clock)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    clock.say(f"wrote {out / RESULTS}, {out / REPORT}, {out / PLOT} in {clock.now():.0f} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
