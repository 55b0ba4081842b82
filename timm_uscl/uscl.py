"""Ultrasound-pretrained backbones in timm's registry (``timm.list_modules()`` shows ``uscl``).

The architectures (:mod:`.archs`) are timm's own ResNets built through the public :func:`build_model_with_cfg`,
so every timm feature works (``features_only``, ``forward_intermediates``, ``in_chans=1``, ...). The pretrained
cfgs are generated from :data:`timm_uscl.weights.WEIGHTS`, and the registry is honest about them: every tag is
registered (``get_pretrained_cfg``, ``create_model`` without weights), but ``timm.list_pretrained`` lists a tag
only when its weights can load here, i.e. it is published (fetched at its pinned revision) or installed in the
local store (:mod:`.store`). Loading verifies the sha256 before timm reads a byte; a tag without weights raises
:class:`~timm_uscl.errors.WeightsNotPublishedError` saying how to obtain them, never random weights.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import ResNet

from .archs import ARCHITECTURES, ArchSpec, pretrained_cfg_for, stock_architecture
from .download import fetch_weights
from .errors import UnknownWeightsError, WeightsNotPublishedError
from .names import DEFAULT_TAGS, check_user_name
from .store import Installed, add, find_installed, installed, installed_entry, store_root, verified
from .weights import WEIGHTS, WeightsEntry

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "stock_architecture",
    "resnet18_uscl",
    "resnet50_uscl",
    "refresh_registry",
    "install",
]


def _as_installed(entry: WeightsEntry, found: Installed | None) -> WeightsEntry:
    """The row with the installed export's preprocessing: loading by name gives what the weights were made with."""
    return entry if found is None else replace(entry, input_size=found.input_size, mean=found.mean, std=found.std)


def _registry_cfg(entry: WeightsEntry, found: Installed | None) -> dict[str, Any]:
    """A tag's timm cfg; it "has weights" (timm lists it as pretrained) only when published or installed."""
    cfg = pretrained_cfg_for(_as_installed(entry, found))
    if not entry.published:
        cfg.update(hf_hub_id=None, hf_hub_filename=None)
    if found is not None:
        cfg["file"] = str(found.weights)
    return cfg


def _default_cfgs() -> dict:
    """Every table row, then every installed user tag; each architecture's fixed default tag (:data:`DEFAULT_TAGS`)
    first. timm would promote the first tag WITH weights (an installed one) over even a ``*``-marked default, so the
    order is set after grouping: the bare name never depends on what happens to be installed."""
    found = installed()
    cfgs: dict[str, Any] = {name: _registry_cfg(entry, found.get(name)) for name, entry in WEIGHTS.items()}
    for name, copy in found.items():
        if name not in WEIGHTS:
            cfgs[name] = _registry_cfg(installed_entry(copy), copy)
    grouped = generate_default_cfgs(cfgs)
    for arch, default in grouped.items():
        default.tags.remove(DEFAULT_TAGS[arch])
        default.tags.appendleft(DEFAULT_TAGS[arch])
    return grouped


# Must be defined before the @register_model functions: the decorator reads the module's default_cfgs.
default_cfgs = _default_cfgs()


def _uses_registry_weights(pretrained_cfg: Any, overlay: dict | None) -> bool:
    """True when the weights would come from our table (not a user override or an ``hf-hub:`` repo)."""
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        return False
    return not any((overlay or {}).get(k) for k in ("file", "url", "hf_hub_id", "state_dict", "source"))


def _entry(name: str) -> WeightsEntry:
    """A table row, or an installed user tag's facts (its own record); an unknown name says how to get it."""
    if name in WEIGHTS:
        return WEIGHTS[name]
    check_user_name(name)
    found = find_installed(name)
    if found is None:
        known = ", ".join([*WEIGHTS, *(k for k in installed() if k not in WEIGHTS)])
        raise UnknownWeightsError(
            f"unknown pretrained tag {name!r}: not built in and not installed in the local weights store "
            f"({store_root()}); known tags: {known}. If it is your own, install its export first: "
            f"`timm-uscl install EXPORT` (see `timm-uscl list`)."
        )
    return installed_entry(found)


def _weights_source(entry: WeightsEntry, cache_dir: str | os.PathLike | None, bare: bool) -> dict[str, Any]:
    """The cfg overlay that makes timm load the tag's verified weights: installed copy first, then the Hub."""
    found = find_installed(entry.name)
    if found is not None:
        cfg = pretrained_cfg_for(_as_installed(entry, found))
        return {"file": str(verified(found)), **{k: cfg[k] for k in ("input_size", "pool_size", "mean", "std")}}
    if entry.published:
        return {"file": str(fetch_weights(entry, cache_dir=cache_dir))}
    default = (
        f"`{entry.arch}` alone means its default tag {entry.name} (fixed, as in timm; never another installed "
        f"tag): name the tag you want, `{entry.arch}.<tag>` (see `timm-uscl list`). "
        if bare
        else ""
    )
    raise WeightsNotPublishedError(
        f"{default}{entry.name}: the weights of this tag are not published on the Hub yet and not installed in the "
        f"local weights store ({store_root()}), so pretrained=True cannot load them. {entry.how_to_obtain} To load "
        f"an export by this name (offline too): `timm-uscl install EXPORT --tag {entry.name}`."
    )


def _create(arch: str, pretrained: bool, **kwargs: Any) -> ResNet:
    bare = not kwargs.get("pretrained_cfg")
    if bare:  # the fixed default tag, whatever timm's registry was rebuilt with
        kwargs["pretrained_cfg"] = DEFAULT_TAGS[arch]
    if pretrained and _uses_registry_weights(kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")):
        tag = kwargs["pretrained_cfg"]
        source = _weights_source(_entry(f"{arch}.{tag}"), kwargs.get("cache_dir"), bare)
        kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), **source}
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


def refresh_registry() -> None:
    """Rebuild the tags' cfgs from the weights table and the local store, and register them again.

    timm has no API to change a registered cfg, so the architectures are registered again through the public
    ``register_model`` (timm's "Overwriting ... in registry" warning is expected here and silenced).
    """
    global default_cfgs
    default_cfgs = _default_cfgs()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Overwriting \w+_uscl in registry")
        for entrypoint in (resnet18_uscl, resnet50_uscl):
            register_model(entrypoint)


def install(export_dir: str | os.PathLike, tag: str | None = None, overwrite: bool = False) -> Path:
    """Install an export into the local weights store, so ``create_model(tag, pretrained=True)`` loads it by name.

    The export is validated first (:func:`timm_uscl.export_folder.check_export`); ``tag`` defaults to the one it
    records: a user tag (``<arch>.<your tag>``) of any valid name, or a built-in tag for that tag's own weights.
    Returns the installed folder. The registry of this process is refreshed at once; other processes see
    the tag when they import timm_uscl.
    """
    folder = add(export_dir, tag, overwrite)
    refresh_registry()
    return folder
