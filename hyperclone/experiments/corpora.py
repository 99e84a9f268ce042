"""The text an experiment trains on, written once into its folder as JSON lines ({"text"} per document).

- the experiment's own corpus: the running interpreter's standard-library sources, shuffled with a fixed seed,
  or the user's --data, capped at the preset's size (`build_corpus`);
- public corpora (`PUBLIC_CORPORA`): other text a small model can be pretrained on, standing for a public model
  whose pretraining data the experiment never repeats (`public_corpus`). `site-packages` is every .py file of
  the running interpreter's installed packages (sysconfig's purelib: torch, transformers, sympy, ... as
  installed), exact duplicates dropped, shuffled with a fixed seed. It shares no file with the standard library.
"""

from __future__ import annotations

import hashlib
import platform
import random
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.train.data import iter_documents, list_sources

PUBLIC_CORPORA = {"site-packages": "the .py files of the running interpreter's installed packages"}
PUBLIC_CORPUS_BYTES = 1_000_000_000  # a cap that no installed site-packages reaches: all of it


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library .py files (site-packages excluded), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts) and p.is_file())


def site_packages_files() -> list[Path]:
    """The installed packages' .py files (sysconfig purelib), sorted."""
    root = Path(sysconfig.get_paths()["purelib"])
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts and p.is_file())


def _unique_texts(files: Iterable[Path]) -> Iterator[str]:
    """Each file's text once: a file that is not UTF-8 is skipped, a copy of one already seen (a vendored
    module) too."""
    seen: set[bytes] = set()
    for path in files:
        raw = path.read_bytes()
        digest = hashlib.sha1(raw).digest()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            continue


def add_unseen(texts: Iterable[str], seen: set[bytes], docs: list[str]) -> tuple[int, int]:
    """Append to `docs` each text whose sha1 is not in `seen` (recording it there): exact duplicates across packages
    dropped; returns how many texts were added and their UTF-8 bytes (benchmarks/docs_corpus.py and
    pypi_docs_corpus.py tally each package's share with it)."""
    count = size = 0
    for text in texts:
        digest = hashlib.sha1(text.encode()).digest()
        if digest not in seen:
            seen.add(digest)
            docs.append(text)
            count, size = count + 1, size + len(text.encode())
    return count, size


def write_corpus(dest: Path, docs: Iterable[str], description: str, max_bytes: int) -> dict[str, Any]:
    """Write up to max_bytes of the non-empty documents to dest (jsonl, renamed into place) and describe them (with
    the sha256 of the file written, so a corpus rebuilt later is known to be the same or not)."""
    import hashlib
    import json

    dest.parent.mkdir(parents=True, exist_ok=True)
    n_docs = n_bytes = 0
    digest = hashlib.sha256()
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for text in docs:
            if not text.strip():
                continue
            size = len(text.encode("utf-8"))
            if n_bytes + size > max_bytes and n_docs > 0:
                if n_bytes >= 0.9 * max_bytes:
                    break
                continue  # a large document would overshoot the cap; smaller ones may still fit
            line = json.dumps({"text": text}) + "\n"
            fh.write(line)
            digest.update(line.encode("utf-8"))
            n_docs += 1
            n_bytes += size
    if n_docs == 0:
        tmp.unlink()
        raise HyperCloneError(f"no text found for the corpus in {description}")
    tmp.replace(dest)
    return {"description": f"{description}, capped at {max_bytes / 1e6:g} MB", "documents": n_docs, "bytes": n_bytes,
            "sha256": digest.hexdigest()}


def same_corpus(built: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether a rebuilt corpus is the one a run was trained on: the same documents and bytes, and the same sha256
    where both descriptions have one (descriptions written before the sha256 was recorded have none)."""
    keys = ("documents", "bytes") + (("sha256",) if "sha256" in built and "sha256" in expected else ())
    return all(built.get(key) == expected.get(key) for key in keys)


def build_corpus(dest: Path, data: list[Path] | None, max_bytes: int) -> dict[str, Any]:
    """The experiment's own corpus: the user's --data, or the standard library's sources in a seeded order."""
    if data:
        return write_corpus(dest, iter_documents(list_sources(data)), "the text in " + ", ".join(map(str, data)),
                            max_bytes)
    files = stdlib_files()
    random.Random(0).shuffle(files)
    docs = (p.read_text(encoding="utf-8", errors="replace") for p in files)
    stdlib = sysconfig.get_paths()["stdlib"]
    return write_corpus(dest, docs, f"the Python {platform.python_version()} standard library sources ({stdlib})",
                        max_bytes)


def public_corpus(dest: Path, name: str) -> dict[str, Any]:
    """Write the public corpus `name` (a key of PUBLIC_CORPORA) to dest and describe it."""
    if name not in PUBLIC_CORPORA:
        raise HyperCloneError(f"unknown public corpus {name!r}; choose one of {', '.join(PUBLIC_CORPORA)}")
    files = site_packages_files()
    random.Random(0).shuffle(files)
    where = sysconfig.get_paths()["purelib"]
    return write_corpus(dest, _unique_texts(files), f"{PUBLIC_CORPORA[name]} ({where}), duplicates dropped",
                        PUBLIC_CORPUS_BYTES)
