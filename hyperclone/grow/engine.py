"""`hyperclone grow`: stream a source checkpoint into a wider one that computes the same function.

Plan first (hyperclone.grow.plan), then execute: read one source tensor, write its grown form into the
output shard at its planned offset, forget it. The destination model is never instantiated.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hyperclone import __version__
from hyperclone.common.copies import COPIES_FILE, write_copies
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import PROVENANCE_FILE
from hyperclone.common.outputs import atomic_folder, check_output
from hyperclone.common.sizes import parse_size
from hyperclone.grow.axis_map import NoisePool
from hyperclone.grow.checkpoint_io import BackgroundWriter, ShardedWriter
from hyperclone.grow.model_card import CARD_FILE, model_card
from hyperclone.grow.moments import grown_run_moments, write_moments
from hyperclone.grow.options import DEFAULT_SHARD_SIZE
from hyperclone.grow.perturb import Perturbation, parse_perturbation
from hyperclone.grow.plan import DEFAULT_MODE, GrowthSpec, Plan, Recipe
from hyperclone.grow.planning import (
    apply_experts,
    copy_layout,
    default_width,
    grown_source_config,
    plan_growth,
    provenance,
)
from hyperclone.grow.source import HUB_ID, is_weight_file, resolve_gguf, source_folder
from hyperclone.grow.tensor_rule import grow_tensor, perturbed


class OutputBuffers:
    """Two reusable output buffers, so a tensor is computed into one while the tensor before it is still
    being written from the other (BackgroundWriter keeps at most one write pending), and no tensor pays
    the page faults of a fresh allocation.

    Memory: the first buffer holds the largest output L; the second only outputs up to
    L - (largest source tensor) + 0.5 GiB, so the two buffers and the source tensor being read stay
    within 2 L + 0.5 GiB (the bound is 1.5 GiB + 2 L). With a large vocabulary that means the vocabulary
    matrices (L) take turns with nothing: computing one waits for the write before it.
    """

    HEADROOM = 2**29

    def __init__(self, output_sizes: list[int], largest_source: int):
        largest = max(output_sizes, default=0)
        limit = largest - largest_source + self.HEADROOM
        self.capacity = [largest, max((s for s in output_sizes if s <= limit), default=0)]
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._busy: int | None = None  # the buffer whose tensor may still be being written

    def next(self, shape: tuple[int, ...], dtype: torch.dtype, wait_for_write) -> torch.Tensor:
        """A contiguous [shape] tensor of dtype in a buffer no pending write reads; `wait_for_write()`
        is called first if the only buffer big enough is the busy one."""
        size = math.prod(shape) * dtype.itemsize
        free = [i for i in (1, 0) if i != self._busy and self.capacity[i] >= size]  # smaller one first
        if not free:
            wait_for_write()
            self._busy = None
            free = [i for i in (1, 0) if self.capacity[i] >= size]
        i = free[0]
        if self._buffers[i] is None:
            self._buffers[i] = torch.empty(self.capacity[i], dtype=torch.uint8)
        self._busy = i
        return self._buffers[i][:size].view(dtype).view(shape)

    def release(self) -> None:
        """The pending write is no longer from a buffer (a small tensor was written after it)."""
        self._busy = None


BUFFER_MIN_BYTES = 2**20


def buffered(recipe: Recipe, nbytes: int) -> bool:
    """Outputs that go through OutputBuffers: every large one (norm weights and small tensors are new)."""
    return recipe.kind != "norm" and nbytes >= BUFFER_MIN_BYTES


def check_free_space(out: Path, nbytes: int) -> None:
    """Refuse at once when the planned output cannot fit on OUT's disk (with 1% and 64 MiB to spare)."""
    free = shutil.disk_usage(out.absolute().parent).free
    if nbytes * 1.01 + 2**26 > free:
        raise HyperCloneError(f"the grown checkpoint needs {nbytes / 1e9:.2f} GB but {out.absolute().parent} has "
                              f"{free / 1e9:.2f} GB free")


SIZED_FILES = ("config.json", PROVENANCE_FILE, CARD_FILE, COPIES_FILE, "params.json")  # state the source's sizes


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, generation config, chat template and other small files; not weights, and not the files that state
    the source's sizes: config.json, the source's model card (the grown folder gets its own), Mistral's native
    params.json."""
    for path in sorted(src.iterdir()):
        if path.is_file() and not is_weight_file(path) and path.name not in SIZED_FILES:
            shutil.copy2(path, dst / path.name)


def stream_grown_tensors(plan: Plan, source: Any, spec: GrowthSpec, perturbation: Perturbation | None,
                         folder: Path, max_shard: int, progress: bool) -> None:
    """Read, grow and write every tensor of `plan` into safetensors shards in `folder`, one at a time: the
    next tensor is grown while a background thread writes the previous one, and the largest outputs are grown
    into reused buffers so memory stays at a few tensors whatever the model's size. `perturbation` moves the
    language model's matrices only: a multimodal checkpoint's vision tower and projector stay as grown."""
    unperturbed = set() if source.wrapped is None else source.wrapped.outside_language_model
    # the std transformers' _init_weights draws with: the top-level config's initializer_range, else the text's
    init_config = {**source.raw_config, **(source.full_config or {})}
    noise_pool = NoisePool(spec.seed) if spec.mode == "noisy" else None
    sizes = {t.name: t.nbytes for t in plan.outputs}
    big = [r for r in plan.recipes if buffered(r, sizes[r.out_name])]
    in_buffers = {r.out_name for r in big}
    buffers = OutputBuffers([sizes[r.out_name] for r in big],
                            max((source.weights.infos[r.src_name].nbytes for r in big if r.kind != "zero"),
                                default=0))
    writer = ShardedWriter(folder, plan.outputs, max_shard, metadata={"hyperclone": __version__})
    with BackgroundWriter(writer) as background, tqdm(
            total=sum(sizes.values()), unit="B", unit_scale=True, desc="grow", disable=not progress) as bar:
        for recipe in plan.recipes:
            zero = recipe.kind == "zero"  # identity-block output projections: nothing to read
            source_tensor = torch.empty(0, dtype=recipe.dtype) if zero else source.weights.read(recipe.src_name)
            target = (buffers.next(recipe.out_shape, recipe.dtype, background.wait)
                      if recipe.out_name in in_buffers else None)
            grown = grow_tensor(recipe, source_tensor, spec, noise_pool, out=target)
            if recipe.out_name not in unperturbed:
                grown = perturbed(grown, target, recipe.out_name, perturbation, init_config, spec.seed)
            background.write(recipe.out_name, grown)  # returns once the previous tensor is written
            if target is None:
                buffers.release()
            bar.update(sizes[recipe.out_name])
            del grown, source_tensor


def grow(src: str | Path, out: str | Path, *, width: int | None = None, ffn: int | None = None,
         mode: str = DEFAULT_MODE, noise_db: float | None = None, tie: str = "keep", seed: int = 0,
         overwrite: bool = False, allow_pickle: bool = False, shard_size: str | int = DEFAULT_SHARD_SIZE,
         progress: bool = False, dtype: str = "auto", moments_from: str | Path | None = None,
         revision: str | None = None, command: str | None = None, experts: int | None = None,
         top_k: int | None = None, to: str | Path | None = None, perturb: str | None = None,
         **targets: Any) -> Path:
    """Grow the checkpoint at `src` (folder, Hub id `org/name` at `revision`, .gguf file or built-in name)
    into `out`; return `out`. `command` is recorded in the model card (the CLI passes its own).

    `dtype`: auto | source | float32 (see hyperclone.grow.plan.DTYPE_CHOICES).
    `moments_from`: a run's final folder holding the source model's AdamW moments (moments.pt); they are
    grown with the rule gradients follow (hyperclone.grow.moments) and written to OUT/moments.pt, for
    `hyperclone train OUT --moments-from OUT`.
    `experts`, `top_k`: a dense source has every MLP upcycled into that many experts with renormalised top-k
    routing (hyperclone.grow.upcycle; top_k default DEFAULT_TOP_K); a mixture of experts with E experts has each
    split into experts / E = m segments and top-k becomes k x m (hyperclone.grow.segment; top_k must be left out or
    equal that). Either way together with the width and depth growth.
    `to` is a target config.json (or a folder holding one) whose dimensions the grown model takes.
    `perturb`: mix:R or shrink:LAMBDA,SIGMA, moving every grown matrix (a multimodal checkpoint's language model's
    only) toward a fresh initialisation
    (hyperclone.grow.perturb; the result is recorded as not function-preserving).
    `targets` are absolute sizes or depth options of GrowthSpec: hidden_size, ffn_size, heads, kv_heads,
    head_dim, layers, depth_mode, insert_after.
    """
    unknown = set(targets) - {"hidden_size", "ffn_size", "heads", "kv_heads", "head_dim", "layers", "depth_mode",
                              "insert_after"}
    if unknown:
        raise TypeError(f"grow() got unexpected arguments {sorted(unknown)}")
    started = time.perf_counter()
    spec = GrowthSpec(width=default_width(width, to, targets), ffn=ffn, mode=mode, noise_db=noise_db, tie=tie,
                      seed=seed, dtype=dtype, perturb=perturb, **targets)
    spec.validate()
    perturbation = parse_perturbation(perturb)
    max_shard = parse_size(shard_size)
    out = Path(out)
    check_output(out, overwrite)
    if resolve_gguf(src) is None and not Path(src).exists() and not HUB_ID.match(str(src)):
        raise HyperCloneError(f"source not found: {src}")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with source_folder(src, workdir=out.absolute().parent, revision=revision) as folder:
        plan, source = plan_growth(folder, spec, allow_pickle, to)
        config = grown_source_config(source, plan)
        moe = None
        if experts is not None:
            config, moe_key, moe = apply_experts(plan, config, experts, top_k, source)
            if moments_from is not None:  # split experts, or a dense MLP upcycled into experts (whose moments
                # would be left out without a word: the grown moments are planned without experts)
                kind = "a mixture of experts" if moe_key == "segmented" else "a dense model"
                raise HyperCloneError(f"--moments-from with --experts on {kind}: carrying AdamW moments over to new "
                                      "experts is not supported")
        carried = None if moments_from is None else grown_run_moments(Path(moments_from), spec, to)
        check_free_space(out, sum(t.nbytes for t in plan.outputs))
        with atomic_folder(out, overwrite) as tmp:
            stream_grown_tensors(plan, source, spec, perturbation, tmp, max_shard, progress)
            copy_side_files(folder, tmp)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            if carried is not None:
                write_moments(carried, tmp)
            record = provenance(src, plan, time.perf_counter() - started)  # grow_s: growth time up to here
            record["revision"] = revision
            if moe is not None:
                record[moe_key] = moe
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if plan.wrapper is None:  # a multimodal model's parameters are named by the class that loads it
                write_copies(tmp, copy_layout(plan))
            (tmp / CARD_FILE).write_text(model_card(record, command))
    return out
