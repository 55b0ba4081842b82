"""An export folder as an evaluation backbone (``local-dir:DIR``, ``hf-hub:REPO[@REVISION]``), checked up front.

Why not ``timm.create_model(name, pretrained=True)`` alone: a malformed export then fails deep inside timm
(``AttributeError: VisionTransformer has no attribute conv1``, ``KeyError``, a pickle fallback to
``pytorch_model.bin``), and nobody can say which file was evaluated. Here timm only builds the architecture
from ``config.json``; the weights come from ``model.safetensors`` alone, loaded strictly, and that very file's
sha256 is what results (and ``--card``) record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch

from timm_uscl.convert import read_state_dict
from timm_uscl.errors import USCLError
from timm_uscl.tensors import WeightsBudget

from ..errors import EvaluationError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_folder", "load_weights", "load_export"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _download(ref: str) -> Path:
    """The Hub snapshot folder holding the repo's config.json and model.safetensors (the files only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    repo, _, revision = ref.partition("@")
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(Path(hf_hub_download(repo, name, revision=revision or None)))
        except EntryNotFoundError:
            raise EvaluationError(
                f"hf-hub:{ref}: the repo has no {name}; an export holds config.json and model.safetensors "
                "(push one made by `timm-uscl export`)"
            ) from None
        except (RepositoryNotFoundError, HFValidationError) as err:
            raise EvaluationError(f"hf-hub:{ref}: no such model repo ({type(err).__name__}); check the id") from None
    return paths[0].parent


def export_folder(name: str) -> Path:
    """The local folder of a ``local-dir:`` or ``hf-hub:`` name (downloading the two files of the latter)."""
    source, _, ref = name.partition(":")
    if source == "hf-hub":
        return _download(ref)
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise EvaluationError(f"{name}: {folder} is not a folder; give an export folder (`timm-uscl export`)")
    return folder


def _architecture(folder: Path) -> str:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise EvaluationError(f"{path}: missing; an export folder holds config.json (write it with `timm-uscl export`)")
    try:
        config: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{path}: not valid JSON ({err}); fix it or export again") from None
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise EvaluationError(
            f"{path}: 'architecture' {arch!r} is not a timm architecture; fix it (e.g. resnet18) or export again"
        )
    return arch


def load_weights(model: torch.nn.Module, path: Path, arch: str, fix: str) -> None:
    """Load a timm-keyed backbone state dict strictly (a classifier in the file is ignored); one-line errors."""
    try:
        state = read_state_dict(path, WeightsBudget.of(model))  # bounded by what the model can hold (N2)
    except USCLError as err:
        raise EvaluationError(" ".join(str(err).split())) from None
    head = getattr(model, "pretrained_cfg", {}).get("classifier") or ""
    state = {k: v for k, v in state.items() if not (head and k.startswith(head + "."))}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: another depth or width
        reason = " ".join(str(err).split())[:200]
        raise EvaluationError(f"{path}: the weights do not fit timm arch {arch!r} ({reason}); {fix}") from None
    if missing or unexpected:
        raise EvaluationError(
            f"{path}: the weights do not fit timm arch {arch!r} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); {fix}"
        )


def load_export(name: str) -> tuple[Any, Path]:
    """The headless model of an export and the weights file loaded into it."""
    folder = export_folder(name)
    arch = _architecture(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        has_bin = (folder / "pytorch_model.bin").is_file()
        raise EvaluationError(
            f"{weights}: missing"
            + (
                "; the folder has only pytorch_model.bin, which evaluation does not unpickle: convert it with "
                "`timm-uscl convert` (or `timm-uscl export`)"
                if has_bin
                else "; write the export with `timm-uscl export`"
            )
        )
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=False, num_classes=0)
    except (RuntimeError, KeyError, TypeError, ValueError, AssertionError) as err:
        reason = " ".join(str(err).split())[:200]
        raise EvaluationError(
            f"{folder / CONFIG_NAME}: timm cannot build it ({reason}); fix it or export again"
        ) from None
    load_weights(model, weights, arch, f"fix 'architecture' in {folder / CONFIG_NAME} or export again")
    return model, weights
