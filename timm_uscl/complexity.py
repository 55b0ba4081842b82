"""Parameter count and multiply-accumulates of a backbone at one input size (what a model card states).

Why counted here rather than with a profiler dependency: a ResNet's cost is its convolutions and linear layers,
which forward hooks count exactly (output elements x kernel volume x input channels per group); BatchNorm, ReLU,
pooling and additions are left out, as in timm's published GMACs (fvcore counts them as negligible too).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["ModelSize", "model_size"]


class ModelSize(NamedTuple):
    params: int
    gmacs: float  # 1e9 multiply-accumulates for one image
    image_size: int


def model_size(model: nn.Module, input_size: tuple[int, int, int]) -> ModelSize:
    """Parameters, and GMACs of one forward pass of a ``(C, H, W)`` image (conv and linear layers)."""
    macs = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        per_output = weight[0].numel()  # in_channels / groups x kernel volume (conv), in_features (linear)
        macs += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return ModelSize(params=params, gmacs=macs / 1e9, image_size=input_size[-1])
