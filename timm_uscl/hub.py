"""Hub-format export, push and pull, and the sha256 checks that guard every load.

An export is a folder that plain timm loads without this plugin (``local-dir:`` or, once pushed,
``hf-hub:``): ``config.json`` naming the stock timm architecture with a complete
``pretrained_cfg``, ``model.safetensors`` and a ``README.md`` model card.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import (
    ChecksumMismatchError,
    CheckpointFormatError,
    HubError,
    WeightsNotPublishedError,
    WeightsUnavailableError,
)
from .weights import EvalResult, WeightsEntry, get_weights

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PushResult",
    "sha256_file",
    "verify_sha256",
    "fetch_weights",
    "pull",
    "export",
    "push",
    "export_config",
    "update_card",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, label: str) -> None:
    """Refuse a file whose content is not the one the weights table records."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{label}: checksum mismatch for {path}: sha256 is {actual}, the weights table expects {expected}. "
            f"The file is corrupt or was replaced; delete it and fetch it again with "
            f"`timm-uscl pull --force {label}`."
        )


def fetch_weights(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download (or find in the cache) the weights of a published row at its pinned revision, verified."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not entry.published or not entry.sha256 or not entry.revision:
        raise WeightsNotPublishedError(
            f"{entry.name}: the weights of this tag are not published on the Hub yet, so pretrained=True "
            f"cannot load them. {entry.how_to_obtain}"
        )
    where = f"{entry.filename} of {entry.repo_id}@{entry.revision}"
    try:
        path = hf_hub_download(
            entry.repo_id, entry.filename, revision=entry.revision, cache_dir=cache_dir, force_download=force
        )
    except LocalEntryNotFoundError as err:
        raise WeightsUnavailableError(
            f"{entry.name}: {where} is not in the local cache and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE is set or there is no network). Run `timm-uscl pull {entry.name}` where the Hub is "
            f"reachable and copy the cache (HF_HOME) over, or load an export with 'local-dir:EXPORT'."
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsUnavailableError(f"{entry.name}: the Hub repo {entry.repo_id} does not exist.") from err
    except RevisionNotFoundError as err:
        raise WeightsUnavailableError(f"{entry.name}: revision {entry.revision} not found in {entry.repo_id}.") from err
    except EntryNotFoundError as err:
        raise WeightsUnavailableError(f"{entry.name}: {where} does not exist on the Hub.") from err
    verify_sha256(path, entry.sha256, entry.name)
    return Path(path)


def pull(names: Iterable[str], cache_dir: str | os.PathLike | None = None, force: bool = False) -> dict[str, Path]:
    """Prefetch and verify weights into the Hub cache (for air-gapped clusters)."""
    return {name: fetch_weights(get_weights(name), cache_dir=cache_dir, force=force) for name in names}


def _stock_model(arch: str) -> torch.nn.Module:
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=0)


def export_config(entry: WeightsEntry, arch: str, num_features: int, sha256: str) -> dict:
    """The ``config.json`` timm reads for ``hf-hub:``/``local-dir:`` loading (stock architecture)."""
    from .uscl import pretrained_cfg_for

    cfg = pretrained_cfg_for(entry)
    pretrained_cfg = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in cfg.items()
        if k not in ("hf_hub_id", "hf_hub_filename")
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
    from dataclasses import replace

    from safetensors.torch import save_file

    from .cards import render_model_card
    from .uscl import stock_architecture

    entry = get_weights(entry) if isinstance(entry, str) else entry
    if results is not None:
        entry = replace(entry, results=tuple(results))
    arch = stock_architecture(entry.arch)
    state_dict = weights.state_dict() if isinstance(weights, torch.nn.Module) else dict(weights)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}  # headless export
    model = _check_state_dict(arch, state_dict, entry.name)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in model.state_dict().items()}
    save_file(tensors, out / WEIGHTS_NAME, metadata={"format": "pt", "timm_uscl": entry.name})
    digest = sha256_file(out / WEIGHTS_NAME)
    for file_name, extra in (extra_files or {}).items():
        save_file({k: v.detach().contiguous().cpu() for k, v in extra.items()}, out / file_name)
    config = export_config(entry, arch, model.num_features, digest)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD_NAME).write_text(render_model_card(entry, arch=arch, sha256=digest))
    return out


def update_card(export_dir: str | os.PathLike, results: Iterable[EvalResult]) -> Path:
    """Re-render an export's README.md with measured evaluation results (table and model-index)."""
    from dataclasses import replace

    from .cards import render_model_card

    folder = Path(export_dir)
    _export_files(folder)
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


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str  # the commit to pin in the weights table
    sha256: str  # of model.safetensors
    files: tuple[str, ...]
    dry_run: bool


def _export_files(folder: Path) -> list[str]:
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / required).is_file():
            raise CheckpointFormatError(
                f"{folder} is not an export folder: {required} is missing. Create one with `timm-uscl export` "
                f"or `timm-uscl convert`."
            )
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push(
    export_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str = "Upload timm-uscl export",
) -> PushResult:
    """Create the repo if needed and upload an export folder. The token comes from the usual HF login/env."""
    folder = Path(export_dir)
    files = _export_files(folder)
    digest = sha256_file(folder / WEIGHTS_NAME)
    if dry_run:
        return PushResult(repo_id, "", digest, tuple(files), True)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(library_name="timm-uscl")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    except HfHubHTTPError as err:
        raise HubError(
            f"push of {folder} to {repo_id} failed: {str(err).splitlines()[0]}. Check that you are logged in "
            f"(`hf auth login` or HF_TOKEN) with write access to that namespace."
        ) from err
    return PushResult(repo_id, info.oid, digest, tuple(files), False)
