"""Process-group setup for multi-GPU training with ``torchrun`` (DistributedDataParallel), and device selection."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Rank and world size of this process (``world == 1`` when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``); NCCL on CUDA, gloo otherwise. Without those variables: one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("process %d/%d joined the %s process group", rank, world, backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def local_rank_from_env() -> int:
    """``LOCAL_RANK`` set by torchrun (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op with one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (so that every process takes the same branch)."""
    if not (info.enabled and dist.is_initialized()):
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup(info: DistInfo) -> None:
    """Leave the process group if this module created one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
