"""Corpora as they come: compressed JSON lines, Parquet, Arrow and save_to_disk folders give the same token stream
as the same text in plain .jsonl; corrupt files are one line on stderr, exit 2, and no token cache is left."""

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from train_helpers import make_corpus, make_model

from hyperclone.cli import main
from hyperclone.train.data import load_corpus
from hyperclone.train.inputs import load_tokenizer

DOCS = [f"def f{i}(x):\n    return x + {i}  # document {i} " + "é" * (i % 3) for i in range(200)] + [""]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = make_corpus(root / "corpus", n_files=2, lines=50)
    return load_tokenizer(make_model(root / "model", corpus))


def write_all(folder: Path) -> dict[str, Path]:
    """The same documents in every format."""
    folder.mkdir(parents=True)
    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS))
    files = {"jsonl": folder / "docs.jsonl", "gz": folder / "docs.jsonl.gz", "zst": folder / "docs.jsonl.zst",
             "parquet": folder / "docs.parquet", "arrow": folder / "docs.arrow"}
    files["jsonl"].write_text(lines)
    with gzip.open(files["gz"], "wt", encoding="utf-8") as fh:
        fh.write(lines)
    files["zst"].write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    table = pa.table({"id": list(range(len(DOCS))), "text": DOCS})
    pq.write_table(table, files["parquet"], row_group_size=37)  # several row groups
    with pa.ipc.new_stream(files["arrow"], table.schema) as writer:
        writer.write_table(table, max_chunksize=50)
    saved = folder / "saved"  # the layout datasets.save_to_disk writes
    saved.mkdir()
    with pa.ipc.new_stream(saved / "data-00000-of-00001.arrow", table.schema) as writer:
        writer.write_table(table)
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (saved / "dataset_info.json").write_text("{}")
    files["save_to_disk"] = saved
    return files


def test_every_format_gives_the_same_token_stream(tmp_path, tokenizer):
    files = write_all(tmp_path / "data")
    streams = {}
    for label, path in files.items():
        data = load_corpus([path], tokenizer, cache_dir=tmp_path / f"cache-{label}")
        streams[label] = np.asarray(data.tokens)
        assert data.n_docs == len(DOCS) - 1  # the empty document is skipped everywhere
    for label, tokens in streams.items():
        assert np.array_equal(tokens, streams["jsonl"]), label


@pytest.mark.parametrize("name,payload", [
    ("docs.jsonl.gz", b"\x1f\x8b\x08\x00garbage that is not deflate data"),
    ("docs.parquet", b"PAR1 this is not a parquet file PAR1"),
    ("docs.jsonl.zst", b"\x28\xb5\x2f\xfd not zstd frames"),
])
def test_corrupt_files_are_one_line_and_leave_no_cache(tmp_path, capsys, name, payload):
    root = tmp_path / "m"
    corpus = make_corpus(root / "corpus", n_files=2, lines=50)
    model = make_model(root / "model", corpus)
    bad = tmp_path / name
    bad.write_bytes(payload)
    cache = tmp_path / "cache"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(model), "--data", str(bad), "--out", str(tmp_path / "run"), "--tokens", "2560",
              "--batch-tokens", "256", "--seq-len", "32", "--cache-dir", str(cache), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("tokenizing") and err[1].startswith(f"hyperclone: error: {bad}")
    left = list(cache.rglob("*")) if cache.exists() else []
    assert not left, left  # neither a token cache nor a temporary folder


def test_tokenize_once_then_train_from_the_cache(tmp_path, capsys):
    """hyperclone tokenize writes the cache train --data CACHE reads as is: the same run as from the text."""
    root = tmp_path / "m"
    corpus = make_corpus(root / "corpus", n_files=3, lines=100)
    model = make_model(root / "model", corpus)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenize", str(corpus), "--tokenizer", str(model), "--out", str(tmp_path / "tokens")])
    assert exit_info.value.code == 0 and "tokens in" in capsys.readouterr().out
    common = ["--tokens", "2560", "--batch-tokens", "256", "--seq-len", "32", "--eval-every", "5",
              "--eval-tokens", "512", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    for data, out in ((corpus, "from-text"), (tmp_path / "tokens", "from-cache")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(model), "--data", str(data), "--out", str(tmp_path / out), *common])
        assert exit_info.value.code == 0
    a = [json.loads(line) for line in (tmp_path / "from-text" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "from-cache" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["train_loss"], m["val_loss"]) for m in a] == [(m["step"], m["train_loss"], m["val_loss"])
                                                                        for m in b]
    other = make_model(tmp_path / "other", make_corpus(tmp_path / "c2", n_files=2, lines=40, seed=5), vocab=300)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(other), "--data", str(tmp_path / "tokens"), "--out", str(tmp_path / "x"), *common])
    assert exit_info.value.code == 2 and "another tokenizer" in capsys.readouterr().err
