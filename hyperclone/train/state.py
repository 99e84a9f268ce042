"""Training checkpoints: a plain model folder plus the state needed to resume exactly.

A checkpoint folder is what ``save_pretrained`` writes (config, safetensors, tokenizer), so
``AutoModelForCausalLM.from_pretrained`` (``AutoModelForImageTextToText`` for an image-text model) loads it as is,
plus:

- ``optimizer.pt``        AdamW state (identical on every rank under DDP, saved by rank 0)
- ``rng-rank{R}.pt``      every process's RNG states (python, numpy, torch CPU and CUDA)
- ``trainer_state.json``  step, tokens, elapsed seconds and the recipe, written last

The run's ``final`` folder holds weights, tokenizer and trainer_state.json only: the run is over,
so there is nothing to resume from it, and a model folder meant for sharing or growing stays lean.

The folder is assembled under a hidden temporary name and renamed into place, so a kill at any
moment leaves either the complete previous checkpoint or the complete new one; leftovers of an
interrupted save are ignored and removed by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.quiet import hf_quiet

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
CHECKPOINTS = "checkpoints"
FINAL = "final"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every RNG this process uses, as tensors, lists and numbers only, so that it loads with
    torch.load(weights_only=True): no pickle code runs when a checkpoint is read."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)  # older checkpoints: an ndarray
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_rng_file(path: Path) -> dict[str, Any]:
    """An RNG state file, read with weights_only=True: no pickle code runs. Files written before RNG states
    were stored as tensors hold a numpy array; numpy's array reconstruction is allowed for those (still no
    arbitrary code)."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        allowed = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The trainer state of a complete checkpoint folder, else None."""
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def step_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:07d}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under out (periodic ones and final), sorted by step."""
    found = []
    root = out / CHECKPOINTS
    if root.is_dir():
        for sub in root.iterdir():
            if _STEP_DIR.match(sub.name) and (state := read_state(sub)) is not None:
                found.append((int(state["step"]), sub))
    if (state := read_state(out / FINAL)) is not None:
        found.append((int(state["step"]), out / FINAL))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def prune(out: Path, keep: int) -> None:
    """Keep the `keep` newest periodic checkpoints (final is never removed)."""
    periodic = [(s, p) for s, p in list_checkpoints(out) if p.parent.name == CHECKPOINTS]
    for _, path in periodic[: max(0, len(periodic) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def tmp_dir(dest: Path) -> Path:
    return dest.parent / f".tmp-{dest.name}"


DISK_FULL_FREE = 1 << 20  # bytes: less free than this after a failed write means the disk filled up


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC anywhere in the exception's chain, or its text (the
    safetensors writer's "No space left on device (os error 28)"), or, for torch.save's bare RuntimeError
    ("unexpected pos"), a device with less than DISK_FULL_FREE bytes left."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_FREE
    except OSError:
        return False


@contextlib.contextmanager
def saving(tmp: Path, dest: Path, last_good: Path | None) -> Iterator[None]:
    """Around a checkpoint save: if it fails, its temporary folder goes (the space it took is given back, and no
    partial folder is left); a full disk becomes one OSError line naming the last complete checkpoint, which the
    save never touched (dest is replaced only by a complete folder)."""
    try:
        yield
    except Exception as exc:
        full = disk_full(exc, dest.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        kept = f"the last complete checkpoint, {last_good}, is intact" if last_good else "no checkpoint was saved yet"
        raise OSError(errno.ENOSPC, f"no space left on the device while saving {dest.name} ({kept}); free space, "
                                    "then rerun with --resume", str(dest.parent)) from None


def begin_save(dest: Path) -> Path:
    """Create an empty temporary folder for dest (rank 0 only)."""
    tmp = tmp_dir(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_rank_rng(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def finish_save(tmp: Path, dest: Path, model, tokenizer, optimizer, state: dict[str, Any]) -> None:
    """Write weights (unless model is None: already written), tokenizer, optimizer (unless None) and state
    into tmp, then swap it into dest (rank 0 only)."""
    if model is not None:
        with hf_quiet():
            model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    fsync_tree(tmp)  # every file (weights, DCP shards of every rank, RNG) is on disk before the marker
    with open(tmp / STATE_FILE, "w") as fh:  # written last: its presence marks the folder complete
        json.dump(state, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    if dest.exists():
        old = dest.parent / f".old-{dest.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def fsync_tree(folder: Path) -> None:
    """fsync every file under folder and the folders themselves."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_rank_rng(folder: Path, rank: int) -> bool:
    path = folder / f"rng-rank{rank}.pt"
    if not path.exists():
        return False
    set_rng_state(load_rng_file(path))
    return True


def load_optimizer(folder: Path, optimizer, device: torch.device) -> None:
    state = torch.load(folder / OPTIMIZER_FILE, map_location=device, weights_only=True)
    try:
        optimizer.load_state_dict(state)
    except ValueError as err:  # other parameters learn now (an image-text run started before its vision side froze)
        raise HyperCloneError(f"cannot resume from {folder}: its optimizer state holds other parameters than this "
                              f"run trains ({str(err).splitlines()[0]}); start a new --out") from None
