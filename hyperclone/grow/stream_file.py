"""Write one large file at the disk's speed: start the kernel's writeback as the bytes arrive.

With plain buffered writes, gigabytes of dirty pages pile up in the page cache until the kernel
throttles the writer (balance_dirty_pages), and the writer then crawls: on the development VM, 8.3 GB
took 24-29 s through plain writes but 5 s written this way (`python benchmarks/bench_write.py`,
results/bench_write.json). So, on Linux, every `SLICE` bytes written get `sync_file_range(SYNC_FILE_RANGE_WRITE)`
(start writeback now, do not wait), and the slice written two slices earlier is waited for and
dropped from the page cache (`posix_fadvise(DONTNEED)`): at most a few slices are ever dirty, and a
checkpoint larger than RAM does not evict everything else. Elsewhere (no sync_file_range) the writes
are plain. `close()` fsyncs either way.

sync_file_range comes from the C library through ctypes (Python's os module does not expose it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections import deque
from pathlib import Path

SLICE = 64 * 2**20
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* from <fcntl.h>


def _load_sync_file_range():
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


class StreamFile:
    """A write-only file whose dirty pages never pile up (see the module docstring)."""

    def __init__(self, path: Path, slice_bytes: int = SLICE, use_writeback: bool = True):
        self.path = path
        self.slice_bytes = slice_bytes
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._offset = 0
        self._unstarted = 0  # first byte whose writeback has not been started
        self._in_flight: deque[tuple[int, int]] = deque()
        self._writeback = _sync_file_range if use_writeback else None

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            written = os.write(self._fd, view[done:done + self.slice_bytes])
            done += written
            self._offset += written
            if self._offset - self._unstarted >= self.slice_bytes:
                self._start_writeback()

    def _call(self, offset: int, length: int, flags: int) -> None:
        if self._writeback is None:
            return
        if self._writeback(self._fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            if code in (errno.EINVAL, errno.ENOSYS, errno.ESPIPE, errno.EOPNOTSUPP):
                self._writeback = None  # a file system without it: plain writes from here on
                return
            raise OSError(code, os.strerror(code), str(self.path))

    def _start_writeback(self) -> None:
        start, length = self._unstarted, self._offset - self._unstarted
        self._call(start, length, _WRITE)
        self._unstarted = self._offset
        self._in_flight.append((start, length))
        while len(self._in_flight) > 2:
            old_start, old_length = self._in_flight.popleft()
            self._call(old_start, old_length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
            if self._writeback is not None:
                os.posix_fadvise(self._fd, old_start, old_length, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        """fsync (every byte and the file's metadata on disk), then close."""
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def abandon(self) -> None:
        """Close without syncing (the file is about to be deleted)."""
        os.close(self._fd)
