"""Backbone + projection head (Meta-USCL ``model.py``) and CMW-Net, the pair-weighting net.

``ContrastiveModel(x) -> (h, z)``: h is the globally pooled backbone feature (what CMW-Net sees and what is
exported), z the projection used by NT-Xent. Any timm architecture works, including the plugin's own
(``resnet18_uscl`` once ``timm_uscl`` is imported), because the backbone is created with ``num_classes=0``.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

__all__ = ["ProjectionHead", "ContrastiveModel", "CMWNet"]


class ProjectionHead(nn.Module):
    """``l1: Linear(d, d) -> ReLU -> l2: Linear(d, out_dim)`` (Meta-USCL; no BatchNorm, unlike lightly's)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.l1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.ReLU()  # a module, not torch.relu: the meta step's tangent pass linearises leaf modules
        self.l2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(h)))


class ContrastiveModel(nn.Module):
    """A timm backbone without classifier, followed by a `ProjectionHead`; ``forward`` returns ``(h, z)``.

    ``backbone`` is a timm model name (created with ``num_classes=0`` so its output is the pooled feature) or a
    ready module exposing ``num_features`` (tests use a tiny CNN).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        feat_dim: int = 128,
        pretrained: bool = False,
        init: str = "timm",
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        if init != "timm":
            raise NotImplementedError(f"init={init!r}")
        if isinstance(backbone, str):
            backbone = timm.create_model(backbone, num_classes=0, pretrained=pretrained, **backbone_kwargs)
        self.backbone = backbone
        self.num_features = int(backbone.num_features)  # type: ignore[arg-type]  # a timm model's int attribute
        self.head = ProjectionHead(self.num_features, self.num_features, feat_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x).flatten(1)  # flatten, not squeeze: batch size 1 stays 2-D (the reference's bug)
        return h, self.head(h)


class CMWNet(nn.Module):
    """``Linear(2d, 10) -> ReLU -> Linear(10, 1) -> sigmoid`` on ``cat(h_i, h_j)``: one weight in (0, 1) per pair."""

    def __init__(self, in_dim: int, hidden_dim: int = 10) -> None:
        super().__init__()
        self.l1 = nn.Linear(in_dim, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, 1)

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.l2(torch.relu(self.l1(torch.cat([h1, h2], dim=1))))).squeeze(1)
