"""Writing an output folder atomically: build it in a hidden temporary folder beside OUT and rename
it into place at the end, so that a crash or kill -9 never leaves something at OUT that looks like a
finished checkpoint. Stale temporary folders of dead processes are removed on the next run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hyperclone.common.errors import HyperCloneError

TMP_MARK = ".hyperclone-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(out: Path) -> None:
    for candidate in out.parent.glob(f".{out.name}{TMP_MARK}*"):
        suffix = candidate.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(candidate, ignore_errors=True)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing OUT unless overwrite; never touch it here."""
    if out.exists() and not overwrite:
        raise HyperCloneError(f"output already exists: {out} (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise HyperCloneError(f"output exists and is not a folder: {out}")


@contextmanager
def atomic_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces OUT, on any error it is removed."""
    out = Path(out).absolute()
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    tmp = out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.hyperclone-old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file beside it, fsynced, then renamed over path: a crash leaves
    either the old file or the new one, never a truncated one (a model card, a run's finished marker, a report)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """write_text_atomic for bytes (a downloaded archive kept in a cache)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
