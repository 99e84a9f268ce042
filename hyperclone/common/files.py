"""Names of the files hyperclone writes beside a checkpoint, and reading the growth record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "hyperclone.json"  # written by `hyperclone grow` beside the grown weights
MOMENTS_FILE = "moments.pt"  # AdamW moments by parameter name (train --save-moments, grow --moments-from)


def read_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """model_dir/hyperclone.json as a dict, or None for a model that was not grown by hyperclone."""
    path = Path(model_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_provenance_spec(model_dir: str | Path) -> dict[str, Any] | None:
    """The growth options recorded in model_dir/hyperclone.json (GrowthSpec fields), or None."""
    info = read_provenance(model_dir)
    if info is None:
        return None
    raw = dict(info["spec"])
    if raw.get("insert_after") is not None:
        raw["insert_after"] = tuple(raw["insert_after"])
    return raw


def load_moments(folder: Path) -> dict[str, dict[str, Any]]:
    """The AdamW moments in folder/moments.pt ({param name: {"step", "exp_avg", "exp_avg_sq"}}), the one reader
    of that file: grow --moments-from reads a small model's, train --moments-from a grown model's."""
    import torch

    from hyperclone.common.errors import HyperCloneError

    path = Path(folder) / MOMENTS_FILE
    if not path.is_file():
        raise HyperCloneError(f"{folder} has no {MOMENTS_FILE}: train the run it comes from with --save-moments "
                              "(a grown model gets its moments from hyperclone grow --moments-from RUN/final)")
    return torch.load(path, map_location="cpu", weights_only=True)
