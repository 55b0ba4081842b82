"""The export folder: what plain timm loads (``local-dir:``, or ``hf-hub:`` once pushed) without this plugin.

An export holds ``config.json`` (written by timm's own :func:`timm.models.save_for_hf`, so it has timm's layout:
architecture, ``model_args``, ``pretrained_cfg``; plus our ``timm_uscl`` record, see :mod:`.record`),
``model.safetensors`` and a ``README.md`` model card; a trainer run adds its projection head and CMW-Net beside
the weights (never inside them). Weights are checked (keys, dtype kinds, finite values) before anything is
written, and the folder is written through :mod:`.outdir` (nothing overwritten without ``overwrite``).
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
from .complexity import model_size
from .errors import CheckpointFormatError, ChecksumMismatchError, OutputFolderError
from .names import check_builtin_weights, entry_for, is_builtin
from .outdir import check_out_dir, commit, is_export_file, staging, write_text_atomic
from .record import RECORD_KEY, entry_from_record, export_record, results_for
from .tensors import WeightsBudget, check_dtype_kinds, check_finite, safetensors_header
from .version import software
from .weights import EvalResult, WeightsEntry

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "export",
    "export_files",
    "check_export",
    "update_card",
    "set_repo",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_PICKLE_NAME = "pytorch_model.bin"
_REEXPORT = "re-create the export with `timm-uscl export WEIGHTS --tag TAG --out NEW`"


def _model_for(arch: str, entry: WeightsEntry) -> torch.nn.Module:
    """The stock timm model carrying the row's pretrained cfg, so save_for_hf records that cfg (not ImageNet's)."""
    cfg = {k: v for k, v in pretrained_cfg_for(entry).items() if k not in ("hf_hub_id", "hf_hub_filename")}
    cfg.update(tag=entry.tag, fixed_input_size=False, origin_url=f"timm-uscl:{entry.name}")
    return timm.create_model(arch, pretrained=False, num_classes=0, pretrained_cfg=cfg)


def _checked_model(arch: str, entry: WeightsEntry, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The model loaded with ``state_dict`` after refusing wrong keys, dtype kinds, shapes and non-finite values."""
    model, label = _model_for(arch, entry), entry.name
    reference = model.state_dict()
    missing, unexpected = sorted(set(reference) - set(state_dict)), sorted(set(state_dict) - set(reference))
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{label}: the weights do not fit timm's {arch} (missing {len(missing)} keys, e.g. {missing[:3]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}). Pick the right --arch, or convert the "
            f"checkpoint first with `timm-uscl convert`."
        )
    state_dict = {k: state_dict[k] for k in reference}  # the network's order: "first bad tensor" means first in it
    check_dtype_kinds(state_dict, reference, arch, label)
    check_finite(state_dict, label)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches: wrong depth or width
        raise CheckpointFormatError(f"{label}: the weights do not fit timm's {arch}: {err}".split("\n")[0]) from err
    return model


def _checked_extras(
    extra_files: Mapping[str, Mapping[str, torch.Tensor]] | None, label: str
) -> dict[str, dict[str, torch.Tensor]]:
    extras = {}
    for name, tensors in (extra_files or {}).items():
        if Path(name).name != name or name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME) or name.startswith("."):
            raise OutputFolderError(f"{label}: {name!r} cannot be an extra file of an export; use a plain file name.")
        extras[name] = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        check_finite(extras[name], f"{label}: {name}")
    return extras


def _write_export(stage: Path, model: torch.nn.Module, entry: WeightsEntry, extras: Mapping[str, Any]) -> str:
    """Weights and config.json by timm's save_for_hf, then our record and card; returns the weights' sha256."""
    timm.models.save_for_hf(model, str(stage), safe_serialization=True)
    digest = sha256_file(stage / WEIGHTS_NAME)
    config = json.loads((stage / CONFIG_NAME).read_text())
    made_with, size = software(), model_size(model, entry.input_size)._asdict()
    config[RECORD_KEY] = export_record(entry, digest, software=made_with, size=size)
    (stage / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    card = render_model_card(entry, arch=config["architecture"], sha256=digest, software=made_with, size=size)
    (stage / CARD_NAME).write_text(card)
    for name, tensors in extras.items():
        save_file(tensors, stage / name)
    return digest


def export(
    weights: torch.nn.Module | Mapping[str, torch.Tensor],
    out_dir: str | os.PathLike,
    entry: WeightsEntry | str,
    results: Iterable[EvalResult] | None = None,
    extra_files: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    *,
    overwrite: bool = False,
    require_builtin_weights: bool = False,
) -> Path:
    """Write a Hub-ready folder for ``entry`` from a backbone (module or state dict without its head).

    ``entry`` gives the card's facts: a user name ``<arch>.<your tag>`` (validated; facts not recorded are said to
    be, see :func:`timm_uscl.names.user_entry`), a built-in tag of the weights table (for that tag's own weights:
    with ``require_builtin_weights``, as on the command line, only weights with the row's recorded sha256), or a
    row adapted to a run. Its results reach
    the card only when measured on exactly these weights (``results_sha256``); explicit ``results`` that were not
    are refused: evaluate the export, then :func:`update_card`. ``extra_files`` (e.g. the projection head or CMW-Net
    of a training run) are saved beside the weights, never inside them. A non-empty ``out_dir`` is refused unless
    ``overwrite``, which removes exactly the files it held.
    """
    entry = entry_for(entry) if isinstance(entry, str) else entry
    if results is not None:
        entry = replace(entry, results=tuple(results))
    arch = stock_architecture(entry.arch)
    state_dict = weights.state_dict() if isinstance(weights, torch.nn.Module) else dict(weights)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}  # headless export
    model = _checked_model(arch, entry, state_dict)
    extras = _checked_extras(extra_files, entry.name)
    out, stale = check_out_dir(out_dir, overwrite)
    with staging(out) as stage:
        digest = _write_export(stage, model, entry, extras)
        if require_builtin_weights and is_builtin(entry.name):
            check_builtin_weights(entry, digest)
        if results is not None and results_for(entry, digest) != entry.results:
            raise CheckpointFormatError(
                f"{entry.name}: the results given were not measured on these weights (sha256 {digest}), so the card "
                f"cannot show them; export without results, evaluate the export, and record its results with "
                f"update_card (`timm-uscl evaluate local-dir:EXPORT --card EXPORT`)."
            )
        commit(stage, out, stale)
    return out


def export_files(folder: Path) -> list[str]:
    """The files of an export folder, after checking it has a config and weights and holds nothing else: regular
    files an export writes (:func:`.outdir.is_export_file`), no link, no subfolder, no stray file. What ``push``
    uploads is exactly this list, so a planted ``notes.txt -> ~/.cache/huggingface/token`` is refused, not sent."""
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / required).is_file():
            raise CheckpointFormatError(
                f"{folder} is not an export folder: {required} is missing. Create one with `timm-uscl export` "
                f"or `timm-uscl convert`."
            )
    files, other = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_file() or not is_export_file(entry.name):
            other.append(entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else ""))
        else:
            files.append(entry.name)
    if other:
        shown = ", ".join(other[:8]) + (" ..." if len(other) > 8 else "")
        raise CheckpointFormatError(
            f"{folder} holds entries an export does not ({shown}): links, folders and files other than config.json, "
            f"README.md and *.safetensors are never uploaded; move them out of the export folder."
        )
    return files


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointFormatError(f"{folder}: config.json is missing, so this is not an export; {_REEXPORT}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(
            f"{folder}: config.json is not valid JSON ({err.msg}, line {err.lineno}); {_REEXPORT}."
        ) from err
    except UnicodeDecodeError as err:
        raise CheckpointFormatError(f"{folder}: config.json is not valid JSON (not UTF-8 text); {_REEXPORT}.") from err
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{folder}: config.json is not valid JSON for an export (not an object).")
    arch = config.get("architecture")
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise CheckpointFormatError(
            f"{folder}: config.json names the architecture {arch!r}, which timm does not know; fix it (e.g. "
            f"resnet18) or {_REEXPORT}."
        )
    return config


def _model_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The head and stem config.json records (``model_args``, else the top-level ``num_classes``)."""
    args = config.get("model_args")
    args = args if isinstance(args, dict) else {}
    kwargs: dict[str, Any] = {k: args[k] for k in ("num_classes", "in_chans") if isinstance(args.get(k), int)}
    top = config.get("num_classes")
    kwargs.setdefault("num_classes", top if isinstance(top, int) else 0)
    return kwargs


def _check_weights_fit(weights: Path, config: Mapping[str, Any]) -> None:
    """The weights' keys and shapes (read from the header only, the file size bounded first: nothing is mapped)
    against the architecture config.json names."""
    arch = config["architecture"]
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = timm.create_model(arch, **_model_kwargs(config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: shape for k, (_, shape) in safetensors_header(weights, WeightsBudget.of(model), _REEXPORT).items()}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    if missing or unexpected or shapes:
        raise CheckpointFormatError(
            f"{weights}: the weights do not fit config.json's architecture {arch} (missing {len(missing)} keys, "
            f"e.g. {missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]}; other shapes: {shapes[:2]}); "
            f"fix the architecture in config.json, or {_REEXPORT}."
        )


def check_export(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Validate a timm-uscl export up front and return its parsed config.json.

    Checks, cheapest first: config.json parses, names an architecture timm knows and carries a complete
    ``timm_uscl`` record; model.safetensors exists (not only a pytorch_model.bin), its header fits that
    architecture, and its sha256 is the one config.json records. Every failure is one line naming the file and
    the fix, so callers (push, install, ``evaluate --card``) can refuse before any expensive work.
    """
    folder = Path(export_dir)
    if not folder.is_dir():
        raise CheckpointFormatError(
            f"{folder}: not a folder; give an export folder (config.json, model.safetensors, README.md)."
        )
    config = _read_config(folder)
    entry_from_record(config, str(folder / CONFIG_NAME))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        if (folder / _PICKLE_NAME).is_file():
            raise CheckpointFormatError(
                f"{folder}: holds only {_PICKLE_NAME}; a timm-uscl export carries model.safetensors (pickles are not "
                f"loaded): convert it with `timm-uscl export {folder / _PICKLE_NAME} --tag TAG --out NEW`."
            )
        raise CheckpointFormatError(f"{folder}: model.safetensors is missing; {_REEXPORT}.")
    _check_weights_fit(weights, config)
    digest, recorded = sha256_file(weights), config[RECORD_KEY]["sha256"]
    if digest != recorded:
        raise ChecksumMismatchError(
            f"{weights}: sha256 is {digest} but config.json records {recorded}: the weights changed after export; "
            f"{_REEXPORT}."
        )
    return config


def _merge(old: tuple[EvalResult, ...], new: tuple[EvalResult, ...]) -> tuple[EvalResult, ...]:
    """New results replace old ones of the same task, dataset, metric and protocol; the others are kept."""
    keys = {(r.task, r.dataset, r.metric, r.protocol) for r in new}
    return tuple(r for r in old if (r.task, r.dataset, r.metric, r.protocol) not in keys) + new


def record_card(config: Mapping[str, Any], label: str) -> str:
    """The README.md an export's (checked) config.json record renders: what install writes and push uploads, in
    place of the folder's README.md, so a hand-edited card row never travels (N4)."""
    entry = entry_from_record(config, label)
    block = config[RECORD_KEY]
    return render_model_card(
        entry,
        arch=config["architecture"],
        sha256=block["sha256"],
        software=block.get("software"),
        size=block.get("size"),
    )


def update_card(export_dir: str | os.PathLike, results: Iterable[EvalResult], measured_sha256: str | None) -> Path:
    """Record measured results in an export (config.json's record) and re-render its README.md from that record.

    ``measured_sha256`` is the sha256 of the weights file the results were measured on; it must be this export's
    model.safetensors (and the sha256 config.json records), else nothing is written. Earlier results of other
    tasks are kept. The card is rendered from the export's own record, never from the weights table.
    """
    folder = Path(export_dir)
    config = check_export(folder)
    recorded = config[RECORD_KEY]["sha256"]
    if measured_sha256 != recorded:
        what = (
            "carry no sha256" if measured_sha256 is None else f"were measured on weights with sha256 {measured_sha256}"
        )
        raise CheckpointFormatError(
            f"{folder}: the results {what}, not this export's model.safetensors (sha256 {recorded}), so its card "
            f"cannot show them; evaluate the export itself: `timm-uscl evaluate local-dir:{folder} --card {folder}`."
        )
    new = tuple(results)
    if not all(r.measured for r in new):
        raise CheckpointFormatError(f"{folder}: update_card records only results measured by timm-uscl.")
    entry = entry_from_record(config, str(folder / CONFIG_NAME))
    entry = replace(entry, results=_merge(results_for(entry, recorded), new), results_sha256=recorded)
    return _rewrite(folder, config, entry)


def _rewrite(folder: Path, config: dict[str, Any], entry: WeightsEntry) -> Path:
    """config.json's record and README.md from ``entry``, keeping what the export recorded about its making."""
    block = config[RECORD_KEY]
    made_with, size = block.get("software"), block.get("size")
    config[RECORD_KEY] = export_record(entry, block["sha256"], software=made_with, size=size)
    write_text_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    card = folder / CARD_NAME
    text = render_model_card(entry, arch=config["architecture"], sha256=block["sha256"], software=made_with, size=size)
    write_text_atomic(card, text)
    return card


def set_repo(export_dir: str | os.PathLike, repo_id: str) -> bool:
    """Record the Hub repo an export is pushed to, so its card's usage line names that repo; True when changed.

    The weights are untouched (their sha256 stays); config.json's record and README.md are rewritten."""
    folder = Path(export_dir)
    config = check_export(folder)
    entry = entry_from_record(config, str(folder / CONFIG_NAME))
    if entry.repo_id == repo_id:
        return False
    _rewrite(folder, config, replace(entry, hub_repo=repo_id))
    return True
