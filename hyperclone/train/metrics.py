"""What a run reports: metrics.jsonl (one JSON line per log step, rank 0 only; TensorBoard events beside it
with --log tensorboard), the run's summary file name, and the process's peak memory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MetricsLog:
    """metrics.jsonl, appended by rank 0 only; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_up_to_step: int | None, sinks: tuple[str, ...] = ()):
        self.path = path
        self.enabled = enabled
        self.also = []  # other sinks (TensorBoard), rank 0 only
        if enabled and "tensorboard" in sinks:
            from hyperclone.train.tensorboard_log import TensorBoardLog

            self.also.append(TensorBoardLog(path.parent, keep_up_to_step))
        if enabled and keep_up_to_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= keep_up_to_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)
        elif enabled and keep_up_to_step is None:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        for sink in self.also:
            sink.write(record)

    def close(self) -> None:
        for sink in self.also:
            sink.close()


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS_FILE
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
