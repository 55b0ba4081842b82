"""Open sources: pick each one's kind from the table of kinds (:data:`KINDS`), and join them as one stream.

Every source becomes a :class:`datasets.IterableDataset` of rows ``{"video", "key", "source"}`` (:mod:`.spec`)
with **one shard per video** (local folders, path-only Hub folders, image datasets grouped into videos) or per
parquet file, so DataLoader workers and DDP ranks (``split_dataset_by_node``) split whole videos: listed rows are
fed to ``IterableDataset.from_generator`` (``datasets`` shards only lists), streams are cast to the same schema.

The table names every kind once, so what is accepted and the message listing it (:data:`LAYOUTS`, the end of
every message about a layout the pipeline cannot read) cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import DataError
from .grouped_images import open_image_folder
from .hub import open_hub
from .parquet import is_parquet, open_parquet
from .selection import describe_filters, row_filter
from .spec import LayoutError, Listed, SourceSpec, Streamed, VideoSource
from .video_folder import open_video_folder

__all__ = ["KINDS", "LAYOUTS", "Kind", "folder_rows", "kind_of", "open_source"]


@dataclass(frozen=True, kw_only=True)
class Kind:
    """One kind of source: which specs it takes (``accepts``; the first kind in :data:`KINDS` that does wins),
    how it reads in a message (``where`` and what it ``holds``), and how it is opened."""

    name: str
    where: str
    holds: str
    accepts: Callable[[SourceSpec], bool]
    open: Callable[[SourceSpec], Listed | Streamed]


_COLUMNS = "with a video column, a list-of-images column, or one image per row and group_column"
"""What a dataset's rows may hold (:mod:`.columns`), whether it is parquet files or on the Hub."""

KINDS: tuple[Kind, ...] = (
    Kind(
        name="video folder",  # video files and frame folders, which one metadata.csv may mix
        where="a folder",
        holds="of videos or of frame folders (root/<video>/<frame>.png), with an optional metadata.csv",
        accepts=lambda spec: os.path.isdir(spec.source) and not spec.group_column,
        open=open_video_folder,
    ),
    Kind(
        name="image folder",
        where="a folder",
        holds="of images with a metadata.csv and group_column (the video-id column)",
        accepts=lambda spec: os.path.isdir(spec.source) and bool(spec.group_column),
        open=open_image_folder,
    ),
    Kind(
        name="parquet",
        where="parquet files",
        holds=_COLUMNS,
        accepts=lambda spec: is_parquet(spec.source),
        open=open_parquet,
    ),
    Kind(name="hub", where="a Hub dataset", holds=_COLUMNS, accepts=lambda spec: True, open=open_hub),
)
"""The kinds of source, in the order they are tried: anything not local is a Hub dataset id."""


def _layouts(kinds: Iterable[Kind]) -> str:
    """``accepted layouts: ...``, naming kinds that hold the same together ("parquet files or a Hub dataset")."""
    where: dict[str, list[str]] = {}
    for kind in kinds:
        where.setdefault(kind.holds, []).append(kind.where)
    return "accepted layouts: " + "; ".join(f"{' or '.join(w)} {holds}" for holds, w in where.items())


LAYOUTS = _layouts(KINDS)
"""The end of every message about a layout the pipeline cannot read."""


def kind_of(spec: SourceSpec) -> Kind:
    """The first kind in :data:`KINDS` that accepts ``spec`` (the last, a Hub dataset id, accepts any)."""
    return next(kind for kind in KINDS if kind.accepts(spec))


def _open(spec: SourceSpec) -> Listed | Streamed:
    """``spec`` opened by its kind; a kind's :class:`~.spec.LayoutError` ends with :data:`LAYOUTS`."""
    try:
        return kind_of(spec).open(spec)
    except LayoutError as e:
        raise DataError(f"{e}; {LAYOUTS}") from e.__cause__


def folder_rows(spec: SourceSpec) -> list[dict[str, Any]]:
    """Rows ``{"video", "key", "source", <metadata>}`` of a local folder: its videos, frame folders, or images
    grouped by ``group_column`` (see :mod:`..folders` for what is refused), as :func:`open_source` lists them."""
    if not os.path.isdir(spec.source):
        raise DataError(f"{spec.source}: not a folder; {LAYOUTS}")
    got = _open(spec)
    assert isinstance(got, Listed)  # every kind that accepts a folder lists it
    return got.rows


def _pipeline_features() -> Any:
    """The one schema every source is cast to, so streams and listed rows concatenate."""
    from datasets import Features, List, Value  # deferred: datasets is heavy

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


def _open_one(spec: SourceSpec) -> Listed | Streamed:
    got = _open(spec)
    if isinstance(got, Listed) and not got.rows:
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
    leaves nothing returns an empty source (see :class:`~.spec.VideoSource`).
    """
    from datasets import concatenate_datasets

    local_rows: list[dict[str, Any]] = []
    listed = matched = 0
    streams = []
    for spec in specs:
        got = _open_one(spec)
        if isinstance(got, Listed):
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
            f"no video left in {list(names)} after {describe_filters(filters, exclude)} ({listed} listed); loosen them"
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
