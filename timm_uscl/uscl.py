"""Ultrasound-pretrained backbones in timm's registry (``timm.list_modules()`` shows ``uscl``).

The architectures are timm's own ResNets built through the public :func:`build_model_with_cfg`, so
every timm feature works (``features_only``, ``forward_intermediates``, ``in_chans=1``, ...). They get
new names (``resnet18_uscl``) so that timm's ``resnet18`` is never overwritten. The pretrained cfgs
are generated from :data:`timm_uscl.weights.WEIGHTS`; loading pretrained weights goes through
:func:`timm_uscl.hub.fetch_weights`, which pins the revision and verifies the sha256 before timm
reads a byte.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from .weights import WEIGHTS, WeightsEntry, get_weights

__all__ = ["ARCHITECTURES", "ArchSpec", "stock_architecture", "resnet18_uscl", "resnet50_uscl"]


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


# Must be defined before the @register_model functions: the decorator reads the module's default_cfgs.
default_cfgs = generate_default_cfgs({name: pretrained_cfg_for(entry) for name, entry in WEIGHTS.items()})


def _uses_registry_weights(pretrained_cfg: Any, overlay: dict | None) -> bool:
    """True when the weights would come from our table (not a user override or an ``hf-hub:`` repo)."""
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        return False
    return not any((overlay or {}).get(k) for k in ("file", "url", "hf_hub_id", "state_dict", "source"))


def _create(arch: str, pretrained: bool, **kwargs: Any) -> ResNet:
    if pretrained and _uses_registry_weights(kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")):
        from .hub import fetch_weights  # deferred: keeps `import timm_uscl` cheap

        tag = kwargs.get("pretrained_cfg") or get_pretrained_cfg(arch).tag  # a tag string, or the default
        entry = get_weights(f"{arch}.{tag}")
        path = fetch_weights(entry, cache_dir=kwargs.get("cache_dir"))
        kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), "file": str(path)}
    spec = ARCHITECTURES[arch]
    return build_model_with_cfg(ResNet, arch, pretrained, block=spec.block, layers=spec.layers, **kwargs)


@register_model
def resnet18_uscl(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with ultrasound contrastive pretraining (Meta-USCL / USCL / SimCLR tags)."""
    return _create("resnet18_uscl", pretrained, **kwargs)


@register_model
def resnet50_uscl(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with ultrasound contrastive pretraining."""
    return _create("resnet50_uscl", pretrained, **kwargs)
