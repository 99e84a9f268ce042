"""Differential fuzzing of hyperclone's safetensors reader against the safetensors library (issue 27).

A seeded generator mutates a small valid safetensors file (header length, JSON text, offsets: overlapping,
reversed, out of range, gaps; shapes: negative, huge, rank changed, wrong types; dtypes; __metadata__ of wrong
types; truncated or padded bodies) and every case is read twice: by the reference (``safetensors.safe_open`` and
``get_tensor`` for every key) and by hyperclone (``read_safetensors_header`` and ``SourceWeights.read``, what
``hyperclone grow``, ``inspect`` and ``verify`` use). The property: whenever the reference refuses a file,
hyperclone refuses it with a HyperCloneError (one line; the CLI prints it and exits 2); whenever the reference
accepts it, hyperclone returns the same names and tensors, bit for bit. Anything else is a disagreement or, for
an exception other than HyperCloneError, a traceback.

    python benchmarks/fuzz_safetensors.py --cases 20000 --json results/fuzz_safetensors.json

tests/test_fuzz.py runs a few hundred cases of the same generator in the suite.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _fuzz_common import counts_result, fuzz_main  # noqa: E402

from hyperclone.common.errors import HyperCloneError  # noqa: E402
from hyperclone.grow.checkpoint_io import SourceWeights  # noqa: E402

DTYPE_NAMES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16",
               "U32", "U64", "F8_E8M0", "F4", "f32", "F31", "", "FLOAT"]
BAD_VALUES = [-1, -7, 2**40, 2**63, 2**64 + 3, 1.5, 2.0, "3", None, True, False, [], {}, [1], "x"]

# what a run counts (benchmarks/_fuzz_common.py adds the cases, mutation kinds and first examples)
COUNTS = ("refused_as_reference", "accepted_and_equal", "disagreements", "tracebacks", "multi_line_errors")


def base_tensors(rng: random.Random) -> dict[str, torch.Tensor]:
    """2-4 small tensors of the dtypes checkpoints hold."""
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.bool]
    out = {}
    for i in range(rng.randint(2, 4)):
        dtype = rng.choice(dtypes)
        shape = [rng.randint(0 if rng.random() < 0.1 else 1, 5) for _ in range(rng.randint(0, 3))]
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        t = torch.randn(shape, generator=g) * 4
        out[f"model.layers.{i}.w{i}"] = t.to(dtype) if dtype is not torch.bool else t > 0
    return out


def encode(header: dict | str, body: bytes, header_len: int | None = None, pad: int = 0) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass") + b" " * pad
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + body


def valid_parts(tensors: dict[str, torch.Tensor]) -> tuple[dict, bytes]:
    from safetensors.torch import save

    blob = save(tensors, metadata={"format": "pt"})
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def mutate(rng: random.Random, header: dict, body: bytes) -> tuple[bytes, str]:
    """One mutated file and the name of the mutation."""
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    kind = rng.choice(["none", "header_len", "json_text", "offsets", "offsets_swap", "offsets_gap", "shape",
                       "shape_type", "dtype", "metadata", "truncate", "pad_body", "pad_header", "entry_type",
                       "extra_key", "missing_key", "duplicate", "rank"])
    h = json.loads(json.dumps(header))
    e = h[name]
    if kind == "none":
        return encode(h, body), kind
    if kind == "header_len":
        n = len(json.dumps(h, separators=(",", ":")).encode())
        return encode(h, body, header_len=rng.choice([0, 1, n - 1, n + 1, n + 8, 2**40, 2**64 - 1, 100_000_001])), kind
    if kind == "json_text":
        text = json.dumps(h, separators=(",", ":"))
        pos = rng.randrange(len(text))
        text = rng.choice([text[:pos] + text[pos + 1 :], text[:pos] + rng.choice('{}[]",:0-x\\') + text[pos:],
                           text[:pos], "[]", "1", "null", '"x"', text.replace("{", "[", 1), "\ud800" + text])
        return encode(text, body), kind
    if kind == "offsets":
        s, t = e["data_offsets"]
        e["data_offsets"] = rng.choice([[s + 1, t + 1], [s, t + 1], [s, t - 1], [t, s], [s - 1, t - 1],
                                        [s, len(body) + 10], [0, t - s], [-1, t], [s, 2**64]])
        return encode(h, body), kind
    if kind == "offsets_swap" and len(names) > 1:
        other = h[rng.choice([n for n in names if n != name])]
        e["data_offsets"], other["data_offsets"] = other["data_offsets"], e["data_offsets"]
        return encode(h, body), kind
    if kind == "offsets_gap":
        for other in names:
            s, t = h[other]["data_offsets"]
            if s >= entry["data_offsets"][1]:
                h[other]["data_offsets"] = [s + 4, t + 4]
        return encode(h, body + b"\0" * 4), kind
    if kind == "shape":
        shape = list(e["shape"]) or [1]
        shape[rng.randrange(len(shape))] = rng.choice([0, -1, 2**33, 2**63, 3, 7])
        e["shape"] = shape
        return encode(h, body), kind
    if kind == "shape_type":
        e["shape"] = rng.choice([BAD_VALUES, [rng.choice(BAD_VALUES)], "2,3", None, 5, {"0": 1}])
        return encode(h, body), kind
    if kind == "rank":
        n = 1
        for d in e["shape"]:
            n *= d
        e["shape"] = rng.choice([[n], [1, n], [n, 1, 1], [] if n == 1 else [n, 1]])
        return encode(h, body), kind
    if kind == "dtype":
        e["dtype"] = rng.choice(DTYPE_NAMES + [None, 3, ["F32"]])
        return encode(h, body), kind
    if kind == "metadata":
        h["__metadata__"] = rng.choice([[], "pt", 3, None, {"format": 3}, {"format": None}, {"a": ["b"]},
                                        {"format": "pt", "x": "y"}, {}])
        return encode(h, body), kind
    if kind == "truncate":
        return encode(h, body[: rng.randrange(len(body) + 1)] if body else b""), kind
    if kind == "pad_body":
        return encode(h, body + b"\0" * rng.choice([1, 7, 64])), kind
    if kind == "pad_header":
        return encode(h, body, pad=rng.choice([1, 5, 100])), kind
    if kind == "entry_type":
        h[name] = rng.choice([[], "x", 3, None, {"dtype": "F32"}])
        return encode(h, body), kind
    if kind == "extra_key":
        e[rng.choice(["foo", "offsets", "DTYPE"])] = 1
        return encode(h, body), kind
    if kind == "missing_key":
        del e[rng.choice(["dtype", "shape", "data_offsets"])]
        return encode(h, body), kind
    if kind == "duplicate":
        text = json.dumps(h, separators=(",", ":"))
        dup = json.dumps({name: h[name]}, separators=(",", ":"))[1:-1]
        return encode(text[:-1] + "," + dup + "}", body), kind
    return encode(h, body), "none"


def reference(path: Path) -> dict[str, torch.Tensor] | Exception:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # noqa: BLE001 - any refusal of the reference counts as a refusal
        return exc


def ours(folder: Path) -> dict[str, torch.Tensor] | HyperCloneError:
    """What grow / inspect / verify read (any exception other than HyperCloneError propagates: a traceback)."""
    try:
        weights = SourceWeights(folder)
        return {name: weights.read(name).clone() for name in weights.infos}
    except HyperCloneError as err:
        return err


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or tuple(x.shape) != tuple(y.shape):
            return False
        if x.dtype == torch.bool:  # a stored byte other than 0 or 1 is True; torch copies it as 1, the reference
            if not torch.equal(x, y):  # keeps the byte: compare truth values
                return False
        elif x.numel() and not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
            return False
    return True


def run(cases: int, seed: int = 0, stop_at_first: bool = False) -> dict:
    rng = random.Random(seed)
    counts: Counter = Counter()
    kinds: Counter = Counter()
    examples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "model.safetensors"
        for case in range(cases):
            header, body = valid_parts(base_tensors(rng))
            blob, kind = mutate(rng, header, body)
            path.write_bytes(blob)
            kinds[kind] += 1
            ref = reference(path)
            try:
                got = ours(folder)
            except Exception as exc:  # noqa: BLE001 - a traceback is what this counts
                counts["tracebacks"] += 1
                examples.append({"case": case, "kind": kind, "result": f"traceback {exc!r}"[:300]})
                if stop_at_first:
                    break
                continue
            ref_ok, our_ok = not isinstance(ref, Exception), not isinstance(got, HyperCloneError)
            if not ref_ok and not our_ok:
                counts["refused_as_reference"] += 1
                if "\n" in str(got):
                    counts["multi_line_errors"] += 1
            elif ref_ok and our_ok and same(ref, got):
                counts["accepted_and_equal"] += 1
            else:
                counts["disagreements"] += 1
                examples.append({"case": case, "kind": kind, "reference": "accepts" if ref_ok else repr(ref)[:200],
                                 "hyperclone": "accepts" if our_ok else str(got)[:200]})
                if stop_at_first:
                    break
    return counts_result(seed, COUNTS, counts, kinds, examples)


def versions() -> dict[str, str]:
    import safetensors

    return {"safetensors": safetensors.__version__, "torch": torch.__version__}


def main() -> None:
    fuzz_main(__doc__, "fuzz_safetensors.py", 20000, run, versions)


if __name__ == "__main__":
    main()
