"""Distributed helpers for the contrastive and meta steps; every one is the identity on a single process.

- `gather`: autograd-aware all_gather (solo-learn / lightly ``GatherLayer``), so NT-Xent can use the negatives of
  every rank while gradients still reach the rank that produced them. Works with gloo (CPU) and NCCL.
- `all_reduce_sum`: autograd-aware sum across ranks (the global normaliser of the pair weights).
- `all_reduce_mean_`: in-place gradient averaging for modules that are not wrapped in DDP (CMW-Net, whose
  hypergradient is computed by hand outside DDP's reducer).
- `unwrap`: the local module behind a DDP / compiled wrapper, for `torch.func.functional_call`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["is_distributed", "world_size", "rank", "gather", "all_reduce_sum", "all_reduce_mean_", "unwrap"]


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
