"""A local folder of videos (or of frame folders, or both), with an optional ``metadata.csv``, and its published
form, a dataset column of video files.

A folder is listed up front, one row per video file or frame folder (:mod:`.frame_folders`): a local
``videofolder`` would stream as one shard (``datasets`` only shards lists), which serialises all DataLoader
workers, so :mod:`.open` feeds the listed rows to ``IterableDataset.from_generator``, one shard per video.
How a folder is listed, and that nothing outside it is read: :mod:`..folders`.

A video file is keyed by its file name, in a folder or in a dataset's video column (parquet files, a Hub
dataset: :mod:`.columns`), so it gets the same treatment from either; ``key_column`` overrides both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..folders import FolderEntry, clean
from ..frames import FRAME_EXTENSIONS, video_value
from .frame_folders import folder_video
from .spec import LayoutError, Listed, SourceSpec, list_folder, row

__all__ = ["video_cell", "open_video_folder"]


def _entry_video(entry: FolderEntry, root: Path, key: str) -> dict[str, Any]:
    """An entry of a folder without ``group_column`` as a video: a file, or a frame folder's images."""
    if entry.path.is_dir():
        return folder_video(entry, root, key)
    if entry.path.suffix.lower() in FRAME_EXTENSIONS:
        raise LayoutError(
            f"{entry.where}: {entry.rel!r} is an image, not a video; name the folder holding a video's frames "
            f"instead, or set group_column to the metadata column naming each image's video"
        )
    return video_value(str(entry.path))


def open_video_folder(spec: SourceSpec) -> Listed:
    """Rows of a folder of video files and frame folders (see :mod:`..folders` for what is refused)."""
    root = Path(spec.source)
    name = root.resolve().name
    rows = []
    for entry in list_folder(spec):
        meta = {k: clean(v) for k, v in entry.metadata.items()}
        if spec.key_column:
            key = str(meta.get(spec.key_column))
        else:
            key = entry.path.name if not entry.path.is_dir() else Path(os.path.normpath(entry.rel)).as_posix()
        source = str(meta.get(spec.source_column) or name)
        rows.append(row(_entry_video(entry, root, key), key, source, metadata=meta))
    return Listed(rows)


def video_cell(spec: SourceSpec, record: Mapping[str, Any], column: str) -> tuple[dict[str, Any], str]:
    """``(video, key)`` of a dataset row whose ``column`` holds a video file ``{"path", "bytes"}``: keyed by
    ``key_column``, else by its file name, else (bytes without a name) by a hash of its bytes."""
    value = record[column]
    if spec.key_column:
        key = str(record[spec.key_column])
    elif value.get("path"):
        key = os.path.basename(value["path"])
    else:
        key = hashlib.blake2b(value["bytes"] or b"", digest_size=12).hexdigest()
    return video_value(value.get("path"), value.get("bytes")), key
