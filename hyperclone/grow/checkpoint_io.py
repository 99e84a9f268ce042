"""Reading source tensors one at a time and writing grown tensors shard by shard.

Why not safetensors' own API for everything: `safe_open` memory-maps whole files (the pages it
touches stay resident, so a 2 GB source shows up as 2 GB of RSS) and `save_file` needs every tensor
of a shard in memory at once. Growth knows every output name, shape and dtype before it computes a
single tensor, so the writer lays out each shard's header first and then streams tensor bytes to
their final offsets; the reader maps each tensor's own byte range (copy-on-write, so no write can reach
the file) and the mapping goes when the tensor does. Mapping instead of reading into a fresh buffer
saves a zero-fill, a copy and the page faults of a new allocation for every source byte: 1.4 s of a
symmetric 8.28 GB grow on the development VM. Both follow the
safetensors format (8-byte little-endian header length, JSON header, raw little-endian data), and
the output is read back by the safetensors library and transformers in the tests.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.stream_file import StreamFile

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "C64": torch.complex64,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu, "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}
# bits per element of every dtype the safetensors format defines (F4 and F6 pack below a byte: no torch dtype here)
DTYPE_BITS: dict[str, int] = {**{name: torch.empty((), dtype=d).element_size() * 8 for name, d in DTYPES.items()},
                              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path
    start: int = 0  # absolute byte offset in file (safetensors only)
    end: int = 0

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


MAX_HEADER = 100_000_000  # bytes; the safetensors library refuses larger headers too
USIZE = 2**64  # the library's offsets and dimensions are usize: integers in [0, 2**64)


def _usize(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < USIZE


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header by the safetensors library's own rules (safetensors/src/tensor.rs:
    read_metadata and Metadata::validate), so that every file the library refuses is refused here too, with one
    line: an 8-byte little-endian length of at most 100 MB inside the file, a UTF-8 JSON object, `__metadata__`
    absent, null or a map of strings to strings, every other entry {dtype, shape, data_offsets} with a known dtype,
    non-negative integer dimensions and two integer offsets, the tensors' byte ranges contiguous from 0 in offset
    order with sizes matching shape x dtype, and the data ending exactly at the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise HyperCloneError(f"{path}: not a safetensors file (shorter than its header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER:
            raise HyperCloneError(f"{path}: corrupt or truncated safetensors header (declared length "
                                  f"{header_len:,} bytes is over the 100 MB limit)")
        if header_len > size - 8:
            raise HyperCloneError(f"{path}: corrupt or truncated safetensors header (declared length {header_len:,} "
                                  f"bytes, the file has {size - 8:,} after the length)")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise HyperCloneError(f"{path}: corrupt safetensors header ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise HyperCloneError(f"{path}: corrupt safetensors header (not a JSON object)")
    _check_metadata(path, header.get("__metadata__"))
    base = 8 + header_len
    entries = []
    for name, entry in header.items():
        if name != "__metadata__":
            entries.append(_entry(path, name, entry))
    infos = {}
    expected = 0
    for name, dtype, shape, start, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if start != expected or end < start:
            raise HyperCloneError(f"{path}: corrupt safetensors entry for {name!r} (its data_offsets [{start}, {end}] "
                                  f"do not start where the previous tensor ends, at {expected})")
        expected = end
        nbits = _checked_numel(path, name, shape) * DTYPE_BITS[dtype]
        if nbits >= USIZE:
            raise HyperCloneError(f"{path}: corrupt safetensors entry for {name!r} (its size overflows 64 bits)")
        if nbits % 8 or end - start != nbits // 8:
            raise HyperCloneError(f"{path}: corrupt safetensors entry for {name!r} (size does not match shape)")
        infos[name] = TensorInfo(name, shape, DTYPES[dtype], path, base + start, base + end)
    if base + expected != size:
        where = "ends past the end of the file" if base + expected > size else "leaves bytes after the last tensor"
        raise HyperCloneError(f"{path}: {'truncated' if base + expected > size else 'corrupt'} safetensors file "
                              f"(its data {where}: {base + expected:,} bytes declared, {size:,} in the file)")
    return infos


def _checked_numel(path: Path, name: str, shape: tuple[int, ...]) -> int:
    """The element count, refused as the library refuses it: when the running product of the dimensions, in order,
    overflows 64 bits (even if a later dimension is 0), or when a dimension does not fit torch's int64."""
    n = 1
    for dim in shape:
        n *= dim
        if n >= USIZE or dim >= 2**63:
            raise HyperCloneError(f"{path}: corrupt safetensors entry for {name!r} (its shape {list(shape)} "
                                  "overflows 64 bits)")
    return n


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; the format's JSON does not


def _check_metadata(path: Path, metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HyperCloneError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")


def _entry(path: Path, name: str, entry: object) -> tuple[str, str, tuple[int, ...], int, int]:
    """(name, dtype name, shape, start, end) of one header entry, every field checked."""
    bad = f"{path}: corrupt safetensors entry for {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise HyperCloneError(f"{bad} (it needs dtype, shape and data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HyperCloneError(f"{bad} (unknown dtype {dtype!r})")
    if dtype not in DTYPES:
        raise HyperCloneError(f"{bad} (dtype {dtype} has no torch type to read it into)")
    if not isinstance(shape, list) or not all(_usize(d) for d in shape):
        raise HyperCloneError(f"{bad} (shape must be a list of non-negative integers)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_usize(x) for x in offsets):
        raise HyperCloneError(f"{bad} (data_offsets must be two non-negative integers)")
    return name, dtype, tuple(shape), offsets[0], offsets[1]


class SourceWeights:
    """The tensors of a checkpoint folder, read one at a time.

    Safetensors (single file or sharded with an index) are mapped tensor by tensor (map_range). Pickle
    checkpoints (.bin) are refused unless allow_pickle, and then loaded with weights_only=True.
    """

    def __init__(self, folder: Path, allow_pickle: bool = False):
        self.folder = folder
        self.infos: dict[str, TensorInfo] = {}
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        found: dict[str, list[Path]] = {}  # tensor name -> the files that hold it
        files, index = self._weight_files(folder, allow_pickle)
        for file in files:
            if file.suffix == ".safetensors":
                infos = read_safetensors_header(file)
            else:
                infos = {name: TensorInfo(name, tuple(t.shape), t.dtype, file)
                         for name, t in self._load_pickle(file).items()}
            for name in infos:
                found.setdefault(name, []).append(file)
            self.infos.update(infos)
        if index is not None:
            check_index(index, read_index(index), found)
        twice = sorted(name for name, files in found.items() if len(files) > 1)
        if twice:
            raise HyperCloneError(f"{folder}: tensor {twice[0]!r} is in more than one weight file "
                                  f"({', '.join(f.name for f in found[twice[0]])})")
        if not self.infos:
            raise HyperCloneError(f"{folder}: the checkpoint holds no tensors")

    @staticmethod
    def _weight_files(folder: Path, allow_pickle: bool) -> tuple[list[Path], Path | None]:
        """The weight files to read, and the index file that lists them (None without one)."""
        index = folder / "model.safetensors.index.json"
        if index.exists():
            return sorted(set(read_index(index).values())), index
        single = folder / "model.safetensors"
        if single.exists():
            return [single], None
        shards = sorted(folder.glob("*.safetensors"))
        if shards:
            return shards, None
        pickle_index = folder / "pytorch_model.bin.index.json"
        if pickle_index.exists():
            pickles, index = sorted(set(read_index(pickle_index).values())), pickle_index
        else:
            pickles, index = [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").exists() else [], None
        if pickles:
            if not allow_pickle:
                raise HyperCloneError(
                    f"{folder}: weights are a pickle checkpoint (.bin); pass --allow-pickle to read them "
                    "(loaded with weights_only=True)")
            return pickles, index
        raise HyperCloneError(f"{folder}: no model weights found (expected model.safetensors or shards)")

    def _load_pickle(self, file: Path) -> dict[str, torch.Tensor]:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a bad pickle
            raise HyperCloneError(f"{file}: cannot read pickle checkpoint ({exc.__class__.__name__})") from None
        if not isinstance(state, dict):
            raise HyperCloneError(f"{file}: pickle checkpoint is not a state dict")
        self._pickled[file] = state
        return state

    def read(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        if info.file in self._pickled:
            return self._pickled[info.file][name]
        length = info.end - info.start
        if not length:
            return torch.empty(info.shape, dtype=info.dtype)
        return map_range(info.file, info.start, length, info.dtype).view(info.shape)


def map_range(path: Path, start: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor over bytes [start, start + length) of the file, memory-mapped copy-on-write (writes stay
    in this process); the kernel is asked to read the range ahead (MADV_WILLNEED) so a cold file streams.
    A file system that cannot map files (some FUSE and network mounts) gets one positioned read instead."""
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size < start + length:
            raise HyperCloneError(f"{path}: truncated (the file ends before byte {start + length})")
        try:
            mapped = mmap.mmap(handle.fileno(), start + length - aligned, offset=aligned, access=mmap.ACCESS_COPY)
        except OSError:
            buffer = bytearray(length)
            handle.seek(start)
            if handle.readinto(buffer) != length:
                raise HyperCloneError(f"{path}: truncated while reading bytes {start}-{start + length}") from None
            return torch.frombuffer(buffer, dtype=dtype)
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    return torch.frombuffer(mapped, dtype=dtype, count=length // dtype.itemsize, offset=start - aligned)


def read_index(index: Path) -> dict[str, Path]:
    """The weight map of a sharded checkpoint's index file: tensor name -> shard file. Refused in one line: an
    index that is not UTF-8 JSON, has no "weight_map" object of string names and string shard files, names a
    shard outside the checkpoint folder, or one that is missing."""
    try:
        raw = json.loads(index.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HyperCloneError(f"{index}: corrupt index file (not UTF-8 JSON)") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HyperCloneError(f"{index}: corrupt index file (no \"weight_map\" object of tensor names)")
    root = index.parent.resolve()
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise HyperCloneError(f"{index}: corrupt index file (the shard of {tensor!r} is {name!r}, not a file name)")
        if Path(name).is_absolute() or root not in (root / name).resolve().parents:
            raise HyperCloneError(f"{index}: shard {name!r} is outside the checkpoint folder; refusing to follow it")
    shards = {name: index.parent / name for name in weight_map.values()}
    missing = sorted(name for name, path in shards.items() if not path.is_file())
    if missing:
        raise HyperCloneError(f"{index}: shard files missing: {', '.join(missing)}")
    unnamed = sorted(path.name for path in _shard_set(shards.values()) if path.name not in shards)
    if unnamed:  # the set says N shards and one of them holds no tensor the index lists: an entry was lost
        raise HyperCloneError(f"{index}: shard {unnamed[0]} belongs to the same set but the index lists none of "
                              "its tensors")
    return {tensor: shards[name] for tensor, name in weight_map.items()}


_SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<k>\d+)-of-(?P<n>\d+)(?P<ext>\.\w+)$")


def _shard_set(named: Iterable[Path]) -> list[Path]:
    """Every file of the numbered sets (`model-00002-of-00003.safetensors`) that the named shards belong to,
    as far as they exist in the folder."""
    found: set[Path] = set()
    for path in named:
        match = _SHARD_NAME.match(path.name)
        if match is None:
            continue
        width, count = len(match["k"]), int(match["n"])
        for k in range(1, count + 1):
            sibling = path.with_name(f"{match['stem']}-{k:0{width}d}-of-{match['n']}{match['ext']}")
            if sibling.is_file():
                found.add(sibling)
    return sorted(found)


def check_index(index: Path, weight_map: dict[str, Path], found: dict[str, list[Path]]) -> None:
    """The shards hold exactly the tensors the index says, each in the shard it names and in no other (found:
    tensor name -> the shards that hold it). torch's load_sharded_checkpoint(strict=True) checks the same names."""
    twice = sorted(name for name, files in found.items() if len(files) > 1)
    if twice:
        raise HyperCloneError(f"{index}: tensor {twice[0]!r} is in more than one shard "
                              f"({', '.join(f.name for f in found[twice[0]])})")
    unlisted = sorted(set(found) - set(weight_map))
    if unlisted:
        raise HyperCloneError(f"{index}: shard {found[unlisted[0]][0].name} holds {unlisted[0]!r}, which the index "
                              "does not list")
    absent = sorted(set(weight_map) - set(found))
    if absent:
        raise HyperCloneError(f"{index}: {absent[0]!r} is listed in {weight_map[absent[0]].name} but no shard holds it")
    moved = sorted(name for name, files in found.items() if files[0].name != weight_map[name].name)
    if moved:
        raise HyperCloneError(f"{index}: {moved[0]!r} is listed in {weight_map[moved[0]].name} but stored in "
                              f"{found[moved[0]][0].name}")


@dataclass(frozen=True)
class OutputTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * _itemsize(self.dtype)


def assign_shards(tensors: list[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Split tensors, in order, into shards of at most max_shard_bytes (a larger tensor gets its own)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


class ShardedWriter:
    """Write tensors in a fixed, planned order into safetensors shards, streaming each to disk.

    Usage: create with the full ordered list, then call write() for each tensor in that order,
    then close(). The index file is written when there is more than one shard.
    """

    def __init__(self, folder: Path, tensors: list[OutputTensor], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None):
        self.folder = folder
        self.shards = assign_shards(tensors, max_shard_bytes)
        self.names = shard_file_names(len(self.shards))
        self.metadata = {"format": "pt", **(metadata or {})}
        self._order = [t for shard in self.shards for t in shard]
        self._position = 0
        self._shard = -1
        self._handle = None
        self._remaining_in_shard = 0

    def _finish_shard(self) -> None:
        """fsync the open shard: the folder is renamed into place only once every byte is on disk."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open_next_shard(self) -> None:
        self._finish_shard()
        self._shard += 1
        entries: dict[str, object] = {"__metadata__": self.metadata}
        offset = 0
        for tensor in self.shards[self._shard]:
            entries[tensor.name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                                    "data_offsets": [offset, offset + tensor.nbytes]}
            offset += tensor.nbytes
        header = json.dumps(entries, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        self._handle = StreamFile(self.folder / self.names[self._shard])
        self._handle.write(struct.pack("<Q", len(header)) + header)
        self._remaining_in_shard = len(self.shards[self._shard])

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self._order[self._position]
        if name != expected.name or tuple(tensor.shape) != expected.shape or tensor.dtype != expected.dtype:
            raise RuntimeError(f"writer expected {expected}, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        if self._remaining_in_shard == 0:
            self._open_next_shard()
        data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
        self._handle.write(memoryview(data))
        self._remaining_in_shard -= 1
        self._position += 1

    def abort(self) -> None:
        """Close the open shard without syncing it (the output folder is about to be removed)."""
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None

    def close(self) -> None:
        if self._position != len(self._order):
            raise RuntimeError(f"writer closed after {self._position} of {len(self._order)} tensors")
        self._finish_shard()
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[i] for i, shard in enumerate(self.shards) for t in shard}
            index = {"metadata": {"total_size": sum(t.nbytes for t in self._order)}, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


class BackgroundWriter:
    """Run a ShardedWriter's writes on one background thread, at most one write pending, so the next
    tensor is computed while the previous one goes to disk (file writes and torch kernels release the
    GIL). The tensor handed to write() must stay untouched until the following write() returns.
    Leaving the block waits for the last write and closes the writer; an error in a write is raised
    by the next write() or on leaving."""

    def __init__(self, writer: ShardedWriter):
        from concurrent.futures import ThreadPoolExecutor

        self.writer = writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperclone-writer")
        self._pending = None

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self.wait()
        self._pending = self._pool.submit(self.writer.write, name, tensor)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
                self.writer.close()
            else:
                if self._pending is not None:
                    self._pending.exception()  # let the write in flight end before the folder is removed
                self.writer.abort()
        finally:
            self._pool.shutdown(wait=True)
