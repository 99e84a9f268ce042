"""GGUF to a plain Hugging Face checkpoint folder.

transformers dequantizes GGUF files when it loads them (`from_pretrained(folder, gguf_file=name)`,
with the `gguf` package installed); the loaded model still carries the GGUF quantization config, so
its weights are copied into a fresh `from_config` model before `save_pretrained`. This loads the
whole (small) model in memory, which is fine for the GGUF models people start from. A file transformers cannot
parse, or one it would load with parameters started at random (their tensor missing), is refused in one line
(benchmarks/fuzz_gguf.py tries damaged files against transformers itself).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.outputs import atomic_folder
from hyperclone.common.quiet import hf_quiet


def convert_gguf(gguf: Path, out: Path, overwrite: bool = False, dtype: str = "float32") -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise HyperCloneError(f"source not found: {gguf}")
    torch_dtype = getattr(torch, dtype)
    with atomic_folder(out, overwrite) as tmp:
        try:  # a damaged file fails inside the gguf parser in many ways (struct.error, MemoryError, ...)
            with _silent_load():
                loaded, info = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                                    dtype=torch_dtype, output_loading_info=True)
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # noqa: BLE001 - every failure of the third-party parser is a refusal
            raise HyperCloneError(f"{gguf}: transformers cannot load this GGUF file "
                                  f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
        missing = sorted(info["missing_keys"]) + sorted(info["mismatched_keys"])
        if missing:  # transformers would start these at random, with a warning: a silently wrong checkpoint
            raise HyperCloneError(f"{gguf}: the file holds no usable tensor for {missing[0]} ({len(missing)} "
                                  "parameter(s) missing or of the wrong shape); refusing to initialise them at random")
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


@contextlib.contextmanager
def _silent_load() -> Iterator[None]:
    """transformers' GGUF loading without its tqdm bar (plain tqdm on stderr) and its load report: what goes wrong
    is read from the exception and the loading info and said in one line."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with hf_quiet(), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
