"""The export folder: what plain timm loads (``local-dir:``, or ``hf-hub:`` once pushed) without this plugin.

An export holds ``config.json`` naming the stock timm architecture with a complete ``pretrained_cfg``,
``model.safetensors`` and a ``README.md`` model card; a trainer run adds its projection head and CMW-Net beside
the weights (never inside them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

from .archs import pretrained_cfg_for, stock_architecture
from .cards import render_model_card
from .checksum import sha256_file
from .errors import CheckpointFormatError
from .weights import EvalResult, WeightsEntry, get_weights

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "export", "export_config", "export_files", "update_card"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def _stock_model(arch: str) -> torch.nn.Module:
    return timm.create_model(arch, pretrained=False, num_classes=0)


def export_config(entry: WeightsEntry, arch: str, num_features: int, sha256: str) -> dict[str, Any]:
    """The ``config.json`` timm reads for ``hf-hub:``/``local-dir:`` loading (stock architecture)."""
    cfg = pretrained_cfg_for(entry)
    pretrained_cfg = {
        k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k not in ("hf_hub_id", "hf_hub_filename")
    }
    pretrained_cfg.update(tag=entry.tag, fixed_input_size=False, origin_url=f"timm-uscl:{entry.name}")
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": num_features,
        "global_pool": "avg",
        "pretrained_cfg": pretrained_cfg,
        "timm_uscl": {"name": entry.name, "sha256": sha256, "origin": entry.origin},
    }


def _check_state_dict(arch: str, state_dict: Mapping[str, torch.Tensor], label: str) -> torch.nn.Module:
    model = _stock_model(arch)
    expected, given = set(model.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{label}: the weights do not fit timm's {arch} (missing {len(missing)} keys, e.g. {missing[:3]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}). Pick the right --arch, or convert the "
            f"checkpoint first with `timm-uscl convert`."
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches: wrong depth or width
        raise CheckpointFormatError(f"{label}: the weights do not fit timm's {arch}: {err}") from err
    return model


def export(
    weights: torch.nn.Module | Mapping[str, torch.Tensor],
    out_dir: str | os.PathLike,
    entry: WeightsEntry | str,
    results: Iterable[EvalResult] | None = None,
    extra_files: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a Hub-ready folder for ``entry`` from a backbone (module or state dict without its head).

    ``results`` replace the row's evaluation results in the card; ``extra_files`` (e.g. the projection
    head or CMW-Net of a training run) are saved beside the weights, never inside them.
    """
    entry = get_weights(entry) if isinstance(entry, str) else entry
    if results is not None:
        entry = replace(entry, results=tuple(results))
    arch = stock_architecture(entry.arch)
    state_dict = weights.state_dict() if isinstance(weights, torch.nn.Module) else dict(weights)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}  # headless export
    model = _check_state_dict(arch, state_dict, entry.name)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    save_file(tensors, out / WEIGHTS_NAME, metadata={"format": "pt", "timm_uscl": entry.name})
    digest = sha256_file(out / WEIGHTS_NAME)
    for file_name, extra in (extra_files or {}).items():
        save_file({k: v.detach().contiguous().cpu() for k, v in extra.items()}, out / file_name)
    config = export_config(entry, arch, int(model.num_features), digest)  # type: ignore[arg-type]
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD_NAME).write_text(render_model_card(entry, arch=arch, sha256=digest))
    return out


def export_files(folder: Path) -> list[str]:
    """The files of an export folder (relative paths), after checking it has a config and weights."""
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / required).is_file():
            raise CheckpointFormatError(
                f"{folder} is not an export folder: {required} is missing. Create one with `timm-uscl export` "
                f"or `timm-uscl convert`."
            )
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def update_card(export_dir: str | os.PathLike, results: Iterable[EvalResult]) -> Path:
    """Re-render an export's README.md with measured evaluation results (table and model-index)."""
    folder = Path(export_dir)
    export_files(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    pretrained_cfg = config["pretrained_cfg"]
    entry = replace(
        get_weights(config["timm_uscl"]["name"]),
        input_size=tuple(pretrained_cfg["input_size"]),
        mean=tuple(pretrained_cfg["mean"]),
        std=tuple(pretrained_cfg["std"]),
        results=tuple(results),
    )
    card = folder / CARD_NAME
    card.write_text(render_model_card(entry, arch=config["architecture"], sha256=sha256_file(folder / WEIGHTS_NAME)))
    return card
