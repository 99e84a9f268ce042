"""Differential fuzzing of `hyperclone convert` on damaged GGUF files, against transformers as the reference
(issue 27).

`hyperclone convert` reads GGUF through transformers (``from_pretrained(folder, gguf_file=...)`` with the ``gguf``
package, and the tokenizer the same way), so the reference is that loader itself, called directly. A seeded
generator writes a tiny llama GGUF (``gguf.GGUFWriter``: one layer, hidden 8, a 32-token BPE vocabulary) and
damages it: bytes overwritten in the header, the key-value metadata or the tensor infos (counts, string
lengths, value types, dimensions, tensor types, offsets), bytes inserted or deleted there, or the file cut short.
The property: whenever the reference refuses a file, ``convert_gguf`` refuses it with a HyperCloneError (one line;
the CLI prints it and exits 2) and leaves no output folder; whenever the reference loads it, ``convert_gguf``
writes a checkpoint whose tensors equal the reference model's bit for bit. One rule is stricter than the
reference, counted apart: where transformers loads the file but starts some parameters at random (their tensor
missing or of another shape: it only warns), hyperclone refuses. Anything else is a disagreement; an exception
other than HyperCloneError from ``convert_gguf`` is a traceback.

    python benchmarks/fuzz_gguf.py --cases 20000 --json results/fuzz_gguf.json

The process limits its own address space (LIMIT_BYTES), so that a dimension mutated to 2^40 fails as an
allocation error instead of taking the machine's memory. tests/test_fuzz.py runs a few dozen cases in the suite.
"""

from __future__ import annotations

import random
import resource
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _fuzz_common import counts_result, fuzz_main  # noqa: E402

from hyperclone.common.errors import HyperCloneError  # noqa: E402
from hyperclone.common.quiet import hf_quiet  # noqa: E402
from hyperclone.grow.convert import convert_gguf  # noqa: E402

LIMIT_BYTES = 16 << 30  # address space of this process (torch alone maps a few GiB)
TOKENS = ["<s>", "</s>"] + [chr(c) for c in range(ord("a"), ord("a") + 26)] + ["ab", "abc", "\u0120", "\u0120a"]
MERGES = ["a b", "ab c", "\u0120 a"]
RULE = "refusing to initialise them at random"  # hyperclone's own rule, where the reference reads on
KINDS = ("none", "overwrite_header", "overwrite_kv", "overwrite_tensor_info", "huge_u64", "insert", "delete",
         "truncate")
HUGE = [0, 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]

# what a run counts (benchmarks/_fuzz_common.py adds the cases, mutation kinds and first examples)
COUNTS = ("refused_as_reference", "accepted_and_equal", "refused_by_rule", "disagreements",
          "tracebacks", "multi_line_errors", "left_output")


def write_tiny(path: Path, seed: int) -> None:
    """A valid one-layer llama GGUF with random F32 weights and a byte-free BPE tokenizer."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden, ffn, heads, kv = 8, 16, 2, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3, 3] + [1] * (len(TOKENS) - 2))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    shapes = {"token_embd.weight": (len(TOKENS), hidden), "blk.0.attn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv * hidden // heads, hidden),
              "blk.0.attn_v.weight": (kv * hidden // heads, hidden), "blk.0.attn_output.weight": (hidden, hidden),
              "blk.0.ffn_norm.weight": (hidden,), "blk.0.ffn_gate.weight": (ffn, hidden),
              "blk.0.ffn_up.weight": (ffn, hidden), "blk.0.ffn_down.weight": (hidden, ffn),
              "output_norm.weight": (hidden,), "output.weight": (len(TOKENS), hidden)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def regions(path: Path) -> dict[str, tuple[int, int]]:
    """Byte ranges of the valid file's parts: fixed header, key-value metadata, tensor infos."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    kv_end = max(f.offset + sum(p.nbytes for p in f.parts) for f in reader.fields.values()
                 if not f.name.startswith("GGUF."))
    return {"header": (0, 24), "kv": (24, kv_end), "tensor_info": (kv_end, reader.data_offset)}


def mutate(rng: random.Random, blob: bytes, parts: dict[str, tuple[int, int]]) -> tuple[str, bytes]:
    kind = rng.choice(KINDS)
    data = bytearray(blob)
    if kind == "none":
        return kind, bytes(data)
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(0, len(data))])
    area = {"overwrite_header": "header", "overwrite_kv": "kv", "overwrite_tensor_info": "tensor_info"}.get(
        kind, rng.choice(["header", "kv", "tensor_info"]))
    lo, hi = parts[area]
    at = rng.randrange(lo, hi)
    if kind == "huge_u64":  # a count, length, dimension or offset replaced by an extreme value
        at = min(at, len(data) - 8)
        data[at : at + 8] = rng.choice(HUGE).to_bytes(8, "little")
    elif kind == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "delete":
        del data[at : at + rng.randint(1, 8)]
    else:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(lo, hi)] = rng.randrange(256)
    return kind, bytes(data)


class Initialised(dict):
    """The reference's model where it loaded the file but started some parameters at random (missing from the
    file or of another shape; transformers warns and goes on): hyperclone refuses these by rule."""


def reference(folder: Path, name: str):
    """The model's state dict and the tokenizer's ids for a probe text as transformers loads them, or the
    exception it raises."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with hf_quiet():
            model, info = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, output_loading_info=True)
            AutoTokenizer.from_pretrained(folder, gguf_file=name)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return Initialised(state) if info["missing_keys"] or info["mismatched_keys"] else state
    except BaseException as exc:  # noqa: BLE001 - any refusal of the reference counts, MemoryError included
        if isinstance(exc, KeyboardInterrupt):
            raise
        return exc


def ours(path: Path, out: Path):
    import torch
    from safetensors.torch import load_file

    try:
        with hf_quiet():
            convert_gguf(path, out)
    except HyperCloneError as err:
        return err
    state = {}
    for shard in sorted(out.glob("*.safetensors")):
        state.update(load_file(shard))
    return {k: v.to(torch.float32) for k, v in state.items()}


def same(ref: dict, got: dict) -> bool:
    import torch

    def bits(t: torch.Tensor) -> torch.Tensor:  # bit for bit: NaN payloads from damaged data compare too
        return t.float().contiguous().view(torch.int32)

    # a saved checkpoint drops tied duplicates; every tensor it holds must be the reference's
    return bool(got) and set(got) <= set(ref) and all(torch.equal(bits(ref[k]), bits(got[k])) for k in got)


def run(cases: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    counts: Counter = Counter()
    kinds: Counter = Counter()
    examples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        valid = Path(tmp) / "valid.gguf"
        write_tiny(valid, seed)
        blob, parts = valid.read_bytes(), regions(valid)
        for case in range(cases):
            folder = Path(tmp) / f"case{case}"
            folder.mkdir()
            kind, data = mutate(rng, blob, parts)
            kinds[kind] += 1
            (folder / "model.gguf").write_bytes(data)
            ref = reference(folder, "model.gguf")
            out = Path(tmp) / f"out{case}"
            try:
                got = ours(folder / "model.gguf", out)
            except BaseException as exc:  # noqa: BLE001 - a traceback is what this counts
                if isinstance(exc, KeyboardInterrupt):
                    raise
                counts["tracebacks"] += 1
                examples.append({"case": case, "kind": kind, "result": f"traceback {exc!r}"[:300]})
                got = None
            ref_ok = not isinstance(ref, BaseException)
            if got is not None:
                our_ok = not isinstance(got, HyperCloneError)
                if not our_ok and "\n" in str(got):
                    counts["multi_line_errors"] += 1
                if not our_ok and out.exists():
                    counts["left_output"] += 1
                if not ref_ok and not our_ok:
                    counts["refused_as_reference"] += 1
                elif isinstance(ref, Initialised) and not our_ok and RULE in str(got):
                    counts["refused_by_rule"] += 1
                elif ref_ok and our_ok and not isinstance(ref, Initialised) and same(ref, got):
                    counts["accepted_and_equal"] += 1
                else:
                    counts["disagreements"] += 1
                    examples.append({"case": case, "kind": kind,
                                     "reference": "accepts" if ref_ok else repr(ref)[:200],
                                     "hyperclone": "accepts" if our_ok else str(got)[:200]})
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    return counts_result(seed, COUNTS, counts, kinds, examples)


CHUNK = 2000  # cases per worker process: transformers keeps about 0.5 MB per loaded file, so workers are renewed


def run_in_chunks(cases: int, seed: int) -> dict:
    """run() over chunks of CHUNK cases, each in a fresh worker process (chunk k seeded seed * 1000 + k), the
    counts added up."""
    from concurrent.futures import ProcessPoolExecutor

    sizes = [min(CHUNK, cases - start) for start in range(0, cases, CHUNK)]
    with ProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as pool:
        parts = list(pool.map(run, sizes, [seed * 1000 + k for k in range(len(sizes))]))
    total: Counter = Counter()
    for part in parts:
        total.update({k: v for k, v in part.items() if isinstance(v, int) and k not in ("seed", "cases")})
    mutations: Counter = Counter()
    for part in parts:
        mutations.update(part["mutations"])
    return {"cases": cases, "seed": seed, "chunks": len(parts), **dict(total),
            "mutations": dict(sorted(mutations.items())),
            "examples": [e for part in parts for e in part["examples"]][:20]}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch
    import transformers

    return {"transformers": transformers.__version__, "gguf": version("gguf"), "torch": torch.__version__}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))
    fuzz_main(__doc__, "fuzz_gguf.py", 2000, run_in_chunks, versions)


if __name__ == "__main__":
    main()
