"""Local text corpora -> one cached, memory-mapped token stream, split into train and validation.

A corpus is any mix of text files, folders (searched recursively) and ``.jsonl`` files whose
lines are JSON objects with a text field. It is tokenized once with the model's tokenizer
(every document followed by the end-of-text token) into ``tokens.bin`` under a cache folder
keyed by the tokenizer and the files' paths, sizes and modification times, so a second run on
the same data and tokenizer reuses it. The last ``val_fraction`` of the stream is the held-out
validation split; it does not depend on the sequence length or the seed.

Training samples are windows of ``seq_len + 1`` tokens starting at multiples of ``seq_len``;
the order in which they are visited is a pure function of (seed, global sample index), so any
step's batch can be recomputed after a restart and every process of a distributed run can
take its own share of the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hyperclone.common.errors import HyperCloneError
from hyperclone.train import readers

CACHE_FORMAT = 1
_SNIFF_BYTES = 8192
_ENCODE_BATCH = 256


def default_cache_dir() -> Path:
    """Token cache root: $HYPERCLONE_CACHE/tokens, else ~/.cache/hyperclone/tokens."""
    root = os.environ.get("HYPERCLONE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "hyperclone") / "tokens"


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # a multi-byte character cut at the end of the sniffed block is fine
        return err.start < len(head) - 4
    return False


def list_sources(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into the list of files to read (hyperclone.train.readers), in a fixed
    (shuffled) order.

    Explicitly named files must be text or a known format; unknown binary files found inside folders are
    skipped; a `datasets.save_to_disk` folder contributes its Arrow files. The order is a fixed shuffle of the
    sorted list so that the validation split (the end of the stream) samples the whole corpus rather than its
    alphabetically last files.
    """
    if not paths:
        raise HyperCloneError("no data given: pass at least one --data file or folder")
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            if not _readable(path):
                what = "a binary file" if b"\0" in path.read_bytes()[:_SNIFF_BYTES] else "not UTF-8 text"
                raise HyperCloneError(f"{path} is {what}; pass UTF-8 text, .jsonl(.gz/.zst), .parquet, .arrow or a "
                                      "folder of them")
            found.append(path.resolve())
        elif path.is_dir() and readers.is_dataset_folder(path):
            found.extend(p.resolve() for p in readers.dataset_files(path))
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                rel = sub.relative_to(path).parts
                if any(part.startswith(".") or part == "__pycache__" for part in rel):
                    continue
                if sub.is_file() and sub.stat().st_size > 0 and _readable(sub):
                    found.append(sub.resolve())
        else:
            raise HyperCloneError(f"data path {path} does not exist")
    found = sorted(set(found))
    if not found:
        raise HyperCloneError(f"no text files found in {', '.join(str(p) for p in paths)}")
    random.Random(0).shuffle(found)
    return found


def _readable(path: Path) -> bool:
    return readers.kind(path) != "text" or not _is_binary(path)


def iter_documents(sources: Sequence[Path], text_field: str = "text") -> Iterator[str]:
    """Yield documents from every source file in order (see hyperclone.train.readers for the formats)."""
    for path in sources:
        yield from readers.iter_file(path, text_field)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would produce different ids."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # slow tokenizer: its vocabulary is the best cheap proxy
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(f"eos={tokenizer.eos_token_id}".encode())
    return h.hexdigest()


def cache_key(sources: Sequence[Path], tokenizer, text_field: str) -> str:
    h = hashlib.sha256()
    h.update(f"format={CACHE_FORMAT};field={text_field};tok={tokenizer_fingerprint(tokenizer)}".encode())
    for path in sorted(sources):
        st = path.stat()
        h.update(f"\n{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


@dataclass
class TokenData:
    """A tokenized corpus: a read-only memory map of the whole stream plus its train/val split."""

    folder: Path
    tokens: np.memmap
    n_docs: int
    cached: bool  # True when the stream came from the cache rather than being tokenized now
    val_start: int = 0
    max_id: int | None = None  # the largest token id in the stream (meta.json; None for caches written before it)
    sha256: str | None = None  # of tokens.bin (meta.json; None for caches written before it): the stream's identity

    def largest_id(self) -> int:
        """The largest token id in the stream (read once from the stream where meta.json does not say)."""
        return self.max_id if self.max_id is not None else int(self.tokens.max()) if self.n_tokens else -1

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def split(self, val_fraction: float, seq_len: int) -> None:
        """Fix the held-out split: the last val_fraction of the stream, at least one window."""
        n_val = max(int(self.n_tokens * val_fraction), seq_len + 1)
        self.val_start = self.n_tokens - n_val

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.val_start]

    @property
    def val(self) -> np.ndarray:
        return self.tokens[self.val_start :]


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise HyperCloneError("the tokenizer has no end-of-text (eos) token; documents cannot be separated")
    return int(eos)


def build_tokens(sources: Sequence[Path], tokenizer, folder: Path, text_field: str = "text") -> int:
    """Tokenize every document into folder/tokens.bin (written to a temp file, renamed at the end)."""
    eos = _eos_id(tokenizer)
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    n_docs = n_tokens = 0
    max_id = -1
    digest = hashlib.sha256()  # of tokens.bin as written: open_tokens checks it, so a changed cache is not trained on
    try:
        with open(tmp / "tokens.bin", "wb") as out:
            batch: list[str] = []

            def flush() -> None:
                nonlocal n_tokens, max_id
                ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
                flat = np.concatenate([np.asarray([*seq, eos], dtype=dtype) for seq in ids])
                raw = flat.tobytes()
                out.write(raw)
                digest.update(raw)
                n_tokens += flat.shape[0]
                max_id = max(max_id, int(flat.max()))
                batch.clear()

            total = sum(p.stat().st_size for p in sources)
            with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr, disable=None,
                      mininterval=1.0) as bar:  # shown on a terminal only (disable=None)
                for doc in iter_documents(sources, text_field):
                    batch.append(doc)
                    n_docs += 1
                    bar.update(len(doc))  # characters, close to the bytes read for text
                    if len(batch) >= _ENCODE_BATCH:
                        flush()
                if batch:
                    flush()
            out.flush()
            os.fsync(out.fileno())
        meta = dict(format=CACHE_FORMAT, n_tokens=n_tokens, n_docs=n_docs, dtype=np.dtype(dtype).name,
                    vocab_size=vocab, eos_token_id=eos, text_field=text_field,
                    tokenizer=tokenizer_fingerprint(tokenizer), sources=[str(p) for p in sources],
                    sha256=digest.hexdigest(), max_id=max_id)
        with open(tmp / "meta.json", "w") as handle:
            handle.write(json.dumps(meta, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        if folder.exists():  # a concurrent builder won; ours is identical
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n_tokens


def open_tokens(folder: Path, cached: bool, verify: bool = True) -> TokenData:
    """The token stream of a cache folder. Its size must match meta.json; with verify (the process that loads
    the data for everyone), its sha256 too, when meta.json has one (caches written before the check have none and
    are read unchecked): a cache changed after it was written is refused, not trained on. Hashing reads the file
    once (about a second per GB)."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta["n_tokens"] == 0:
        raise HyperCloneError(f"the corpus holds no text (sources: {', '.join(meta['sources'][:3])}...)")
    path = folder / "tokens.bin"
    expected = meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize
    if path.stat().st_size != expected:
        raise HyperCloneError(f"{path} changed after it was written ({path.stat().st_size:,} bytes, meta.json says "
                              f"{expected:,}); delete {folder} to tokenize again")
    if verify and meta.get("sha256") and file_sha256(path) != meta["sha256"]:
        raise HyperCloneError(f"{path} changed after it was written (its sha256 is not the one in meta.json); "
                              f"delete {folder} to tokenize again")
    mm = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
    return TokenData(folder=folder, tokens=mm, n_docs=meta["n_docs"], cached=cached, max_id=meta.get("max_id"),
                     sha256=meta.get("sha256"))


def file_sha256(path: Path, block: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            h.update(chunk)
    return h.hexdigest()


def is_token_cache(path: Path) -> bool:
    """A folder written by `hyperclone tokenize` (or the training cache): meta.json and tokens.bin."""
    return path.is_dir() and (path / "meta.json").is_file() and (path / "tokens.bin").is_file()


def open_token_cache(folder: Path, tokenizer, verify: bool = True) -> TokenData:
    """A prepared token cache, checked against the tokenizer that will train on it."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise HyperCloneError(f"{folder}: not a token cache (meta.json unreadable)") from None
    if meta.get("format") != CACHE_FORMAT:
        raise HyperCloneError(f"{folder}: token cache format {meta.get('format')}, this hyperclone reads "
                              f"{CACHE_FORMAT}; tokenize again")
    if meta.get("tokenizer") not in (None, tokenizer_fingerprint(tokenizer)):
        raise HyperCloneError(f"{folder} was tokenized with another tokenizer than the model's; tokenize again "
                              "with --tokenizer MODEL_DIR")
    return open_tokens(folder, True, verify)


def tokenize(paths: Sequence[str | Path], tokenizer, out: Path, text_field: str = "text") -> TokenData:
    """`hyperclone tokenize`: the token cache of `paths` written to `out` (atomically), ready for train --data."""
    out = Path(out)
    if out.exists():
        raise HyperCloneError(f"output already exists: {out}")
    build_tokens(list_sources(paths), tokenizer, out, text_field)
    return open_tokens(out, False)


def load_corpus(paths: Sequence[str | Path], tokenizer, cache_dir: Path | None = None, text_field: str = "text",
                build: bool = True) -> TokenData:
    """Tokenize `paths` with `tokenizer` (or reuse the cache) and memory-map the result. A single path that is
    a token cache (`hyperclone tokenize`) is used as it is.

    With build=False the cache must already exist (used by non-zero ranks after rank 0 built it).
    """
    if len(paths) == 1 and is_token_cache(Path(paths[0])):
        return open_token_cache(Path(paths[0]), tokenizer, verify=build)
    sources = list_sources(paths)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / cache_key(sources, tokenizer, text_field)
    cached = (folder / "meta.json").exists()
    if not cached:
        if not build:
            raise HyperCloneError(f"token cache {folder} is missing (rank 0 failed to build it?)")
        print(f"tokenizing {len(sources)} file(s) into {folder}", file=sys.stderr)
        build_tokens(sources, tokenizer, folder, text_field)
    return open_tokens(folder, cached, verify=build and cached)  # a cache built just now was hashed as written


class WindowSampler:
    """Deterministic order of training windows: epoch e visits a permutation seeded by (seed, e).

    Window w covers tokens [w*seq_len, w*seq_len + seq_len + 1): inputs are the first seq_len,
    targets the last seq_len of them.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.n_windows = (tokens.shape[0] - 1) // seq_len
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)}
        return self._perms[epoch]

    def windows(self, start: int, count: int) -> list[int]:
        """Window ids of global samples start .. start+count-1."""
        out = []
        for pos in range(start, start + count):
            epoch, idx = divmod(pos, self.n_windows)
            out.append(int(self._perm(epoch)[idx]))
        return out

    def batch(self, window_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self.tokens[w * self.seq_len : w * self.seq_len + self.seq_len + 1] for w in window_ids])
        rows = torch.from_numpy(rows.astype(np.int64))
        return rows[:, :-1], rows[:, 1:]


def val_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> int:
    """How many consecutive validation windows to evaluate on (capped by max_tokens)."""
    return max(1, min((tokens.shape[0] - 1) // seq_len, max(1, max_tokens // seq_len)))
