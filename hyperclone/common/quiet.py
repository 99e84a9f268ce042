"""Quiet transformers: its own progress bars, while hyperclone shows its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def hf_quiet() -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") meanwhile."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
