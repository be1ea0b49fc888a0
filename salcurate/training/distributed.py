"""Many processes through PyTorch's own engine: ``torchrun`` sets the environment, this joins it.

``torchrun --nproc_per_node 4 -m salcurate retrain ...`` starts one process per GPU with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`setup` joins the process group (NCCL on
CUDA, gloo on CPU).  Without those variables everything is one process and nothing is joined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from salcurate.errors import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0


def env_info() -> DistInfo:
    """The rank and world size ``torchrun`` put in the environment (one process when unset)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers; launch with torchrun") from None
    return DistInfo(rank=rank, world=world, local_rank=local)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns the info and this rank's device."""
    info = env_info()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise InputError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs here; "
                             "start at most one process per GPU (`torchrun --nproc_per_node N`)")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    log.info("joined process group: rank %d of %d (%s)", info.rank, info.world, dist.get_backend())
    return info, device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[tuple[DistInfo, torch.device]]:
    """:func:`setup` on entry, :func:`teardown` on exit: ``with session(device) as (info, device):``."""
    info, device = setup(device)
    try:
        yield info, device
    finally:
        teardown(info)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum over ranks (the tensor itself in one process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
