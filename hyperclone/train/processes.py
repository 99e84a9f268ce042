"""This process's place in a (possibly single-process) torch.distributed group: rank, device, the group's
lifetime, and the few collectives the loop needs (sum, gather, a barrier, work done on rank 0 only)."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from hyperclone.common.errors import HyperCloneError

PATIENT_TIMEOUT = datetime.timedelta(days=7)


class Processes:
    """This process's place in a (possibly single-process) torch.distributed group."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.own_group = False
        self.patient_group = None  # made on first use by on_main (new_group is collective: every rank calls it)
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast: TF32 is plenty
            torch.backends.cudnn.allow_tf32 = True
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.own_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def ensure_group(self) -> None:
        """A process group even for one process (FSDP shards over a device mesh, which needs one)."""
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
            self.own_group = True

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, obj: Any) -> list[Any]:
        """obj from every rank, in rank order."""
        if self.world == 1:
            return [obj]
        found: list[Any] = [None] * self.world
        dist.all_gather_object(found, obj)
        return found

    def on_main(self, fn):
        """Run fn on rank 0 only; its HyperCloneError is raised on every rank. Returns fn's result on rank 0.
        fn may take hours (tokenizing a large corpus): the other ranks wait for it in a gloo group of their own
        whose timeout is a week, not in the training group, whose timeout (10-30 min) would end the run."""
        value, error = None, [None]
        if self.world > 1 and self.patient_group is None:  # before fn: making a group is itself collective
            self.patient_group = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        if self.main:
            try:
                value = fn()
            except HyperCloneError as err:
                error[0] = str(err)
        if self.world > 1:
            dist.broadcast_object_list(error, src=0, group=self.patient_group)
        if error[0] is not None:
            raise HyperCloneError(error[0])
        return value

    def close(self, clean: bool = False) -> None:
        """clean: the run ended normally on every rank, so all meet once more before the group goes (tearing
        gloo down while a peer still talks to it aborted a process now and then: "terminate called without an
        active exception"); after an error no rank waits for the others."""
        if self.own_group and dist.is_initialized():
            if clean and self.world > 1:
                dist.barrier()
            dist.destroy_process_group()
