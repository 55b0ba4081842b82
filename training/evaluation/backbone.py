"""The backbone under evaluation: any timm name, export, safetensors file or trainer checkpoint, with its
normalization, and the part of it the reference fine-tune trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import get_arch_name
from torch import nn

import timm_uscl  # noqa: F401  (registers the *_uscl archs so their names resolve)
from timm_uscl.convert import read_state_dict
from timm_uscl.errors import CheckpointFormatError

from ..checkpoint import load_training_state
from ..config import flat_config
from ..errors import EvaluationError

__all__ = ["Backbone", "TimmModel", "load_backbone", "last_block", "Normalize"]

TimmModel = Any
"""A timm model: an ``nn.Module`` with attributes (``pretrained_cfg``, ``feature_info``, ``reset_classifier``)
that ``nn.Module``'s typing cannot see."""


@dataclass
class Backbone:
    """A headless timm model with its weights loaded, plus what the protocols need to rebuild it per fold."""

    name: str
    arch: str
    model: TimmModel  # num_classes=0, on CPU; deep-copied per fold
    mean: tuple[float, ...]
    std: tuple[float, ...]
    smp_encoder: str | None  # "tu-<name>" when smp can build the encoder, weights included, from timm's registry
    pretrained: bool


def load_backbone(name_or_path: str, arch: str | None = None, pretrained: bool = True) -> Backbone:
    """A timm name (``resnet18``, ``resnet18_uscl.<tag>``), ``hf-hub:``/``local-dir:`` name, or safetensors file."""
    path = Path(name_or_path)
    if path.suffix == ".pt" and path.is_file():
        return _trainer_checkpoint(path)
    if name_or_path.endswith(".safetensors") or path.is_file():
        if arch is None:
            raise EvaluationError(
                f"{path}: a checkpoint needs --arch, the timm architecture it holds (e.g. resnet18_uscl)"
            )
        if not timm.is_model(arch):
            raise EvaluationError(f"--arch {arch!r} is not a timm architecture (import the plugin that registers it)")
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        _load_backbone_weights(model, path, arch)
        return _backbone(str(path), get_arch_name(arch), model, None, True)
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        exported: TimmModel = timm.create_model(name_or_path, pretrained=True, num_classes=0)
        return _backbone(name_or_path, exported.pretrained_cfg["architecture"], exported, None, True)
    if not timm.is_model(name_or_path):
        raise EvaluationError(
            f"unknown model {name_or_path!r}: give a timm model name, an hf-hub:/local-dir: name, "
            "or a .safetensors checkpoint with --arch"
        )
    model = timm.create_model(name_or_path, pretrained=pretrained, num_classes=0)
    return _backbone(name_or_path, get_arch_name(name_or_path), model, f"tu-{name_or_path}", pretrained)


def _trainer_checkpoint(path: Path) -> Backbone:
    """The backbone of a ``timm-uscl pretrain`` checkpoint (``last.pt``), with the run's own mean/std."""
    state = load_training_state(path)
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointFormatError(f"{path}: not a timm-uscl pretrain checkpoint (no model/config/step entries)")
    run = flat_config(state["config"])
    stats = {
        "mean": (run["mean"],) * 3,
        "std": (run["std"],) * 3,
        "input_size": (3, run["image_size"], run["image_size"]),
    }
    model = timm.create_model(run["arch"], pretrained=False, num_classes=0, pretrained_cfg_overlay=stats)
    model.load_state_dict({k[len("backbone.") :]: v for k, v in state["model"].items() if k.startswith("backbone.")})
    return _backbone(f"{path} (step {state['step']})", get_arch_name(run["arch"]), model, None, True)


def _backbone(name: str, arch: str, model: TimmModel, smp_encoder: str | None, pretrained: bool) -> Backbone:
    cfg = resolve_model_data_config(model)
    return Backbone(name, arch, model.eval(), tuple(cfg["mean"]), tuple(cfg["std"]), smp_encoder, pretrained)


def _load_backbone_weights(model: TimmModel, path: Path, arch: str) -> None:
    """Load a timm-keyed backbone state dict; a classifier in the file is ignored, any other mismatch is an error."""
    if not path.is_file():
        raise EvaluationError(f"{path}: no such checkpoint file")
    if path.suffix != ".safetensors":
        raise CheckpointFormatError(
            f"{path}: only a .safetensors backbone state dict or a `timm-uscl pretrain` checkpoint (.pt) is "
            "accepted; convert other files with `timm-uscl convert` and pass local-dir:DIR"
        )
    state = read_state_dict(path)
    head = model.pretrained_cfg.get("classifier") or ""
    state = {k: v for k, v in state.items() if not (head and k.startswith(head + "."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path}: keys do not match timm arch {arch!r} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "save the backbone's timm state_dict() or pass the right --arch"
        )


def last_block(model: TimmModel) -> nn.Module:
    """The last block of the last stage (``layer4[-1]`` for ResNet): all the reference fine-tune trains."""
    stage = model.get_submodule(model.feature_info[-1]["module"])
    blocks = getattr(stage, "blocks", stage)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return blocks[-1]
    return blocks


class Normalize:
    """uint8 or 0–255 float pixels -> the model's pretrained_cfg normalization."""

    def __init__(self, backbone: Backbone, device: torch.device) -> None:
        self.mean = 255 * torch.tensor(backbone.mean, device=device).view(1, -1, 1, 1)
        self.std = 255 * torch.tensor(backbone.std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std
