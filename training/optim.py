"""The optimizers and learning-rate schedules of the reference recipes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the config validates against the tables below, so it imports this module
    from .config import TrainConfig

__all__ = ["OPTIMIZERS", "SCHEDULES", "lr_factor", "build_optimizer", "build_scheduler"]

OPTIMIZERS = ("sgd", "adam")  # sgd: Meta-USCL, SimCLR (the only one the meta step's lookahead mirrors); adam: USCL
SCHEDULES = ("metauscl", "uscl", "constant")  # lr_factor's branches


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The per-epoch lr multiplier of the reference schedules."""
    warm, total = config.warmup_epochs, config.epochs
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "uscl":  # USCL: constant for `warm` epochs, then cosine over the whole run
        return 1.0 if epoch < warm else 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(total, 1)))
    if epoch < warm:  # Meta-USCL train.py:44-53: 0.1 + 0.9 exp(-5 (1 - e/warm)^2)
        return 0.1 + 0.9 * math.exp(-5 * (1 - epoch / warm) ** 2)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(total - warm, 1)))


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Meta-USCL, SimCLR; the only optimizer the meta step's lookahead mirrors) or Adam (USCL)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch with :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(config, epoch))
