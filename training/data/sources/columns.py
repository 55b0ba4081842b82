"""A dataset's columns (parquet files, a Hub dataset): which one holds the videos, and as what.

Three layouts, told apart by the column's ``datasets`` feature:

* a ``video_column`` of video files (``Video``, or ``{"path", "bytes"}``): one row per video
  (:func:`.video_folder.video_cell`);
* a ``video_column`` of lists of images (``List(Image())``): one row per frame video
  (:func:`.frame_folders.frames_cell`);
* one image per row (``Image``) and a ``group_column`` naming each image's video: grouped, and so listed up
  front (:mod:`.grouped_images`).

The first two stream with decoding off: the pipeline reads ``{"path", "bytes"}`` and decodes frames itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import DataError
from .frame_folders import frames_cell
from .grouped_images import open_image_rows
from .spec import LayoutError, Listed, SourceSpec, Streamed
from .video_folder import video_cell

__all__ = ["open_columns"]


def _is_image_list(feature: Any) -> bool:
    from datasets import Image  # deferred: datasets is heavy and only sources that stream need it

    inner = feature[0] if isinstance(feature, list) and len(feature) == 1 else getattr(feature, "feature", None)
    return isinstance(inner, Image)


def _layout(spec: SourceSpec, features: Mapping[str, Any]) -> tuple[str, str]:
    """``("video" | "frames" | "images", column)``, or a one-line error naming what to set."""
    from datasets import Image

    column = spec.video_column
    images = [c for c, f in features.items() if isinstance(f, Image)]
    if spec.group_column:
        if spec.group_column not in features:
            raise DataError(
                f"{spec.source}: no group_column {spec.group_column!r} (columns: {list(features)}); set it to the "
                "column naming each image's video"
            )
        if isinstance(features.get(column), Image):
            return "images", column
        if column not in features and len(images) == 1:
            return "images", images[0]
        raise LayoutError(
            f"{spec.source}: group_column={spec.group_column!r} groups one image per row, but the image column is "
            f"unclear (video_column={column!r}; image columns: {images}); set video_column to the image column"
        )
    if column in features and _is_image_list(features[column]):
        return "frames", column
    if isinstance(features.get(column), Image):
        raise LayoutError(
            f"{spec.source}: column {column!r} holds one image per row; set group_column to the column naming each "
            "image's video (and frame_column to their order)"
        )
    if column not in features:
        raise LayoutError(
            f"{spec.source}: no video column {column!r} (columns: {list(features)}); set video_column to the "
            "column of videos or lists of images, or group_column for one image per row"
        )
    return "video", column


def open_columns(spec: SourceSpec, ds: Any, name: str) -> Listed | Streamed:
    """The streamed dataset ``ds`` as pipeline rows (``source`` defaults to ``name``): a stream of its videos or
    frame lists, or its images grouped and listed."""
    from datasets import Image, List, Video

    features = ds.features or {}
    layout, column = _layout(spec, features)
    if layout == "images":
        return open_image_rows(spec, ds.cast_column(column, Image(decode=False)).decode(False), column, name=name)
    if layout == "frames":
        ds = ds.cast_column(column, List(Image(decode=False)))
    else:  # cast_column(Video(decode=False)) alone still yields decoders for a streamed Hub videofolder (5.2)
        ds = ds.cast_column(column, Video(decode=False))
    ds = ds.decode(False)
    cell = frames_cell if layout == "frames" else video_cell

    def annotate(record: dict[str, Any]) -> dict[str, Any]:
        video, key = cell(spec, record, column)
        source = record.get(spec.source_column)
        return {"video": video, "key": key, "source": str(source) if source else name}

    return Streamed(ds.map(annotate), set(features) - {column})
