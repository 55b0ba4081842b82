"""Convert the original authors' Meta-USCL / USCL checkpoints into timm state dicts and exports.

Both codebases wrap a torchvision ResNet as ``features = nn.Sequential(*children[:-1])``, so the backbone
keys are ``features.0`` (conv1), ``features.1`` (bn1) and ``features.4..7`` (layer1..4); the heads are
``l1``/``l2`` (projection) and, in USCL, ``fc``/``fc1``/``fc2``/``linear``. Keys are mapped by NAME
(the reference evaluation code maps them by position, which breaks silently when a key is added) and
loaded strictly. Pickles are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .archs import stock_architecture
from .errors import CheckpointFormatError
from .export_folder import export
from .names import NOT_RECORDED, TAG_RULE, is_builtin, user_entry
from .tensors import WeightsBudget, check_file_size, safetensors_header
from .weights import WeightsEntry, get_weights

__all__ = ["ConversionReport", "read_state_dict", "refused_pickle", "to_timm_state_dict", "convert"]

_BACKBONE_PREFIXES = {
    "features.0.": "conv1.",
    "features.1.": "bn1.",
    "features.4.": "layer1.",
    "features.5.": "layer2.",
    "features.6.": "layer3.",
    "features.7.": "layer4.",
}
_HEAD_PREFIXES = ("l1.", "l2.", "fc.", "fc1.", "fc2.", "linear.")
_TIMM_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_WRAPPERS = ("state_dict", "model", "weight")


@dataclass
class ConversionReport:
    """What a conversion did, so a user can check nothing unexpected was thrown away."""

    source_format: str  # "meta-uscl", "uscl" or "timm"
    backbone_keys: int
    dropped: list[str] = field(default_factory=list)  # head keys not part of the backbone
    cast_from: list[str] = field(default_factory=list)  # dtypes converted to float32

    def summary(self) -> str:
        casts = f", cast {'/'.join(sorted(set(self.cast_from)))} to float32" if self.cast_from else ""
        return (
            f"{self.source_format} checkpoint: {self.backbone_keys} backbone tensors kept, "
            f"{len(self.dropped)} head tensors dropped ({', '.join(self.dropped) or 'none'}){casts}"
        )


_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch's zip container, a raw pickle (protocol >= 2)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _read_safetensors(path: Path, budget: WeightsBudget) -> dict[str, torch.Tensor]:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointFormatError(
            f"{path}: is a PyTorch pickle, not a safetensors file, despite its name; rename it to .pth (it is then "
            f"read as a weights-only checkpoint)."
        )
    safetensors_header(path, budget, "it may be truncated or not weights at all - download or export it again")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # RuntimeError: a mapping that failed
        raise CheckpointFormatError(
            f"{path}: not a readable safetensors file ({_first_line(err)}); it may be truncated - download it again."
        ) from err


def refused_pickle(path: Path | str, err: BaseException) -> CheckpointFormatError | None:
    """The one-line refusal of a pickle that ``torch.load(weights_only=True)`` would not unpickle because it
    needs arbitrary Python objects (a class, ``os.system``, ``eval``), else None (the file is damaged instead).

    Why one test for every wording: torch words the refusal per case ("Unsupported global: GLOBAL x", "Trying to
    load unsupported GLOBAL posix.system ...", "WeightsUnpickler error: ..."), and a hostile file called "corrupt;
    download it again" sends the user back to the source that served it (L5)."""
    found = _UNSAFE_GLOBAL.search(str(err)) if isinstance(err, pickle.UnpicklingError) else None
    if found is None:  # "Unsupported operand": bytes that are no pickle at all
        return None
    return CheckpointFormatError(
        f"{path}: holds Python objects ({found.group(1)}) that are not loaded, for safety (unpickling them can run "
        f"arbitrary code), so the file was refused. In a Python you trust, re-save the weights as a state dict: "
        f"torch.save(model.state_dict(), 'weights.pth') or safetensors.torch.save_file(...), then pass that file."
    )


def _unpickle_error(path: Path, err: Exception) -> CheckpointFormatError:
    """torch's refusal, reworded: its own advice (``weights_only=False``) is exactly what must not be done here."""
    refused = refused_pickle(path, err)
    if refused is not None:
        return refused
    if isinstance(err, pickle.UnpicklingError):
        return CheckpointFormatError(
            f"{path}: is not a PyTorch checkpoint (or is truncated or corrupt); download it again, or pass a "
            f"state dict saved with torch.save or a .safetensors file."
        )
    return CheckpointFormatError(
        f"{path}: is not a complete PyTorch checkpoint (truncated or corrupt: {type(err).__name__}); download it again."
    )


def read_state_dict(path: str | os.PathLike, budget: WeightsBudget) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat state dict: a ``.safetensors`` file, or a ``.pth``/``.pt`` pickle
    (``weights_only``) possibly wrapped in ``state_dict``/``model``/``weight`` (the authors' files).

    The file is bounded before anything is allocated: its size against what ``budget.arch`` can need, and a
    safetensors header entry by entry (:func:`~timm_uscl.tensors.safetensors_header`).

    Not for trainer checkpoints (optimizer and RNG state): those are :func:`timm_uscl.training.checkpoint.
    load_training_state`'s."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointFormatError(
            f"{path}: is a directory, not a weights file; pass the model.safetensors inside it (an export folder "
            f"loads with timm.create_model('local-dir:{path}', pretrained=True))."
        )
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: no such file.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, budget)
    check_file_size(path, budget, "pass the weights of that architecture")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, zip/EOF errors: all mean "cannot read this safely"
        raise _unpickle_error(path, err) from err
    while isinstance(obj, Mapping):
        wrapper = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(
            f"{path}: is not a state dict (expected a mapping of parameter names to tensors, possibly under "
            f"'state_dict'; got {type(obj).__name__}). Pass the checkpoint file saved by the training code."
        )
    return dict(obj)


def _strip_module(key: str) -> str:
    return re.sub(r"^(module\.)+", "", key)


def to_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor], label: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], ConversionReport]:
    """Split a checkpoint into a timm ResNet backbone state dict and its head, mapping keys by name."""
    backbone: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    fmt = "timm"
    for raw_key, tensor in state_dict.items():
        key = _strip_module(raw_key)
        prefix = next((p for p in _BACKBONE_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            fmt = "meta-uscl"
            backbone[_BACKBONE_PREFIXES[prefix] + key[len(prefix) :]] = tensor
        elif key.startswith(_HEAD_PREFIXES):
            head[key] = tensor
        elif key.startswith(_TIMM_PREFIXES):
            backbone[key] = tensor
        else:
            unknown.append(raw_key)
    if unknown:
        raise CheckpointFormatError(
            f"{label}: unexpected keys that belong to no known layout: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}. Expected Meta-USCL/USCL keys (features.N., l1., l2., fc*) "
            f"or timm/torchvision ResNet keys."
        )
    if not backbone:
        raise CheckpointFormatError(f"{label}: holds no backbone weights (only {sorted(head)[:5]}).")
    if fmt == "meta-uscl" and any(k.startswith(("fc1.", "fc2.", "linear.")) for k in head):
        fmt = "uscl"
    cast_from = sorted({str(t.dtype) for t in backbone.values() if t.is_floating_point() and t.dtype != torch.float32})
    backbone = {k: (v.float() if v.is_floating_point() else v) for k, v in backbone.items()}
    report = ConversionReport(fmt, len(backbone), dropped=sorted(head), cast_from=cast_from)
    return backbone, head, report


def _default_tag(path: Path, arch: str) -> str:
    size = re.search(r"_(64|224)\b", path.stem)
    return f"{arch}_uscl.metauscl_us4_{size.group(1)}" if size and arch == "resnet18" else ""


def convert(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    arch: str = "resnet18",
    weights: WeightsEntry | str | None = None,
    keep_head: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert an authors' checkpoint into an export folder (see :func:`timm_uscl.export`).

    ``weights`` names the export: a built-in tag of the authors' weights (their checkpoint layout only; by
    default inferred from ``resnet18_64.pth``/``resnet18_224.pth`` file names), or your own ``<arch>.<tag>``
    (a name, or a :func:`timm_uscl.names.user_entry` with the preprocessing you trained with). An existing
    non-empty ``out_dir`` is replaced only with ``overwrite`` (then no file of the old export survives).
    """
    path = Path(checkpoint)
    name = weights if weights is not None else _default_tag(path, arch)
    if not name:
        raise CheckpointFormatError(
            f"{path}: cannot tell which pretrained tag this is; pass one of `timm-uscl list` with --tag."
        )
    if isinstance(name, str):
        entry = get_weights(name) if is_builtin(name) else user_entry(name, origin="converted")
    else:
        entry = name
    if stock_architecture(entry.arch) != arch:
        raise CheckpointFormatError(
            f"{path}: --arch {arch} does not match the tag {entry.name} (a {stock_architecture(entry.arch)})."
        )
    backbone, head, report = to_timm_state_dict(read_state_dict(path, WeightsBudget.of(arch)), label=str(path))
    if is_builtin(entry.name) and (entry.origin != "converted" or report.source_format == "timm"):
        raise CheckpointFormatError(
            f"{path}: {entry.name} is a built-in tag for the original authors' checkpoint, and this file is "
            f"{'not one (timm layout)' if entry.origin == 'converted' else 'not what that tag describes'}; name the "
            f"conversion with your own tag: --tag {entry.arch}.my_weights ({TAG_RULE})"
        )
    if not is_builtin(entry.name) and entry.recipe == NOT_RECORDED:
        recipe = f"converted by timm-uscl convert from {path.name} ({report.source_format} layout)"
        entry = replace(entry, recipe=recipe)
    extra = {"projection_head.safetensors": head} if keep_head and head else None
    try:
        export(backbone, out_dir, entry, extra_files=extra, overwrite=overwrite)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{path}: {err}") from err
    return report
