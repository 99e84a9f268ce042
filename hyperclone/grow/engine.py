"""`hyperclone grow`: stream a source checkpoint into a wider one that computes the same function.

Plan first (hyperclone.grow.plan), then execute: read one source tensor, write its grown form into the
output shard at its planned offset, forget it. The destination model is never instantiated.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hyperclone import __version__
from hyperclone.common.copies import COPIES_FILE, CopyAxis, CopyLayout, write_copies
from hyperclone.common.errors import HyperCloneError
from hyperclone.common.files import PROVENANCE_FILE
from hyperclone.common.outputs import atomic_folder, check_output
from hyperclone.common.sizes import parse_size
from hyperclone.grow.axis_map import NoisePool, gather, grow_matrix, scale_norm_weight
from hyperclone.grow.checkpoint_io import BackgroundWriter, ShardedWriter
from hyperclone.grow.model_card import CARD_FILE, model_card
from hyperclone.grow.options import DEFAULT_SHARD_SIZE, DEFAULT_TOP_K
from hyperclone.grow.perturb import Perturbation, init_std, parse_perturbation
from hyperclone.grow.plan import DEFAULT_MODE, GrowthSpec, Plan, Recipe, make_plan, spec_with_target_config
from hyperclone.grow.source import HUB_ID, is_weight_file, open_source, resolve_gguf, source_folder


def grow_tensor(recipe: Recipe, tensor: torch.Tensor, spec: GrowthSpec, noise_pool: NoisePool | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one recipe to its source tensor (pure: the result depends only on its arguments).

    `out`: a preallocated contiguous tensor of the output's shape and dtype that linear, zero and emit
    recipes write into (and return); norms return a new tensor. The result has the recipe's dtype (the
    source's, or float32 under --dtype float32 and where 16 bits cannot hold the growth exactly)."""
    if tensor.dtype != recipe.dtype:
        tensor = tensor.to(recipe.dtype)
    if recipe.kind == "zero":
        return torch.zeros(recipe.out_shape, dtype=tensor.dtype) if out is None else out.zero_()
    if recipe.kind == "router":  # a new MoE router: seeded normal of std recipe.scale (hyperclone.grow.upcycle)
        generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + zlib.crc32(recipe.out_name.encode()))
        values = torch.randn(recipe.out_shape, generator=generator).mul_(recipe.scale).to(tensor.dtype)
        return values if out is None else out.copy_(values)
    if recipe.kind == "norm":
        (amap,) = recipe.maps
        grown = gather(tensor, 0, amap, apply_scale=False)  # norm weights are gathered, never scaled by s_k
        if recipe.zero_mean_positions and bool((amap.index < 0).any()):
            grown = grown.clone()
            grown[amap.index < 0] = 0
        if recipe.divide_by_map_scale:
            grown = (grown.float() / amap.scale.float()).to(tensor.dtype)
        return scale_norm_weight(grown, recipe.scale, recipe.norm_offset)
    if recipe.kind == "emit":
        moved = [dim for dim, amap in enumerate(recipe.maps) if not amap.is_identity()]
        if out is not None and len(moved) == 1:  # embeddings: one grown axis, written straight into out
            grown = gather(tensor, moved[0], recipe.maps[moved[0]], out=out)
        else:
            grown = tensor
            for dim, amap in enumerate(recipe.maps):
                grown = gather(grown, dim, amap)
            grown = grown if out is None else out.copy_(grown)
        if recipe.scale == 1.0:
            return grown
        # in place in the weight's dtype rounds as the float32 product does (torch computes it in float32)
        return grown.mul_(recipe.scale) if grown is out else (grown.float() * recipe.scale).to(tensor.dtype)
    if tensor.ndim != 2 or recipe.contract is None:
        raise HyperCloneError(f"{recipe.src_name}: a linear recipe needs a matrix")
    out_map, in_map = recipe.maps[1 - recipe.contract], recipe.maps[recipe.contract]
    generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + zlib.crc32(recipe.out_name.encode()))
    matrix = tensor if recipe.contract == 1 else tensor.t()
    if recipe.contract == 1:
        return grow_matrix(matrix, out_map, in_map, spec.mode, spec.snr_db, generator, noise_pool, out=out)
    grown = grow_matrix(matrix, out_map, in_map, spec.mode, spec.snr_db, generator, noise_pool).t()
    return grown.contiguous() if out is None else out.copy_(grown)


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


def grown_config(raw_config: dict[str, Any], plan: Plan) -> dict[str, Any]:
    config = dict(raw_config)
    config.update(plan.config_updates)
    config.pop("quantization_config", None)
    return config


def provenance(src: str | Path, plan: Plan, grow_s: float) -> dict[str, Any]:
    return {"hyperclone_version": __version__, "source_path": str(src),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "grow_s": round(grow_s, 3), **plan.summary()}


def apply_upcycling(plan: Plan, dense_config: dict[str, Any], experts: int, top_k: int
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn the plan's MLPs into experts (in place) and the grown config into the MoE family's; returns the
    config and the MoE summary for hyperclone.json."""
    from hyperclone.grow import upcycle
    from hyperclone.grow.axis_map import tile_map

    target = upcycle.check({**dense_config, "model_type": plan.family.model_type}, experts, top_k)
    dense_parameters = plan.grown_parameters
    per_expert = sum(math.prod(r.out_shape) for r in plan.recipes if upcycle.MLP.match(r.out_name))
    plan.recipes = upcycle.upcycle_recipes(plan.recipes, experts, target,
                                           tile_map(plan.grown.hidden, plan.grown.hidden))
    total = plan.grown_parameters
    summary = {"target": target, "experts": experts, "top_k": top_k, "router_std": upcycle.ROUTER_STD,
               "renormalised_top_k": True, "dense_parameters": dense_parameters, "total_parameters": total,
               "active_parameters_per_token": total - (experts - top_k) * per_expert}
    plan.notes.append(f"MLPs upcycled into {experts} experts ({target}, top-{top_k}, renormalised): "
                      f"{total:,} parameters, {summary['active_parameters_per_token']:,} active per token")
    return upcycle.moe_config(dense_config, target, experts, top_k), summary


def copy_layout(plan: Plan) -> CopyLayout:
    """For copies.json: every grown tensor of rank >= 2 with the first axis on which it holds copies of source
    units and the source position of every position on that axis; the residual stream's map (the hidden
    axis of the token embedding, when it is the hidden size); and every grown tensor's map per axis."""
    axes = []
    maps = {r.out_name: tuple(m.index for m in r.maps) for r in plan.recipes if r.kind not in ("zero", "router")}
    for recipe in plan.recipes:
        if recipe.kind == "zero" or len(recipe.maps) < 2:
            continue
        for axis, amap in enumerate(recipe.maps):
            if amap.size > amap.src_size and int(amap.copies().max()) >= 2:
                axes.append(CopyAxis(recipe.out_name, axis, amap.index))
                break
    embeddings = {rule.name for rule in plan.family.tensors if rule.role == "embedding" and not rule.per_layer}
    residual = next((r.maps[-1].index for r in plan.recipes if r.out_name in embeddings
                     and r.maps[-1].size == plan.grown.hidden), None)
    return CopyLayout(axes, residual, maps)


def perturbed(grown: torch.Tensor, target: torch.Tensor | None, name: str, perturbation: Perturbation | None,
              raw_config: dict[str, Any], seed: int) -> torch.Tensor:
    """grow --perturb: the grown tensor moved toward a fresh init (into its output buffer when it has one)."""
    if perturbation is None:
        return grown
    moved = perturbation.apply(grown, name, init_std(raw_config), seed)
    return grown.copy_(moved) if grown is target else moved


def check_free_space(out: Path, nbytes: int) -> None:
    """Refuse at once when the planned output cannot fit on OUT's disk (with 1% and 64 MiB to spare)."""
    free = shutil.disk_usage(out.absolute().parent).free
    if nbytes * 1.01 + 2**26 > free:
        raise HyperCloneError(f"the grown checkpoint needs {nbytes / 1e9:.2f} GB but {out.absolute().parent} has "
                              f"{free / 1e9:.2f} GB free")


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, generation config, chat template and other small files; not weights, config.json or the
    source's model card (the grown folder gets its own)."""
    for path in sorted(src.iterdir()):
        if path.is_file() and not is_weight_file(path) and path.name not in ("config.json", PROVENANCE_FILE,
                                                                               CARD_FILE, COPIES_FILE):
            shutil.copy2(path, dst / path.name)


def read_target_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        target = json.loads(path.read_text())
    except FileNotFoundError:
        raise HyperCloneError(f"--to: no such file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HyperCloneError(f"--to: {path} is not valid JSON ({exc})") from None
    if not isinstance(target, dict):
        raise HyperCloneError(f"--to: {path} is not a config object")
    return target


def plan_growth(src: Path, spec: GrowthSpec, allow_pickle: bool = False,
                to: str | Path | None = None) -> tuple[Plan, Any]:
    source = open_source(src, allow_pickle=allow_pickle)
    if to is not None:
        spec = spec_with_target_config(spec, source.family, read_target_config(to))
    return source.planned(lambda config: make_plan(source.family, config, source.weights.infos, spec)), source


def default_width(width: int | None, to: str | Path | None, targets: dict[str, Any]) -> int:
    """--width defaults to 2, or to 1 when a target size or config is given (so --layers 32 only deepens)."""
    if width is not None:
        return width
    sizes = ("hidden_size", "ffn_size", "heads", "kv_heads", "head_dim", "layers")
    return 1 if to is not None or any(targets.get(k) is not None for k in sizes) else 2


def grow(src: str | Path, out: str | Path, *, width: int | None = None, ffn: int | None = None,
         mode: str = DEFAULT_MODE, noise_db: float | None = None, tie: str = "keep", seed: int = 0,
         overwrite: bool = False, allow_pickle: bool = False, shard_size: str | int = DEFAULT_SHARD_SIZE,
         progress: bool = False, dtype: str = "auto", moments_from: str | Path | None = None,
         revision: str | None = None, command: str | None = None, experts: int | None = None,
         top_k: int = DEFAULT_TOP_K, to: str | Path | None = None, perturb: str | None = None,
         **targets: Any) -> Path:
    """Grow the checkpoint at `src` (folder, Hub id `org/name` at `revision`, .gguf file or built-in name)
    into `out`; return `out`. `command` is recorded in the model card (the CLI passes its own).

    `dtype`: auto | source | float32 (see hyperclone.grow.plan.DTYPE_CHOICES).
    `moments_from`: a run's final folder holding the source model's AdamW moments (moments.pt); they are
    grown with the rule gradients follow (hyperclone.grow.moments) and written to OUT/moments.pt, for
    `hyperclone train OUT --moments-from OUT`.
    `experts`, `top_k`: upcycle every MLP into that many experts with renormalised top-k routing
    (hyperclone.grow.upcycle), together with the width and depth growth.
    `to` is a target config.json (or a folder holding one) whose dimensions the grown model takes.
    `perturb`: mix:R or shrink:LAMBDA,SIGMA, moving every grown matrix toward a fresh initialisation
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
        config = grown_config(source.raw_config, plan)
        moe = None
        if experts is not None:
            config, moe = apply_upcycling(plan, config, experts, top_k)
        check_free_space(out, sum(t.nbytes for t in plan.outputs))
        noise_pool = NoisePool(spec.seed) if spec.mode == "noisy" else None
        sizes = {t.name: t.nbytes for t in plan.outputs}
        big = [r for r in plan.recipes if buffered(r, sizes[r.out_name])]
        in_buffers = {r.out_name for r in big}
        buffers = OutputBuffers([sizes[r.out_name] for r in big],
                                max((source.weights.infos[r.src_name].nbytes for r in big if r.kind != "zero"),
                                    default=0))
        with atomic_folder(out, overwrite) as tmp:
            writer = ShardedWriter(tmp, plan.outputs, max_shard, metadata={"hyperclone": __version__})
            with BackgroundWriter(writer) as background, tqdm(
                    total=sum(sizes.values()), unit="B", unit_scale=True, desc="grow", disable=not progress) as bar:
                for recipe in plan.recipes:
                    zero = recipe.kind == "zero"  # identity-block output projections: nothing to read
                    source_tensor = torch.empty(0, dtype=recipe.dtype) if zero else source.weights.read(recipe.src_name)
                    target = (buffers.next(recipe.out_shape, recipe.dtype, background.wait)
                              if recipe.out_name in in_buffers else None)
                    grown = grow_tensor(recipe, source_tensor, spec, noise_pool, out=target)
                    grown = perturbed(grown, target, recipe.out_name, perturbation, source.raw_config, spec.seed)
                    background.write(recipe.out_name, grown)  # returns once the previous tensor is written
                    if target is None:
                        buffers.release()
                    bar.update(sizes[recipe.out_name])
                    del grown, source_tensor
            copy_side_files(folder, tmp)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            if moments_from is not None:
                from hyperclone.grow.moments import write_grown_moments

                write_grown_moments(Path(moments_from), spec, tmp)
            record = provenance(src, plan, time.perf_counter() - started)  # grow_s: growth time up to here
            record["revision"] = revision
            if moe is not None:
                record["upcycled"] = moe
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            write_copies(tmp, copy_layout(plan))
            (tmp / CARD_FILE).write_text(model_card(record, command))
    return out
