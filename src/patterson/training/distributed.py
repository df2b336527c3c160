"""Process-group setup for ``torchrun``: gloo on CPU, nccl on GPU; one process is also a valid 'group'."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from patterson.errors import PattersonError

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, its device, and whether it set up the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes checkpoints."""
        return self.rank == 0


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda`` without CUDA is an error."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PattersonError("device 'cuda' was asked for but CUDA is not available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup_distributed(preference: str = "auto") -> DistEnv:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment), or run alone.

    The backend is nccl when this process trains on a GPU and gloo otherwise. A group that already exists
    (set up by the caller) is used as it is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_available() and dist.is_initialized():
        device = pick_device(preference, local_rank)
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=False)
    device = pick_device(preference, local_rank)
    if world <= 1:
        return DistEnv(device=device)
    if not dist.is_available():
        raise PattersonError("this PyTorch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined the %s group on %s", rank, world, backend, device)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=True)


def teardown_distributed(env: DistEnv) -> None:
    """Leave the group if :func:`setup_distributed` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a few floats over all processes (float64)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    """Wait for all processes."""
    if env.distributed:
        dist.barrier()
