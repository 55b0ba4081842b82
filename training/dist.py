"""Distributed setup and every collective the trainer uses; each collective is the identity on a single process.

Setup, once per process (:func:`timm_uscl.training.engine.pretrain` does it and passes the result down):

- `detect`: this process's :class:`Process` (rank, world size, device) from ``torchrun``'s environment and the
  configured device; starts nothing, so rank 0 can do slow work (decoding the online-evaluation set) before any
  other rank waits on it in a collective.
- `start_group` / `stop_group`: the process group (NCCL on GPUs, gloo on CPUs) when there are several ranks.

Collectives of the steps:

- `gather`: autograd-aware all_gather (solo-learn / lightly ``GatherLayer``), so NT-Xent can use the negatives of
  every rank while gradients still reach the rank that produced them. Works with gloo (CPU) and NCCL.
- `all_reduce_sum`: autograd-aware sum across ranks (the global normaliser of the pair weights).
- `all_reduce_mean_`: in-place gradient averaging for modules that are not wrapped in DDP (CMW-Net, whose
  hypergradient is computed by hand outside DDP's reducer).
- `unwrap`: the local module behind a DDP / compiled wrapper, for `torch.func.functional_call`.

Collectives of the loop (host-side agreement among ranks; one rank raising or stopping alone would hang the others):

- `any_rank` / `every_rank`: a flag OR-ed / AND-ed over ranks (stop together, take the same number of steps).
- `gather_objects`, `broadcast_object`: picklable values (checkpoint parts, weight hashes, a claim's outcome).
- `broadcast_buffers`: rank 0's buffers (BN statistics) on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Process",
    "detect",
    "start_group",
    "stop_group",
    "is_distributed",
    "world_size",
    "rank",
    "gather",
    "all_reduce_sum",
    "all_reduce_mean_",
    "unwrap",
    "any_rank",
    "every_rank",
    "gather_objects",
    "broadcast_object",
    "broadcast_buffers",
]


@dataclass(frozen=True)
class Process:
    """This process's place in the job, decided once: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device


def _device(setting: str, local_rank: int) -> torch.device:
    """``auto`` and ``cuda``: this node's GPU ``local_rank`` (``auto``: the CPU without one); else as written."""
    if setting in ("auto", "cuda"):
        if setting == "cuda" or torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return torch.device(setting)


def detect(device: str) -> Process:
    """Rank, world size and device from ``torchrun``'s variables (a single process without them); no collective."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    return Process(rank=rank, world=world, device=_device(device, int(os.environ.get("LOCAL_RANK", "0"))))


def start_group(process: Process) -> None:
    """The process group of a multi-process job (NCCL on GPUs, gloo on CPUs); nothing on a single process."""
    if process.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if process.device.type == "cuda" else "gloo")
        if process.device.type == "cuda":
            torch.cuda.set_device(process.device)


def stop_group() -> None:
    """Every rank reaches the end, then the group is closed (a rank leaving early would fail the others' last
    collective)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class GatherLayer(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0 (rank order), differentiably."""
    if not is_distributed():
        return x
    return torch.cat(GatherLayer.apply(x), dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks; its backward sums the gradients over ranks too."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


@torch.no_grad()
def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Average ``tensors`` over ranks in place (one flat all_reduce, no host sync)."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(chunk.view_as(t))


def unwrap(model: nn.Module) -> nn.Module:
    """The module that owns the parameters: strips DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):
            model = inner
        else:
            return model


def any_rank(flag: torch.Tensor) -> bool:
    """A boolean flag OR-ed over ranks (read on the host), so every rank stops together."""
    if is_distributed():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def every_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (``device``: where the collective's tensor lives, the NCCL GPU)."""
    if not is_distributed():
        return flag
    have = torch.tensor(int(flag), device=device)
    dist.all_reduce(have, op=dist.ReduceOp.MIN)
    return bool(have)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (picklable values; ``[obj]`` on a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable value)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BN running statistics, which stay per rank under DDP) copied into ``module``."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=src)
