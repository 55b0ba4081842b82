"""Frame videos: ultrasound corpora shared as sampled frame images per video, not as video files.

The authors' US-4 and most ultrasound corpora come as folders of frames, as image datasets with a video-id
column, or as one row per video holding a list of images. Every such video becomes one pipeline value, the same
mapping a video file becomes, so sharding, the meta split, filters, resume, the frame cache and the frame store
treat it exactly as a video::

    {"path": <folder or None>, "bytes": None, "frames": [{"path", "bytes"}, ...], "name": <video name>}

(a video file is ``{"path", "bytes", "frames": None, "name": None}``). :mod:`.decode` reads the images with
PIL; this module only says what a frame video is, in which order its frames play, and how image rows group into
videos. It imports nothing heavy: sources, the cache and the decoder all use it.

* **Order.** Frames play in *natural* order of their file names (``frame2`` before ``frame10``, as the
  authors' loader sorts the number after ``frame``), or by ``frame_column`` (its values in the same natural order,
  so ``2`` before ``10`` whether the column holds numbers or text), or, with neither a path nor a frame column,
  in the order the rows come.
* **Metadata of a grouped video.** Image rows grouped by a video-id column give the video the columns that have
  one value across its frames; a column whose value differs between the frames of one video (a time stamp, the
  file name) is not video metadata, so it is dropped for every video and named if a filter asks for it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DataError

__all__ = [
    "FRAME_EXTENSIONS",
    "ImageRow",
    "GroupedVideo",
    "frame_name",
    "frame_video",
    "frames_key",
    "group_images",
    "is_frame_video",
    "natural_key",
    "video_value",
]

FRAME_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""What counts as a frame image (PIL reads them all); other files in a frame folder are ignored."""


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key putting ``frame2`` before ``frame10``: digit runs compare as numbers, the rest as text."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def video_value(path: str | None = None, data: bytes | None = None) -> dict[str, Any]:
    """A video file as the pipeline carries it (see the module doc)."""
    return {"path": path, "bytes": data, "frames": None, "name": None}


def frame_video(frames: Iterable[Mapping[str, Any]], name: str, path: str | None = None) -> dict[str, Any]:
    """A frame video as the pipeline carries it: its images ``{"path", "bytes"}`` in play order, and its name."""
    images = [{"path": f.get("path"), "bytes": f.get("bytes")} for f in frames]
    return {"path": path, "bytes": None, "frames": images, "name": name}


def is_frame_video(video: Any) -> bool:
    """True for a :func:`frame_video` value (whatever else a video may be: a path, bytes, a video mapping)."""
    return isinstance(video, Mapping) and video.get("frames") is not None


def frame_name(video: Mapping[str, Any], index: int) -> str:
    """``<video>/<file name>`` of one frame, for messages (``<video> frame <i>`` for frames held as bytes)."""
    path = video["frames"][index].get("path")
    return f"{video.get('name')}/{str(path).rsplit('/', 1)[-1]}" if path else f"{video.get('name')} frame {index}"


def frames_key(frames: Sequence[Mapping[str, Any]]) -> str:
    """An identity for a list-of-images row without a key column: a hash of its frames' paths (or bytes)."""
    h = hashlib.blake2b(digest_size=12)
    for f in frames:
        path = f.get("path")
        h.update(str(path).encode() if path else hashlib.blake2b(f.get("bytes") or b"").digest())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class ImageRow:
    """One image of an image dataset: the image ``{"path", "bytes"}``, its metadata, where it was listed."""

    image: Mapping[str, Any]
    metadata: Mapping[str, Any]
    where: str


@dataclass
class GroupedVideo:
    """The images of one video id, in play order, with the video's metadata (the columns its frames share)."""

    video_id: str
    images: list[Mapping[str, Any]]
    metadata: dict[str, Any]


def _order(rows: list[ImageRow], frame_column: str | None) -> list[ImageRow]:
    if frame_column:
        return sorted(rows, key=lambda r: natural_key(str(r.metadata[frame_column])))  # stable: ties keep row order
    if all(r.image.get("path") for r in rows):
        return sorted(rows, key=lambda r: natural_key(str(r.image["path"])))
    return rows


def group_images(
    rows: Iterable[ImageRow], group_column: str, frame_column: str | None, source: str
) -> tuple[list[GroupedVideo], set[str]]:
    """Image rows -> one :class:`GroupedVideo` per value of ``group_column`` (in order of first appearance), and
    the metadata columns that differ between the frames of some video (dropped from every video's metadata)."""
    groups: dict[str, list[ImageRow]] = {}
    for row in rows:
        for column in (group_column, frame_column):
            if column and row.metadata.get(column) in (None, ""):
                raise DataError(
                    f"{row.where}: no value in column {column!r}"
                    + ("" if column in row.metadata else f" (columns: {sorted(row.metadata)})")
                    + "; fill it in or remove the row"
                )
        groups.setdefault(str(row.metadata[group_column]), []).append(row)
    if not groups:
        raise DataError(f"{source}: no image rows to group by {group_column!r}; add images with a video id")
    videos, varying = [], set()
    for video_id, members in groups.items():
        ordered = _order(members, frame_column)
        columns = set().union(*(r.metadata.keys() for r in ordered))
        differ = {c for c in columns if len({repr(r.metadata.get(c)) for r in ordered}) > 1}
        varying |= differ
        videos.append(GroupedVideo(video_id, [r.image for r in ordered], dict(ordered[0].metadata)))
    for video in videos:
        video.metadata = {k: v for k, v in video.metadata.items() if k not in varying}
    return videos, varying
