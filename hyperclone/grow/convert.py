"""GGUF to a plain Hugging Face checkpoint folder.

transformers dequantizes GGUF files when it loads them (`from_pretrained(folder, gguf_file=name)`,
with the `gguf` package installed); the loaded model still carries the GGUF quantization config, so
its weights are copied into a fresh `from_config` model before `save_pretrained`. This loads the
whole (small) model in memory, which is fine for the GGUF models people start from.
"""

from __future__ import annotations

from pathlib import Path

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.outputs import atomic_folder


def convert_gguf(gguf: Path, out: Path, overwrite: bool = False, dtype: str = "float32") -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise HyperCloneError(f"source not found: {gguf}")
    torch_dtype = getattr(torch, dtype)
    with atomic_folder(out, overwrite) as tmp:
        try:
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as exc:
            raise HyperCloneError(f"{gguf}: transformers cannot load this GGUF file ({exc})".splitlines()[0]) from None
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch_dtype
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        fresh.load_state_dict(loaded.state_dict())
        del loaded
        fresh.generation_config.pad_token_id = config.pad_token_id
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)
