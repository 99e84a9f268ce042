"""hyperclone.grow.stream_file: bytes land exactly as written, with or without the early-writeback path."""

from __future__ import annotations

import os

import pytest

from hyperclone.grow import stream_file
from hyperclone.grow.stream_file import StreamFile


@pytest.mark.parametrize("use_writeback", [True, False])
def test_bytes_land_in_order_across_slices(tmp_path, use_writeback):
    pieces = [os.urandom(n) for n in (10, 5000, 1, 12_288, 4096 * 3 + 7, 0, 70_000)]
    path = tmp_path / "f.bin"
    f = StreamFile(path, slice_bytes=4096, use_writeback=use_writeback)
    for p in pieces:
        f.write(p)
    f.close()
    assert path.read_bytes() == b"".join(pieces)


def test_writeback_is_available_on_linux():
    if os.uname().sysname == "Linux":
        assert stream_file._sync_file_range is not None
