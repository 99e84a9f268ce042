"""`hyperclone verify`: run the source and the grown model on the same tokens and compare.

Both are loaded with transformers (no hyperclone code in the loop) in float32, so the comparison
checks the checkpoint as any user would load it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hyperclone.errors import HyperCloneError

DEFAULT_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@dataclass
class VerifyResult:
    max_abs_diff: float  # max |logit_grown - logit_source| over all positions and the vocabulary
    max_abs_logit: float
    rel_err: float  # max_abs_diff / max_abs_logit
    argmax_agreement: float  # share of positions whose top token agrees
    kl: float  # mean KL(source || grown) per position, in nats
    generate_match: bool  # greedy generate() with the KV cache gives the same new tokens
    new_tokens: int
    tolerance: float
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def load_causal_lm(folder: Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    if not (Path(folder) / "config.json").exists():
        raise HyperCloneError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise HyperCloneError(f"{folder}: transformers cannot load it as a causal LM ({exc})".splitlines()[0]) from None
    return model.eval()


def checkpoint_dtype(folder: Path) -> torch.dtype:
    from hyperclone.checkpoint_io import SourceWeights

    infos = SourceWeights(Path(folder), allow_pickle=True).infos.values()  # transformers reads it weights_only
    floats = [i.dtype for i in infos if i.dtype.is_floating_point]
    return floats[0] if floats else torch.float32


@torch.no_grad()
def compare_models(source, grown, batch: int = 2, length: int = 24, new_tokens: int = 32, seed: int = 0,
                   tolerance: float = 1e-4) -> VerifyResult:
    vocab = min(source.config.vocab_size, grown.config.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, length), generator=generator)
    logits_src = source(input_ids=tokens).logits.float()
    logits_big = grown(input_ids=tokens).logits.float()
    if logits_src.shape != logits_big.shape:
        raise HyperCloneError(f"logit shapes differ: {tuple(logits_src.shape)} vs {tuple(logits_big.shape)}")
    diff = (logits_src - logits_big).abs().max().item()
    scale = logits_src.abs().max().item()
    rel = diff / max(scale, 1e-30)
    agree = (logits_src.argmax(-1) == logits_big.argmax(-1)).float().mean().item()
    logp, logq = logits_src.log_softmax(-1), logits_big.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    prompt = tokens[:1, :8]
    gen_args = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)
    out_src = source.generate(prompt, attention_mask=torch.ones_like(prompt), **gen_args)
    out_big = grown.generate(prompt, attention_mask=torch.ones_like(prompt), **gen_args)
    match = torch.equal(out_src, out_big)
    return VerifyResult(diff, scale, rel, agree, kl, match, new_tokens, tolerance, bool(rel <= tolerance and match))


def verify(src: str | Path, grown: str | Path, tolerance: float | None = None, seed: int = 0,
           new_tokens: int = 32) -> VerifyResult:
    """Compare a source checkpoint (folder, .gguf or built-in name) with a grown folder."""
    from hyperclone.source import source_folder

    grown = Path(grown)
    with source_folder(src) as folder:
        if tolerance is None:
            tolerance = max(DEFAULT_TOLERANCE.get(checkpoint_dtype(folder), 1e-4),
                            DEFAULT_TOLERANCE.get(checkpoint_dtype(grown), 1e-4))
        source_model = load_causal_lm(folder)
        grown_model = load_causal_lm(grown)
        return compare_models(source_model, grown_model, seed=seed, new_tokens=new_tokens, tolerance=tolerance)
