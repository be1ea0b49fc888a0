"""Many processes through PyTorch's own engine: ``torchrun`` sets the environment, this joins it.

``torchrun --nproc_per_node 4 -m salcurate retrain ...`` (or ``score-coarse``, ``score-fine``,
``score-evidence``) starts one process per GPU with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``
set; :func:`setup` joins the process group (NCCL on CUDA, gloo on CPU, or the backend named by
the environment variable ``SALCURATE_DIST_BACKEND``), also for one process under torchrun, and
moves a CUDA device to ``cuda:LOCAL_RANK``.  Without those variables everything is one process,
nothing is joined and torch is not even imported (:func:`env_info` reads the environment only).
A backend this torch build lacks is an InputError (:func:`backend_for`).

Training (``retrain``) uses it for DistributedDataParallel; the per-sample scoring commands use
it to split their samples between ranks (``salcurate.data.workarea.shard_work``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from salcurate.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


#: The environment variable that chooses the process group's backend (default: nccl on CUDA, gloo on CPU).
BACKEND_ENV = "SALCURATE_DIST_BACKEND"


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: Started by torchrun (its variables are set), even as one process.
    launched: bool = False
    #: Processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``).
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.launched

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
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        raise InputError("WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers; "
                         "launch with torchrun") from None
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    return DistInfo(rank=rank, world=world, local_rank=local, launched=launched, local_world=max(1, local_world))


def backend_for(device: torch.device) -> str:
    """The process group's backend: ``SALCURATE_DIST_BACKEND``, else nccl on CUDA and gloo on CPU.

    Raises InputError (one line) when torch.distributed or that backend is not in this torch
    build, or nccl is asked for on the CPU.
    """
    import torch.distributed as dist

    asked = os.environ.get(BACKEND_ENV, "").strip().lower()
    name = asked or ("nccl" if device.type == "cuda" else "gloo")
    chosen = f"{BACKEND_ENV}={name}" if asked else f"the default on {device.type}"
    checks = {"nccl": "is_nccl_available", "gloo": "is_gloo_available", "mpi": "is_mpi_available",
              "ucc": "is_ucc_available"}
    if name not in checks:
        raise InputError(f"{BACKEND_ENV} must be one of {', '.join(checks)}, got {name!r}")
    if name == "nccl" and device.type != "cuda":
        raise InputError(f"the nccl backend ({chosen}) needs CUDA, but device is {device.type}; use gloo on the CPU",
                         param="device")
    available = dist.is_available() and bool(getattr(dist, checks[name], lambda: False)())
    if not available:
        other = f"set {BACKEND_ENV}=gloo" if name != "gloo" else "use nccl on CUDA"
        raise InputError(f"the {name} backend of torch.distributed ({chosen}) is not available in this torch build; "
                         f"{other}, or run one process without torchrun")
    return name


def setup(device: torch.device | str, *, timeout_s: float | None = None) -> tuple[DistInfo, torch.device | str]:
    """Join the process group when launched by torchrun; returns the info and this rank's device.

    ``timeout_s``: how long a collective (a barrier) waits for the slowest rank before it fails
    (torch's default when None).  Without torchrun nothing happens and ``device`` comes back as given.
    """
    info = env_info()
    if not info.enabled:
        return info, device
    import torch
    import torch.distributed as dist

    device = torch.device(device)
    backend = backend_for(device)
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise InputError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs here; "
                             "start at most one process per GPU (`torchrun --nproc_per_node N`)")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        timeout = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, timeout=timeout)
    log.info("joined process group: rank %d of %d (%s)", info.rank, info.world, dist.get_backend())
    return info, device


def teardown(info: DistInfo) -> None:
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: torch.device | str, *, timeout_s: float | None = None) -> Iterator[tuple[DistInfo, torch.device]]:
    """:func:`setup` on entry, :func:`teardown` on exit: ``with session(device) as (info, device):``.

    A process group that was joined before (by the caller) stays joined.
    """
    joined_before = False
    if env_info().enabled:
        import torch.distributed as dist

        joined_before = dist.is_available() and dist.is_initialized()
    info, device = setup(device, timeout_s=timeout_s)
    try:
        yield info, device  # type: ignore[misc]
    finally:
        if not joined_before:
            teardown(info)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum over ranks (the tensor itself in one process)."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every rank (nothing in one process)."""
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":  # the barrier's tensor on this rank's GPU, not on cuda:0
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
