"""Which transformers class trains a checkpoint, and which of its parameters learn.

A text checkpoint trains as AutoModelForCausalLM. An image-text checkpoint (a grown Qwen2.5-VL, LLaVA, Gemma 3,
...: the classes in transformers' MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING) trains as AutoModelForImageTextToText on
text alone: a corpus has no images, so only its language model (the module `get_decoder()` returns, and the output
projection) learns, but for the layers that read only image features (Llama 3.2 Vision's cross-attention layers); the
vision tower, the projector and any learned image vectors (LLaVA-NeXT's image_newline) are frozen, hold no AdamW
state, and are saved unchanged, so they still write what the language model was grown to read.
"""

from __future__ import annotations

from typing import Any

import torch

from hyperclone.common.errors import HyperCloneError


def is_image_text(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    return type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING


def auto_class(config: Any, where: Any = "the checkpoint"):
    """The transformers auto class that builds this config's model for training, or a one-line error."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if is_image_text(config):  # first: Gemma 3 and Qwen3.5 are in both mappings, as the same class
        return AutoModelForImageTextToText
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return AutoModelForCausalLM
    raise HyperCloneError(f"{where} holds a {config.model_type!r} model, which is neither a causal LM nor an "
                          "image-text model (AutoModelForCausalLM and AutoModelForImageTextToText cannot load it)")


def freeze_outside_language_model(model: torch.nn.Module) -> list[str]:
    """An image-text model trained on text: every parameter outside its language model and output projection
    stops requiring gradients, and so do the language model's layers a text-only forward skips (Llama 3.2 Vision's
    cross-attention layers, listed in cross_attention_layers: transformers runs them only with image features, and
    a parameter that never gets a gradient would stall DDP's reduction). Returns the frozen parameters' names ([] for
    a text model)."""
    if not is_image_text(model.config):
        return []
    decoder = model.get_decoder()
    while not hasattr(decoder, "layers") and isinstance(getattr(decoder, "model", None), torch.nn.Module):
        decoder = decoder.model  # Llama 4's get_decoder() is its language model, a causal LM holding the decoder
    skipped = getattr(model.config.get_text_config(), "cross_attention_layers", None) or ()
    learning = {id(p) for i, layer in enumerate(decoder.layers) if i not in skipped for p in layer.parameters()}
    learning |= {id(p) for name, p in decoder.named_parameters() if not name.startswith("layers.")}
    learning |= {id(p) for p in model.get_output_embeddings().parameters()}
    frozen = [(name, p) for name, p in model.named_parameters() if id(p) not in learning]
    for _, p in frozen:
        p.requires_grad_(False)
    return [name for name, _ in frozen]
