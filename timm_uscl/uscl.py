"""Ultrasound-pretrained backbones in timm's registry (``timm.list_modules()`` shows ``uscl``).

The architectures (:mod:`.archs`) are timm's own ResNets built through the public :func:`build_model_with_cfg`,
so every timm feature works (``features_only``, ``forward_intermediates``, ``in_chans=1``, ...). The pretrained
cfgs are generated from :data:`timm_uscl.weights.WEIGHTS`; loading pretrained weights goes through
:func:`timm_uscl.download.fetch_weights`, which pins the revision and verifies the sha256 before timm reads a byte.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.resnet import ResNet

from .archs import ARCHITECTURES, ArchSpec, pretrained_cfg_for, stock_architecture
from .download import fetch_weights
from .weights import WEIGHTS, get_weights

__all__ = ["ARCHITECTURES", "ArchSpec", "stock_architecture", "resnet18_uscl", "resnet50_uscl"]

# Must be defined before the @register_model functions: the decorator reads the module's default_cfgs.
default_cfgs = generate_default_cfgs({name: pretrained_cfg_for(entry) for name, entry in WEIGHTS.items()})


def _uses_registry_weights(pretrained_cfg: Any, overlay: dict | None) -> bool:
    """True when the weights would come from our table (not a user override or an ``hf-hub:`` repo)."""
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        return False
    return not any((overlay or {}).get(k) for k in ("file", "url", "hf_hub_id", "state_dict", "source"))


def _create(arch: str, pretrained: bool, **kwargs: Any) -> ResNet:
    if pretrained and _uses_registry_weights(kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")):
        default = get_pretrained_cfg(arch)
        tag = kwargs.get("pretrained_cfg") or (default.tag if default is not None else None)  # a tag, or the default
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
