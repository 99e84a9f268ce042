"""What every experiment shares: the corpus, the tokenizer, the small model and randomly initialised models,
model statistics, training configs per arm, and the bookkeeping of an experiment folder (settings, wall clock).

The preset experiment (runner), sweeps and the head-to-head all build their starting point with `prepare`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.outputs import write_text_atomic
from hyperclone.common.quiet import hf_quiet
from hyperclone.experiments import curve_math
from hyperclone.experiments.corpora import PUBLIC_CORPORA, build_corpus, public_corpus, same_corpus
from hyperclone.experiments.folder import SMALL_INIT, ExperimentDir
from hyperclone.experiments.presets import Preset
from hyperclone.train.config import TrainConfig
from hyperclone.train.data import iter_documents
from hyperclone.train.metrics import read_metrics

EOT = "<|endoftext|>"


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
    # a mixture of experts computes top_k of its experts per token: FLOPs count the active parameters only
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    in_experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    inactive = in_experts * (experts - top_k) // experts if experts and top_k and in_experts else 0
    n = total - inactive - emb.numel() + (out_emb.numel() if out_emb is emb else 0)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    return {"hidden": config.hidden_size, "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "ffn": config.intermediate_size, "params": total,
            "active_params": total - inactive, "params_without_input_embedding": n,
            "flops_per_token": 6 * n + 6 * config.num_hidden_layers * seq_len * d_attn}


def curve(run_dir: Path, flops_per_token: float) -> curve_math.Curve:
    return [{"step": m["step"], "tokens": m["tokens"], "val_loss": m["val_loss"], "elapsed_s": m["elapsed_s"],
             "flops": m["tokens"] * flops_per_token}
            for m in read_metrics(run_dir) if m.get("val_loss") is not None]


@dataclass
class Arm:
    name: str  # small, grown, random, grown-half, ...
    model: str  # which model it starts from: small-init, grown, random
    seed: int
    tokens: int
    lr: float
    min_lr_ratio: float | None = None  # None: TrainConfig's; 1.0 keeps the peak learning rate to the end

    @property
    def run_name(self) -> str:
        return self.name if self.name == "small" else f"{self.name}-s{self.seed}"

    def trained_tokens(self, preset: Preset) -> int:
        """The tokens its run trains on: whole batches of the preset's size (arm_train_config's steps)."""
        return max(1, self.tokens // preset.batch_tokens) * preset.batch_tokens


def arm_train_config(preset: Preset, arm: Arm, model: Path, out: Path, corpus: Path, progress: bool) -> TrainConfig:
    folder = ExperimentDir(out)
    steps = arm.trained_tokens(preset) // preset.batch_tokens
    return TrainConfig(model=model, data=[corpus], out=folder.run(arm.run_name), tokens=arm.tokens, lr=arm.lr,
                       warmup=preset.warmup, schedule=preset.schedule, batch_tokens=preset.batch_tokens,
                       seq_len=preset.seq_len, eval_every=max(1, steps // preset.evals_per_run),
                       eval_tokens=preset.eval_tokens, save_every=max(1, steps // 16), keep_checkpoints=1,
                       log_every=max(1, steps // 100), seed=arm.seed, dtype=preset.dtype, resume=True,
                       cache_dir=folder.cache, progress=progress, extra={"arm": arm.name},
                       **({} if arm.min_lr_ratio is None else {"min_lr_ratio": arm.min_lr_ratio}))


def machine() -> str:
    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)} GPU"
    else:
        n = torch.get_num_threads()
        dev = f"CPU only, {n} torch thread{'s' if n != 1 else ''}"
    return f"{platform.processor() or platform.machine()}, {dev}, torch {torch.__version__}"


def check_settings(out: Path, settings: dict[str, Any], keys: tuple[str, ...] | None = None) -> None:
    """Refuse an experiment folder whose stored settings differ from these (on `keys` only, where given), or store
    them in a new one."""
    path = ExperimentDir(out).settings
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    if path.exists():
        old = json.loads(path.read_text())
        compared = keys if keys is not None else set(old) | set(settings)
        if any(old.get(k) != settings.get(k) for k in compared):
            raise HyperCloneError(f"{out} holds an experiment with other settings (preset or --data); "
                                  "use a new --out or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(settings, indent=1))


def add_wall_clock(out: Path, seconds: float | None, kind: str = "") -> float:
    """Total wall time over every invocation of one kind (preset experiment, sweep, head to head) that
    worked on this experiment folder (reruns resume; kinds can share a folder and count separately). seconds=None
    (a report written from finished runs, training nothing) reads the total without adding to it."""
    path = out / f"wall_clock{'_' + kind if kind else ''}.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    if seconds is not None:
        runs.append(round(seconds, 2))
        write_text_atomic(path, json.dumps(runs))
    return float(sum(runs))



@dataclass(frozen=True)
class Prepared:
    corpus: Path  # DIR/corpus/corpus.jsonl
    corpus_info: dict[str, Any]
    tokenizer: Any  # PreTrainedTokenizerFast
    small_init: Path  # the small model's random initialisation (seed 0)


def prepare(preset: Preset, out: Path, data: list[Path] | None, say) -> Prepared:
    """Corpus, tokenizer and the small model's initialisation in `out` (each reused when present)."""
    folder = ExperimentDir(out)
    from transformers import AutoTokenizer

    corpus = folder.corpus
    info = described_corpus(folder.corpus_info, lambda: build_corpus(corpus, data, preset.corpus_bytes),
                            lambda: say("building the corpus"))
    tok_dir = folder.tokenizer
    if not (tok_dir / "tokenizer.json").exists():
        say(f"training a {preset.vocab_size}-token byte-level BPE tokenizer")
        train_tokenizer(corpus, preset.vocab_size, tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    (folder.models).mkdir(parents=True, exist_ok=True)
    small_init = init_model(small_config(preset, tokenizer), 0, tokenizer, folder.small_init)
    return Prepared(corpus, info, tokenizer, small_init)


def described_corpus(info_file: Path, build: Callable[[], dict[str, Any]], building: Callable[[], None]
                     ) -> dict[str, Any]:
    """The description of a corpus (info_file, beside the corpus it describes), built first where absent (`build`
    writes the corpus and describes it; `building` says so), and checked against the one the folder's restored runs
    were trained on (DIR/corpus/expected/<name>.json, the committed description benchmarks/ladder_snapshot.py
    restore puts there): data rebuilt from packages that changed since would silently mix two corpora in one
    report. A corpus built here and refused is removed; one found in the folder is left as it was."""
    built = not info_file.exists()
    if built:
        building()
        info_file.parent.mkdir(parents=True, exist_ok=True)
        info = build()
    else:
        info = json.loads(info_file.read_text())
    expected_file = info_file.parent / "expected" / info_file.name
    expected = json.loads(expected_file.read_text()) if expected_file.exists() else None
    if expected is not None and not same_corpus(info, expected):
        if built:
            info_file.with_suffix(".jsonl").unlink(missing_ok=True)
        raise HyperCloneError(f"the corpus {'built from the data' if built else 'in ' + str(info_file.parent)} "
                              f"({info.get('documents', 0):,} documents, {info.get('bytes', 0):,} bytes) is not the "
                              f"one this folder's restored runs were trained on ({expected.get('documents', 0):,} "
                              f"documents, {expected.get('bytes', 0):,} bytes: {expected_file}); rebuild that data "
                              f"file or start the arms afresh in a new folder")
    if built:
        write_text_atomic(info_file, json.dumps(info, indent=1))
    return info


def small_arm(preset: Preset, tokens: int | None = None, decay: bool = True, corpus: str | None = None) -> Arm:
    """The small model's pretraining run: the preset's budget in DIR/runs/small, another budget (a sweep arm's
    small_tokens) in DIR/runs/small-<tokens>-s0, from the same initialisation and learning rate. decay=False
    (a sweep arm's small_decay: false) keeps the peak learning rate to the end, in DIR/runs/small[-<tokens>]-nodecay-s0:
    on the preset's WSD schedule, the stable-phase model its decay would start from, trained as long. corpus (a
    sweep arm's small_corpus, a name in PUBLIC_CORPORA) pretrains it on that corpus instead of the experiment's:
    DIR/runs/small[-<tokens>]-<corpus>[-nodecay]-s0."""
    own = tokens is None or tokens == preset.small_tokens
    if own and decay and corpus is None:
        return Arm("small", SMALL_INIT, 0, preset.small_tokens, preset.small_lr)
    name = ("small" + ("" if own else f"-{tokens}") + ("" if corpus is None else f"-{corpus}")
            + ("" if decay else "-nodecay"))
    return Arm(name, SMALL_INIT, 0, tokens or preset.small_tokens, preset.small_lr, None if decay else 1.0)


def public_corpus_file(out: Path, name: str, say) -> Path:
    """DIR/corpus/<name>.jsonl, the public corpus `name` (PUBLIC_CORPORA), written once and described beside it
    in <name>.json."""
    if name not in PUBLIC_CORPORA:
        raise HyperCloneError(f"unknown public corpus {name!r}; choose one of {', '.join(PUBLIC_CORPORA)}")
    corpus = ExperimentDir(out).public_corpus(name)
    described_corpus(corpus.with_suffix(".json"), lambda: public_corpus(corpus, name),
                     lambda: say(f"building the public corpus {name}"))
    return corpus
