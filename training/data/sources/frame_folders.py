"""Frame folders: a video shared as its sampled frame images, ``root/<video>/<frame>.png``, is one video, and so is
its published form, one dataset row holding the list of images (``datasets`` ``List(Image())``).

Ultrasound corpora (the authors' US-4 among them) mostly come as frames, not video files. A frame folder sits in
a local folder beside video files or instead of them (:mod:`.video_folder` lists both; :mod:`..folders` says
which folders count); its frames play in natural name order (``frame2`` before ``frame10``). A list-of-images
row comes from parquet files or a Hub dataset (:mod:`.columns`); its frames play in list order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..folders import FolderEntry, frame_files
from ..frames import frame_video
from .spec import SourceSpec

__all__ = ["folder_video", "frames_cell", "frames_key"]


def folder_video(entry: FolderEntry, root: Path, key: str) -> dict[str, Any]:
    """A frame folder of ``root`` as a frame video named ``key`` (links among its frames stay inside ``root``)."""
    frames = frame_files(entry.path, root, entry.where)
    return frame_video([{"path": str(p), "bytes": None} for p in frames], key, str(entry.path))


def frames_key(frames: Sequence[Mapping[str, Any]]) -> str:
    """An identity for a list-of-images row without a key column: a hash of its frames' paths (or bytes)."""
    h = hashlib.blake2b(digest_size=12)
    for f in frames:
        path = f.get("path")
        h.update(str(path).encode() if path else hashlib.blake2b(f.get("bytes") or b"").digest())
        h.update(b"\0")
    return h.hexdigest()


def frames_cell(spec: SourceSpec, record: Mapping[str, Any], column: str) -> tuple[dict[str, Any], str]:
    """``(video, key)`` of a dataset row whose ``column`` holds a list of images: keyed by ``key_column``, else by
    its frames (:func:`frames_key`)."""
    value = record[column]
    key = str(record[spec.key_column]) if spec.key_column else frames_key(value)
    return frame_video(value, key), key
