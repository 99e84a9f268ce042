"""An English prose corpus that can be rebuilt byte for byte: the documentation that 14 pinned PyPI source
distributions ship (issue 25's prose confirmation at 10 tokens per parameter).

Why PyPI: the first prose corpus (benchmarks/docs_corpus.py) came from Debian's documentation packages, and the
archive serves only their current versions: a point release changed it under the first runs, and the file kept
instead was lost with the machine it lay on. A file on PyPI never changes once uploaded, so the pinned filenames and
sha256s below rebuild the same corpus on any machine that reaches PyPI, any day; the runs that read it can resume
across sessions (`hyperclone experiment` records the corpus's sha256 and refuses another).

What it holds: the reStructuredText, Markdown and text files under each sdist's doc/ or docs/ folder (Django's topic
guides and reference, SQLAlchemy's ORM and Core manuals, NumPy's user guide and release notes, Matplotlib's user
guide, pytest, Astropy, SymPy, Pyramid, Numba, Celery, Docutils, Sphinx, Twisted, Scrapy), read from the archive
without unpacking it. Code blocks stay in (they are part of the documents); documents under 512 bytes, files that
are not UTF-8 and exact duplicates are dropped; shuffled with a fixed seed so that the held-out end of the stream
(train's validation split) samples every package. Written as JSON lines ({"text"}), the format `hyperclone
experiment --data` reads, with OUT.manifest.json beside it (each sdist's sha256, documents and bytes, the corpus's
sha256). Downloads use the standard library (PEP 691's JSON simple index, then the file), each checked against its
pinned sha256; --cache keeps them for the next build.

    python benchmarks/pypi_docs_corpus.py --out /work/prose/pypi-docs.jsonl
    OMP_NUM_THREADS=1 hyperclone experiment --sweep sweeps/prose-pypi.yaml --data /work/prose/pypi-docs.jsonl --out OUT
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from hyperclone.common.outputs import write_bytes_atomic, write_text_atomic
from hyperclone.experiments.corpora import add_unseen

INDEX = "https://pypi.org/simple/"
# (project, sdist filename, sha256 of that file as PyPI lists it)
SDISTS = (
    ("django", "Django-5.1.4.tar.gz", "de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a"),
    ("sqlalchemy", "sqlalchemy-2.0.36.tar.gz", "7f2767680b6d2398aea7082e45a774b2b0767b5c8d8ffb9c8b683088ea9b29c5"),
    ("numpy", "numpy-2.1.3.tar.gz", "aa08e04e08aaf974d4458def539dece0d28146d866a39da5639596f4921fd761"),
    ("matplotlib", "matplotlib-3.9.3.tar.gz", "cd5dbbc8e25cad5f706845c4d100e2c8b34691b412b93717ce38d8ae803bcfa5"),
    ("pytest", "pytest-8.3.4.tar.gz", "965370d062bce11e73868e0335abac31b4d3de0e82f4007408d242b4f8610761"),
    ("astropy", "astropy-7.0.0.tar.gz", "e92d7c9fee86eb3df8714e5dd41bbf9f163d343e1a183d95bf6bd09e4313c940"),
    ("sympy", "sympy-1.13.3.tar.gz", "b27fd2c6530e0ab39e275fc9b683895367e51d5da91baa8d3d64db2565fec4d9"),
    ("pyramid", "pyramid-2.0.2.tar.gz", "372138a738e4216535cc76dcce6eddd5a1aaca95130f2354fb834264c06f18de"),
    ("numba", "numba-0.60.0.tar.gz", "5df6158e5584eece5fc83294b949fd30b9f1125df7708862205217e068aabf16"),
    ("celery", "celery-5.4.0.tar.gz", "504a19140e8d3029d5acad88330c541d4c3f64c789d85f94756762d8bca7e706"),
    ("docutils", "docutils-0.21.2.tar.gz", "3a6b18732edf182daa3cd12775bbb338cf5691468f91eeeb109deff6ebfa986f"),
    ("sphinx", "sphinx-8.1.3.tar.gz", "43c1911eecb0d3e161ad78611bc905d1ad0e523e4ddc202a58a821773dc4c927"),
    ("twisted", "twisted-24.11.0.tar.gz", "695d0556d5ec579dcc464d2856b634880ed1319f45b10d19043f2b57eb0115b5"),
    ("scrapy", "scrapy-2.12.0.tar.gz", "d66d6e76009b12447604196875a463b61d10721140032a8084a0a52df7f4788f"),
)
DOC_FOLDERS = ("doc", "docs")
SUFFIXES = (".rst", ".txt", ".md")
MIN_BYTES = 512  # index pages, toctrees and stubs below this carry no prose


class FetchError(Exception):
    pass


def sdist_url(project: str, filename: str) -> str:
    """The download address of one file of a project, from PyPI's JSON simple index (PEP 691)."""
    request = urllib.request.Request(INDEX + project + "/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    for entry in files:
        if entry["filename"] == filename:
            return entry["url"]
    raise FetchError(f"{filename} is not in PyPI's index of {project}")


def fetch(project: str, filename: str, sha256: str, cache: Path | None) -> bytes:
    """The sdist's bytes, from the cache when it holds them, else downloaded; refused unless the sha256 matches."""
    cached = cache / filename if cache is not None else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
    else:
        try:
            with urllib.request.urlopen(sdist_url(project, filename), timeout=300) as response:
                data = response.read()
        except (urllib.error.URLError, TimeoutError) as exc:
            raise FetchError(f"cannot download {filename}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FetchError(f"{filename}: sha256 {hashlib.sha256(data).hexdigest()} is not the pinned {sha256}")
    if cached is not None and not cached.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cached, data)
    return data


def documents(sdist: bytes) -> list[str]:
    """The text of every document under the archive's top-level doc/ or docs/ folder, sorted by path."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(sdist)) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            parts = member.name.split("/")
            if len(parts) < 3 or parts[1] not in DOC_FOLDERS or not member.name.endswith(SUFFIXES):
                continue
            try:
                text = archive.extractfile(member).read().decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if len(text.encode()) >= MIN_BYTES:
                found.append(text)
    return found


def build(cache: Path | None) -> tuple[list[str], dict]:
    """The shuffled documents and the manifest."""
    seen: set[bytes] = set()
    docs, per_sdist = [], {}
    for project, filename, sha256 in SDISTS:
        count, kept = add_unseen(documents(fetch(project, filename, sha256, cache)), seen, docs)
        if count == 0:
            raise FetchError(f"{filename} holds no document under {' or '.join(DOC_FOLDERS)}/")
        per_sdist[filename] = {"sha256": sha256, "documents": count, "bytes": kept}
    random.Random(0).shuffle(docs)
    manifest = {"documents": len(docs), "bytes": sum(len(t.encode()) for t in docs), "sdists": per_sdist,
                "source": "documentation folders of pinned PyPI source distributions (benchmarks/pypi_docs_corpus.py)"}
    return docs, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the corpus, JSON lines (a .manifest.json beside it)")
    parser.add_argument("--cache", type=Path, default=None, help="a folder that keeps the downloaded sdists")
    args = parser.parse_args(argv)
    try:
        docs, manifest = build(args.cache)
    except FetchError as exc:
        print(f"pypi_docs_corpus: {exc}", file=sys.stderr)
        return 2
    lines = "".join(json.dumps({"text": text}) + "\n" for text in docs)
    manifest["sha256"] = hashlib.sha256(lines.encode()).hexdigest()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out.with_name(args.out.name + ".manifest.json"), json.dumps(manifest, indent=1) + "\n")
    write_text_atomic(args.out, lines)
    print(json.dumps({k: manifest[k] for k in ("documents", "bytes", "sha256")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
