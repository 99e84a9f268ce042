"""`hyperclone` with one checkpoint save held open, for the kill-during-a-save tests (tests/test_fsdp.py).

    python pause_in_save.py MARKER STEP_DIR_NAME hyperclone-args...

Rank 0 stops inside the save of STEP_DIR_NAME (e.g. step-0000020) at its last moment before the folder is marked
complete: every file (weights or DCP shards of every rank, optimizer, RNG) written and being fsynced, the state file
not yet; it writes MARKER and sleeps there, so the test can kill the job inside the save's window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hyperclone.train import state

marker, held = Path(sys.argv[1]), sys.argv[2]
fsync_tree = state.fsync_tree


def held_open(folder: Path) -> None:
    fsync_tree(folder)
    if Path(folder).name == state.tmp_dir(Path(held)).name:
        marker.write_text(str(folder))
        time.sleep(3600)


state.fsync_tree = held_open

if __name__ == "__main__":
    from hyperclone.cli import main

    main(sys.argv[3:])
