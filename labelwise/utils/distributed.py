"""Joining the process group ``torchrun`` describes: the one home of that setup for every workflow."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands: its rank, the world size, the device, and how to leave.

    Attributes:
        rank, world_size: 0 and 1 without ``torchrun``.
        device: the device to compute on (``cuda:LOCAL_RANK`` for a CUDA run under ``torchrun``).
        barrier: waits for every rank (``None`` with one process).
        close: destroys the process group if :func:`join_process_group` created it, else does nothing.
    """

    rank: int
    world_size: int
    device: str
    barrier: Callable[[], None] | None
    close: Callable[[], None]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join_process_group(device: str | None = None) -> ProcessGroup:
    """Join the process group of ``torchrun`` (``WORLD_SIZE`` > 1), or describe the single process.

    gloo for CPU devices and NCCL for CUDA; an already initialised group is reused (and left
    open by :attr:`ProcessGroup.close`). ``device=None`` means ``cuda:LOCAL_RANK`` when CUDA is
    available, else ``cpu``.
    """
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = (f"cuda:{local}" if world_size > 1 else "cuda") if torch.cuda.is_available() else "cpu"
    if world_size <= 1:
        return ProcessGroup(0, 1, str(device), None, lambda: None)
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(torch.device(device).index if torch.device(device).index is not None else local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), str(device), dist.barrier,
                        dist.destroy_process_group if created else (lambda: None))


def is_main_process() -> bool:
    """True unless this is a ``torch.distributed`` rank other than 0."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
