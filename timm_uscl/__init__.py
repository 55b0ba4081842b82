"""Ultrasound-pretrained backbones for timm.

``import timm_uscl`` registers the architectures (``resnet18_uscl``, ``resnet50_uscl``) and their
pretrained tags in timm's registry, so ``timm.create_model("resnet18_uscl.<tag>", pretrained=True)``
works. timm has no plugin discovery: import this package before calling ``create_model``.

Import chain, leaf to root (no cycles): ``errors``/``version``/``complexity`` <- ``weights`` <-
``tensors``/``outdir``/``record`` <- ``archs`` <- ``names`` <- ``checksum``/``cards`` <- ``download`` /
``export_folder`` <- ``store`` <- ``uscl`` (the registry, ``install``) / ``upload`` / ``convert`` <- ``cli``.
Nothing here imports the trainer (``timm_uscl.training``).
"""

from . import uscl  # registers the models
from .download import fetch_weights, pull
from .errors import (
    CheckpointFormatError,
    ChecksumMismatchError,
    HubError,
    OutputFolderError,
    UnknownWeightsError,
    USCLError,
    WeightsNotPublishedError,
    WeightsUnavailableError,
)
from .export_folder import check_export, export, update_card
from .upload import push
from .uscl import install
from .version import package_version
from .weights import WEIGHTS, EvalResult, WeightsEntry, get_weights, list_weights

__version__ = package_version()

__all__ = [
    "WEIGHTS",
    "EvalResult",
    "WeightsEntry",
    "get_weights",
    "list_weights",
    "export",
    "check_export",
    "update_card",
    "install",
    "push",
    "pull",
    "fetch_weights",
    "uscl",
    "USCLError",
    "UnknownWeightsError",
    "WeightsNotPublishedError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
    "CheckpointFormatError",
    "HubError",
    "OutputFolderError",
]
