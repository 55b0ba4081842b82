"""A local, git-ignored cache of decoded clips: resized uint8 frames, one ``.npy`` per clip, read as memory maps.

Why it exists: most ultrasound clips are a single GOP, so a sparse read of three frames costs most of a whole-clip
decode (see :mod:`.decode`); the first touch of a clip decodes it whole and stores the resized frames here, later
epochs read three frames from a memory map. Allowed even for CC BY-NC-ND data: it is for your own use, never shared.

Why it is built this way:

* **Keyed by content.** The key hashes the file's bytes (plus size, grayscale and decoder), never its name or
  mtime: ``cp -p`` or ``rsync -t`` can replace a video by another of the same size and mtime, and stale frames
  would then train silently. Hashing costs one read of each file per process (memoised by path, size, mtime,
  ctime, inode and device), which is small next to decoding it. A frame video (:mod:`.frames`) is keyed by the
  digests of its images in play order: editing, adding, removing or reordering a frame is another clip.
* **Never a reason to lose a video.** A write that fails (full disk, read-only folder, no permission) removes its
  temporary file, warns once per process, and stops this cache instance from writing again (a full disk is often
  the run folder's too, and checkpoints need the space); the decoded frames are used all the same.
* **Atomic and self-cleaning.** Writes go to ``.<key>.<pid>.tmp.npy`` and are renamed, so concurrent workers and
  ranks never see half a file; temporary files whose process is gone (a crash, SIGKILL) are removed when a cache
  opens. Meant for a local disk: the pid test cannot see processes of other machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .frames import is_frame_video

__all__ = ["FrameCache", "content_digest"]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.[0-9a-f]+\.(?P<pid>\d+)\.tmp\.npy$")
_DIGESTS: dict[tuple[Any, ...], bytes] = {}  # per process: a file's identity -> the hash of its bytes
_WARNED: set[str] = set()  # cache folders whose write failure was already reported by this process


def _hash_file(path: str) -> bytes:
    """blake2b-128 of a file's bytes, read in 1 MiB blocks (local paths, or remote ones through fsspec)."""
    h = hashlib.blake2b(digest_size=16)
    if "://" in path:
        import fsspec  # comes with `datasets`, which is what yields remote paths

        opened: Any = fsspec.open(path, "rb").open()
    else:
        opened = open(path, "rb")  # noqa: SIM115 - closed by the with below, for both kinds
    with opened as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def content_digest(video: Any) -> bytes:
    """A digest of the video's bytes: hashed directly for in-memory bytes, once per process for a file; a frame
    video's is the digest of its frames' digests, in order."""
    if is_frame_video(video):
        h = hashlib.blake2b(f"frames:{len(video['frames'])}:".encode(), digest_size=16)
        for frame in video["frames"]:
            try:
                h.update(content_digest(frame))
            except (OSError, TypeError):  # a missing frame is skipped by the decoder: key it by its name
                h.update(f"unreadable:{frame.get('path')}".encode())
        return h.digest()
    if isinstance(video, Mapping) and video.get("bytes"):
        return hashlib.blake2b(video["bytes"], digest_size=16).digest()
    if isinstance(video, bytes | bytearray):
        return hashlib.blake2b(video, digest_size=16).digest()
    path = os.fspath(video["path"] if isinstance(video, Mapping) else video)
    if "://" in path:
        ident: tuple[Any, ...] = (path,)  # remote paths datasets yields pin a revision
    else:
        st = os.stat(path)
        ident = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if ident not in _DIGESTS:
        _DIGESTS[ident] = _hash_file(path)
    return _DIGESTS[ident]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphans(root: Path, pattern: re.Pattern[str] = _TEMP) -> None:
    """Delete the temporary files (names matching ``pattern``, whose ``pid`` group is the writer's process id)
    that processes which no longer exist left behind: the frame cache's, and the frame store file's."""
    for entry in os.scandir(root):
        m = pattern.match(entry.name)
        if m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            with contextlib.suppress(OSError):  # another process cleaned it first, or the folder is read-only
                os.unlink(entry.path)


class FrameCache:
    """Resized uint8 frames of whole clips, one ``.npy`` per clip, read back as memory maps (see the module)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._writable = True
        remove_orphans(self.root)

    def key(self, video: Any, size: int, grayscale: bool, decoder: str) -> str:
        """The file name stem of a clip's frames: its content, the size, the mode and the decoder that made them."""
        h = hashlib.blake2b(f"{decoder}:{size}:{int(grayscale)}:".encode(), digest_size=16)
        h.update(content_digest(video))
        return h.hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        path = self.root / f"{key}.npy"
        try:
            return np.load(path, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, key: str, frames: torch.Tensor) -> bool:
        """Store a clip's frames; False (after one warning per process) when the disk refuses the write."""
        if not self._writable:
            return False
        tmp = self.root / f".{key}.{os.getpid()}.tmp.npy"
        try:
            np.save(tmp, frames.numpy())
            os.replace(tmp, self.root / f"{key}.npy")
        except OSError as e:
            self._writable = False
            with contextlib.suppress(OSError):  # a read-only folder holds no temporary file to remove
                tmp.unlink(missing_ok=True)
            if str(self.root) not in _WARNED:
                _WARNED.add(str(self.root))
                log.warning(
                    "frame cache %s: cannot write (%s); training goes on without caching more clips (free space, "
                    "or set cache_dir to another folder or to null)",
                    self.root,
                    e.strerror or e,
                )
            return False
        return True
