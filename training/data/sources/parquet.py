"""Parquet files (``dir/*.parquet`` or one file): streamed, one shard per file, so DataLoader workers and ranks
split whole files. What their rows hold (videos, lists of frames, images to group) is read from the columns
(:mod:`.columns`); ``source`` defaults to the files' folder name."""

from __future__ import annotations

import glob
from pathlib import Path

from .columns import open_columns
from .spec import LayoutError, Listed, SourceSpec, Streamed

__all__ = ["is_parquet", "open_parquet"]


def is_parquet(source: str) -> bool:
    """A glob or a ``.parquet`` name: parquet files on this machine (a folder is a folder source)."""
    return any(ch in source for ch in "*?[") or source.endswith(".parquet")


def open_parquet(spec: SourceSpec) -> Listed | Streamed:
    """The parquet files ``spec.source`` matches, as a stream."""
    from datasets import load_dataset  # deferred: datasets is heavy and only sources that stream need it

    files = sorted(glob.glob(spec.source))
    if not files:
        raise LayoutError(f"{spec.source}: no parquet file matches (give a folder or 'dir/*.parquet')")
    ds = load_dataset("parquet", data_files={spec.split: files}, split=spec.split, streaming=True)
    return open_columns(spec, ds, Path(files[0]).parent.name or "parquet")
