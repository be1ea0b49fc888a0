"""Many processes through PyTorch's own engine: ``torchrun`` sets the environment, this joins it.

``torchrun --nproc_per_node 4 -m salcurate retrain ...`` starts one process per GPU with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`setup` joins the process group (NCCL on
CUDA, gloo on CPU, or the backend named by the environment variable ``SALCURATE_DIST_BACKEND``),
also for one process under torchrun.  Without those variables everything is one process and
nothing is joined.  A backend this torch build lacks is an InputError (:func:`backend_for`).
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


#: The environment variable that chooses the process group's backend (default: nccl on CUDA, gloo on CPU).
BACKEND_ENV = "SALCURATE_DIST_BACKEND"


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: Started by torchrun (its variables are set), even as one process.
    launched: bool = False

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
    except ValueError:
        raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers; launch with torchrun") from None
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    return DistInfo(rank=rank, world=world, local_rank=local, launched=launched)


def backend_for(device: torch.device) -> str:
    """The process group's backend: ``SALCURATE_DIST_BACKEND``, else nccl on CUDA and gloo on CPU.

    Raises InputError (one line) when torch.distributed or that backend is not in this torch
    build, or nccl is asked for on the CPU.
    """
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


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns the info and this rank's device."""
    info = env_info()
    if not info.enabled:
        return info, device
    backend = backend_for(device)
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise InputError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs here; "
                             "start at most one process per GPU (`torchrun --nproc_per_node N`)")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
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
