"""Where the videos come from: a local folder, a Hub dataset id or parquet shards, all as ``datasets`` streams.

Every source becomes a :class:`datasets.IterableDataset` of rows ``{"video", "key", "source"}`` with **one shard
per video** (local folders, path-only Hub folders, image datasets grouped into videos) or per parquet file, so
DataLoader workers and DDP ranks (``split_dataset_by_node``) split whole videos. A local ``videofolder`` would
stream as one shard (``datasets`` only shards lists), which serialises all workers; hence the rows are listed
here and fed to ``IterableDataset.from_generator``.

The layouts (:data:`LAYOUTS`; anything else is a one-line :class:`DataError` naming them):

* a folder of videos or of frame folders ``root/<video>/<frame>.png``, with an optional ``metadata.csv``
  (:mod:`.folders` says how it is listed, and that nothing outside it is read);
* an image dataset, one frame per row, grouped into videos by ``group_column`` (the video id) and ordered by
  ``frame_column`` (default: natural file-name order): a local folder of images with a ``metadata.csv``, parquet
  files or a Hub dataset. Grouping needs every row, so such a dataset is listed once up front (paths only for a
  Hub image folder; embedded image bytes are held in memory: publish a corpus larger than memory as one row per
  video instead);
* parquet files or a Hub dataset with a ``video_column`` of videos, or of lists of images (one row per video,
  ``datasets`` ``List(Image())``).

A row's ``video`` is ``{"path", "bytes", "frames", "name"}`` (:mod:`.frames`): a video file, or a frame video
whose images :mod:`.decode` reads with PIL into the same uint8 frames.

* ``key`` is the video's identity: a video file's name, a frame folder's path inside the root, a group's video
  id, or ``key_column``. It seeds per-item randomness and decides the meta split, so the same video gets the same
  treatment from a folder, the Hub or parquet.
* ``source`` names the sub-dataset per row (``source_column`` when the metadata has it, else the folder,
  repo or file-stem name): the trainer histograms CMW weights per source.
* Filters keep rows whose column is in the given values (``filters``) and drop rows whose column is in
  ``exclude`` (e.g. the evaluation fold); a column absent from the metadata is a :class:`DataError`.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .folders import FolderEntry, clean, frame_files, inside, list_entries
from .frames import (
    FRAME_EXTENSIONS,
    GroupedVideo,
    ImageRow,
    frame_video,
    frames_key,
    group_images,
    is_frame_video,
    video_value,
)

__all__ = [
    "LAYOUTS",
    "VIDEO_EXTENSIONS",
    "FolderEntry",
    "SourceSpec",
    "VideoSource",
    "folder_rows",
    "inside",
    "list_folder",
    "meta_split_fn",
    "open_source",
    "row_filter",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".mkv", ".webm", ".gif")
"""What a folder scan picks up without a ``metadata.csv`` (videofolder's list plus ``.gif``/``.webm``/``.mpg``)."""

LAYOUTS = (
    "accepted layouts: a folder of videos or of frame folders (root/<video>/<frame>.png), with an optional "
    "metadata.csv; a folder of images with a metadata.csv and group_column (the video-id column); parquet files or "
    "a Hub dataset with a video column, a list-of-images column, or one image per row and group_column"
)
"""The end of every message about a layout the pipeline cannot read."""


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
class _Listed:
    """Rows of a source listed up front, and the metadata columns that differ between frames of one video."""

    rows: list[dict[str, Any]]
    per_frame: set[str] = field(default_factory=set)


@dataclass
class _Stream:
    """A streamed source (rows carry ``video``, ``key``, ``source`` and the metadata) and its metadata columns."""

    dataset: Any
    columns: set[str]


def _is_local(source: str) -> bool:
    return os.path.isdir(source) or any(ch in source for ch in "*?[") or source.endswith(".parquet")


def list_folder(spec: SourceSpec) -> list[FolderEntry]:
    """What a local folder lists (:func:`.folders.list_entries`): video files, frame folders or images."""
    return list_entries(Path(spec.source), spec.extensions)


def _row(video: dict[str, Any], key: str, source: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {**metadata, "video": video, "key": key, "source": source}


def _entry_video(entry: FolderEntry, root: Path, key: str) -> dict[str, Any]:
    """An entry of a folder without ``group_column`` as a video: a file, or a frame folder's images."""
    if entry.path.is_dir():
        frames = frame_files(entry.path, root, entry.where)
        return frame_video([{"path": str(p), "bytes": None} for p in frames], key, str(entry.path))
    if entry.path.suffix.lower() in FRAME_EXTENSIONS:
        raise DataError(
            f"{entry.where}: {entry.rel!r} is an image, not a video; name the folder holding a video's frames "
            f"instead, or set group_column to the metadata column naming each image's video; {LAYOUTS}"
        )
    return video_value(str(entry.path))


def _folder_videos(spec: SourceSpec) -> list[dict[str, Any]]:
    """Rows of a folder of video files and frame folders (see :mod:`.folders` for what is refused)."""
    root = Path(spec.source)
    name = root.resolve().name
    rows = []
    for entry in list_folder(spec):
        meta = {k: clean(v) for k, v in entry.metadata.items()}
        if spec.key_column:
            key = str(meta.get(spec.key_column))
        else:
            key = entry.path.name if not entry.path.is_dir() else Path(os.path.normpath(entry.rel)).as_posix()
        rows.append(_row(_entry_video(entry, root, key), key, str(meta.get(spec.source_column) or name), meta))
    return rows


def _grouped_rows(spec: SourceSpec, images: Iterable[ImageRow], name: str, where: str) -> _Listed:
    """Image rows grouped into one frame-video row per value of ``group_column``."""
    assert spec.group_column is not None
    videos, per_frame = group_images(images, spec.group_column, spec.frame_column, where)
    return _Listed([_grouped_row(spec, v, name, per_frame) for v in videos], per_frame)


def _grouped_row(spec: SourceSpec, video: GroupedVideo, name: str, per_frame: set[str]) -> dict[str, Any]:
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
    return _row(frame_video(video.images, key), key, source, video.metadata)


def _folder_images(spec: SourceSpec) -> _Listed:
    """A folder of images whose ``metadata.csv`` names each image's video in ``group_column``."""
    root = Path(spec.source)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataError(
            f"{root}: group_column={spec.group_column!r} groups the images a metadata.csv lists "
            f"(file_name,{spec.group_column},...), and there is none; add it, or unset group_column; {LAYOUTS}"
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
    return _grouped_rows(spec, images, root.resolve().name, str(meta))


def folder_rows(spec: SourceSpec) -> list[dict[str, Any]]:
    """Rows ``{"video", "key", "source", <metadata>}`` of a local folder: its videos, frame folders, or images
    grouped by ``group_column`` (see :mod:`.folders` for what is refused)."""
    return _listed_folder(spec).rows


def _listed_folder(spec: SourceSpec) -> _Listed:
    return _folder_images(spec) if spec.group_column else _Listed(_folder_videos(spec))


# -- streamed sources: parquet files and Hub datasets -----------------------------------------------------------


def _load_stream(spec: SourceSpec) -> tuple[Any, str]:
    """The source streamed, and the name its rows' ``source`` defaults to."""
    from datasets import load_dataset  # deferred: datasets is heavy and only sources that stream need it here

    if _is_local(spec.source):
        files = sorted(glob.glob(spec.source)) if not os.path.isdir(spec.source) else []
        if not files:
            raise DataError(f"{spec.source}: no parquet file matches (give a folder or 'dir/*.parquet'); {LAYOUTS}")
        ds = load_dataset("parquet", data_files={spec.split: files}, split=spec.split, streaming=True)
        return ds, Path(files[0]).parent.name or "parquet"
    try:
        ds = load_dataset(spec.source, split=spec.split, streaming=True)
    except Exception as e:  # datasets raises many types: name the source and the fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{spec.source}: cannot open as a folder, parquet glob or Hub dataset ({first}); {LAYOUTS}"
        ) from e
    return ds, spec.source.rsplit("/", 1)[-1]


def _is_image_list(feature: Any) -> bool:
    from datasets import Image

    inner = feature[0] if isinstance(feature, list) and len(feature) == 1 else getattr(feature, "feature", None)
    return isinstance(inner, Image)


def _stream_layout(spec: SourceSpec, features: Mapping[str, Any]) -> tuple[str, str]:
    """``("video" | "frames" | "images", column)`` of a streamed source, or a one-line error naming the layouts."""
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
        raise DataError(
            f"{spec.source}: group_column={spec.group_column!r} groups one image per row, but the image column is "
            f"unclear (video_column={column!r}; image columns: {images}); set video_column to the image column"
        )
    if column in features and _is_image_list(features[column]):
        return "frames", column
    if isinstance(features.get(column), Image):
        raise DataError(
            f"{spec.source}: column {column!r} holds one image per row; set group_column to the column naming each "
            f"image's video (and frame_column to their order); {LAYOUTS}"
        )
    if column not in features:
        raise DataError(
            f"{spec.source}: no video column {column!r} (columns: {list(features)}); set video_column to the "
            f"column of videos or lists of images, or group_column for one image per row; {LAYOUTS}"
        )
    return "video", column


def _path_only(video: Mapping[str, Any]) -> bool:
    if is_frame_video(video):
        return not any(f.get("bytes") for f in video["frames"])
    return not video.get("bytes")


def _streamed(spec: SourceSpec) -> _Listed | _Stream:
    """A Hub dataset id or parquet files: streamed, or listed when it must be (grouped images, path-only)."""
    from datasets import Image, List, Video

    ds, name = _load_stream(spec)
    features = ds.features or {}
    layout, column = _stream_layout(spec, features)
    if layout == "images":
        return _streamed_images(spec, ds.cast_column(column, Image(decode=False)).decode(False), column, name)
    if layout == "frames":
        ds = ds.cast_column(column, List(Image(decode=False)))
    else:  # cast_column(Video(decode=False)) alone still yields decoders for a streamed Hub videofolder (5.2)
        ds = ds.cast_column(column, Video(decode=False))
    ds = ds.decode(False)
    columns = set(features) - {column}
    key_col, src_col = spec.key_column, spec.source_column

    def annotate(row: dict[str, Any]) -> dict[str, Any]:
        value = row[column]
        if layout == "frames":
            key = str(row[key_col]) if key_col else frames_key(value)
            video = frame_video(value, key)
        else:
            if key_col:
                key = str(row[key_col])
            elif value.get("path"):
                key = os.path.basename(value["path"])
            else:
                key = hashlib.blake2b(value["bytes"] or b"", digest_size=12).hexdigest()
            video = video_value(value.get("path"), value.get("bytes"))
        return {"video": video, "key": key, "source": str(row[src_col]) if row.get(src_col) else name}

    ds = ds.map(annotate)
    if ds.num_shards < 2 and not _is_local(spec.source):
        # a Hub *videofolder* streams as one shard of paths: list it (cheap, no bytes) to shard per file
        first = next(iter(ds.take(1)), None)
        if first is not None and _path_only(first["video"]):
            return _Listed([dict(r) for r in ds])
    return _Stream(ds, columns)


def _streamed_images(spec: SourceSpec, ds: Any, column: str, name: str) -> _Listed:
    """One image per row, grouped by ``group_column``: every row is read once (paths, or embedded bytes)."""
    from datasets import ClassLabel

    group = ds.features[spec.group_column]
    names = group.names if isinstance(group, ClassLabel) else None  # a Hub folder of frame folders: label names

    def image_rows() -> Iterable[ImageRow]:
        for i, row in enumerate(ds):
            metadata = {k: v for k, v in row.items() if k != column}
            if names is not None and metadata[spec.group_column] is not None:
                metadata[spec.group_column] = names[metadata[spec.group_column]]
            yield ImageRow(dict(row[column]), metadata, f"{spec.source} row {i}")

    return _grouped_rows(spec, image_rows(), name, spec.source)


def _pipeline_features() -> Any:
    """The one schema every source is cast to, so streams and listed rows concatenate."""
    from datasets import Features, List, Value

    image = {"path": Value("string"), "bytes": Value("binary")}
    video = {"path": Value("string"), "bytes": Value("binary"), "frames": List(image), "name": Value("string")}
    return Features({"video": video, "key": Value("string"), "source": Value("string")})


def _rows_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import IterableDataset

    def gen(rows: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        yield from rows

    return IterableDataset.from_generator(gen, features=_pipeline_features(), gen_kwargs={"rows": rows})


def _nothing_listed(spec: SourceSpec) -> str:
    if os.path.isfile(os.path.join(spec.source, "metadata.csv")):
        return f"{spec.source}: metadata.csv lists no video; add rows (file_name,...)"
    if os.path.isdir(spec.source):
        return (
            f"{spec.source}: no video files ({', '.join(spec.extensions)}), no frame folders and no metadata.csv; "
            f"{LAYOUTS}"
        )
    return f"{spec.source}: no rows; {LAYOUTS}"


def row_filter(
    filters: Mapping[str, Any] | None,
    exclude: Mapping[str, Any] | None,
    columns: Iterable[str] | None = None,
    per_frame: Iterable[str] = (),
) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate keeping rows whose ``filters`` columns match and whose ``exclude`` columns do not.

    Values may be a scalar or a list; numbers and their string forms compare equal (CSV vs parquet).
    ``per_frame``: columns dropped because they differ between the frames of one video (named when asked for).
    """

    def norm(v: Any) -> set[str]:
        return {str(x) for x in (v if isinstance(v, list | tuple | set | frozenset) else [v])}

    inc = {k: norm(v) for k, v in (filters or {}).items()}
    exc = {k: norm(v) for k, v in (exclude or {}).items()}
    if not inc and not exc:
        return None
    if columns is not None:
        missing = sorted((set(inc) | set(exc)) - set(columns))
        if missing:
            varying = sorted(set(missing) & set(per_frame))
            note = (
                f"; {varying} differ between the frames of one video: filter on a per-video column" if varying else ""
            )
            raise DataError(f"filter column(s) {missing} not in the metadata (columns: {sorted(columns)}){note}")

    def keep(row: Mapping[str, Any]) -> bool:
        return all(str(row.get(k)) in v for k, v in inc.items()) and not any(
            str(row.get(k)) in v for k, v in exc.items()
        )

    return keep


def meta_split_fn(fraction: float, seed: int, group_column: str | None = None) -> Callable[[Mapping[str, Any]], bool]:
    """``row -> True`` for the held-out meta split: a seeded hash of the key (or group) below ``fraction``.

    Depends only on the identity, never on listing order, so it is the same from a folder, the Hub or
    parquet, on every rank, and a video stays on its side when the corpus grows. A row without the group
    column (absent from the metadata, or differing between the frames of a grouped video) is an error, not a
    split by ``None`` that would put every video on one side.
    """

    def is_meta(row: Mapping[str, Any]) -> bool:
        if group_column and group_column not in row:
            raise DataError(
                f"meta_group_by={group_column!r}: video {row.get('key')!r} has no such column (columns: "
                f"{sorted(k for k in row if k != 'video')}); group by a metadata column with one value per video"
            )
        ident = str(row.get(group_column)) if group_column else str(row["key"])
        h = hashlib.blake2b(f"{seed}:{ident}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2.0**64 < fraction

    return is_meta


def _filter_note(filters: Mapping[str, Any] | None, exclude: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={dict(v)!r}" for k, v in (("filters", filters), ("exclude", exclude)) if v)


def _open_one(spec: SourceSpec) -> _Listed | _Stream:
    got = _listed_folder(spec) if os.path.isdir(spec.source) else _streamed(spec)
    if isinstance(got, _Listed) and not got.rows:
        raise DataError(_nothing_listed(spec))
    return got


def open_source(
    specs: Sequence[SourceSpec],
    filters: Mapping[str, Any] | None = None,
    exclude: Mapping[str, Any] | None = None,
    split: Callable[[Mapping[str, Any]], bool] | None = None,
) -> VideoSource:
    """All sources as one stream of rows, one shard per video (or parquet file), keeping rows that pass the
    filters and ``split``.

    Raises :class:`DataError` when a source lists nothing or the filters leave nothing; a ``split`` that
    leaves nothing returns an empty source (see :class:`VideoSource`).
    """
    from datasets import concatenate_datasets

    local_rows: list[dict[str, Any]] = []
    listed = matched = 0
    streams = []
    for spec in specs:
        got = _open_one(spec)
        if isinstance(got, _Listed):
            keep = row_filter(filters, exclude, set().union(*(r.keys() for r in got.rows)), got.per_frame)
            kept = [r for r in got.rows if keep is None or keep(r)]
            listed, matched = listed + len(got.rows), matched + len(kept)
            local_rows += [r for r in kept if split is None or split(r)]
        else:
            ds = got.dataset
            keep = row_filter(filters, exclude, got.columns | {"key", "source"})
            if keep is not None:
                ds = ds.filter(keep)
            if split is not None:
                ds = ds.filter(split)
            streams.append(ds.select_columns(["video", "key", "source"]).map(features=_pipeline_features()))
    names = tuple(s.source for s in specs)
    if listed and not matched and not streams:
        raise DataError(
            f"no video left in {list(names)} after {_filter_note(filters, exclude)} ({listed} listed); loosen them"
        )
    parts = streams
    if local_rows:
        # only what the pipeline needs: metadata columns may mix types and missing cells across folders
        slim = [{"video": r["video"], "key": r["key"], "source": r["source"]} for r in local_rows]
        parts = [_rows_dataset(slim), *streams]
    if not parts:
        return VideoSource(None, [], names, matched)
    ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return VideoSource(ds, local_rows if not streams else None, names, matched if not streams else None)
