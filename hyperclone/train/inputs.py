"""What a run checks before it trains: the checkpoint folder and its tokenizer, the batch layout over the
processes, and a checkpoint to resume from against the recipe. Each failure is one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.train import state as ts
from hyperclone.train.config import TrainConfig
from hyperclone.train.model_class import auto_class

if TYPE_CHECKING:
    from hyperclone.train.data import TokenData


def check_model_dir(path: Path):
    """Validate a checkpoint folder and return its config, or raise a one-line error."""
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_dir():
        raise HyperCloneError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise HyperCloneError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise HyperCloneError(f"{path} has no weight files (*.safetensors or pytorch_model.bin)")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as err:
        raise HyperCloneError(f"cannot read {path}/config.json: {str(err).splitlines()[0]}") from None
    auto_class(config, path)  # a causal LM, or an image-text model trained on text (train/model_class.py)
    return config


def image_tokens(tokenizer, vocab: int) -> list[int]:
    """Special tokens past the language model's vocabulary (Llama 3.2 Vision's <|image|> at 128256, an embedding row
    its output layer does not have): text never holds them unless written out, and a corpus that does is refused
    when it is read (check_token_ids)."""
    return [i for i in tokenizer.all_special_ids if i >= vocab]


def check_token_ids(largest: int, vocab: int | None) -> None:
    """Every token id of the corpus has a row in the model's output layer (else the loss cannot be computed)."""
    if vocab is not None and largest >= vocab:
        raise HyperCloneError(f"the corpus holds token id {largest}, past the model's vocabulary of {vocab} (a "
                              "special token such as an image placeholder written out in the text)")


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((Path(path) / n).exists() for n in names):
        raise HyperCloneError(f"{path} has no tokenizer files (tokenizer.json...); training needs the model's "
                              "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError, KeyError) as err:
        raise HyperCloneError(f"cannot load the tokenizer in {path}: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's batch is split: sequences over processes, then micro-batches."""

    global_seqs: int  # sequences per optimizer step, all processes together
    per_rank: int
    micro: int  # sequences per forward/backward
    accum: int  # micro-batches per optimizer step
    step_tokens: int
    total: int  # optimizer steps of the run


def batch_layout(cfg: TrainConfig, world: int) -> BatchLayout:
    global_seqs = cfg.batch_tokens // cfg.seq_len
    if global_seqs % world:
        raise HyperCloneError(f"--batch-tokens / --seq-len = {global_seqs} sequences cannot be split evenly over "
                              f"{world} processes")
    per_rank = global_seqs // world
    micro = min(cfg.micro_batch or per_rank, per_rank)
    if per_rank % micro:
        raise HyperCloneError(f"--micro-batch {micro} does not divide the {per_rank} sequences each process gets")
    step_tokens = global_seqs * cfg.seq_len
    return BatchLayout(global_seqs, per_rank, micro, per_rank // micro, step_tokens, cfg.tokens // step_tokens)


def check_model(cfg: TrainConfig, model_dir: Path):
    """The model's config and tokenizer, checked against the recipe."""
    config = check_model_dir(model_dir)
    tokenizer = load_tokenizer(model_dir)
    text = config.get_text_config()  # an image-text model's language model states these
    vocab = getattr(text, "vocab_size", None)
    if vocab is not None and len(tokenizer) - len(image_tokens(tokenizer, vocab)) > vocab:
        raise HyperCloneError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is only {vocab}")
    max_pos = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
    if max_pos is not None and cfg.seq_len > max_pos:
        raise HyperCloneError(f"--seq-len {cfg.seq_len} exceeds the model's maximum of {max_pos} positions")
    return config, tokenizer


def resume_state(cfg: TrainConfig, start_ckpt: Path | None, data: TokenData, total: int) -> dict[str, Any]:
    """Step, tokens and elapsed time to start from: zeros, or the checkpoint's (checked against the recipe and the
    data). The data must be the same token stream: the same sha256 where the checkpoint and the cache both record
    one, so a run resumes on another machine from a corpus rebuilt byte for byte (whose cache folder is named after
    its path and mtime, so differs), else the same cache folder (checkpoints written before the digest)."""
    if start_ckpt is None:
        return {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    state = ts.read_state(start_ckpt)
    changed = {k: (v, cfg.recipe()[k]) for k, v in state["recipe"].items() if cfg.recipe().get(k) != v}
    if changed:
        desc = ", ".join(f"{k} was {a}, now {b}" for k, (a, b) in changed.items())
        raise HyperCloneError(f"cannot resume {cfg.out} with a different recipe: {desc}")
    if state.get("strategy", "ddp") != cfg.strategy:
        raise HyperCloneError(f"cannot resume {cfg.out}: its checkpoints were written with --strategy "
                              f"{state.get('strategy', 'ddp')}, not {cfg.strategy}")
    if (state["data_sha256"] != data.sha256 if state.get("data_sha256") and data.sha256
            else Path(state["data_cache"]).name != data.folder.name):
        raise HyperCloneError(f"cannot resume {cfg.out}: the data (or the tokenizer) changed since the checkpoint")
    return state
