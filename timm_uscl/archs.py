"""The plugin's architectures and the timm pretrained cfg of a weights-table row (a leaf: no Hub, no registry).

Each plugin architecture is timm's own ResNet under a new name (``resnet18_uscl``), so timm's ``resnet18`` is
never overwritten; an export names the stock architecture (:func:`stock_architecture`), so plain timm loads it
without this plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models.resnet import BasicBlock, Bottleneck

from .weights import WeightsEntry

__all__ = ["ARCHITECTURES", "ArchSpec", "stock_architecture", "pretrained_cfg_for"]


@dataclass(frozen=True)
class ArchSpec:
    """A plugin architecture and the stock timm architecture with the same weights layout."""

    stock: str
    block: type
    layers: tuple[int, ...]
    pool_ratio: int = 32


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18_uscl": ArchSpec("resnet18", BasicBlock, (2, 2, 2, 2)),
    "resnet50_uscl": ArchSpec("resnet50", Bottleneck, (3, 4, 6, 3)),
}


def stock_architecture(arch: str) -> str:
    """The timm architecture an export names, so plain timm loads it without this plugin."""
    return ARCHITECTURES[arch].stock if arch in ARCHITECTURES else arch


def pretrained_cfg_for(entry: WeightsEntry) -> dict[str, Any]:
    """The timm pretrained cfg of a weights-table row (headless: features out, ``num_classes=0``)."""
    spec = ARCHITECTURES[entry.arch]
    side = entry.input_size[-1] // spec.pool_ratio
    return dict(
        hf_hub_id=entry.pinned_repo_id,
        hf_hub_filename=entry.filename,
        num_classes=0,
        input_size=entry.input_size,
        pool_size=(max(side, 1), max(side, 1)),
        crop_pct=1.0,
        crop_mode="squash",  # a square resize of the whole frame, as in pretraining (no centre crop)
        interpolation="bilinear",
        mean=entry.mean,
        std=entry.std,
        first_conv="conv1",
        classifier="fc",
        license=entry.license,
        description=entry.description,
        paper_ids=", ".join(entry.paper_ids),
        notes=(f"pretraining data: {entry.pretrain_data} ({entry.pretrain_data_license})",),
    )
