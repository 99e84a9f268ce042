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
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed as dist

from hyperclone.common.errors import HyperCloneError
from hyperclone.common.quiet import hf_quiet
from hyperclone.train.options import ATTENTION, SAVE_DTYPES, STRATEGIES  # noqa: F401 (re-exported)

DCP_FOLDER = "dcp"


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks: modules whose class transformers lists as not to be split."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        raise HyperCloneError(f"{type(model).__name__}: no decoder blocks found to shard (_no_split_modules)")
    return found


def load_config_model(path: Path, attn: str | None, meta: bool):
    """The model of `path`, loaded in float32 (or only built on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {"attn_implementation": attn} if attn else {}
    try:
        with hf_quiet():
            if meta:
                config = AutoConfig.from_pretrained(path)
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (ValueError, OSError, KeyError, RuntimeError, ImportError) as err:
        raise HyperCloneError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from None
    model.config.use_cache = False
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


def no_sync(model: torch.nn.Module, strategy: str, world: int, last_micro_batch: bool):
    """Skip the gradient reduction on all but the last micro-batch of a step."""
    if world == 1 or last_micro_batch:
        if strategy == "fsdp":
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()


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
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
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


def bytes_estimate(params: int, world: int, strategy: str) -> dict[str, float]:
    """Bytes per process for weights, gradients and AdamW state (fp32 masters and moments), before
    activations: DDP holds everything on every process; FSDP a 1/world share (plus one gathered block at a
    time, not counted)."""
    share = 1 if strategy == "ddp" else 1 / world
    weights = 4 * params * share
    grads = 4 * params * share
    adam = 8 * params * share
    return {"weights": weights, "gradients": grads, "optimizer": adam, "total": weights + grads + adam}
