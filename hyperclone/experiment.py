"""`hyperclone experiment`: pretrain a small model, grow it, and race it against random init.

Steps, all local (nothing is downloaded):

1. corpus    the running interpreter's standard library sources (or --data), capped at the preset's size,
             written to DIR/corpus/corpus.jsonl in a fixed shuffled order
2. tokenizer byte-level BPE trained with `tokenizers` on that corpus, saved as a PreTrainedTokenizerFast
3. small     a llama-style model from scratch, trained with `hyperclone.train`
4. grow      `hyperclone.grow.grow` widens it (function-preserving)
5. arms      grown vs random init of the identical config, same recipe and data order, for every seed;
             the grown model also at fractions of the budget, each with its own full schedule
6. report    DIR/results.json, DIR/report.md and PNG plots (hyperclone.report)

Each training run lives in DIR/runs/<arm>-s<seed> and is resumed rather than redone when the
experiment is run again with the same settings.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyperclone import report
from hyperclone.data import iter_documents, list_sources
from hyperclone.errors import HyperCloneError
from hyperclone.presets import Preset
from hyperclone.train import SUMMARY_FILE, TrainConfig, read_metrics, train
from hyperclone.train_state import hf_quiet

EOT = "<|endoftext|>"
SETTINGS_FILE = "experiment.json"


# ----------------------------------------------------------------------------- corpus and tokenizer


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library .py files (site-packages excluded), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts) and p.is_file())


def build_corpus(dest: Path, data: list[Path] | None, max_bytes: int) -> dict[str, Any]:
    """Write up to max_bytes of documents to dest (jsonl, one {"text"} per document) and describe them."""
    if data:
        docs = iter_documents(list_sources(data))
        description = "the text in " + ", ".join(str(p) for p in data)
    else:
        files = stdlib_files()
        random.Random(0).shuffle(files)
        docs = (p.read_text(encoding="utf-8", errors="replace") for p in files)
        stdlib = sysconfig.get_paths()["stdlib"]
        description = f"the Python {platform.python_version()} standard library sources ({stdlib})"
    dest.parent.mkdir(parents=True, exist_ok=True)
    n_docs = n_bytes = 0
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for text in docs:
            if not text.strip():
                continue
            size = len(text.encode("utf-8"))
            if n_bytes + size > max_bytes and n_docs > 0:
                if n_bytes >= 0.9 * max_bytes:
                    break
                continue  # a large document would overshoot the cap; smaller ones may still fit
            fh.write(json.dumps({"text": text}) + "\n")
            n_docs += 1
            n_bytes += size
    if n_docs == 0:
        tmp.unlink()
        raise HyperCloneError(f"no text found for the corpus in {description}")
    tmp.replace(dest)
    return {"description": f"{description}, capped at {max_bytes / 1e6:g} MB", "documents": n_docs, "bytes": n_bytes}


def train_tokenizer(corpus: Path, vocab_size: int, folder: Path):
    """Byte-level BPE trained on the corpus, wrapped and saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((doc for doc in iter_documents([corpus])), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, pad_token=EOT,
                                   unk_token=None, model_max_length=1 << 20)
    fast.save_pretrained(folder)
    return fast


# ----------------------------------------------------------------------------- models


def small_config(preset: Preset, tokenizer):
    from transformers import LlamaConfig

    eot = tokenizer.convert_tokens_to_ids(EOT)
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=preset.hidden, intermediate_size=preset.ffn,
                       num_hidden_layers=preset.layers, num_attention_heads=preset.heads,
                       num_key_value_heads=preset.kv_heads, head_dim=preset.hidden // preset.heads,
                       max_position_embeddings=preset.seq_len, rope_theta=10000.0, tie_word_embeddings=False,
                       bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)


def init_model(config, seed: int, tokenizer, folder: Path) -> Path:
    """A randomly initialised model of `config` (seeded), saved with the tokenizer as a plain folder."""
    from transformers import AutoModelForCausalLM

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = folder.with_name(folder.name + ".tmp")
    with hf_quiet():
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def model_stats(folder: Path, seq_len: int) -> dict[str, Any]:
    """Parameter counts and training FLOPs per token (see report.FLOPS_FORMULA)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out_emb = model.get_output_embeddings().weight
    n = total - emb.numel() + (out_emb.numel() if out_emb is emb else 0)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    return {"hidden": config.hidden_size, "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "ffn": config.intermediate_size, "params": total,
            "params_without_input_embedding": n,
            "flops_per_token": 6 * n + 6 * config.num_hidden_layers * seq_len * d_attn}


def curve(run_dir: Path, flops_per_token: float) -> report.Curve:
    return [{"step": m["step"], "tokens": m["tokens"], "val_loss": m["val_loss"], "elapsed_s": m["elapsed_s"],
             "flops": m["tokens"] * flops_per_token}
            for m in read_metrics(run_dir) if m.get("val_loss") is not None]


# ----------------------------------------------------------------------------- the experiment


@dataclass
class Arm:
    name: str  # small, grown, random, grown-half, ...
    model: str  # which model it starts from: small-init, grown, random
    seed: int
    tokens: int
    lr: float

    @property
    def run_name(self) -> str:
        return self.name if self.name == "small" else f"{self.name}-s{self.seed}"


def plan_arms(preset: Preset) -> list[Arm]:
    arms = [Arm("small", "small-init", 0, preset.small_tokens, preset.small_lr)]
    for seed in preset.seeds:
        arms += [Arm("grown", "grown", seed, preset.tokens, preset.lr), Arm("random", "random", seed, preset.tokens,
                                                                            preset.lr)]
    names = {0.5: "half", 0.25: "quarter"}
    for frac in preset.budget_fractions:
        for seed in preset.seeds[: preset.budget_seeds]:
            arms.append(Arm(f"grown-{names.get(frac, f'{frac:g}x')}", "grown", seed, int(preset.tokens * frac),
                            preset.lr))
    return arms


def _train_config(preset: Preset, arm: Arm, model: Path, out: Path, corpus: Path, progress: bool) -> TrainConfig:
    steps = max(1, arm.tokens // preset.batch_tokens)
    return TrainConfig(model=model, data=[corpus], out=out / "runs" / arm.run_name, tokens=arm.tokens, lr=arm.lr,
                       warmup=preset.warmup, schedule=preset.schedule, batch_tokens=preset.batch_tokens,
                       seq_len=preset.seq_len, eval_every=max(1, steps // preset.evals_per_run),
                       eval_tokens=preset.eval_tokens, save_every=max(1, steps // 2), keep_checkpoints=1,
                       log_every=max(1, steps // 100), seed=arm.seed, dtype=preset.dtype, resume=True,
                       cache_dir=out / "cache", progress=progress, extra={"arm": arm.name})


def machine() -> str:
    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)} GPU"
    else:
        n = torch.get_num_threads()
        dev = f"CPU only, {n} torch thread{'s' if n != 1 else ''}"
    return f"{platform.processor() or platform.machine()}, {dev}, torch {torch.__version__}"


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            raise HyperCloneError(f"{out} holds an experiment with other settings (preset or --data); "
                                  "use a new --out or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))


def _add_wall_clock(out: Path, seconds: float, kind: str = "") -> float:
    """Total wall time over every invocation of one kind (preset experiment, sweep, head to head) that
    worked on this experiment folder (reruns resume; kinds can share a folder and count separately)."""
    path = out / f"wall_clock{'_' + kind if kind else ''}.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(round(seconds, 2))
    path.write_text(json.dumps(runs))
    return float(sum(runs))


def run_experiment(preset: Preset, out: str | Path, data: list[Path] | None = None, progress: bool = True,
                   command: str | None = None) -> dict[str, Any]:
    """Run (or finish) the whole experiment in `out`; returns the results written to out/results.json."""
    from transformers import AutoConfig, AutoTokenizer

    from hyperclone.grow import grow

    out = Path(out)
    t0 = time.perf_counter()
    data = [Path(p).resolve() for p in data] if data else None
    _check_settings(out, {"preset": preset.as_dict(), "data": [str(p) for p in data] if data else None})

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    corpus = out / "corpus" / "corpus.jsonl"
    corpus_info_file = out / "corpus" / "corpus.json"
    if not corpus_info_file.exists():
        say("building the corpus")
        corpus_info = build_corpus(corpus, data, preset.corpus_bytes)
        corpus_info_file.write_text(json.dumps(corpus_info, indent=1))
    corpus_info = json.loads(corpus_info_file.read_text())

    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        say(f"training a {preset.vocab_size}-token byte-level BPE tokenizer")
        train_tokenizer(corpus, preset.vocab_size, tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    models = out / "models"
    models.mkdir(exist_ok=True)
    init_model(small_config(preset, tokenizer), 0, tokenizer, models / "small-init")

    arms = plan_arms(preset)
    runs: dict[str, Any] = {}
    grow_s = 0.0
    for i, arm in enumerate(arms, 1):
        if arm.model == "grown" and not (models / "grown" / "config.json").exists():
            say(f"growing the small model {preset.width}x")
            g0 = time.perf_counter()
            # the preset experiment measures HyperCloning as published (identical copies); recipes: --sweep
            grow(runs["small"].final, models / "grown", width=preset.width, mode="symmetric")
            grow_s = time.perf_counter() - g0
        if arm.model == "random":
            config = AutoConfig.from_pretrained(models / "grown")
            init_model(config, 1000 + arm.seed, tokenizer, models / f"random-s{arm.seed}")
        start = models / (f"random-s{arm.seed}" if arm.model == "random" else arm.model)
        say(f"[{i}/{len(arms)}] training {arm.run_name} from {start.name} for {arm.tokens:,} tokens")
        runs[arm.run_name] = train(_train_config(preset, arm, start, out, corpus, progress))

    small_stats = model_stats(models / "small-init", preset.seq_len)
    big_stats = model_stats(models / "grown", preset.seq_len)
    summary = json.loads((out / "runs" / "small" / SUMMARY_FILE).read_text())
    results_arms: dict[str, Any] = {}
    curves: dict[str, dict[int, report.Curve]] = {}
    for arm in arms:
        stats = small_stats if arm.name == "small" else big_stats
        c = curve(out / "runs" / arm.run_name, stats["flops_per_token"])
        curves.setdefault(arm.name, {})[arm.seed] = c
        entry = results_arms.setdefault(arm.name, {"model": arm.model if arm.model != "small-init" else "small",
                                                   "from_small": arm.model == "grown", "budget_tokens": arm.tokens,
                                                   "lr": arm.lr, "seeds": {}})
        entry["seeds"][str(arm.seed)] = {"final_val_loss": c[-1]["val_loss"], "wall_s": c[-1]["elapsed_s"],
                                         "curve": c}
    small_curve = curves["small"][0]
    small_cost = {"tokens": small_curve[-1]["tokens"], "flops": small_curve[-1]["flops"],
                  "elapsed_s": small_curve[-1]["elapsed_s"] + grow_s}
    headline = report.summarize({k: v for k, v in curves.items() if k != "small"}, small_curve,
                                small_elapsed=small_cost["elapsed_s"])
    results = {
        "preset": preset.as_dict(),
        **{k: headline[k] for k in ("speedup_tokens", "speedup_flops", "speedup_tokens_incl_small",
                                    "speedup_wall_clock_incl_small", "target_val_loss", "grown_tokens_to_target",
                                    "reached_at_start")},
        "seed_spread": headline["seed_spread"],
        "per_seed": headline["per_seed"],
        "definitions": {
            "speedup_tokens": "random's tokens / tokens the grown model needs to reach random's final val loss "
                              "(seed-mean curves, linear interpolation); null if never reached",
            "speedup_tokens_incl_small": "as speedup_tokens, with the small model's pretraining tokens added to "
                                         "the grown model's",
            "speedup_flops": "random's training FLOPs / (grown model's FLOPs to the target + small model's "
                             "pretraining FLOPs)",
            "speedup_wall_clock_incl_small": "as speedup_flops, in wall-clock seconds (grow time included)",
            "flops": report.FLOPS_FORMULA,
        },
        "small_tokens": small_cost["tokens"],
        "random_tokens": curves["random"][preset.seeds[0]][-1]["tokens"],
        "small_cost": small_cost,
        "grow_s": grow_s,
        "models": {"small": small_stats, "grown": big_stats},
        "corpus": {**corpus_info, "tokens": summary["data"]["tokens"], "val_tokens": summary["data"]["val_tokens"],
                   "eval_tokens": summary["data"]["eval_tokens"]},
        "arms": results_arms,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_clock_s": _add_wall_clock(out, time.perf_counter() - t0),
        "command": command or f"hyperclone experiment --preset {preset.name} --out {out}",
    }
    report.write_report(results, out)
    say(f"done: {out / 'report.md'}")
    return results
