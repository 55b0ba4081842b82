"""Backbone + projection head (Meta-USCL ``model.py``) and CMW-Net, the pair-weighting net.

``ContrastiveModel(x) -> (h, z)``: h is the globally pooled backbone feature (what CMW-Net sees and what is
exported), z the projection used by NT-Xent. Any timm architecture works, including the plugin's own
(``resnet18_uscl`` once ``timm_uscl`` is imported), because the backbone is created with ``num_classes=0``.
"""

from __future__ import annotations

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .errors import ConfigError

__all__ = ["INITS", "ProjectionHead", "ContrastiveModel", "CMWNet", "torchvision_init_"]


class ProjectionHead(nn.Module):
    """``l1: Linear(d, d) -> ReLU -> l2: Linear(d, out_dim)`` (Meta-USCL; no BatchNorm, unlike lightly's)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.l1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.ReLU()  # a module, not torch.relu: the meta step's tangent pass linearises leaf modules
        self.l2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(h)))


INITS = ("timm", "torchvision")


def torchvision_init_(backbone: nn.Module) -> None:
    """Start a timm ResNet as torchvision's ResNet starts (the reference's backbone, ``zero_init_residual=False``).

    timm's ResNet init already is torchvision's rule for every other tensor: convolutions kaiming_normal_
    (fan_out, relu), BatchNorm weight 1 and bias 0 (downsample BatchNorm included), no convolution biases.
    The one difference is timm's ``zero_init_last=True``: the last BatchNorm weight of every residual branch
    starts at 0, so each block starts as the identity. Here it is set back to 1. Nothing is drawn, so the
    same seed gives the same convolution weights under both inits.
    """
    if not isinstance(backbone, ResNet):
        raise ConfigError(
            f"init='torchvision' is torchvision's ResNet initialisation; the backbone is a "
            f"{type(backbone).__name__}, not a timm ResNet: use init='timm'"
        )
    for block in backbone.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            last: nn.Module = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            if isinstance(last, nn.modules.batchnorm._NormBase) and last.weight is not None:
                nn.init.ones_(last.weight)


class ContrastiveModel(nn.Module):
    """A timm backbone without classifier, followed by a `ProjectionHead`; ``forward`` returns ``(h, z)``.

    ``backbone`` is a timm model name (created with ``num_classes=0`` so its output is the pooled feature) or a
    ready module exposing ``num_features`` (tests use a tiny CNN). ``init`` is how a ResNet backbone starts from
    scratch: ``"timm"`` as timm creates it (the last BatchNorm weight of each residual branch zeroed), or
    ``"torchvision"`` as the reference's torchvision ResNet (`torchvision_init_`; ResNets only, and never with
    ``pretrained=True``, whose weights it would overwrite). The head is ``nn.Linear``'s default init, as the
    reference's.
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
        if init not in INITS:
            raise ConfigError(f"init={init!r}: choose timm or torchvision")
        if pretrained and init != "timm":
            raise ConfigError(f"init={init!r} starts from scratch, pretrained=True loads weights: pass init='timm'")
        if isinstance(backbone, str):
            backbone = timm.create_model(backbone, num_classes=0, pretrained=pretrained, **backbone_kwargs)
        if init == "torchvision":
            torchvision_init_(backbone)
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
