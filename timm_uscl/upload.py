"""Pushing an export folder to the Hub; the token comes from the usual HF login or ``HF_TOKEN``, never printed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .checksum import sha256_file
from .errors import HubError
from .export_folder import WEIGHTS_NAME, export_files

__all__ = ["PushResult", "push"]


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str  # the commit to pin in the weights table
    sha256: str  # of model.safetensors
    files: tuple[str, ...]
    dry_run: bool


def push(
    export_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str = "Upload timm-uscl export",
) -> PushResult:
    """Create the repo if needed and upload an export folder."""
    folder = Path(export_dir)
    files = export_files(folder)
    digest = sha256_file(folder / WEIGHTS_NAME)
    if dry_run:
        return PushResult(repo_id, "", digest, tuple(files), True)
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
