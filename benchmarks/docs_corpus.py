"""An English prose corpus as large as the code ladder's, from the documentation Debian ships (issue 25: confirm the
recipe on prose at 10 tokens per parameter, which the 1.15M-token King James Bible cannot do without ~14 passes).

Packages (Debian 12, fetched with `apt-get download`, unpacked with `dpkg-deb -x`; nothing is installed): the Python
3.11 documentation's reStructuredText sources (python3.11-doc), Perl's POD manuals (perl-doc), Git's manual pages
and guides in AsciiDoc text (git-doc), the PostgreSQL 15 manual (postgresql-doc-15, HTML: tags dropped with the
standard library's html.parser), the GNU coding standards (gnu-standards) and the Debian Reference
(debian-reference-en, HTML). Code blocks stay in (they are part of the documents); every document is one file,
exact duplicates dropped, shuffled with a fixed seed so that the held-out end of the stream (train's validation
split) samples every package. Written as JSON lines ({"text"}), the format `hyperclone experiment --data` reads, with
OUT.manifest.json beside it: each package's version and .deb sha256, the corpus's sha256 and the system (the archive
serves its current versions, so two runs months apart may differ; the manifest says which corpus a result used).

    python benchmarks/docs_corpus.py --out /work/prose/docs.jsonl
    OMP_NUM_THREADS=1 hyperclone experiment --sweep sweeps/prose-docs.yaml --data /work/prose/docs.jsonl --out OUT
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from hyperclone.common.outputs import write_text_atomic
from hyperclone.experiments.corpora import add_unseen

# per package, the suffix of its documents (one form each: git-doc ships every page as .txt and as .html, the
# Python docs as .rst.txt sources and rendered .html) and a file name that holds no document of its own (the Debian
# Reference's index.en.html is the whole book on one page, its chapters again)
PACKAGES = {"python3.11-doc": (".rst.txt", None), "perl-doc": (".pod", None), "git-doc": (".txt", None),
            "postgresql-doc-15": (".html", None), "gnu-standards": (".html", None),
            "debian-reference-en": (".html", "index.en.html")}
MIN_BYTES = 512  # index pages, redirects and stubs below this carry no prose


class _TextOnly(HTMLParser):
    """The text of an HTML page, without scripts, styles and navigation."""

    SKIP = {"script", "style", "nav", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in ("p", "br", "div", "li", "tr", "pre", "h1", "h2", "h3", "h4", "dt", "dd"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(raw: str) -> str:
    parser = _TextOnly()
    parser.feed(raw)
    lines = (line.rstrip() for line in "".join(parser.parts).splitlines())
    text, blank = [], False
    for line in lines:  # runs of blank lines become one
        if line or not blank:
            text.append(line)
        blank = not line
    return "\n".join(text).strip()


def documents(root: Path, suffix: str, skip: str | None) -> list[tuple[str, str]]:
    """(relative path, text) of every document under an unpacked package tree, sorted by path: the files ending in
    `suffix` but `skip`, HTML read as its text."""
    found = []
    for path in sorted(root.rglob("*" + suffix)):
        if not path.is_file() or path.is_symlink() or path.name == skip:
            continue
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        text = html_text(raw) if suffix == ".html" else raw.strip()
        if len(text.encode()) >= MIN_BYTES:
            found.append((str(path.relative_to(root)), text))
    return found


class FetchError(Exception):
    pass


def _run(command: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} not found (a Debian or Ubuntu system is needed)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise FetchError(f"{' '.join(command)}: {last}")
    return done.stdout


def fetch(packages: tuple[str, ...], workdir: Path) -> dict[str, dict[str, str]]:
    """Download and unpack each package into workdir/<package>; return its version and the .deb's sha256 (the
    archive serves the current version, so the manifest says which one a corpus was made from)."""
    fetched = {}
    for package in packages:
        _run(["apt-get", "download", package], cwd=workdir)
        deb = next(workdir.glob(f"{package}_*.deb"), None)
        if deb is None:
            raise FetchError(f"apt-get download {package} wrote no .deb")
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        _run(["dpkg-deb", "-x", str(deb), str(workdir / package)])
        fetched[package] = {"version": version, "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
    return fetched


def _os_release() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return "unknown"
    return fields.get("PRETTY_NAME", "unknown").strip('"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the corpus, JSON lines (a .json manifest beside it)")
    args = parser.parse_args(argv)
    packages = tuple(PACKAGES)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            fetched = fetch(packages, workdir)
        except FetchError as exc:
            print(f"docs_corpus: cannot fetch the packages: {exc}", file=sys.stderr)
            return 2
        seen: set[bytes] = set()
        docs, per_package = [], {}
        for package in packages:
            texts = (text for _, text in documents(workdir / package, *PACKAGES[package]))
            count, kept = add_unseen(texts, seen, docs)
            if count == 0:
                print(f"docs_corpus: {package} holds no {PACKAGES[package][0]} document; its layout changed",
                      file=sys.stderr)
                return 2
            per_package[package] = {**fetched[package], "documents": count, "bytes": kept}
    random.Random(0).shuffle(docs)
    lines = [json.dumps({"text": text}) + "\n" for text in docs]
    corpus_sha = hashlib.sha256("".join(lines).encode()).hexdigest()
    manifest = {"documents": len(docs), "bytes": sum(len(t.encode()) for t in docs), "sha256": corpus_sha,
                "packages": per_package, "system": _os_release(),
                "source": "Debian documentation packages via apt-get download and dpkg-deb -x"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out.with_name(args.out.name + ".manifest.json")
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    write_text_atomic(args.out, "".join(lines))
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
