"""Ultrasound-pretrained backbones for timm.

``import timm_uscl`` registers the architectures (``resnet18_uscl``, ``resnet50_uscl``) and their
pretrained tags in timm's registry, so ``timm.create_model("resnet18_uscl.<tag>", pretrained=True)``
works. timm has no plugin discovery: import this package before calling ``create_model``.
"""
from . import uscl  # noqa: F401  (registers the models)
from .errors import (
    ChecksumMismatchError,
    CheckpointFormatError,
    HubError,
    UnknownWeightsError,
    USCLError,
    WeightsNotPublishedError,
    WeightsUnavailableError,
)
from .hub import export, fetch_weights, pull, push
from .weights import WEIGHTS, EvalResult, WeightsEntry, get_weights, list_weights

__version__ = "0.1.0"

__all__ = [
    "WEIGHTS",
    "EvalResult",
    "WeightsEntry",
    "get_weights",
    "list_weights",
    "export",
    "push",
    "pull",
    "fetch_weights",
    "USCLError",
    "UnknownWeightsError",
    "WeightsNotPublishedError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
    "CheckpointFormatError",
    "HubError",
]
