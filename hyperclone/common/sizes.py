"""Counts and byte sizes with suffixes, as users write them: --tokens 20M, --batch-tokens 512K, --shard-size 5GB."""

from __future__ import annotations

import re

from hyperclone.common.errors import HyperCloneError

COUNT_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_count(text: str | int, what: str = "--tokens") -> int:
    """'2000000', '2M', '500k', '1.5e6', '1B' -> a positive int (K, M, B/G, T are powers of 1000)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", str(text))
        if not match:
            raise HyperCloneError(f"{what} must be a number like 2000000, 2M or 500K, got {text!r}")
        value = int(float(match.group(1)) * COUNT_SUFFIXES[match.group(2).upper()])
    if value < 1:
        raise HyperCloneError(f"{what} must be positive, got {text!r}")
    return value


def parse_size(text: str | int, what: str = "--shard-size") -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    value = text.strip().upper()
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    try:
        size = float(number) * BYTE_UNITS[unit]
    except (ValueError, KeyError):
        raise HyperCloneError(f"{what} must look like 5GB or 500MB, got {text!r}") from None
    if size < 1:
        raise HyperCloneError(f"{what} must be positive, got {text!r}")
    return int(size)
