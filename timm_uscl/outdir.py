"""Output folders that lose nothing: refuse what would be overwritten, stage, then swap the new files in.

Why staging: an export is several files that must describe each other (config.json records the sha256 of
model.safetensors, the card renders both). Writing them into a hidden folder inside the output first means a
failure (bad weights, full disk) leaves the old folder exactly as it was, and ``os.replace`` then swaps each file
in without ever opening the old path, so a planted symlink is replaced, never written through (and refused before
that anyway). With ``overwrite``, exactly the files listed by :func:`check_out_dir` are removed: no stale
``cmw_net.safetensors`` of an earlier run survives next to new weights. ``overwrite`` replaces an export only: a
folder that also holds files an export does not write (:func:`is_export_file`) is refused, so nothing of the
user's is deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputFolderError

__all__ = [
    "EXPORT_NAMES",
    "is_export_file",
    "check_out_dir",
    "check_new_dir",
    "staging",
    "commit",
    "write_text_atomic",
    "write_bytes_atomic",
]

_STAGING_PREFIX = ".timm-uscl-staging-"
EXPORT_NAMES = ("config.json", "model.safetensors", "README.md")
"""The files every export holds; any other ``*.safetensors`` beside them is an extra (projection head, CMW-Net)."""


def is_export_file(name: str) -> bool:
    """A file an export writes: what ``--overwrite`` may replace and ``push`` may upload (nothing else)."""
    return name in EXPORT_NAMES or (name.endswith(".safetensors") and not name.startswith("."))


def _refuse_links_and_folders(out: Path) -> list[str]:
    names = []
    for entry in sorted(out.iterdir()):
        if entry.is_symlink():
            raise OutputFolderError(
                f"{entry} is a symbolic link: timm-uscl never writes through links; remove it or pick another folder."
            )
        if entry.is_dir() and not entry.name.startswith(_STAGING_PREFIX):
            raise OutputFolderError(
                f"{out} holds the folder {entry.name}/, so it is not an export folder; pick a new or empty folder."
            )
        names.append(entry.name)
    return names


def check_out_dir(
    out_dir: str | os.PathLike, overwrite: bool = False, owned: tuple[str, ...] = ()
) -> tuple[Path, list[str]]:
    """The output folder and the names of the files an export would replace (refused unless ``overwrite``);
    ``owned`` names further files the caller writes there (the local store's record)."""
    if not str(out_dir).strip():
        raise OutputFolderError("the output folder is empty (''): give a folder, e.g. --out exports/my_model.")
    out = Path(out_dir)
    if out.is_symlink():
        raise OutputFolderError(f"{out} is a symbolic link: give the real folder it points to, or a new folder.")
    if not out.exists():
        return out, []
    if not out.is_dir():
        raise OutputFolderError(f"{out} is a file, not a folder: give a new or empty folder.")
    existing = _refuse_links_and_folders(out)
    if existing and not overwrite:
        shown = ", ".join(existing[:8]) + (" ..." if len(existing) > 8 else "")
        raise OutputFolderError(
            f"{out} is not empty (holds {shown}): pick a new folder, or pass --overwrite (overwrite=True) to "
            f"replace exactly those files."
        )
    foreign = [
        name for name in existing if not (is_export_file(name) or name in owned or name.startswith(_STAGING_PREFIX))
    ]
    if foreign:  # --overwrite replaces an export, never a user's own files that happen to sit in the folder
        shown = ", ".join(foreign[:8]) + (" ..." if len(foreign) > 8 else "")
        raise OutputFolderError(
            f"{out} holds files an export does not write ({shown}); --overwrite replaces only an export's files: "
            f"move those out, or pick a new folder."
        )
    return out, existing


def check_new_dir(out_dir: str | os.PathLike, flag: str) -> Path:
    """A folder of outputs that are never overwritten (``flag`` names the option in messages): new, or empty but
    for the staging folders a killed writer left; never a link or a file; its parent must exist. No
    ``--overwrite`` here: what such a folder holds (e.g. masks a measurement was made from) is the user's."""
    if not str(out_dir).strip():
        raise OutputFolderError(f"{flag} '': give a folder, e.g. {flag} masks/")
    out = Path(out_dir).expanduser()
    if out.is_symlink():
        raise OutputFolderError(f"{flag} {out} is a symbolic link: give the real folder it points to, or a new one.")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{flag} {out} is a file, not a folder: give a new or empty folder.")
    if not out.exists() and not out.parent.is_dir():
        raise OutputFolderError(f"{flag} {out}: its folder {out.parent} does not exist; create it first.")
    held = sorted(e.name for e in out.iterdir() if not e.name.startswith(_STAGING_PREFIX)) if out.exists() else []
    if held:
        shown = ", ".join(held[:8]) + (" ..." if len(held) > 8 else "")
        raise OutputFolderError(
            f"{flag} {out} is not empty (holds {shown}): it is never overwritten; pick a new or empty folder."
        )
    return out


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A private folder inside ``out`` to write into; removed afterwards, with ``out`` if this call created it."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def _readable_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit(stage: Path, out: Path, stale: list[str]) -> None:
    """Remove exactly the ``stale`` entries of ``out``, then move every staged file in (never through a link)."""
    for name in stale:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    mode = _readable_mode()  # safetensors writes 0600; an export is meant to be shared like its config and card
    for staged in sorted(stage.iterdir()):
        os.chmod(staged, mode)
        os.replace(staged, out / staged.name)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace one file of an existing folder (a card, a config) without writing through a symlink."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """:func:`write_text_atomic` for bytes (a PNG): a reader never sees half a file, a link is never followed."""
    if path.is_symlink():
        raise OutputFolderError(f"{path} is a symbolic link: timm-uscl never writes through links; remove it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _readable_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
