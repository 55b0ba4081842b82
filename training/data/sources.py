"""Where the videos come from: a local folder, a Hub dataset id or parquet shards, all as ``datasets`` streams.

Every source becomes a :class:`datasets.IterableDataset` of rows ``{"video": {"path", "bytes"}, "key",
"source", <metadata columns>}`` with **one shard per video file** (local folders, path-only Hub folders)
or per parquet file, so DataLoader workers and DDP ranks (``split_dataset_by_node``) split whole files.
A local ``videofolder`` would stream as one shard (``datasets`` only shards lists), which serialises all
workers; hence the rows are listed here and fed to ``IterableDataset.from_generator``.

* ``key`` is the video's identity (its file name, or ``key_column``): it seeds per-item randomness and
  decides the meta split, so the same file gets the same treatment from a folder, the Hub or parquet.
* ``source`` names the sub-dataset per row (``source_column`` when the metadata has it, else the folder,
  repo or file-stem name): the trainer histograms CMW weights per source.
* Filters keep rows whose column is in the given values (``filters``) and drop rows whose column is in
  ``exclude`` (e.g. the evaluation fold); a column absent from the metadata is a :class:`DataError`.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["VIDEO_EXTENSIONS", "SourceSpec", "VideoSource", "folder_rows", "open_source", "meta_split_fn", "row_filter"]

log = logging.getLogger(__name__)

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


@dataclass
class VideoSource:
    """Rows of one or more sources; ``rows`` is set for local folders (listed up front), else ``None``."""

    dataset: Any  # datasets.IterableDataset
    rows: list[dict[str, Any]] | None
    names: tuple[str, ...]


def _is_local(source: str) -> bool:
    return os.path.isdir(source) or any(ch in source for ch in "*?[") or source.endswith(".parquet")


def _clean(value: str) -> Any:
    """CSV cells as the metadata means them: '' is missing, integers stay integers."""
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return value


def folder_rows(spec: SourceSpec) -> list[dict[str, Any]]:
    root = Path(spec.source)
    name = root.resolve().name
    meta = root / "metadata.csv"
    rows: list[dict[str, Any]] = []
    if meta.is_file():
        with meta.open(newline="", encoding="utf-8") as f:
            for rec in csv.DictReader(f):
                rel = rec.pop("file_name", None)
                if rel is None:
                    raise DataError(f"{meta}: no 'file_name' column (videofolder layout: file_name,<metadata>...)")
                row = {k: _clean(v) for k, v in rec.items()}
                row["video"] = {"path": str(root / rel), "bytes": None}
                rows.append(row)
    else:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in spec.extensions):
            rows.append({"video": {"path": str(path), "bytes": None}})
    for row in rows:
        row["key"] = str(row.get(spec.key_column) if spec.key_column else os.path.basename(row["video"]["path"]))
        row["source"] = str(row.get(spec.source_column) or name)
    return rows


def _streamed(spec: SourceSpec) -> Any:
    """A Hub dataset id or parquet files, streamed; video column cast to undecoded ``{path, bytes}``."""
    from datasets import Video, load_dataset

    if _is_local(spec.source):
        files = sorted(glob.glob(spec.source)) if not os.path.isdir(spec.source) else []
        if not files:
            raise DataError(f"{spec.source}: no parquet file matches (give a folder of videos or 'dir/*.parquet')")
        ds = load_dataset("parquet", data_files={spec.split: files}, split=spec.split, streaming=True)
        name = Path(files[0]).parent.name or "parquet"
    else:
        try:
            ds = load_dataset(spec.source, split=spec.split, streaming=True)
        except Exception as e:  # datasets raises many types: name the source and the fix
            raise DataError(f"{spec.source}: cannot open as a folder, parquet glob or Hub dataset ({e})") from e
        name = spec.source.rsplit("/", 1)[-1]
    if spec.video_column not in (ds.features or {}):
        raise DataError(
            f"{spec.source}: no video column {spec.video_column!r} (columns: {list(ds.features or {})}); "
            "set video_column"
        )
    # cast_column(Video(decode=False)) alone still yields decoders for a streamed Hub videofolder (datasets 5.2)
    ds = ds.cast_column(spec.video_column, Video(decode=False)).decode(False)
    if spec.video_column != "video":
        ds = ds.rename_column(spec.video_column, "video")
    key_col, src_col, cols = spec.key_column, spec.source_column, set(ds.features)

    def _annotate(row: dict[str, Any]) -> dict[str, Any]:
        video = row["video"]
        if key_col:
            key = str(row[key_col])
        elif video.get("path"):
            key = os.path.basename(video["path"])
        else:
            key = hashlib.blake2b(video["bytes"] or b"", digest_size=12).hexdigest()
        return {"key": key, "source": str(row[src_col]) if src_col in cols and row[src_col] else name}

    ds = ds.map(_annotate)
    if ds.num_shards < 2 and not _is_local(spec.source):
        # a Hub *videofolder* streams as one shard of paths: list it (cheap, no bytes) to shard per file
        first = next(iter(ds.take(1)), None)
        if first is not None and not first["video"].get("bytes"):
            return [dict(r) for r in ds]
    return ds


def _rows_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import IterableDataset

    def gen(rows: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        yield from rows

    # the video column holds plain dicts; features are inferred from the first row of each shard
    return IterableDataset.from_generator(gen, gen_kwargs={"rows": rows})


def row_filter(
    filters: Mapping[str, Any] | None, exclude: Mapping[str, Any] | None, columns: Iterable[str] | None = None
) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate keeping rows whose ``filters`` columns match and whose ``exclude`` columns do not.

    Values may be a scalar or a list; numbers and their string forms compare equal (CSV vs parquet).
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
            raise DataError(f"filter column(s) {missing} not in the metadata (columns: {sorted(columns)})")

    def keep(row: Mapping[str, Any]) -> bool:
        return all(str(row.get(k)) in v for k, v in inc.items()) and not any(
            str(row.get(k)) in v for k, v in exc.items()
        )

    return keep


def meta_split_fn(fraction: float, seed: int, group_column: str | None = None) -> Callable[[Mapping[str, Any]], bool]:
    """``row -> True`` for the held-out meta split: a seeded hash of the key (or group) below ``fraction``.

    Depends only on the identity, never on listing order, so it is the same from a folder, the Hub or
    parquet, on every rank, and a video stays on its side when the corpus grows.
    """

    def is_meta(row: Mapping[str, Any]) -> bool:
        ident = str(row.get(group_column)) if group_column else str(row["key"])
        h = hashlib.blake2b(f"{seed}:{ident}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2.0**64 < fraction

    return is_meta


def open_source(
    specs: Sequence[SourceSpec],
    filters: Mapping[str, Any] | None = None,
    exclude: Mapping[str, Any] | None = None,
    split: Callable[[Mapping[str, Any]], bool] | None = None,
) -> VideoSource:
    """All sources as one stream of rows, one shard per file, keeping rows that pass the filters and ``split``."""
    from datasets import concatenate_datasets

    local_rows: list[dict[str, Any]] = []
    streams = []
    for spec in specs:
        got = folder_rows(spec) if os.path.isdir(spec.source) else _streamed(spec)
        if isinstance(got, list):
            if not got:
                raise DataError(f"{spec.source}: no video files ({', '.join(spec.extensions)}) and no metadata.csv")
            keep = row_filter(filters, exclude, set().union(*(r.keys() for r in got)))
            local_rows += [r for r in got if (keep is None or keep(r)) and (split is None or split(r))]
        else:
            keep = row_filter(filters, exclude, got.features)
            if keep is not None:
                got = got.filter(keep)
            if split is not None:
                got = got.filter(split)
            streams.append(got.select_columns(["video", "key", "source"]))
    parts = streams
    if local_rows:
        # only what the pipeline needs: metadata columns may mix types and missing cells across folders
        slim = [{"video": r["video"], "key": r["key"], "source": r["source"]} for r in local_rows]
        parts = [_rows_dataset(slim), *streams]
    elif not streams:
        raise DataError(
            f"no video left in {[s.source for s in specs]} after filters/exclude/meta split; loosen the filters"
        )
    ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return VideoSource(ds, local_rows if not streams else None, tuple(s.source for s in specs))
