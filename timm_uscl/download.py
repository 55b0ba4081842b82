"""Fetching published weights from the Hub at their pinned revision, verified by sha256 before timm reads them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .checksum import verify_sha256
from .errors import WeightsNotPublishedError, WeightsUnavailableError
from .weights import WeightsEntry, get_weights

__all__ = ["fetch_weights", "pull"]


def fetch_weights(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download (or find in the cache) the weights of a published row at its pinned revision, verified."""
    if not entry.published or not entry.sha256 or not entry.revision:
        raise WeightsNotPublishedError(
            f"{entry.name}: the weights of this tag are not published on the Hub yet, so pretrained=True "
            f"cannot load them. {entry.how_to_obtain}"
        )
    where = f"{entry.filename} of {entry.repo_id}@{entry.revision}"
    try:
        path = hf_hub_download(
            entry.repo_id,
            entry.filename,
            revision=entry.revision,
            cache_dir=None if cache_dir is None else Path(cache_dir),
            force_download=force,
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
