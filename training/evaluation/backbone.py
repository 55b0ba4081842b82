"""The backbone under evaluation: any timm name, export, safetensors file or trainer checkpoint, with its
normalization, the sha256 of the weights file it came from, and the part of it the reference fine-tune trains.

Two guards run before any number is produced (:func:`check_finite`): a NaN or inf tensor, or finite weights
whose features are not finite (a negative BatchNorm variance), stop the run; otherwise they turn into
normal-looking accuracies (argmax of NaN is class 0) and, with ``--card``, into a model card.
"""

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
from timm_uscl.checksum import sha256_file

from ..checkpoint import load_training_state
from ..config import flat_config
from ..errors import EvaluationError
from .exported import load_export, load_weights

__all__ = ["Backbone", "TimmModel", "load_backbone", "check_finite", "last_block", "Normalize"]

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
    pretrained: bool
    weights_sha256: str | None = None  # of the weights file evaluated; None: a timm name or a trainer checkpoint
    init: str = "pretrained"  # or, for a random init: "torchvision" / "timm"


def load_backbone(
    name_or_path: str, arch: str | None = None, pretrained: bool = True, init: str = "torchvision"
) -> Backbone:
    """A timm name (``resnet18``, ``resnet18_uscl.<tag>``), ``hf-hub:``/``local-dir:`` export, safetensors file
    (with ``arch``) or ``timm-uscl pretrain`` checkpoint (``last.pt``). ``pretrained=False`` (a timm name only)
    is the random-init baseline, initialised as ``init`` says (:func:`_random_model`)."""
    path = Path(name_or_path)
    is_name = not name_or_path.startswith(("hf-hub:", "local-dir:")) and not path.exists()
    is_name = is_name and not name_or_path.endswith((".safetensors", ".pt"))
    if not pretrained and not is_name:
        raise EvaluationError(f"--random-init needs a timm architecture name, not the weights {name_or_path!r}")
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        model, weights = load_export(name_or_path)
        return _backbone(name_or_path, model.pretrained_cfg["architecture"], model, weights)
    if path.suffix == ".pt" and path.is_file():
        return _trainer_checkpoint(path)
    if not is_name:
        if arch is None:
            raise EvaluationError(
                f"{path}: a checkpoint needs --arch, the timm architecture it holds (e.g. resnet18_uscl)"
            )
        if not timm.is_model(arch):
            raise EvaluationError(f"--arch {arch!r} is not a timm architecture (import the plugin that registers it)")
        if not path.is_file() or path.suffix != ".safetensors":
            raise EvaluationError(
                f"{path}: {'not a file' if not path.is_file() else 'not a .safetensors file'}; give a .safetensors "
                "backbone state dict or a `timm-uscl pretrain` checkpoint (.pt); convert others with `timm-uscl "
                "convert` and pass local-dir:DIR"
            )
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        load_weights(model, path, arch, "save the backbone's timm state_dict() or pass the right --arch")
        return _backbone(str(path), get_arch_name(arch), model, path)
    if not timm.is_model(name_or_path):
        raise EvaluationError(
            f"unknown model {name_or_path!r}: give a timm model name, an hf-hub:/local-dir: name, "
            "or a .safetensors checkpoint with --arch"
        )
    if not pretrained:
        model, used = _random_model(name_or_path, init)
        return _backbone(name_or_path, get_arch_name(name_or_path), model, None, pretrained=False, init=used)
    model = timm.create_model(name_or_path, pretrained=True, num_classes=0)
    return _backbone(name_or_path, get_arch_name(name_or_path), model, None)


def _random_model(name: str, init: str) -> tuple[TimmModel, str]:
    """A random init: ``torchvision`` style (every BatchNorm weight 1; timm's ``zero_init_last=False``, the
    usual baseline of the papers) or ``timm`` style (each residual block's last BatchNorm weight 0)."""
    if init not in ("torchvision", "timm"):
        raise EvaluationError(f"--init {init!r}: choose torchvision or timm")
    if init == "torchvision":
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, zero_init_last=False), "torchvision"
        except TypeError:  # an architecture without residual zero-init: its only init is timm's
            pass
    return timm.create_model(name, pretrained=False, num_classes=0), "timm"


def _trainer_checkpoint(path: Path) -> Backbone:
    """The backbone of a ``timm-uscl pretrain`` checkpoint (``last.pt``), with the run's own mean/std."""
    state = load_training_state(path)
    run = flat_config(state["config"])
    stats = {
        "mean": (run["mean"],) * 3,
        "std": (run["std"],) * 3,
        "input_size": (3, run["image_size"], run["image_size"]),
    }
    model = timm.create_model(run["arch"], pretrained=False, num_classes=0, pretrained_cfg_overlay=stats)
    backbone = {k[len("backbone.") :]: v for k, v in state["model"].items() if k.startswith("backbone.")}
    try:
        model.load_state_dict(backbone)
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:200]
        raise EvaluationError(f"{path}: its backbone does not fit arch {run['arch']!r} ({reason})") from None
    return _backbone(f"{path} (step {state['step']})", get_arch_name(run["arch"]), model, None)


def _backbone(
    name: str, arch: str, model: TimmModel, weights: Path | None, pretrained: bool = True, init: str = "pretrained"
) -> Backbone:
    cfg = resolve_model_data_config(model)
    sha = sha256_file(weights) if weights is not None else None
    return Backbone(name, arch, model.eval(), tuple(cfg["mean"]), tuple(cfg["std"]), pretrained, sha, init)


@torch.no_grad()
def check_finite(backbone: Backbone, image_size: int) -> None:
    """Refuse NaN/inf weights, and finite weights whose features on a fixed probe batch are not finite."""
    for key, tensor in backbone.model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EvaluationError(
                f"{backbone.name}: tensor {key} is non-finite (NaN or inf); these weights cannot be evaluated "
                "(export them from a run before it diverged)"
            )
    probe = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 255
    model = backbone.model.eval()
    try:
        features = model(Normalize(backbone, torch.device("cpu"))(probe))
    except (RuntimeError, ValueError, AssertionError) as err:  # e.g. a fixed-size ViT given another size
        reason = " ".join(str(err).split())[:200]
        raise EvaluationError(f"{backbone.name}: cannot run on {image_size}px input ({reason})") from None
    if not bool(torch.isfinite(features).all()):
        raise EvaluationError(
            f"{backbone.name}: its features are non-finite (NaN or inf) although every tensor is finite (e.g. a "
            "negative BatchNorm running_var); these weights cannot be evaluated"
        )


def last_block(model: TimmModel) -> nn.Module:
    """The last block of the last stage (``layer4[-1]`` for ResNet): all the reference fine-tune trains."""
    stage = model.get_submodule(model.feature_info[-1]["module"])
    blocks = getattr(stage, "blocks", stage)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return blocks[-1]
    return blocks


class Normalize:
    """uint8 or 0–255 float pixels -> the model's pretrained_cfg normalization. Grey rows ``[N, 1, S, S]``
    broadcast to the model's channels."""

    def __init__(self, backbone: Backbone, device: torch.device) -> None:
        self.mean = 255 * torch.tensor(backbone.mean, device=device).view(1, -1, 1, 1)
        self.std = 255 * torch.tensor(backbone.std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std
