"""How the model is spread over processes: DDP (a full replica per process) or FSDP2 (PyTorch's
`torch.distributed.fsdp.fully_shard`: parameters, gradients and AdamW state sharded over the processes).

FSDP, as torchtitan applies it: `fully_shard` on every decoder block (transformers names them in the model's
`_no_split_modules`), then on the root, on a 1-D device mesh of all processes. Mixed precision on GPUs: bf16
parameters in the forward and backward, fp32 master weights, gradient reductions and optimizer
(`MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`); on CPUs everything stays fp32.
`--cpu-offload` keeps the shards in host memory (`CPUOffloadPolicy`).

Loading does not hold a full model per process: rank 0 loads the checkpoint with transformers, every other
rank builds the model on the meta device, all shard it, allocate their shards, and rank 0's full state dict
is broadcast into the shards (`set_model_state_dict(..., broadcast_from_rank0=True)`); buffers that are not in
the state dict (rotary tables) are broadcast from rank 0 too.

Checkpoints under FSDP are torch.distributed.checkpoint (DCP) folders: every rank writes its own shards of
the model and optimizer, so a run can resume on a different number of processes (DCP reshards on load).
The final model, and every `--save-hf-every` steps, is gathered on rank 0 and written as a plain
transformers folder in `--save-dtype`.

The loop never asks which strategy it runs: `make_strategy` picks one object once (one process, DDP or FSDP2)
and it owns loading, wrapping, autocast, gradient sync during accumulation, the checkpoint's model and optimizer
files, the full-state export, how evaluation is split, and the ranks' weight digests at the end.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed as dist

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.quiet import hf_quiet
from hyperclone.train import state as ts
from hyperclone.train.model_class import auto_class, freeze_outside_language_model

DCP_FOLDER = "dcp"


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks: modules whose class transformers lists as not to be split."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        raise HyperCloneError(f"{type(model).__name__}: no decoder blocks found to shard (_no_split_modules)")
    return found


def load_config_model(path: Path, attn: str | None, meta: bool):
    """The model of `path`, loaded in float32 (or only built on the meta device); an image-text model with all but
    its language model frozen (train/model_class.py)."""
    from transformers import AutoConfig

    kwargs = {"attn_implementation": attn} if attn else {}
    try:
        with hf_quiet():
            config = AutoConfig.from_pretrained(path)
            model_class = auto_class(config, path)
            if meta:
                with torch.device("meta"):
                    model = model_class.from_config(config, dtype=torch.float32, **kwargs)
            else:
                model = model_class.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (ValueError, OSError, KeyError, RuntimeError, ImportError) as err:
        raise HyperCloneError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from None
    model.config.use_cache = False
    freeze_outside_language_model(model)
    return model


def shard(model: torch.nn.Module, device: torch.device, world: int, bf16: bool, cpu_offload: bool) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=policy, offload_policy=offload)


def compile_blocks(model: torch.nn.Module) -> None:
    """`--compile`: torch.compile every decoder block in place (`nn.Module.compile`, as torchtitan does per
    block: identical blocks share one compiled graph, and parameter names stay those of the checkpoint)."""
    for block in blocks(model):
        block.compile()


def load_sharded(path: Path, device: torch.device, rank: int, world: int, bf16: bool, cpu_offload: bool,
                 attn: str | None, compile_: bool = False):
    """The model of `path` sharded over the processes, loaded without a full copy on any rank but 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model = load_config_model(path, attn, meta=rank != 0)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()} if rank == 0 else {}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()} if rank == 0 else {}
    if compile_:  # before sharding, as torchtitan orders it
        compile_blocks(model)
    shard(model, device, world, bf16, cpu_offload)
    model.to_empty(device="cpu" if cpu_offload else device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                               cpu_offload=cpu_offload))
    for name, buffer in model.named_buffers():
        if rank == 0:
            buffer.copy_(buffers[name])
        if world > 1:
            dist.broadcast(buffer, src=0)
    del full, buffers
    return model


def local_bytes(tensors) -> int:
    """Bytes this process holds of these tensors (a DTensor's local shard only)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    params = local_bytes(p for p in model.parameters())
    optim = local_bytes(v for st in optimizer.state.values() for v in st.values()
                        if isinstance(v, torch.Tensor) and v.ndim > 0)
    return {"param_bytes": params, "optimizer_bytes": optim}


def clip_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def save_dcp(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of model and optimizer into folder/dcp."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder / DCP_FOLDER))


def load_dcp(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load model and optimizer shards from folder/dcp, resharded to this run's processes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on rank 0 (in host memory), {} elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_hf(folder: Path, model_dir: Path, state: dict[str, torch.Tensor], tokenizer, save_dtype: str) -> None:
    """Write a plain transformers folder from a full state dict (rank 0): the model is built on the meta
    device from model_dir's config, the tensors assigned, and saved with save_pretrained."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = auto_class(config, model_dir).from_config(config, dtype=torch.float32)
    model.load_state_dict(state, assign=True, strict=False)
    model.tie_weights()
    if save_dtype == "bf16":
        model.to(torch.bfloat16)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise HyperCloneError(f"export: tensors missing from the gathered state: {missing[:3]}")
    with hf_quiet():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def bytes_estimate(params: int, world: int, strategy: str, learning: int | None = None) -> dict[str, float]:
    """Bytes per process for weights, gradients and AdamW state (fp32 masters and moments), before
    activations: DDP holds everything on every process; FSDP a 1/world share (plus one gathered block at a
    time, not counted). `learning`: the parameters that have gradients and AdamW state (all when None)."""
    share = 1 if strategy == "ddp" else 1 / world
    learning = params if learning is None else learning
    weights = 4 * params * share
    grads = 4 * learning * share
    adam = 8 * learning * share
    return {"weights": weights, "gradients": grads, "optimizer": adam, "total": weights + grads + adam}


def params_digest_of(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and float32 values: equal on every rank when the replicas agree."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class SingleProcess:
    """One process holding the whole model: bf16 through autocast, checkpoints hold its weights and the AdamW
    state as files (train/state.py)."""

    name = "ddp"  # what checkpoints record: replicas, whatever their number
    whole_model = True  # each process holds every tensor whole (a grown model's copy divergence can be read)

    def __init__(self, procs, bf16: bool):
        self.procs, self.bf16 = procs, bf16

    @staticmethod
    def refuse(cfg) -> None:
        """A one-line error for a flag this strategy cannot honour."""
        if cfg.cpu_offload:
            raise HyperCloneError("--cpu-offload needs --strategy fsdp")

    def load(self, model_dir: Path, start_ckpt: Path | None, cfg) -> torch.nn.Module:
        model = load_config_model(start_ckpt or model_dir, cfg.attn, meta=False).to(self.procs.device)
        if cfg.compile:
            compile_blocks(model)
        return model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the forward and backward run through."""
        return model

    def autocast(self):
        """A context for the forward passes: bf16 autocast where bf16 is on."""
        if self.bf16:
            return torch.autocast(self.procs.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def autocasts(self) -> bool:
        return self.bf16

    def no_sync(self, fwd: torch.nn.Module, last_micro_batch: bool):
        """Skip the gradient reduction on all but the last micro-batch of a step."""
        return contextlib.nullcontext()

    def load_state(self, ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        ts.load_optimizer(ckpt, optimizer, self.procs.device)  # the weights came with load()

    def save_state(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """This strategy's own files of a resumable checkpoint (none: rank 0 writes weights and optimizer)."""

    def checkpoint_files(self, model, optimizer, resumable: bool):
        """(weights, optimizer) rank 0's checkpoint writer saves as files: the model, and the optimizer when the
        checkpoint is resumable."""
        return model, optimizer if resumable else None

    def full_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's state dict (on rank 0)."""
        return model.state_dict()

    def export_state(self, model: torch.nn.Module, save_dtype: str) -> dict[str, torch.Tensor] | None:
        """The state the final folder is exported from, or None when the model's own save writes it (fp32)."""
        return model.state_dict() if save_dtype != "fp32" else None

    def eval_chunks(self, chunks: list[list[int]], n_val: int, micro: int) -> list[list[int]]:
        return chunks

    def digests(self, model: torch.nn.Module, final_digest: str | None) -> list[str]:
        """Every rank's digest of its final weights."""
        return self.procs.gather(params_digest_of(model.state_dict()))


class DDP(SingleProcess):
    """A replica per process (DistributedDataParallel), gradients averaged at the last micro-batch."""

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device = self.procs.device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, fwd: torch.nn.Module, last_micro_batch: bool):
        return contextlib.nullcontext() if last_micro_batch else fwd.no_sync()


class FSDP(SingleProcess):
    """FSDP2: every tensor sharded over the processes (see the module's docstring); bf16 through its
    mixed-precision policy, checkpoints as DCP folders."""

    name = "fsdp"
    whole_model = False

    @staticmethod
    def refuse(cfg) -> None:
        unsupported = [flag for flag, on in (("--moments-from", cfg.moments_from is not None),
                                              ("--save-moments", cfg.save_moments), ("--msg", cfg.step_hook),
                                              ("--copies-lr", cfg.copies_lr is not None)) if on]
        if unsupported:
            raise HyperCloneError(f"{unsupported[0]} is not supported with --strategy fsdp yet; use --strategy ddp")

    def load(self, model_dir: Path, start_ckpt: Path | None, cfg) -> torch.nn.Module:
        procs = self.procs
        procs.ensure_group()  # a device mesh needs a group, even of one process
        # weights from the base model (rank 0 reads, the others receive their shards); a resumed run's come
        # with load_state
        return load_sharded(model_dir, procs.device, procs.rank, procs.world, self.bf16, cfg.cpu_offload, cfg.attn,
                            cfg.compile)

    def autocast(self):
        return contextlib.nullcontext()

    @property
    def autocasts(self) -> bool:
        return False

    def no_sync(self, fwd: torch.nn.Module, last_micro_batch: bool):
        if self.procs.world > 1:
            fwd.set_requires_gradient_sync(last_micro_batch)
        return contextlib.nullcontext()

    def load_state(self, ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        load_dcp(ckpt, model, optimizer)

    def save_state(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        save_dcp(folder, model, optimizer)

    def checkpoint_files(self, model, optimizer, resumable: bool):
        return None, None  # the DCP shards hold both

    def full_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return full_state_dict(model)

    def export_state(self, model: torch.nn.Module, save_dtype: str) -> dict[str, torch.Tensor]:
        return full_state_dict(model)

    def eval_chunks(self, chunks: list[list[int]], n_val: int, micro: int) -> list[list[int]]:
        """Every forward is a collective: all ranks run as many, the extra ones empty (they count 0)."""
        import math

        most = math.ceil(math.ceil(n_val / self.procs.world) / micro)
        return chunks + [[]] * (most - len(chunks))

    def digests(self, model: torch.nn.Module, final_digest: str | None) -> list[str]:
        return [final_digest]  # one gathered model, digested on rank 0: the shards cannot disagree


def strategy_class(name: str) -> type[SingleProcess]:
    """The class --strategy names (ddp covers one process and many)."""
    return FSDP if name == "fsdp" else DDP


def make_strategy(name: str, procs, bf16: bool) -> SingleProcess:
    """The strategy a run uses, chosen once: FSDP2 for --strategy fsdp, else DDP over several processes or
    the plain model in one."""
    if name == "fsdp":
        return FSDP(procs, bf16)
    return DDP(procs, bf16) if procs.world > 1 else SingleProcess(procs, bf16)
