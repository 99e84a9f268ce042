"""Differential fuzzing of the safetensors reader (benchmarks/fuzz_safetensors.py) in the suite: a few hundred
seeded mutations of a valid file, each read by the safetensors library and by hyperclone. Every file the library
refuses, hyperclone refuses with one line; every file it accepts, hyperclone reads to the same tensors. The long
run (20,000 cases) is results/fuzz_safetensors.json. And through the command line: a refused file gives one line
on stderr, exit 2 and no output folder."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fuzz_safetensors  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2])
def test_the_reader_refuses_what_the_library_refuses_and_reads_what_it_reads(seed):
    result = fuzz_safetensors.run(300, seed=seed)
    assert result["cases"] == 300
    assert result["disagreements"] == 0 and result["tracebacks"] == 0, result["examples"]
    assert result["multi_line_errors"] == 0
    assert result["refused_as_reference"] > 50 and result["accepted_and_equal"] > 50  # both sides exercised


def _model(folder: Path) -> Path:
    from transformers import LlamaConfig

    folder.mkdir()
    LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2).save_pretrained(folder)
    return folder


def _rewrite(path: Path, change) -> None:
    """Rewrite a safetensors file's header through change(header dict), keeping the body."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + n :])


@pytest.mark.parametrize("damage", ["gap", "metadata", "trailing", "float_shape"])
def test_the_cli_refuses_a_damaged_file_in_one_line_and_writes_nothing(tmp_path, damage):
    folder = _model(tmp_path / "src")
    tensors = {"model.embed_tokens.weight": torch.randn(32, 8), "model.norm.weight": torch.ones(8)}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    path = folder / "model.safetensors"
    if damage == "gap":  # a gap between the two tensors' bytes, the file padded to match
        def move(h):
            first = min((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
            for k in h:
                if k not in ("__metadata__", first):
                    h[k]["data_offsets"] = [x + 4 for x in h[k]["data_offsets"]]
        _rewrite(path, move)
        path.write_bytes(path.read_bytes() + b"\0" * 4)
    elif damage == "metadata":
        _rewrite(path, lambda h: h.__setitem__("__metadata__", {"format": 1}))
    elif damage == "trailing":
        path.write_bytes(path.read_bytes() + b"\0")
    else:
        _rewrite(path, lambda h: h["model.norm.weight"].__setitem__("shape", [8.0]))
    from safetensors import safe_open

    with pytest.raises(Exception):  # noqa: B017 - the reference refuses it (any of its errors)
        with safe_open(str(path), framework="pt") as handle:
            [handle.get_tensor(k) for k in handle.keys()]  # noqa: SIM118
    for verb in (["inspect", str(folder)], ["grow", str(folder), str(tmp_path / "out"), "--width", "2"]):
        done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *verb], capture_output=True, text=True)
        assert done.returncode == 2, (verb, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "model.safetensors" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
