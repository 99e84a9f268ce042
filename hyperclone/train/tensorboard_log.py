"""TensorBoard events beside metrics.jsonl (`hyperclone train --log tensorboard`), written by rank 0 under
OUT/tensorboard with `torch.utils.tensorboard.SummaryWriter`, which needs the `tensorboard` package
(`pip install 'hyperclone[tensorboard]'`, tested with tensorboard 2.21). Each metrics record becomes scalars
tagged train/loss, val/loss, train/lr and train/tokens_per_s at its optimizer step; on resume, events past the
checkpoint's step are purged (SummaryWriter's purge_step), as metrics.jsonl drops its lines past it.
`tensorboard --logdir OUT/tensorboard` shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError

TENSORBOARD_FOLDER = "tensorboard"
# metrics.jsonl field -> TensorBoard tag
TAGS = {"train_loss": "train/loss", "val_loss": "val/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s"}


class TensorBoardLog:
    def __init__(self, out: Path, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise HyperCloneError("--log tensorboard needs the tensorboard package: "
                                  "pip install 'hyperclone[tensorboard]'") from None
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(Path(out) / TENSORBOARD_FOLDER), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
