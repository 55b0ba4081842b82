"""Evaluation items that are also in the pretraining data, counted and warned about (issue 18.7).

Why: an encoder pretrained on a task's own videos scores those videos better than it would unseen ones, and
nothing said so: the README's fixtures are all POCUS videos, and ``--online-eval pocus`` on them was silent.
An item counts as seen when one of its files (a video, an image, or a frame of a frame folder) is

* the same file as a pretraining file (resolved path: links and ``..`` do not hide it),
* a byte-identical copy (a content digest, computed only for files of a pretraining file's size), or
* re-encoded from a pretraining file: the task's metadata.csv records the file it was made from in an
  ``original_path`` column (the built-in POCUS task does) and a pretraining file has that name.

Pretraining sources that are not folders or files on this machine (a Hub dataset, a parquet glob) cannot be
compared and are named in the log. Every file under a pretraining folder counts, whatever filters the run
applied: the warning errs on the side of telling.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import Item, TaskSpec

__all__ = ["PretrainFiles", "Leak", "find_leaks", "warn_leakage"]

log = logging.getLogger(__name__)


def _digest(path: Path) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _files_under(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for top, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (Path(top) / n for n in sorted(names) if not n.startswith("."))


@dataclass
class PretrainFiles:
    """Every file of the local pretraining sources: resolved paths, names, and paths by size (for digests)."""

    sources: tuple[str, ...]
    skipped: tuple[str, ...]  # sources not on this machine: not compared
    resolved: set[Path] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    by_size: dict[int, list[Path]] = field(default_factory=dict)
    _digests: dict[Path, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, sources: Sequence[str | os.PathLike]) -> PretrainFiles:
        local = [s for s in map(str, sources) if Path(s).expanduser().exists()]
        found = cls(tuple(local), tuple(str(s) for s in sources if str(s) not in local))
        for source in local:
            for f in _files_under(Path(source).expanduser()):
                real = f.resolve()
                found.resolved.add(real)
                found.names.add(f.name)
                found.by_size.setdefault(real.stat().st_size, []).append(real)
        return found

    def digest(self, path: Path) -> bytes:
        if path not in self._digests:
            self._digests[path] = _digest(path)
        return self._digests[path]

    def match(self, path: Path, original: str | None) -> str | None:
        """How ``path`` (an evaluation file) is in the pretraining data: ``same file``, ``same content``,
        ``made from <name>``, or None."""
        real = path.resolve()
        if real in self.resolved:
            return "same file"
        twins = self.by_size.get(real.stat().st_size, [])
        if twins and any(self.digest(t) == self.digest(real) for t in twins):
            return "same content"
        if original and original in self.names:
            return f"made from {original}"
        return None


@dataclass(frozen=True)
class Leak:
    """An evaluation item found in the pretraining data, and how."""

    item: str  # relative to the task folder
    how: str


def _originals(base: Path) -> dict[str, str]:
    """``file_name`` (normalised) -> the name of the file it was made from, when metadata.csv records it."""
    path = base / "metadata.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return {
        os.path.normpath(r["file_name"]): Path(r["original_path"].replace("\\", "/")).name
        for r in rows
        if r.get("file_name") and r.get("original_path")
    }


def _item_files(item: Item) -> list[Path]:
    return list(_files_under(item.path)) if item.path.is_dir() else [item.path]


def find_leaks(items: Sequence[Item], base: Path, pretrain: PretrainFiles) -> list[Leak]:
    """The items of one task (files under ``base``) that are in the pretraining data."""
    originals, root = _originals(base), base.expanduser().resolve()
    leaks = []
    for it in items:
        rel = os.path.relpath(it.path.resolve(), root)
        original = originals.get(os.path.normpath(rel))
        how = next((m for f in _item_files(it) if f.is_file() and (m := pretrain.match(f, original))), None)
        if how is not None:
            leaks.append(Leak(rel, how))
    return leaks


def warn_leakage(
    spec: TaskSpec, base: Path, items: Sequence[Item], pretrain: PretrainFiles, *, context: str
) -> list[Leak]:
    """Warn (naming how many, how, and a few of them) when ``items`` are in the pretraining data; ``context``
    says which evaluation it is (``online evaluation``, ``evaluate``)."""
    if pretrain.skipped:
        log.info(
            "%s: pretraining sources %s are not on this machine: not checked for leakage",
            context,
            pretrain.skipped,
        )
    leaks = find_leaks(items, base, pretrain)
    if leaks:
        kinds: dict[str, int] = {}
        for leak in leaks:
            kind = "made from a pretraining file (original_path)" if leak.how.startswith("made from") else leak.how
            kinds[kind] = kinds.get(kind, 0) + 1
        shown = ", ".join(f"{leak.item} ({leak.how})" for leak in leaks[:5]) + (", ..." if len(leaks) > 5 else "")
        log.warning(
            "%s: %d of %d %s items are also in the pretraining data %s (%s): their scores are not of unseen data; %s",
            context,
            len(leaks),
            len(items),
            spec.name,
            ", ".join(pretrain.sources),
            ", ".join(f"{n} {k}" for k, n in kinds.items()),
            shown,
        )
    return leaks
