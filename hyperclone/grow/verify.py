"""`hyperclone verify`: run the source and the grown model on the same tokens and compare.

Both are loaded with transformers (no hyperclone code in the loop) and evaluated in float32 whatever
their storage dtype, so an exact growth of a bf16 checkpoint shows as exact (to float32 accumulation
error) and an inexact one shows its error: one tolerance for every dtype. The test inputs are long
enough to cross every sliding window and, where RoPE scaling is configured, the original context length.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.wrapper import WRAPPERS

DEFAULT_TOLERANCE = 1e-4  # max|dlogit| / max|logit|, for every storage dtype (both models run in float32)
MIN_LENGTH = 64
PAST_WINDOW = 16  # tokens beyond a sliding window or an original context length


@dataclass
class VerifyResult:
    max_abs_diff: float  # max |logit_grown - logit_source| over all positions and the vocabulary
    max_abs_logit: float
    rel_err: float  # max_abs_diff / max_abs_logit
    argmax_agreement: float  # share of positions whose top token agrees
    argmax_ties: int  # positions whose source top-2 margin is within 2 * max_abs_diff (a flip there is a tie)
    decisive_agreement: float  # share of the other positions whose top token agrees (must be 1)
    kl: float  # mean KL(source || grown) per position, in nats
    generate_match: bool  # greedy generate() with the KV cache gives the same new tokens
    new_tokens: int
    length: int  # tokens per test sequence
    tolerance: float
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def verify_length(config: Any, minimum: int = MIN_LENGTH) -> int:
    """Tokens per test sequence: past every sliding window, the top-k keys of a sparse-attention indexer (so that
    it drops some) and the original context of scaled RoPE, within the model's maximum positions."""
    length = minimum
    for key in ("sliding_window", "index_topk"):
        window = getattr(config, key, None)
        if isinstance(window, int) and not isinstance(window, bool) and window > 0:
            length = max(length, window + PAST_WINDOW)
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    settings = [rope] if isinstance(rope, dict) else []
    if isinstance(rope, dict) and all(isinstance(v, dict) for v in rope.values()):
        settings = list(rope.values())  # per layer type (Gemma 3)
    for setting in settings:
        if setting.get("rope_type", setting.get("type", "default")) != "default":
            original = (setting.get("original_max_position_embeddings")
                        or getattr(config, "original_max_position_embeddings", None))
            if isinstance(original, int):
                length = max(length, original + PAST_WINDOW)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(length, limit) if isinstance(limit, int) else length


def causal_lm_auto(config: Any):
    """The auto class that builds a text config's causal LM (a config object or config.json's dict):
    AutoModelForCausalLM, or AutoModelForImageTextToText where transformers lists the model type's causal LM
    class only there (Mistral4ForCausalLM, which AutoModelForCausalLM does not know in transformers 5)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    image_text = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(model_type, "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and image_text.endswith("ForCausalLM"):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def load_causal_lm(folder: Path, dtype: torch.dtype = torch.float32):
    """The checkpoint as transformers' causal LM; a multimodal one (hyperclone.grow.wrapper) whole, vision tower
    included, as its image-text-to-text model."""
    from transformers import AutoModelForImageTextToText

    config = Path(folder) / "config.json"
    if not config.exists():
        raise HyperCloneError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        raw = json.loads(config.read_text())
        multimodal = raw.get("model_type") in WRAPPERS
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raw, multimodal = {}, False  # transformers says what is wrong with it below
    auto = AutoModelForImageTextToText if multimodal else causal_lm_auto(raw)
    try:
        model = auto.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise HyperCloneError(f"{folder}: transformers cannot load it as a causal LM ({exc})".splitlines()[0]) from None
    return model.eval()


@torch.no_grad()
def compare_models(source, grown, batch: int = 2, length: int | None = None, new_tokens: int = 32, seed: int = 0,
                   tolerance: float = DEFAULT_TOLERANCE) -> VerifyResult:
    """Logits of both models on the same random tokens (`length`: default verify_length of the configs),
    and greedy generation with the KV cache. Models are used on the device and in the dtype they are in."""
    configs = [model.config.get_text_config() for model in (source, grown)]  # a multimodal model's language model
    vocab = min(config.vocab_size for config in configs)
    if length is None:
        length = max(verify_length(config) for config in configs)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, length), generator=generator).to(source.device)
    logits_src = source(input_ids=tokens).logits.float()
    logits_big = grown(input_ids=tokens.to(grown.device)).logits.float().to(logits_src.device)
    if logits_src.shape != logits_big.shape:
        raise HyperCloneError(f"logit shapes differ: {tuple(logits_src.shape)} vs {tuple(logits_big.shape)}")
    diff = (logits_src - logits_big).abs().max().item()
    scale = logits_src.abs().max().item()
    rel = diff / max(scale, 1e-30)
    agrees = logits_src.argmax(-1) == logits_big.argmax(-1)
    top2 = logits_src.topk(2, dim=-1).values
    ties = (top2[..., 0] - top2[..., 1]) <= 2 * diff
    decisive = agrees[~ties].float().mean().item() if bool((~ties).any()) else 1.0
    logp, logq = logits_src.log_softmax(-1), logits_big.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    prompt = tokens[:1, :8]
    gen_args = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)
    out_src = source.generate(prompt, attention_mask=torch.ones_like(prompt), **gen_args)
    prompt = prompt.to(grown.device)
    out_big = grown.generate(prompt, attention_mask=torch.ones_like(prompt), **gen_args).to(out_src.device)
    match = torch.equal(out_src, out_big)
    ok = rel <= tolerance and decisive == 1.0 and match
    return VerifyResult(diff, scale, rel, agrees.float().mean().item(), int(ties.sum()), decisive, kl, match,
                        new_tokens, length, tolerance, bool(ok))


def verify(src: str | Path, grown: str | Path, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
           new_tokens: int = 32, length: int | None = None, device: str = "cpu") -> VerifyResult:
    """Compare a source checkpoint (folder, .gguf or built-in name) with a grown folder, both in float32
    on `device`."""
    from hyperclone.grow.source import source_folder

    grown = Path(grown)
    try:
        target = torch.device(device)
    except RuntimeError:
        raise HyperCloneError(f"--device: not a torch device: {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise HyperCloneError("--device cuda: no CUDA GPU is available to torch here")
    with source_folder(src) as folder:
        source_model = load_causal_lm(folder).to(target)
        grown_model = load_causal_lm(grown).to(target)
        return compare_models(source_model, grown_model, seed=seed, new_tokens=new_tokens, tolerance=tolerance,
                              length=length)
