"""Out-of-core growth: sharded sources and outputs, and a grow killed with SIGKILL at any moment
leaves nothing at OUT that looks like a checkpoint; the same command then succeeds."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from tiny_models import compare_tiny, make_tiny, tiny_config

from hyperclone.grow.engine import grow
from hyperclone.grow.verify import load_causal_lm


def test_sharded_source_and_output(tmp_path):
    from tiny_models import randomize_
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("qwen3", hidden_size=96, intermediate_size=160,
                                                         num_hidden_layers=3))
    randomize_(model, 0)
    model.save_pretrained(tmp_path / "src", max_shard_size="100KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").exists()

    out = grow(tmp_path / "src", tmp_path / "out", width=2, shard_size="300KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3
    total = 0
    for shard in shards:
        with safe_open(out / shard, "pt") as handle:  # each shard is a valid safetensors file
            for name in handle.keys():
                assert index["weight_map"][name] == shard
                total += handle.get_tensor(name).numel() * 4
    assert total == index["metadata"]["total_size"]
    result = compare_tiny(load_causal_lm(tmp_path / "src"), load_causal_lm(out))
    assert result.rel_err <= 1e-4 and result.generate_match


def test_kill_then_rerun(tmp_path):
    src = make_tiny("llama", tmp_path / "src", hidden_size=384, intermediate_size=1024, num_hidden_layers=8,
                    num_attention_heads=6, num_key_value_heads=2, head_dim=64, vocab_size=4000)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hyperclone.cli", "grow", str(src), str(out), "--mode", "noisy",
               "--shard-size", "20MB", "--quiet"]
    proc = subprocess.Popen(command)
    deadline = time.time() + 120
    killed_mid_write = False
    while time.time() < deadline and proc.poll() is None:
        temporaries = list(tmp_path.glob(".out.hyperclone-tmp-*"))
        if temporaries and any(f.stat().st_size > 0 for f in temporaries[0].glob("*.safetensors")):
            os.kill(proc.pid, signal.SIGKILL)
            killed_mid_write = True
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_mid_write, "grow finished before it could be killed"
    assert not out.exists(), "a killed grow left something at OUT"
    assert list(tmp_path.glob(".out.hyperclone-tmp-*")), "expected the dead run's temporary folder"

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(tmp_path.glob(".out.hyperclone-tmp-*")), "stale temporary folder not cleaned"
    result = compare_tiny(load_causal_lm(src), load_causal_lm(out))
    assert result.rel_err <= 1e-4 and result.generate_match


def test_reader_maps_each_tensor_copy_on_write_and_reads_where_it_cannot_map(tmp_path, monkeypatch):
    """Each tensor is its own byte range of the file, mapped copy-on-write: equal to what safetensors reads, and a
    write into it never reaches the file. Where the file system cannot map files, a positioned read gives the
    same tensors."""
    from hyperclone.grow import checkpoint_io
    from hyperclone.grow.checkpoint_io import SourceWeights

    src = make_tiny("llama", tmp_path / "src")
    before = (src / "model.safetensors").read_bytes()
    weights = SourceWeights(src)
    with safe_open(src / "model.safetensors", "pt") as handle:
        expected = {name: handle.get_tensor(name) for name in handle.keys()}
    mapped = {name: weights.read(name) for name in expected}
    assert all(torch.equal(mapped[name], expected[name]) for name in expected)
    mapped["model.layers.0.mlp.down_proj.weight"].add_(1.0)
    assert (src / "model.safetensors").read_bytes() == before

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(checkpoint_io.mmap, "mmap", refuse)
    assert all(torch.equal(weights.read(name), expected[name]) for name in expected)


def _reference_tensors(src, spec):
    """Every output tensor computed on its own, with no shared buffers and no background writes."""
    from hyperclone.grow.axis_map import NoisePool
    from hyperclone.grow.planning import plan_growth
    from hyperclone.grow.tensor_rule import grow_tensor

    plan, source = plan_growth(src, spec)
    pool = NoisePool(spec.seed) if spec.mode == "noisy" else None
    out = {}
    for recipe in plan.recipes:
        tensor = torch.empty(0, dtype=recipe.dtype) if recipe.kind == "zero" else source.weights.read(recipe.src_name)
        out[recipe.out_name] = grow_tensor(recipe, tensor, spec, pool).clone()
    return out


@pytest.mark.parametrize(("family", "headroom"), [("llama", 2**29), ("llama", 0), ("gemma", 0), ("gpt2", 0)])
def test_double_buffered_writes_equal_tensor_by_tensor_growth(tmp_path, monkeypatch, family, headroom):
    """The streamed checkpoint (two reused buffers, writes on a background thread) holds exactly the tensors
    grow_tensor gives one at a time: no buffer is overwritten before its write ends. Every tensor goes
    through the buffers here (the size floor is lifted); headroom 0 makes the second buffer small, so the
    large tensors wait for the write before them."""
    from hyperclone.grow import engine as grow_module
    from hyperclone.grow.plan import GrowthSpec

    monkeypatch.setattr(grow_module, "BUFFER_MIN_BYTES", 0)
    monkeypatch.setattr(grow_module.OutputBuffers, "HEADROOM", headroom)
    src = make_tiny(family, tmp_path / "src", dtype=torch.bfloat16, num_hidden_layers=3)
    for mode in ("symmetric", "noisy"):
        spec = GrowthSpec(width=2, mode=mode, layers=5)
        out = tmp_path / f"out-{mode}"
        grow(src, out, width=2, mode=mode, layers=5, shard_size="40KB")
        expected = _reference_tensors(src, spec)
        seen = set()
        for shard in out.glob("*.safetensors"):
            with safe_open(shard, "pt") as f:
                for name in f.keys():
                    assert torch.equal(f.get_tensor(name), expected[name]), (mode, name)
                    seen.add(name)
        assert seen == set(expected)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    """An error in the background writer surfaces as the grow's error; no output or temp folder remains."""
    from hyperclone.grow.checkpoint_io import ShardedWriter

    src = make_tiny("llama", tmp_path / "src", dtype=torch.bfloat16)
    original = ShardedWriter.write
    calls = []

    def failing(self, name, tensor):
        calls.append(name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return original(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "write", failing)
    with pytest.raises(OSError, match="No space left"):
        grow(src, tmp_path / "out", width=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # the command line says it in one line, exit status 1
    from hyperclone.cli import main

    calls.clear()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["grow", str(src), str(tmp_path / "out"), "--width", "2", "--quiet"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == ["hyperclone: error: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_output_buffers_never_hand_out_the_buffer_being_written():
    from hyperclone.grow.engine import OutputBuffers

    class Buffers(OutputBuffers):
        HEADROOM = 0

    waits = []
    buffers = Buffers([400, 160, 160, 400], largest_source=240)  # second buffer: up to 400 - 240 = 160 bytes
    assert buffers.capacity == [400, 160]

    def region(t):
        return t.untyped_storage().data_ptr()

    a = buffers.next((40,), torch.float32, lambda: waits.append(1))  # 160 bytes: the small buffer
    b = buffers.next((40,), torch.float32, lambda: waits.append(2))  # the small one is busy: the large one
    assert region(a) != region(b) and not waits
    c = buffers.next((100,), torch.float32, lambda: waits.append(3))  # only the large one fits, and it is busy
    assert waits == [3] and region(c) == region(b)
    buffers.release()  # a small tensor was written after c: nothing pending in a buffer
    d = buffers.next((100,), torch.float32, lambda: waits.append(4))
    assert waits == [3] and region(d) == region(c)
