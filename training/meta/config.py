"""Settings and outputs of the meta step, and the allowed values of its settings (one table each: the run config,
the meta step and the graph runner validate against these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

__all__ = ["BN_VIEWS", "GRAPH_MODES", "HYPERGRADS", "BnViews", "GraphMode", "Hypergrad", "MetaStepConfig", "StepOutput"]

# BatchNorm batches: each view forwarded apart (the reference) or both views as one batch (meta/forward.py)
BnViews = Literal["per_view", "joint"]
# the exact routes of the hypergradient (meta/step.py's docstring)
Hypergrad = Literal["auto", "linearised", "jvp", "double_backward"]
# plain and meta steps as CUDA graphs: where supported, always (or fail), never (meta/graphs.py)
GraphMode = Literal["auto", "on", "off"]
BN_VIEWS: tuple[str, ...] = get_args(BnViews)
HYPERGRADS: tuple[str, ...] = get_args(Hypergrad)
GRAPH_MODES: tuple[str, ...] = get_args(GraphMode)


@dataclass(frozen=True)
class MetaStepConfig:
    temperature: float = 0.5
    interval: int = 1  # update CMW-Net every `interval` iterations (1 = the paper); weights are used every step
    hypergrad: Hypergrad = "auto"  # exact routes, meta/step.py docstring
    lookahead: tuple[str, ...] | None = None  # parameter-name prefixes: APPROXIMATION, None = exact
    autocast: bool = False  # bf16 autocast for the backbone passes (losses stay in float32)
    gather: bool = True  # real step: negatives from all ranks
    # BatchNorm batches: each view forwarded apart (the reference, the default), or both views as one batch
    bn_views: BnViews = "per_view"

    def due(self, step: int) -> bool:
        """Whether iteration ``step`` updates CMW-Net (and so needs a meta batch)."""
        return step % self.interval == 0


@dataclass
class StepOutput:
    loss: torch.Tensor  # the real step's loss on this rank, detached
    weights: torch.Tensor | None = None  # raw sigmoid pair weights (n,) used by the real step, detached
    meta_loss: torch.Tensor | None = None  # meta loss at θ', detached; None when CMW-Net was not updated
