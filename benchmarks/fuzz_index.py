"""Differential fuzzing of how hyperclone reads a sharded checkpoint's index file (issue 27).

A seeded generator writes a small checkpoint as two safetensors shards with model.safetensors.index.json and
mutates it: the index's JSON (not UTF-8, not JSON, not an object, no or an empty "weight_map", shard names of the
wrong type or empty, metadata of any type, keys reordered), where its shards are (missing, absolute, "../" out of
the folder), and whether index and shards agree (an entry dropped or added, a tensor listed in the wrong shard or
stored in both, an extra shard the index does not name, a "shard" that is not safetensors). Each case is read by
the reference and by hyperclone (``SourceWeights``, what ``grow``, ``inspect`` and ``verify`` read).

The reference is what transformers does with an index (``transformers.trainer_utils.load_sharded_checkpoint``
with strict=True): the index's keys must be the model's tensor names, and every shard it names is loaded whole
with ``safetensors.torch.load_file``. hyperclone is stricter by rule in three ways, counted apart: it does not
follow a shard name out of the checkpoint folder, it refuses an index that disagrees with its shards (a
tensor stored in a shard other than the one listed, or in two shards), where the reference keeps whichever
shard it loaded last, and it refuses an index that names none of the tensors of one file of its numbered set
(`model-00002-of-00002.safetensors` present but unlisted), since it cannot know the model's names.
The property: whenever the reference refuses, hyperclone refuses in one line; whenever it
accepts, hyperclone reads the same tensors bit for bit, or refuses by one of its rules. Anything else is a
disagreement; an exception other than HyperCloneError is a traceback.

    python benchmarks/fuzz_index.py --cases 20000 --json results/fuzz_index.json

tests/test_fuzz.py runs a few hundred cases in the suite.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _fuzz_common import counts_result, fuzz_main  # noqa: E402
from fuzz_safetensors import ours  # noqa: E402 - the same reading: what grow, inspect and verify use

from hyperclone.common.errors import HyperCloneError  # noqa: E402

INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
# hyperclone's own rules, where the reference reads on
STRICTER = ("outside the checkpoint folder", "is listed in", "in more than one",
            "belongs to the same set")
KINDS = ("none", "reorder", "metadata", "not_utf8", "not_json", "top_list", "no_weight_map", "weight_map_list",
         "weight_map_empty", "value_type", "value_empty", "absolute", "dotdot", "missing_shard", "drop_entry",
         "extra_entry", "wrong_shard", "duplicate", "unlisted_shard", "not_safetensors")

# what a run counts (benchmarks/_fuzz_common.py adds the cases, mutation kinds and first examples)
COUNTS = ("refused_as_reference", "accepted_and_equal", "refused_by_rule", "disagreements",
          "tracebacks", "multi_line_errors")


def tensors(rng: random.Random) -> dict[str, torch.Tensor]:
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight",
             "model.norm.weight", "lm_head.weight"]
    shapes = [(16, 8), (12, 8), (8,), (8,), (16, 8)]
    dtype = rng.choice([torch.float32, torch.bfloat16, torch.float16])
    return {n: torch.randn(s).to(dtype) for n, s in zip(names, shapes, strict=True)}


def write_case(rng: random.Random, folder: Path, outside: Path) -> tuple[str, set[str]]:
    """A mutated checkpoint in folder (files outside it in `outside`); returns its kind and the model's names."""
    from safetensors.torch import save_file

    state = tensors(rng)
    names = list(state)
    split = rng.randint(1, len(names) - 1)
    parts = {SHARDS[0]: names[:split], SHARDS[1]: names[split:]}
    weight_map = {n: shard for shard, ns in parts.items() for n in ns}
    kind = rng.choice(KINDS)
    if kind == "duplicate":  # a tensor stored in both shards (the index lists one)
        parts[SHARDS[1]] = [*parts[SHARDS[1]], parts[SHARDS[0]][0]]
    for shard, ns in parts.items():
        save_file({n: state[n] for n in ns}, str(folder / shard), metadata={"format": "pt"})
    index: object = {"metadata": {"total_size": sum(t.nbytes for t in state.values())}, "weight_map": weight_map}
    victim = rng.choice(names)
    if kind == "reorder":
        index = {"weight_map": dict(reversed(list(weight_map.items()))), "metadata": {"total_size": 1}}
    elif kind == "metadata":
        index["metadata"] = rng.choice([None, [], "x", 3, {"a": [1]}])
    elif kind == "top_list":
        index = [weight_map]
    elif kind == "no_weight_map":
        del index["weight_map"]
    elif kind == "weight_map_list":
        index["weight_map"] = list(weight_map.items())
    elif kind == "weight_map_empty":
        index["weight_map"] = {}
    elif kind == "value_type":
        weight_map[victim] = rng.choice([1, None, [SHARDS[0]], {"f": SHARDS[0]}, True])
    elif kind == "value_empty":
        weight_map[victim] = ""
    elif kind == "absolute":  # a real shard, named by its absolute path outside the folder
        target = outside / "abs.safetensors"
        shutil.copy(folder / weight_map[victim], target)
        weight_map[victim] = str(target)
    elif kind == "dotdot":
        target = outside / "up.safetensors"
        shutil.copy(folder / weight_map[victim], target)
        weight_map[victim] = f"../{outside.name}/up.safetensors"
    elif kind == "missing_shard":
        weight_map[victim] = "model-00003-of-00002.safetensors"
    elif kind == "drop_entry":
        del weight_map[victim]
    elif kind == "extra_entry":
        weight_map["model.layers.9.extra.weight"] = rng.choice(SHARDS)
    elif kind == "wrong_shard":
        weight_map[victim] = SHARDS[1] if weight_map[victim] == SHARDS[0] else SHARDS[0]
    elif kind == "unlisted_shard":  # a file in the folder that the index does not name: not read by either
        save_file({"stray.weight": torch.zeros(2)}, str(folder / "stray.safetensors"))
    elif kind == "not_safetensors":
        (folder / "notes.safetensors").write_text("not a checkpoint")
        weight_map[victim] = "notes.safetensors"
    text = json.dumps(index).encode()
    if kind == "not_utf8":
        text = text.replace(b'"weight_map"', b'"weight_\xff_map"')
    elif kind == "not_json":
        text = text[: rng.randint(1, len(text) - 1)]
    (folder / INDEX).write_bytes(text)
    return kind, set(names)


def reference(folder: Path, names: set[str]) -> dict[str, torch.Tensor] | Exception:
    """load_sharded_checkpoint(strict=True)'s reading: the index's keys against the model's, every named shard
    loaded whole (joined to the folder as os.path.join does), later shards overriding earlier ones."""
    import os

    from safetensors.torch import load_file

    try:
        with open(folder / INDEX, encoding="utf-8") as fh:
            index = json.load(fh)
        shard_files = list(set(index["weight_map"].values()))
        keys = index["weight_map"].keys()
        if set(keys) != names:
            raise RuntimeError("missing or unexpected keys")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(shard_files):
            state.update(load_file(os.path.join(folder, shard)))
        return state
    except Exception as exc:  # noqa: BLE001 - any refusal of the reference counts as a refusal
        return exc


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def run(cases: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    counts: Counter = Counter()
    kinds: Counter = Counter()
    examples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(cases):
            root = Path(tmp) / f"case{case}"
            folder, outside = root / "model", root / "elsewhere"
            folder.mkdir(parents=True)
            outside.mkdir()
            kind, names = write_case(rng, folder, outside)
            kinds[kind] += 1
            ref = reference(folder, names)
            try:
                got = ours(folder)
            except Exception as exc:  # noqa: BLE001 - a traceback is what this counts
                counts["tracebacks"] += 1
                examples.append({"case": case, "kind": kind, "result": f"traceback {exc!r}"[:300]})
                continue
            finally:
                shutil.rmtree(root, ignore_errors=True)
            ref_ok, our_ok = not isinstance(ref, Exception), not isinstance(got, HyperCloneError)
            if not our_ok and "\n" in str(got):
                counts["multi_line_errors"] += 1
            if not ref_ok and not our_ok:
                counts["refused_as_reference"] += 1
            elif ref_ok and our_ok and same(ref, got):
                counts["accepted_and_equal"] += 1
            elif ref_ok and not our_ok and any(rule in str(got) for rule in STRICTER):
                counts["refused_by_rule"] += 1
            else:
                counts["disagreements"] += 1
                examples.append({"case": case, "kind": kind, "reference": "accepts" if ref_ok else repr(ref)[:200],
                                 "hyperclone": "accepts" if our_ok else str(got)[:200]})
    return counts_result(seed, COUNTS, counts, kinds, examples)


def versions() -> dict[str, str]:
    import safetensors
    import transformers

    return {"safetensors": safetensors.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__}


def main() -> None:
    fuzz_main(__doc__, "fuzz_index.py", 2000, run, versions)


if __name__ == "__main__":
    main()
