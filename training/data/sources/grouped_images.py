"""Image datasets: one frame per row, grouped into videos by ``group_column`` (the video id), from a local folder
of images with a ``metadata.csv``, or from parquet files or a Hub dataset with an image column (:mod:`.columns`).

Grouping needs every row, so such a dataset is listed once up front (paths only for a Hub image folder; embedded
image bytes are held in memory: publish a corpus larger than memory as one row per video instead). Each group
becomes one frame video (:mod:`..frames`), keyed by its video id unless ``key_column`` names another per-video
column.

* **Order.** Frames play by ``frame_column`` (its values in natural order, so ``2`` before ``10`` whether the
  column holds numbers or text), else in natural order of their file names (``frame2`` before ``frame10``, as the
  authors' loader sorts the number after ``frame``), or, with neither a path nor a frame column, in the order the
  rows come.
* **Metadata of a grouped video.** A video gets the columns that have one value across its frames; a column whose
  value differs between the frames of one video (a time stamp, the file name) is not video metadata, so it is
  dropped for every video and named if a filter asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..folders import clean
from ..frames import FRAME_EXTENSIONS, frame_video, natural_key
from .spec import LayoutError, Listed, SourceSpec, list_folder, row

__all__ = ["GroupedVideo", "ImageRow", "group_images", "open_image_folder", "open_image_rows"]


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
    for image in rows:
        for column in (group_column, frame_column):
            if column and image.metadata.get(column) in (None, ""):
                raise DataError(
                    f"{image.where}: no value in column {column!r}"
                    + ("" if column in image.metadata else f" (columns: {sorted(image.metadata)})")
                    + "; fill it in or remove the row"
                )
        groups.setdefault(str(image.metadata[group_column]), []).append(image)
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


def _grouped(spec: SourceSpec, images: Iterable[ImageRow], *, name: str, where: str) -> Listed:
    """Image rows grouped into one frame-video row per value of ``group_column``."""
    assert spec.group_column is not None
    videos, per_frame = group_images(images, spec.group_column, spec.frame_column, where)
    return Listed([_video_row(spec, v, name, per_frame) for v in videos], per_frame)


def _video_row(spec: SourceSpec, video: GroupedVideo, name: str, per_frame: set[str]) -> dict[str, Any]:
    key = video.video_id
    if spec.key_column:
        if spec.key_column not in video.metadata:
            why = "differs between its frames" if spec.key_column in per_frame else "is not a column"
            raise DataError(
                f"key_column={spec.key_column!r} {why} (video {video.video_id!r}); choose a column with one value "
                f"per video, or unset key_column to key videos by their {spec.group_column!r}"
            )
        key = str(video.metadata[spec.key_column])
    source = str(video.metadata.get(spec.source_column) or name)
    return row(frame_video(video.images, key), key, source, metadata=video.metadata)


def open_image_folder(spec: SourceSpec) -> Listed:
    """A folder of images whose ``metadata.csv`` names each image's video in ``group_column``."""
    root = Path(spec.source)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise LayoutError(
            f"{root}: group_column={spec.group_column!r} groups the images a metadata.csv lists "
            f"(file_name,{spec.group_column},...), and there is none; add it, or unset group_column"
        )
    images = []
    for entry in list_folder(spec):
        if entry.path.is_dir() or entry.path.suffix.lower() not in FRAME_EXTENSIONS:
            raise DataError(
                f"{entry.where}: {entry.rel!r} is not an image ({' '.join(FRAME_EXTENSIONS)}); with group_column "
                "every metadata.csv row names one frame image (unset group_column for videos and frame folders)"
            )
        metadata = {k: v if k == spec.group_column else clean(v) for k, v in entry.metadata.items()}
        images.append(ImageRow({"path": str(entry.path), "bytes": None}, metadata, entry.where))
    return _grouped(spec, images, name=root.resolve().name, where=str(meta))


def open_image_rows(spec: SourceSpec, ds: Any, column: str, *, name: str) -> Listed:
    """A dataset with one image per row in ``column`` (decoding off), grouped by ``group_column``: every row is
    read once (paths, or embedded bytes)."""
    from datasets import ClassLabel  # deferred: datasets is heavy and only sources that stream need it

    group = ds.features[spec.group_column]
    names = group.names if isinstance(group, ClassLabel) else None  # a Hub folder of frame folders: label names

    def image_rows() -> Iterable[ImageRow]:
        for i, record in enumerate(ds):
            metadata = {k: v for k, v in record.items() if k != column}
            if names is not None and metadata[spec.group_column] is not None:
                metadata[spec.group_column] = names[metadata[spec.group_column]]
            yield ImageRow(dict(record[column]), metadata, f"{spec.source} row {i}")

    return _grouped(spec, image_rows(), name=name, where=spec.source)
