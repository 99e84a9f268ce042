"""Training input under faults (issue 27, item 2): damaged corpus files are refused with one line naming the
file (and the line, for JSON lines) and leave no token cache behind that a later run would trust; a token cache
changed after it was written is detected and not trained on."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import make_corpus, make_model, make_tokenizer

from hyperclone.common.errors import HyperCloneError
from hyperclone.train.data import load_corpus, tokenize

DOCS = b"".join(b'{"text": "def f_%d(self): return %d"}\n' % (i, i) for i in range(3000))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return make_tokenizer(root / "tok", make_corpus(root / "corpus"))


def _zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


DAMAGED = {
    "bad-line.jsonl": (lambda: DOCS[:500] + b'{"text": broken\n' + DOCS[500:1000],
                       r"bad-line.jsonl:\d+ is not valid JSON"),
    "no-field.jsonl": (lambda: b'{"body": "x"}\n', r"no-field.jsonl:1 has no string field 'text'"),
    "latin1.txt": (lambda: "caf\u00e9 ".encode("latin-1") * 10, r"latin1.txt is not UTF-8 text"),
    "late-latin1.txt": (lambda: b"x = 1\n" * 20000 + "caf\u00e9".encode("latin-1"), r"late-latin1.txt: not UTF-8 text"),
    "truncated.jsonl.zst": (lambda: _zst(DOCS)[:-20], r"truncated.jsonl.zst: truncated zstd file"),
    "truncated.jsonl.gz": (lambda: gzip.compress(DOCS)[:-30], r"truncated.jsonl.gz: cannot read it"),
    "latin1.jsonl.gz": (lambda: gzip.compress('{"text": "caf\u00e9"}\n'.encode("latin-1")),
                        r"latin1.jsonl.gz: not UTF-8 text"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_corpus_file_is_refused_and_leaves_no_cache(tok, tmp_path, name):
    make, message = DAMAGED[name]
    path = tmp_path / name
    path.write_bytes(make())
    cache = tmp_path / "cache"
    with pytest.raises(HyperCloneError, match=message) as err:
        load_corpus([path], tok, cache_dir=cache)
    assert "\n" not in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())  # no partial cache, not even a temporary folder


def test_a_truncated_parquet_file_is_refused(tok, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(2000)]}), path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(HyperCloneError, match=r"part.parquet: cannot read it"):
        load_corpus([path], tok, cache_dir=tmp_path / "cache")


def test_a_zstd_file_of_several_frames_reads_every_frame(tok, tmp_path):
    half = DOCS.index(b"\n", len(DOCS) // 2) + 1
    (tmp_path / "two.jsonl.zst").write_bytes(_zst(DOCS[:half]) + _zst(DOCS[half:]))
    (tmp_path / "one.jsonl").write_bytes(DOCS)
    two = load_corpus([tmp_path / "two.jsonl.zst"], tok, cache_dir=tmp_path / "c2")
    one = load_corpus([tmp_path / "one.jsonl"], tok, cache_dir=tmp_path / "c1")
    assert two.n_docs == one.n_docs == 3000 and (two.tokens[:] == one.tokens[:]).all()


@pytest.mark.parametrize("change", ["flip", "truncate"])
def test_a_token_cache_changed_after_it_was_written_is_not_trained_on(tmp_path, change):
    corpus = make_corpus(tmp_path / "corpus")
    model = make_model(tmp_path / "model", corpus)
    tok = make_tokenizer(tmp_path / "tok", corpus)
    cache = tmp_path / "cache"
    tokenize([corpus], tok, cache)
    blob = bytearray((cache / "tokens.bin").read_bytes())
    if change == "flip":
        blob[len(blob) // 2] ^= 0x01
    else:
        blob = blob[:-2]
    (cache / "tokens.bin").write_bytes(bytes(blob))
    with pytest.raises(HyperCloneError, match="changed after it was written"):
        load_corpus([cache], tok)
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "train", str(model), "--data", str(cache),
                           "--out", str(tmp_path / "run"), "--tokens", "4096", "--batch-tokens", "256",
                           "--seq-len", "32", "--no-progress"], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "changed after it was written" in lines[0], done.stderr
    assert not (tmp_path / "run" / "final").exists()


def _train_args(model: Path, corpus: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "hyperclone.cli", "train", str(model), "--data", str(corpus), "--out", str(out),
            "--tokens", str(256 * 40), "--batch-tokens", "256", "--seq-len", "32", "--save-every", "10",
            "--eval-every", "10", "--eval-tokens", "256", "--no-progress", "--cache-dir", str(cache)]


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_one_line(tmp_path, monkeypatch):
    """In process, everywhere: torch.save fails as it does on a full disk (a bare RuntimeError) with no space
    left; the save's temporary folder is removed, the error is one ENOSPC line naming the last complete
    checkpoint, which still loads."""
    import shutil as sh
    from collections import namedtuple
    from dataclasses import replace

    from hyperclone.train import state as ts
    from hyperclone.train.config import TrainConfig
    from hyperclone.train.loop import train

    corpus = make_corpus(tmp_path / "corpus")
    model = make_model(tmp_path / "model", corpus)
    cfg = TrainConfig(model=model, data=[corpus], out=tmp_path / "run", tokens=256 * 40, batch_tokens=256, seq_len=32,
                      save_every=10, eval_every=10, eval_tokens=256, cache_dir=tmp_path / "cache", progress=False)
    train(replace(cfg, stop_after=12))  # a complete checkpoint at step 10
    real_save, usage = ts.torch.save, namedtuple("usage", "total used free")

    def failing_save(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 466816 vs 466704")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ts.torch, "save", failing_save)
    monkeypatch.setattr(sh, "disk_usage", lambda _: usage(10**9, 10**9, 0))
    with pytest.raises(OSError, match="no space left on the device while saving step-0000020") as err:
        train(replace(cfg, resume=True))
    assert "step-0000010, is intact" in str(err.value) and "\n" not in str(err.value)
    assert not any(p.name.startswith(".tmp-") for p in (cfg.out / "checkpoints").iterdir())
    assert ts.latest_checkpoint(cfg.out).name == "step-0000010" and ts.read_state(ts.latest_checkpoint(cfg.out))


@pytest.mark.slow
def test_a_full_disk_then_resume_once_space_is_back(tmp_path):
    """On a real full disk (a 2.5 MB tmpfs; mounting one needs root, so the test says so and skips without it):
    exit 1 and one line, the step-10 checkpoint intact; with the disk grown, --resume finishes the run and its
    losses equal an uninterrupted run's."""
    corpus = make_corpus(tmp_path / "corpus")
    model = make_model(tmp_path / "model", corpus, hidden=64)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root: " + mounted.stderr.decode().strip()[:100])
    try:
        done = subprocess.run(_train_args(model, corpus, disk / "run", tmp_path / "cache"), capture_output=True,
                              text=True)
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("hyperclone: error")]
        assert done.returncode == 1 and len(errors) == 1 and "no space left" in errors[0], done.stderr[-800:]
        assert "Traceback" not in done.stderr and "step-0000010, is intact" in errors[0]
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        resumed = subprocess.run(_train_args(model, corpus, disk / "run", tmp_path / "cache") + ["--resume"],
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-800:]
        whole = subprocess.run(_train_args(model, corpus, tmp_path / "whole", tmp_path / "cache"),
                               capture_output=True, text=True)
        assert whole.returncode == 0
        from hyperclone.train.metrics import read_metrics

        def losses(out):
            return [(m["step"], m["train_loss"], m["val_loss"]) for m in read_metrics(out)]

        assert losses(disk / "run") == losses(tmp_path / "whole")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
