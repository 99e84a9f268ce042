"""One writer per folder (hyperclone.common.ownership): a second process training the same run, or running a sweep
in the same experiment folder, is refused in one line, and a sweep's pool workers end with the sweep when it is
killed (the prose sweep of 2026-12-07, restarted twice with pkill, left four orphaned workers training its runs
beside the new ones, three processes appending to one metrics.jsonl)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.ownership import LOCK_FILE, folder_lock, hold, release

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time; from pathlib import Path; from hyperclone.common.ownership import hold; "
        "hold(Path(sys.argv[1]), 'training run'); print('held', flush=True); time.sleep(60)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_process_is_refused_until_the_first_ends(tmp_path):
    """The lock names its holder; this process is refused while another holds the folder, takes it once that
    process is killed (the kernel drops the lock, no stale file blocks), and re-enters its own lock."""
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(HyperCloneError) as err:
            hold(tmp_path, "training run")
        assert str(err.value) == (f"{tmp_path} is in use: pid {other.pid} is writing this training run; wait for it "
                                  "to end or stop it (two writers would interleave their files)")
    finally:
        other.kill()
        other.wait()
    assert hold(tmp_path, "training run") is True
    assert hold(tmp_path, "training run") is False  # held already by this process: re-entered
    with folder_lock(tmp_path, "experiment"):
        pass
    assert hold(tmp_path, "training run") is False  # the block did not release a lock it did not take
    release(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()}\n"


SWEEP = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from hyperclone.common.ownership import exit_with_parent

def work(path):
    open(path, "w").write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    pool.submit(work, sys.argv[1])
    time.sleep(60)
"""


def test_pool_workers_end_with_a_killed_sweep(tmp_path):
    """A sweep killed with SIGKILL runs no pool shutdown; its worker (spawned as hyperclone.experiments.sweep spawns
    them, with exit_with_parent) notices within seconds and exits instead of training on."""
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    marker = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(marker)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(marker.read_text())
        assert _alive(worker)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 15
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived its sweep"
