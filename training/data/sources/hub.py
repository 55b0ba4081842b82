"""A Hub dataset id, streamed (``load_dataset(id, streaming=True)``); what its rows hold is read from the columns
(:mod:`.columns`), and ``source`` defaults to the repo name.

A Hub *videofolder* (or image folder) streams as one shard of paths, which would serialise every DataLoader worker
and rank; it is listed instead (cheap: paths, no bytes), so it shards per file like a local folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..frames import is_frame_video
from .columns import open_columns
from .spec import LayoutError, Listed, SourceSpec, Streamed

__all__ = ["open_hub"]


def _path_only(video: Mapping[str, Any]) -> bool:
    if is_frame_video(video):
        return not any(f.get("bytes") for f in video["frames"])
    return not video.get("bytes")


def open_hub(spec: SourceSpec) -> Listed | Streamed:
    """The Hub dataset ``spec.source``, streamed, or listed when it is a single shard of paths."""
    from datasets import load_dataset  # deferred: datasets is heavy and only sources that stream need it

    try:
        ds = load_dataset(spec.source, split=spec.split, streaming=True)
    except Exception as e:  # datasets raises many types: name the source and the fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LayoutError(f"{spec.source}: cannot open as a folder, parquet glob or Hub dataset ({first})") from e
    got = open_columns(spec, ds, spec.source.rsplit("/", 1)[-1])
    if isinstance(got, Streamed) and got.dataset.num_shards < 2:
        first_row = next(iter(got.dataset.take(1)), None)
        if first_row is not None and _path_only(first_row["video"]):
            return Listed([dict(r) for r in got.dataset])
    return got
