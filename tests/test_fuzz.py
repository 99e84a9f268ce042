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

import fuzz_gguf  # noqa: E402
import fuzz_index  # noqa: E402
import fuzz_safetensors  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2])
def test_the_reader_refuses_what_the_library_refuses_and_reads_what_it_reads(seed):
    result = fuzz_safetensors.run(300, seed=seed)
    assert result["cases"] == 300
    assert result["disagreements"] == 0 and result["tracebacks"] == 0, result["examples"]
    assert result["multi_line_errors"] == 0
    assert result["refused_as_reference"] > 50 and result["accepted_and_equal"] > 50  # both sides exercised


def test_the_index_reader_refuses_what_transformers_refuses_and_reads_what_it_reads():
    """Sharded checkpoints with mutated index files (benchmarks/fuzz_index.py; the long run's counts are
    results/fuzz_index.json): refused where transformers' strict loading refuses, or by one of hyperclone's named
    stricter rules; otherwise the same tensors bit for bit."""
    result = fuzz_index.run(300, seed=1)
    assert result["cases"] == 300
    assert result["disagreements"] == 0 and result["tracebacks"] == 0, result["examples"]
    assert result["multi_line_errors"] == 0
    assert result["refused_as_reference"] > 50 and result["accepted_and_equal"] > 20  # both sides exercised


def test_convert_refuses_what_transformers_refuses_in_a_damaged_gguf_file():
    """Damaged tiny GGUF files through `convert_gguf` (benchmarks/fuzz_gguf.py; the long run's counts are
    results/fuzz_gguf.json): refused in one line with no output where transformers cannot load them, refused by rule
    where transformers would start parameters at random, otherwise the same tensors bit for bit."""
    result = fuzz_gguf.run(80, seed=1)
    assert result["cases"] == 80
    assert result["disagreements"] == 0 and result["tracebacks"] == 0, result["examples"]
    assert result["multi_line_errors"] == 0 and result["left_output"] == 0
    assert result["refused_as_reference"] > 20 and result["accepted_and_equal"] > 5  # both sides exercised


def test_convert_refuses_a_gguf_file_that_lacks_a_tensor(tmp_path):
    """A GGUF file without one layer's query projection: transformers loads it and starts that matrix at random
    (a warning only); `hyperclone convert` refuses in one line, exit 2, and writes nothing."""
    import gguf
    import numpy as np

    full = tmp_path / "full.gguf"
    fuzz_gguf.write_tiny(full, seed=0)
    reader = gguf.GGUFReader(str(full))
    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.name != "blk.0.attn_q.weight":
            writer.add_tensor(tensor.name, np.array(tensor.data).reshape(tuple(reversed(tensor.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", "convert", str(tmp_path / "model.gguf"), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "q_proj" in lines[0] and "at random" in lines[0], done.stderr
    assert not out.exists()


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


CONFIG_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "num_hidden_layers",
               "vocab_size", "head_dim", "rms_norm_eps", "tie_word_embeddings", "model_type", "rope_theta")
CONFIG_VALUES = (None, "12", 3.5, -4, 0, [], {}, True, 10**12)


def test_config_json_of_wrong_types_is_refused_in_one_line_never_a_traceback(tmp_path, capsys):
    """Every growable config key set to a value of the wrong type or size (string, float, negative, zero, list,
    dict, bool, 10**12): `inspect` and `grow` either work (transformers' defaults fill a null) or refuse with one
    line and exit 2, writing nothing; never a traceback or a terabyte allocation."""
    from test_cli import run
    from tiny_models import make_tiny

    src = make_tiny("llama", tmp_path / "src")
    capsys.readouterr()  # make_tiny's own progress output
    base = json.loads((src / "config.json").read_text())
    refused = 0
    for key in CONFIG_KEYS:
        for value in CONFIG_VALUES:
            (src / "config.json").write_text(json.dumps({**base, key: value}))
            out = tmp_path / "out"
            for verb in (["inspect", str(src)], ["grow", str(src), str(out), "--width", "2", "--overwrite"]):
                code, _, err = run(verb, capsys)
                assert code in (0, 2), (key, value, verb[0], err[-500:])
                if code == 2:
                    refused += 1
                    lines = err.strip().splitlines()
                    assert len(lines) == 1 and lines[0].startswith("hyperclone: error:"), (key, value, err)
                    assert not out.exists() or verb[0] == "inspect", (key, value)
            if out.exists():
                import shutil

                shutil.rmtree(out)
    assert refused > 100  # most of them are refused; a null or a harmless float is filled or used as it is
