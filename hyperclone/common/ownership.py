"""One writer per folder, and no worker outliving its sweep.

A training run appends to metrics.jsonl and replaces checkpoints in its folder; an experiment writes reports and
wall-clock tallies in its own. Two processes doing that to one folder (a sweep restarted while the workers of the
killed one still train, or the same command started twice) interleave their files. Two guards:

- hold / release / folder_lock: an exclusive advisory lock (fcntl.flock, from the standard library) on
  FOLDER/.hyperclone.lock, held until released; the kernel drops it when the process ends, however it ends, so a crash
  or kill -9 never leaves a stale lock. A second process is refused in one line naming the holder's pid.
- exit_with_parent: a process-pool initializer. A sweep trains its runs in spawned worker processes
  (concurrent.futures.ProcessPoolExecutor); killed with SIGTERM or SIGKILL the sweep runs no pool shutdown, and its
  workers would train on, orphaned. With this initializer each worker watches its parent and exits within seconds of
  losing it (its checkpoints are written atomically, so nothing half-written stays; the run resumes from the last).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hyperclone.common.errors import HyperCloneError

LOCK_FILE = ".hyperclone.lock"
PARENT_POLL_S = 1.0

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the guard is skipped there
    fcntl = None


_HELD: dict[str, IO[str]] = {}  # folder -> its open lock file, per process (a lock this process holds is re-entered)


def hold(folder: Path, what: str) -> bool:
    """Lock `folder` (it must exist) for this process until release(folder) or the process's end; True where this
    call took the lock, False where this process held it already. `what` names the folder's contents in the
    refusal a second process gets."""
    key = str(Path(folder).resolve())
    if fcntl is None or key in _HELD:
        return False
    handle = open(Path(key) / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HyperCloneError(f"{folder} is in use: {holder} is writing this {what}; wait for it to end or stop it "
                              "(two writers would interleave their files)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _HELD[key] = handle
    return True


def release(folder: Path) -> None:
    """Give up this process's lock on `folder`, if it holds one."""
    handle = _HELD.pop(str(Path(folder).resolve()), None)
    if handle is not None:
        handle.close()


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """hold() for the block's duration, creating the folder; a lock this process already holds stays held after."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    took = hold(folder, what)
    try:
        yield
    finally:
        if took:
            release(folder)


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker (os._exit) once its parent, `parent_pid`, is gone."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
