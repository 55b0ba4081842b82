"""Frame videos: ultrasound corpora shared as sampled frame images per video, not as video files.

The authors' US-4 and most ultrasound corpora come as folders of frames, as image datasets with a video-id
column, or as one row per video holding a list of images (:mod:`.sources` reads each kind). Every such video
becomes one pipeline value, the same mapping a video file becomes, so sharding, the meta split, filters, resume,
the frame cache and the frame store treat it exactly as a video::

    {"path": <folder or None>, "bytes": None, "frames": [{"path", "bytes"}, ...], "name": <video name>}

(a video file is ``{"path", "bytes", "frames": None, "name": None}``). :mod:`.decode` reads the images with
PIL; this module only says what a frame video is, and in which order frames named by files play: *natural* order
of their names (``frame2`` before ``frame10``, as the authors' loader sorts the number after ``frame``). It
imports nothing heavy: sources, the cache, the decoder and the evaluation all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FRAME_EXTENSIONS", "frame_name", "frame_video", "is_frame_video", "natural_key", "video_value"]

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
