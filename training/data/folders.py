"""A local folder as a data root: what it lists (``metadata.csv`` rows, else a scan), and the rule that nothing
outside it is read.

A folder lists its videos in one of two ways:

* **metadata.csv** (videofolder / imagefolder layout): each row's ``file_name`` names a video file, a frame
  folder (``root/<video>/`` holding that video's frame images) or, for an image dataset grouped by a video-id
  column, one frame image. Video files and frame folders may be mixed: each is one video.
* **a scan** (no metadata.csv): every file with a video extension, at any depth. A folder without video files
  is a folder of frame folders: every directory that directly holds frame images (:data:`.frames.FRAME_EXTENSIONS`,
  hidden files ignored) is one video, at any depth (the authors' loader walks the tree the same way). When a scan
  finds both, the videos win and the image folders are named in a warning (a video corpus often carries stray
  images, thumbnails or figures; list frame folders in metadata.csv to train on both). Frame images directly in
  the root belong to no video and are refused.

Every entry is checked to stay inside the folder (:func:`inside`): a metadata.csv row (or a link found by the
scan, a frame in a frame folder) that resolves outside it is refused with one line naming the row, before
anything is opened. Refused, not skipped: a silently shrunken corpus trains without anyone noticing, and an
untrusted metadata.csv must not reach files elsewhere.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .frames import FRAME_EXTENSIONS, natural_key

__all__ = ["FolderEntry", "clean", "frame_files", "inside", "list_entries", "read_metadata"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderEntry:
    """One video a folder lists: its name as written (``rel``), where it was listed (for messages), its metadata."""

    rel: str
    path: Path
    where: str
    metadata: dict[str, Any]


def clean(value: str) -> Any:
    """CSV cells as the metadata means them: '' is missing, integers stay integers."""
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return value


def inside(root: Path, rel: str, where: str) -> Path:
    """``root/rel`` if it stays inside ``root`` once resolved; else a one-line :class:`DataError`.

    Why: a metadata.csv (or a link in the folder) from an untrusted source must not make the trainer or
    ``publish-dataset`` open files elsewhere (``../``, absolute names, symbolic links out of the folder).
    Nothing is opened here: the check works on names and ``resolve()`` only.
    """
    real_root = root.resolve()
    if not rel or os.path.isabs(rel):
        what = "empty" if not rel else f"an absolute path, outside {root}"
        raise DataError(f"{where}: file_name {rel!r} is {what}; give paths relative to the folder")
    path = Path(os.path.normpath(root / rel))
    real = path.resolve()
    if real.is_relative_to(real_root):
        return path
    if not os.path.normpath(rel).startswith(".."):
        raise DataError(
            f"{where}: {rel!r} goes through a symbolic link to {real}, outside {root}; copy the file into the "
            "folder instead"
        )
    raise DataError(f"{where}: {rel!r} points outside {root}; list only files inside the folder")


def read_metadata(meta: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line, record)`` per row of a ``metadata.csv``; encoding and layout errors are one line."""
    try:
        text = meta.read_bytes().decode("utf-8-sig")  # a byte-order mark (spreadsheet "CSV UTF-8") is fine
    except UnicodeDecodeError as e:
        raise DataError(
            f"{meta}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as UTF-8 CSV"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = [(reader.line_num, rec) for rec in reader]
    except csv.Error as e:
        raise DataError(f"{meta}: not a valid CSV file ({e}, line {reader.line_num}); fix the file") from None
    if "file_name" not in (reader.fieldnames or []):
        raise DataError(f"{meta}: no 'file_name' column (videofolder layout: file_name,<metadata>...)")
    return records


def _is_frame(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in FRAME_EXTENSIONS


def frame_files(folder: Path, root: Path, where: str) -> list[Path]:
    """The frame images directly in ``folder``, in natural name order (``frame2`` before ``frame10``).

    A frame that is a link is checked to stay inside ``root``; plain files in a folder inside it are inside.
    """
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if _is_frame(entry.name):
                if entry.is_symlink():
                    inside(root, os.path.relpath(entry.path, root), where)
                if entry.is_file():
                    names.append(entry.name)
    return [folder / name for name in sorted(names, key=natural_key)]


def _frame_folders(root: Path) -> tuple[list[str], list[str]]:
    """(frame folders relative to ``root``, frame images lying directly in ``root``); links out are refused."""
    folders: list[str] = []
    loose: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # links to folders are not followed, only checked
        dirnames.sort(key=natural_key)
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                inside(root, os.path.relpath(os.path.join(dirpath, name), root), str(root))
        images = sorted((f for f in filenames if _is_frame(f)), key=natural_key)
        if images and Path(dirpath) == root:
            loose = images
        elif images:
            folders.append(Path(os.path.relpath(dirpath, root)).as_posix())
    return folders, loose


def _scan(root: Path, extensions: tuple[str, ...]) -> list[tuple[str, str, dict[str, str]]]:
    """``(rel, where, metadata)`` per video of a folder without metadata.csv (see the module doc)."""
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    folders, loose = _frame_folders(root)
    if videos:
        if folders:
            log.warning(
                "%s: %d folder(s) of frame images ignored (%s%s): the folder holds video files; list the frame "
                "folders in a metadata.csv to train on both",
                root,
                len(folders),
                folders[0],
                ", ..." if len(folders) > 1 else "",
            )
        return [(str(p.relative_to(root)), f"{root}", {}) for p in videos]
    if loose:
        raise DataError(
            f"{root}: frame images directly in the folder ({loose[0]}{', ...' if len(loose) > 1 else ''}) belong "
            "to no video; put each video's frames in a folder of its own (root/<video>/<frame>.png), or list "
            "the images in a metadata.csv and set group_column to its video-id column"
        )
    return [(rel, f"{root}", {}) for rel in folders]


def list_entries(root: Path, extensions: tuple[str, ...]) -> list[FolderEntry]:
    """The videos (files or frame folders) or, for an image dataset, the images a local folder lists: its
    ``metadata.csv`` rows, else a scan.

    Every entry is checked to stay inside the folder (:func:`inside`) and to name a file not listed before
    (the same file twice would be trained twice, with the same seed, and on both sides of a fold).
    """
    meta = root / "metadata.csv"
    if meta.is_file():
        listed = [(rec.pop("file_name") or "", f"{meta} row {line}", rec) for line, rec in read_metadata(meta)]
    else:
        listed = _scan(root, extensions)
    entries: list[FolderEntry] = []
    seen: dict[Path, str] = {}
    for rel, where, rec in listed:
        path = inside(root, rel, where)
        real = path.resolve()
        if real in seen:
            raise DataError(
                f"{_rows_of(seen[real], where)}: {rel!r} is the same file as an earlier entry ({real.name}); "
                "list each video once"
            )
        seen[real] = where
        entries.append(FolderEntry(rel, path, where, rec))
    return entries


def _rows_of(first: str, second: str) -> str:
    """``.../metadata.csv rows 2 and 3`` from two ``... row N`` places (or the folder, twice, for a scan)."""
    head, _, a = first.rpartition(" row ")
    _, _, b = second.rpartition(" row ")
    return f"{head} rows {a} and {b}" if head else first
