"""Tiny networks for the meta-step tests: small enough for float64 finite differences, with BatchNorm."""

from __future__ import annotations

from torch import nn


class TinyCNN(nn.Sequential):
    num_features = 6

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
