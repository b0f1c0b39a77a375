"""Training on several processes with `torchrun`: the process group and the few collectives
the trainer needs; without torchrun a world of one, where each function is a no-op.

    torchrun --nproc_per_node 4 -m nmt train CONFIG        # one machine, 4 processes

NCCL between GPUs, gloo between CPU processes. Rank 0 decides (run directory,
tokenizers, validation, when to stop); the others follow its broadcasts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from nmt.errors import NmtError

# Rank 0 validates while the others wait in a collective: allow for a long validation.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


ALONE = World()  # a process started without torchrun


def init(dev: torch.device) -> tuple[World, torch.device]:
    """The world torchrun describes in the environment, and this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if size == 1:
        return ALONE, dev
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return World(dist.get_rank(), size, local_rank), dev


class RankFailure(NmtError):
    """A user-facing error raised on rank 0, reported with its message on every rank."""


def on_main(world: World, work: Callable[[], Any]) -> Any:
    """`work()` on rank 0, its result on every rank; an error there is raised on all
    ranks (with its message), so no rank waits forever for a rank that failed."""
    result, failure = None, None
    if world.is_main:
        try:
            result = work()
        except (ValueError, OSError) as err:
            if not world.distributed:
                raise
            failure = err
    result, message = broadcast((result, failure and str(failure)), world)
    if message is not None:
        raise failure if failure is not None else RankFailure(message)
    return result


def wrap(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The module DistributedDataParallel-wrapped across the world (itself alone)."""
    if not world.distributed:
        return module
    # a module on one GPU names its device; a CPU module, none
    ids = [device] if device.index is not None else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def close(world: World, *, wait: bool = True) -> None:
    """Leaves the process group; `wait` (a normal end) first waits for every rank, so
    that nobody tears down connections a slower rank still uses (gloo aborts then)."""
    if world.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's `value` (any picklable object), on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, world: World) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum over ranks, in place; on GPUs it stays on the device (no host sync)."""
    if world.distributed:
        dist.all_reduce(tensor)
    return tensor
