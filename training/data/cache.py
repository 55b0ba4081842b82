"""A local, git-ignored cache of decoded clips: resized uint8 frames, one ``.npy`` per clip, read as memory maps.

Why it exists: most ultrasound clips are a single GOP, so a sparse read of three frames costs most of a whole-clip
decode (see :mod:`.decode`); the first touch of a clip decodes it whole and stores the resized frames here, later
epochs read three frames from a memory map. Allowed even for CC BY-NC-ND data: it is for your own use, never shared.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FrameCache"]


class FrameCache:
    """Resized uint8 frames of whole clips, one ``.npy`` per clip, read back as memory maps.

    A local, git-ignored cache for your own use (allowed even for CC BY-NC-ND data: nothing is shared).
    The key covers the clip identity (path + size + mtime, or a hash of the bytes), the size and the mode,
    so a changed file or setting never reads stale frames. Writes go to a temporary file and are renamed,
    so concurrent workers and ranks never see half a file.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, video: Any, size: int, grayscale: bool) -> str:
        h = hashlib.blake2b(f"{size}:{int(grayscale)}:".encode(), digest_size=16)
        if isinstance(video, Mapping) and video.get("bytes"):
            h.update(video["bytes"])
        elif isinstance(video, bytes | bytearray):
            h.update(video)
        else:
            path = os.fspath(video["path"] if isinstance(video, Mapping) else video)
            if "://" in path:
                h.update(path.encode())
            else:
                st = os.stat(path)
                h.update(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        path = self.root / f"{key}.npy"
        try:
            return np.load(path, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, key: str, frames: torch.Tensor) -> None:
        tmp = self.root / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, frames.numpy())
        os.replace(tmp, self.root / f"{key}.npy")
