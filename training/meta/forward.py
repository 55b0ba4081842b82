"""The model's forward as the meta step runs it: under optional bf16 autocast with float32 outputs, and the same
forward with substituted parameters and cloned buffers (BatchNorm running statistics stay untouched)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["Tensors", "forward", "functional_forward"]

Tensors = dict[str, torch.Tensor]


def forward(
    model: nn.Module | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        h, z = model(x)
    return full(h), full(z)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def functional_forward(module: nn.Module, params: Tensors, x: torch.Tensor, autocast: bool):
    """``module(x)`` with ``params`` substituted and cloned buffers: BN running statistics stay untouched."""
    buffers = {k: b.clone() for k, b in module.named_buffers()}
    return forward(lambda inp: functional_call(module, (params, buffers), (inp,)), x, autocast)
