"""Reading documents out of the files real corpora come in, as a stream (never a whole file at once):

| file | a document is |
|---|---|
| `.jsonl`, `.jsonl.gz`, `.jsonl.zst` | the `--text-field` of each line |
| `.parquet` | the `--text-field` column of each row (pyarrow, row group by row group) |
| `.arrow` | the `--text-field` column of each row of an Arrow IPC stream or file (pyarrow) |
| a `datasets.save_to_disk` folder | its `.arrow` files in the order its state.json lists them |
| `.txt.gz`, `.gz` | the whole decompressed file |
| anything else that is text | the whole file |

Libraries: gzip (standard library), zstandard (the `zstd` format; `pip install zstandard`), pyarrow (Parquet and
Arrow; `pip install pyarrow`), imported only when such a file is read. A corrupt or truncated file is one
HyperCloneError naming the file (the token cache is built in a temporary folder, so nothing half-written stays).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from hyperclone.common.errors import HyperCloneError

BINARY_SUFFIXES = (".gz", ".zst", ".parquet", ".arrow")  # compressed or columnar: not sniffed as text
DATASET_STATE = "state.json"  # datasets.save_to_disk writes it beside the Arrow files


def kind(path: Path) -> str:
    name = path.name.lower()
    for suffix, label in ((".jsonl.gz", "jsonl.gz"), (".jsonl.zst", "jsonl.zst"), (".jsonl", "jsonl"),
                          (".parquet", "parquet"), (".arrow", "arrow"), (".gz", "text.gz"), (".zst", "text.zst")):
        if name.endswith(suffix):
            return label
    return "text"


def is_dataset_folder(folder: Path) -> bool:
    return (folder / DATASET_STATE).is_file() and any(folder.glob("*.arrow"))


def dataset_files(folder: Path) -> list[Path]:
    """The Arrow files of a save_to_disk folder, in the dataset's order."""
    try:
        state = json.loads((folder / DATASET_STATE).read_text())
        names = [entry["filename"] for entry in state.get("_data_files", [])]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise HyperCloneError(f"{folder / DATASET_STATE}: not a datasets state file") from None
    files = [folder / name for name in names] or sorted(folder.glob("*.arrow"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise HyperCloneError(f"{folder}: Arrow files missing: {', '.join(missing)}")
    return files


def _open_text(path: Path, label: str) -> io.TextIOBase:
    """Strict UTF-8: a byte that is not UTF-8 stops the read with one line naming the file and the position
    (iter_file), rather than entering the token cache as a replacement character."""
    if label.endswith("gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if label.endswith("zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstdFrames(path)), encoding="utf-8")
    return open(path, encoding="utf-8")


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file, every frame in turn, refusing a file that ends inside a frame
    (zstandard's stream_reader returns a truncated file's prefix without a word)."""

    def __init__(self, path: Path):
        try:
            import zstandard
        except ImportError:
            raise HyperCloneError(f"{path}: reading .zst files needs the zstandard package (pip install "
                                  "zstandard)") from None
        self.path, self.zstd = path, zstandard
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.pending, self.started = b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            chunk = self.frame.unused_data if self.frame.eof else b""
            if self.frame.eof:
                if not chunk:
                    chunk = self.handle.read(1 << 20)
                    if not chunk:
                        return 0  # the last frame ended with the file
                self.frame = self.zstd.ZstdDecompressor().decompressobj()
            else:
                chunk = self.handle.read(1 << 20)
                if not chunk:
                    raise HyperCloneError(f"{self.path}: truncated zstd file (it ends inside a frame)")
            self.pending = self.frame.decompress(chunk)
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


def _jsonl(path: Path, label: str, text_field: str) -> Iterator[str]:
    with _open_text(path, label) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HyperCloneError(f"{path}:{lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise HyperCloneError(f"{path}:{lineno} has no string field {text_field!r}")
            if record[text_field]:
                yield record[text_field]


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise HyperCloneError("reading Parquet or Arrow files needs the pyarrow package (pip install "
                              "pyarrow)") from None
    return pyarrow


def _columns(path: Path, label: str, text_field: str) -> Iterator[str]:
    pa = _pyarrow()
    if label == "parquet":
        handle = pa.parquet.ParquetFile(path)
        if text_field not in handle.schema_arrow.names:
            names = ", ".join(handle.schema_arrow.names)
            raise HyperCloneError(f"{path} has no column {text_field!r} (columns: {names})")
        batches = handle.iter_batches(columns=[text_field])
    else:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        if text_field not in reader.schema.names:
            names = ", ".join(reader.schema.names)
            raise HyperCloneError(f"{path} has no column {text_field!r} (columns: {names})")
    for batch in batches:
        for text in batch.column(batch.schema.get_field_index(text_field)).to_pylist():
            if text:
                yield text


def iter_file(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one file (see the module doc), streamed."""
    label = kind(path)
    try:
        if label.startswith("jsonl"):
            yield from _jsonl(path, label, text_field)
        elif label in ("parquet", "arrow"):
            yield from _columns(path, label, text_field)
        else:
            with _open_text(path, label) as fh:
                text = fh.read()
            if text.strip():
                yield text
    except HyperCloneError:
        raise
    except UnicodeDecodeError as exc:
        raise HyperCloneError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start} "
                              "of a decoded block; convert it to UTF-8)") from None
    except Exception as exc:  # bad gzip/zlib/zstd data, truncated or corrupt Parquet/Arrow: the file is unreadable
        reason = str(exc).splitlines()[0] if str(exc) else "corrupt"
        raise HyperCloneError(f"{path}: cannot read it ({type(exc).__name__}: {reason})") from None
