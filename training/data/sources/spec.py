"""What a source is (:class:`SourceSpec`), what opening sources gives (:class:`VideoSource`), and the row every
kind of source yields: ``{"video", "key", "source", <metadata>}``.

* ``video`` is ``{"path", "bytes", "frames", "name"}`` (:mod:`..frames`): a video file, or a frame video whose
  images :mod:`..decode` reads with PIL into the same uint8 frames.
* ``key`` is the video's identity: a video file's name, a frame folder's path inside the root, a group's video
  id, or ``key_column``. It seeds per-item randomness and decides the meta split, so the same video gets the same
  treatment from a folder, the Hub or parquet.
* ``source`` names the sub-dataset per row (``source_column`` when the metadata has it, else the folder,
  repo or file-stem name): the trainer histograms CMW weights per source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..folders import FolderEntry, list_entries

__all__ = ["VIDEO_EXTENSIONS", "LayoutError", "Listed", "SourceSpec", "Streamed", "VideoSource", "list_folder", "row"]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".mkv", ".webm", ".gif")
"""What a folder scan picks up without a ``metadata.csv`` (videofolder's list plus ``.gif``/``.webm``/``.mpg``)."""


@dataclass(frozen=True)
class SourceSpec:
    """How to read one source; the fields map onto :class:`~timm_uscl.training.data.DataConfig`."""

    source: str
    split: str = "train"
    video_column: str = "video"
    source_column: str = "source"
    key_column: str | None = None
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    group_column: str | None = None
    frame_column: str | None = None


@dataclass
class VideoSource:
    """Rows of one or more sources; ``rows`` is set for sources listed up front, else ``None``.

    ``matched`` counts the listed videos that passed the filters before ``split`` took its share, so a caller
    can say which cause emptied a split (``rows == []`` is returned, not raised: only the caller knows what the
    split means). ``dataset`` is ``None`` when ``rows`` is empty.
    """

    dataset: Any  # datasets.IterableDataset
    rows: list[dict[str, Any]] | None
    names: tuple[str, ...]
    matched: int | None = None


@dataclass
class Listed:
    """Rows of a source listed up front, and the metadata columns that differ between frames of one video."""

    rows: list[dict[str, Any]]
    per_frame: set[str] = field(default_factory=set)


@dataclass
class Streamed:
    """A streamed source (rows carry ``video``, ``key``, ``source`` and the metadata) and its metadata columns."""

    dataset: Any
    columns: set[str]


class LayoutError(DataError):
    """A source its kind cannot read. A kind knows only itself, so it says what it found and
    :mod:`.open` ends the message with every layout its table of kinds accepts (:data:`.open.LAYOUTS`)."""


def row(video: dict[str, Any], key: str, source: str, *, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """One pipeline row (see the module doc); the metadata columns stay beside it for the filters."""
    return {**metadata, "video": video, "key": key, "source": source}


def list_folder(spec: SourceSpec) -> list[FolderEntry]:
    """What a local folder lists (:func:`..folders.list_entries`): video files, frame folders or images."""
    return list_entries(Path(spec.source), spec.extensions)
