"""Corpus reading, the token cache and the deterministic sample order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import make_corpus, make_tokenizer

from hyperclone.common.errors import HyperCloneError
from hyperclone.train import data


@pytest.fixture(scope="module")
def corpus_and_tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = make_corpus(root / "corpus", n_files=3, lines=50)
    tok = make_tokenizer(root / "tok", corpus)
    return corpus, tok


def test_cache_is_reused_and_invalidated(corpus_and_tok, tmp_path, monkeypatch):
    corpus, tok = corpus_and_tok
    first = data.load_corpus([corpus], tok, tmp_path)
    assert not first.cached and first.n_docs == 3 and first.n_tokens > 1000
    eos_count = int((np.asarray(first.tokens) == tok.eos_token_id).sum())
    assert eos_count == 3  # one end-of-text after every document

    def no_rebuild(*args, **kwargs):
        raise AssertionError("tokenized again although the cache was valid")

    monkeypatch.setattr(data, "build_tokens", no_rebuild)
    second = data.load_corpus([corpus], tok, tmp_path)
    assert second.cached and second.folder == first.folder
    assert np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    monkeypatch.undo()

    # editing a file changes the key: the stale cache is not used
    (corpus / "mod0.py").write_text((corpus / "mod0.py").read_text() + "\nextra = 1\n")
    third = data.load_corpus([corpus], tok, tmp_path)
    assert not third.cached and third.folder != first.folder and third.n_tokens > first.n_tokens


def test_jsonl_files_and_folders_mix(corpus_and_tok, tmp_path):
    corpus, tok = corpus_and_tok
    jl = tmp_path / "docs.jsonl"
    jl.write_text("\n".join(json.dumps({"text": f"doc number {i}\n", "id": i}) for i in range(5)) + "\n\n")
    td = data.load_corpus([jl, corpus / "mod1.py"], tok, tmp_path / "cache")
    assert td.n_docs == 6
    decoded = tok.decode(np.asarray(td.tokens).tolist())
    assert "doc number 4" in decoded and "def " in decoded


@pytest.mark.parametrize("case, message", [
    ("empty", "no text files"),
    ("binary", "binary"),
    ("missing", "does not exist"),
    ("jsonl_field", "no string field 'text'"),
    ("whitespace", "holds no text"),
])
def test_bad_corpora_are_clear_errors(corpus_and_tok, tmp_path, case, message):
    _, tok = corpus_and_tok
    if case == "empty":
        (tmp_path / "empty").mkdir()
        paths = [tmp_path / "empty"]
    elif case == "binary":
        (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
        paths = [tmp_path / "blob.bin"]
    elif case == "missing":
        paths = [tmp_path / "nope.txt"]
    elif case == "jsonl_field":
        (tmp_path / "x.jsonl").write_text(json.dumps({"content": "hi"}) + "\n")
        paths = [tmp_path / "x.jsonl"]
    else:
        (tmp_path / "blank.txt").write_text("   \n\n")
        paths = [tmp_path / "blank.txt"]
    with pytest.raises(HyperCloneError, match=message):
        data.load_corpus(paths, tok, tmp_path / "cache")


def test_binary_files_inside_folders_are_skipped(corpus_and_tok, tmp_path):
    corpus, tok = corpus_and_tok
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.py").write_text((corpus / "mod0.py").read_text())
    (mixed / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    assert data.list_sources([mixed]) == [(mixed / "a.py").resolve()]


def test_sample_order_is_a_pure_function_of_seed_and_index():
    tokens = np.arange(10 * 8 + 1, dtype=np.uint16)
    s = data.WindowSampler(tokens, seq_len=8, seed=3)
    assert s.n_windows == 10
    epoch0 = s.windows(0, 10)
    assert sorted(epoch0) == list(range(10))  # an epoch visits every window once
    assert s.windows(4, 3) == epoch0[4:7]  # any slice can be recomputed on its own (resume, DDP shards)
    assert sorted(s.windows(10, 10)) == list(range(10)) and s.windows(10, 10) != epoch0
    assert data.WindowSampler(tokens, 8, seed=4).windows(0, 10) != epoch0
    x, y = s.batch([2])
    assert x.tolist() == [list(range(16, 24))] and y.tolist() == [list(range(17, 25))]


def test_validation_split_is_fixed_tail():
    td = data.TokenData(folder=None, tokens=np.arange(1000), n_docs=1, cached=True)  # type: ignore[arg-type]
    td.split(0.05, seq_len=16)
    assert td.val_start == 950 and td.train.shape[0] == 950 and td.val[0] == 950
    td.split(0.001, seq_len=16)  # at least one window is held out
    assert td.n_tokens - td.val_start == 17
