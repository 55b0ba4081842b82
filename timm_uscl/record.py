"""The ``timm_uscl`` block of an export's config.json: every fact its model card needs, about THESE weights.

Why a record in the export rather than a look-up in the weights table: a row describes the tag's published (or
hoped-for) weights, while an export may hold a smoke run, a conversion or random weights under that tag. The card
is therefore rendered from the block, and re-rendered from it by :func:`timm_uscl.export_folder.update_card`.

Results: only MEASURED results whose ``results_sha256`` equals the export's own sha256 are recorded. Figures
reported elsewhere (the authors' README numbers) are dropped, not shown in a separate section: a card travels with
its weights, and a number in it is read as a property of that file whatever its heading says; nor can the Hub's
model-index metadata mark a number as "not these weights". Those figures stay in the weights table and README.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CheckpointFormatError
from .weights import EvalResult, WeightsEntry

__all__ = ["RECORD_KEY", "export_record", "entry_from_record", "results_for", "results_digest"]

RECORD_KEY = "timm_uscl"
_FORMAT = 2
_TEXT = ("arch", "tag", "description", "recipe", "pretrain_data", "pretrain_data_license", "origin", "license")
_LISTS = ("paper_ids", "datasets", "run", "results")
_RESULT_FIELDS = {f.name for f in dataclasses.fields(EvalResult)}


def results_for(entry: WeightsEntry, sha256: str) -> tuple[EvalResult, ...]:
    """The results a card may show for the weights file with this sha256: measured on exactly that file."""
    if entry.results_sha256 != sha256:
        return ()
    return tuple(r for r in entry.results if r.measured)


def results_digest(sha256: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The digest binding recorded results to the weights they were measured on (their sha256).

    Why: ``results_sha256`` alone binds the list, not its numbers: a value edited in config.json (or a row added)
    would be re-rendered into every card as measured. Not a signature (anyone can recompute it), but no edit
    passes unnoticed, and every card is rendered from a record that passed this check (N4)."""
    text = json.dumps({"sha256": sha256, "results": list(rows)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def export_record(
    entry: WeightsEntry, sha256: str, *, software: Mapping[str, Any] | None, size: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The block for an export of ``entry`` whose model.safetensors has ``sha256``; ``software`` is the timm-uscl
    that wrote the weights (version, commit), ``size`` their parameters and GMACs at the card's input size (both
    kept as first written when a card is updated; None for an export written before they were recorded)."""
    results = results_for(entry, sha256)
    rows = [dataclasses.asdict(r) for r in results]
    return {
        "software": dict(software) if software is not None else None,
        "size": dict(size) if size is not None else None,
        "format": _FORMAT,
        "name": entry.name,
        "sha256": sha256,
        **{key: getattr(entry, key) for key in _TEXT},
        "repo_id": entry.repo_id,
        "paper_ids": list(entry.paper_ids),
        "datasets": list(entry.datasets),
        "run": [[str(key), str(value)] for key, value in entry.run],
        "results": rows,
        "results_sha256": sha256 if results else None,
        "results_digest": results_digest(sha256, rows) if results else None,
    }


def _refuse(label: str, problem: str) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{label}: {problem}. Re-create the export with `timm-uscl export WEIGHTS --tag TAG --out NEW` "
        f"(or `timm-uscl convert`)."
    )


def _results(block: Mapping[str, Any], label: str) -> tuple[EvalResult, ...]:
    rows = block["results"]
    if not all(isinstance(r, Mapping) and set(r) <= _RESULT_FIELDS for r in rows):
        raise _refuse(label, "the timm_uscl block's results are not a list of evaluation results")
    try:
        return tuple(EvalResult(**r) for r in rows)
    except TypeError as err:
        raise _refuse(label, f"the timm_uscl block's results are incomplete ({err})") from err


def _check_results_bound(block: Mapping[str, Any], label: str) -> None:
    """Refuse recorded results not bound to the record's weights (another sha256, or edited after measurement)."""
    rows, sha = block["results"], block["sha256"]
    if not rows:
        return
    if block.get("results_sha256") != sha or block.get("results_digest") != results_digest(sha, rows):
        raise CheckpointFormatError(
            f"{label}: the timm_uscl block's results were not measured on these weights (results_sha256 "
            f"{block.get('results_sha256')}) or were edited after measurement, so no card may show them; remove them "
            f"(set results to [] and results_sha256 and results_digest to null) or measure the export itself: "
            f"`timm-uscl evaluate local-dir:DIR --card DIR`."
        )


def entry_from_record(config: Mapping[str, Any], label: str) -> WeightsEntry:
    """Rebuild the card's facts from an export's config.json (the block plus timm's ``pretrained_cfg``)."""
    block, cfg = config.get(RECORD_KEY), config.get("pretrained_cfg")
    if not isinstance(block, Mapping):
        raise _refuse(label, "has no timm_uscl block, so it is not a timm-uscl export (or was edited)")
    if not isinstance(cfg, Mapping) or not all(k in cfg for k in ("input_size", "mean", "std")):
        raise _refuse(label, "has no pretrained_cfg with input_size, mean and std")
    missing = [k for k in ("name", "sha256", *_TEXT, "repo_id", *_LISTS) if k not in block]
    if missing:
        raise _refuse(label, f"the timm_uscl block lacks {', '.join(missing)} (written by an older timm-uscl?)")
    if not all(isinstance(block[k], str) for k in ("name", "sha256", *_TEXT, "repo_id")) or not all(
        isinstance(block[k], list) for k in _LISTS
    ):
        raise _refuse(label, "the timm_uscl block has fields of the wrong type")
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in block["run"]):
        raise _refuse(label, "the timm_uscl block's run facts are not [name, value] pairs")
    _check_results_bound(block, label)
    repo = block["repo_id"]
    return WeightsEntry(
        arch=block["arch"],
        tag=block["tag"],
        description=block["description"],
        input_size=tuple(cfg["input_size"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        recipe=block["recipe"],
        pretrain_data=block["pretrain_data"],
        pretrain_data_license=block["pretrain_data_license"],
        origin=block["origin"],
        how_to_obtain="",
        license=block["license"],
        paper_ids=tuple(block["paper_ids"]),
        hub_repo=repo,
        datasets=tuple(block["datasets"]),
        run=tuple((str(k), str(v)) for k, v in block["run"]),
        results=_results(block, label),
        results_sha256=block.get("results_sha256"),
    )
