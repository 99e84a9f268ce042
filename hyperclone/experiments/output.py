"""Every study's report is a JSON file of its results and a markdown page beside it (with PNG plots); both are
written here, atomically, so a report is never half-written and every page ends the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hyperclone.common.outputs import write_text_atomic


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """The study's results as indented JSON."""
    write_text_atomic(path, json.dumps(results, indent=1) + "\n")
    return path


def write_page(path: Path, lines: list[str]) -> Path:
    """The markdown page: the lines, ending in one newline."""
    write_text_atomic(path, "\n".join(lines).rstrip("\n") + "\n")
    return path
