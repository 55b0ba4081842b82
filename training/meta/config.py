"""Settings and outputs of the meta step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["MetaStepConfig", "StepOutput"]


@dataclass(frozen=True)
class MetaStepConfig:
    temperature: float = 0.5
    interval: int = 1  # update CMW-Net every `interval` iterations (1 = the paper); weights are used every step
    hypergrad: Literal["auto", "linearised", "jvp", "double_backward"] = "auto"  # exact routes, module docstring
    lookahead: tuple[str, ...] | None = None  # parameter-name prefixes: APPROXIMATION, None = exact
    autocast: bool = False  # bf16 autocast for the backbone passes (losses stay in float32)
    gather: bool = True  # real step: negatives from all ranks
    # BatchNorm batches: each view forwarded apart (the reference, the default), or both views as one batch
    bn_views: Literal["per_view", "joint"] = "per_view"

    def due(self, step: int) -> bool:
        """Whether iteration ``step`` updates CMW-Net (and so needs a meta batch)."""
        return step % self.interval == 0


@dataclass
class StepOutput:
    loss: torch.Tensor  # the real step's loss on this rank, detached
    weights: torch.Tensor | None = None  # raw sigmoid pair weights (n,) used by the real step, detached
    meta_loss: torch.Tensor | None = None  # meta loss at θ', detached; None when CMW-Net was not updated
