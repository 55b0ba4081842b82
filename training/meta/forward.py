"""The model's forward as the meta step runs it: under optional bf16 autocast with float32 outputs, once per
BatchNorm batch (both views together, or each view apart), and the same forward with substituted parameters and
cloned buffers (BatchNorm running statistics stay untouched)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import MetaConfigError
from .config import BN_VIEWS

__all__ = ["Tensors", "bn_batches", "forward", "forward_batches", "functional_forward"]

Tensors = dict[str, torch.Tensor]
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def bn_batches(x1: torch.Tensor, x2: torch.Tensor, bn_views: str) -> tuple[torch.Tensor, ...]:
    """The inputs of the separate forwards of one pair batch, i.e. its BatchNorm batches.

    ``"per_view"`` (the reference, MU train.py:129-130): ``(x1, x2)``, each view forwarded alone, so BatchNorm
    normalises each view with that view's own batch statistics. ``"joint"`` (SimCLR / lightly style):
    ``(cat(x1, x2),)``, one forward whose statistics cover both views. The two are different algorithms.
    """
    if bn_views == "per_view":
        return (x1, x2)
    if bn_views == "joint":
        return (torch.cat([x1, x2]),)
    raise MetaConfigError(
        f"bn_views={bn_views!r} is not a BatchNorm batching: use one of {', '.join(BN_VIEWS)} (per_view: the reference)"
    )


def forward(model: nn.Module | Forward, x: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        h, z = model(x)
    return full(h), full(z)


def forward_batches(
    model: nn.Module | Forward, batches: Sequence[torch.Tensor], autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, z)`` of the batches forwarded one after the other, rows concatenated in batch order."""
    outs = [forward(model, x, autocast) for x in batches]
    if len(outs) == 1:
        return outs[0]
    h, z = zip(*outs)
    return torch.cat(h), torch.cat(z)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def functional_forward(module: nn.Module, params: Tensors, batches: Sequence[torch.Tensor], autocast: bool):
    """`forward_batches` of ``module`` with ``params`` substituted, on one clone of its buffers shared by the
    batches: BN running statistics stay untouched (train-mode outputs do not read them)."""
    buffers = {k: b.clone() for k, b in module.named_buffers()}
    return forward_batches(lambda inp: functional_call(module, (params, buffers), (inp,)), batches, autocast)
