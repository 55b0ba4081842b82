"""Pushing an export folder to the Hub; the token comes from the usual HF login or ``HF_TOKEN``, never printed.

A dry run checks exactly what a real push checks before it uploads (the repo id, then the export with
:func:`~timm_uscl.export_folder.check_export`), so ``--dry-run`` passing means the push would start.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .errors import HubError
from .export_folder import CARD_NAME, CONFIG_NAME, check_export, export_files, record_card, set_repo
from .record import RECORD_KEY

__all__ = ["PushResult", "push", "check_repo_id"]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's base error, whichever huggingface_hub this is: httpx2's (2.x), httpx's (1.x) or requests'
    (0.x). Unreachable hosts, TLS failures and timeouts raise these, not OSError."""
    for module, name in (
        ("huggingface_hub.errors", "HTTPError"),
        ("httpx", "HTTPError"),
        ("requests", "RequestException"),
    ):
        try:
            error = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(error, type) and issubclass(error, BaseException):
            return (error,)
    return ()


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError, *_transport_errors())


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str  # the commit to pin in the weights table
    sha256: str  # of model.safetensors
    files: tuple[str, ...]
    dry_run: bool


def check_repo_id(repo_id: str) -> None:
    """Refuse what the Hub would refuse (``../../etc``, spaces, three parts) before any request."""
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("a model repo id is ORG/NAME")
    except HFValidationError as err:
        reason = str(err).splitlines()[0] if str(err) else "invalid"
        raise HubError(
            f"{repo_id!r} is not a valid Hub repo id ({reason}); use ORG/NAME, e.g. "
            f"timm-uscl/resnet18_uscl.metauscl_covidblues_64."
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def push(
    export_dir: str | os.PathLike,
    repo_id: str,
    private: bool = True,
    dry_run: bool = False,
    commit_message: str = "Upload timm-uscl export",
) -> PushResult:
    """Validate, then create the repo if needed and upload an export folder (``dry_run``: validate only).

    The export's card and record are first pointed at ``repo_id`` (its usage line then loads from there). The
    README.md uploaded is the card the export's checked record renders (:func:`~timm_uscl.export_folder.record_card`),
    whatever the folder's README.md says. Only the export's own files are uploaded
    (:func:`~timm_uscl.export_folder.export_files` refuses anything else in the folder), and a new repo is private
    unless ``private=False``: publishing weights is a decision, not a default.
    """
    folder = Path(export_dir)
    check_repo_id(repo_id)
    config = check_export(folder)
    digest = config[RECORD_KEY]["sha256"]
    files = sorted({*export_files(folder), CARD_NAME})
    record_card(config, str(folder / CONFIG_NAME))  # renders, or refuses, as the push will (a dry run checks it)
    if dry_run:
        return PushResult(repo_id, "", digest, tuple(files), True)
    set_repo(folder, repo_id)  # the card's usage line names the repo it is pushed to (weights untouched)
    card = record_card(check_export(folder), str(folder / CONFIG_NAME)).encode()  # the record's, never hand-edited
    operations = [CommitOperationAdd(name, str(folder / name)) for name in files if name != CARD_NAME]
    operations.append(CommitOperationAdd(CARD_NAME, card))
    api = HfApi(library_name="timm-uscl")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    except _NETWORK_ERRORS as err:  # HTTP errors, and the transport's (unreachable Hub, TLS, timeouts)
        raise HubError(
            f"push of {folder} to {repo_id} at {hf_constants.ENDPOINT} failed ({_first_line(err)}). Check the "
            f"network and HF_ENDPOINT, and that you are logged in (`hf auth login` or HF_TOKEN) with write access "
            f"to that namespace."
        ) from err
    return PushResult(repo_id, info.oid, digest, tuple(files), False)
