"""Your own data as an evaluation task (``--task-dir DIR``): the built-in tasks' protocols, metrics, leak checks
and one-line errors on a folder of images, masks, videos or frame folders.

Layouts, detected in this order (``--task-kind`` fixes the kind instead of detecting it):

* ``DIR/metadata.csv`` with a ``file_name`` column (paths relative to DIR, as Hugging Face folder datasets):
  a ``mask_file_name`` column makes it **segmentation**; otherwise the first file decides: a video file or a
  folder of frames is **video** classification, an image **image** classification (a ``label`` column, or
  ``--label-column COL``).
  A ``group`` column (or ``--group-column COL``, e.g. ``patient``) keeps each group inside one fold; a
  ``fold`` column, when present, is used as given.
* Class folders ``DIR/<class>/<file>``: images, or videos / frame folders (``DIR/<class>/<clip>/*.png``).
  Every file is its own group: for frames of one patient in several files, use a metadata.csv with a group.

Without a ``fold`` column the folds are a deterministic grouped k-fold (:func:`assign_folds`): the same
folder always gets the same folds, whatever the seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import EvaluationError
from .config import DEFAULT_FOLDS, TASK_KINDS
from .decoding import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .metadata import Columns, check_classes, inside, read_metadata
from .tasks import Item, TaskSpec, rows_to_items

__all__ = ["task_from_dir", "assign_folds"]

log = logging.getLogger(__name__)


def _kind_of(path: Path) -> str | None:
    if path.is_dir():
        return "video"
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def _check_labels(labels: Sequence[str], where: Path) -> tuple[str, ...]:
    """The classes (sorted); labels that differ only in case or spaces (``covid`` / ``COVID ``) are refused."""
    classes = tuple(sorted(set(labels)))
    folded: dict[str, list[str]] = {}
    for c in classes:
        folded.setdefault(c.strip().lower(), []).append(c)
    clashes = [v for v in folded.values() if len(v) > 1]
    if clashes or any(not c.strip() for c in classes):
        raise EvaluationError(
            f"{where}: labels {clashes or ['']} differ only in case or spaces (or are empty); fix the typos"
        )
    return classes


def _from_csv(
    folder: Path, path: Path, kind: str | None, group_column: str | None, label_column: str | None
) -> tuple[str, tuple[str, ...], list[Item]]:
    wanted = [c for c in (group_column, label_column) if c]
    rows = read_metadata(path, ["file_name", *wanted])
    label = label_column or "label"
    if not rows:
        raise EvaluationError(f"{path}: no rows; list one file per row")
    header = rows[0][1]
    if kind == "segmentation" and "mask_file_name" not in header:
        raise EvaluationError(f"{path}: segmentation needs a mask_file_name column (mask paths relative to {folder})")
    kind = kind or ("segmentation" if "mask_file_name" in header else None)
    if kind is None:
        first = inside(folder, rows[0][1]["file_name"], f"{path} line 2")
        kind = _kind_of(first)
        if kind is None:
            raise EvaluationError(f"{path} line 2: {first.name} is not an image, a video or a frame folder")
    has_label = label in header
    if kind != "segmentation" and not has_label:
        raise EvaluationError(f"{path}: {kind} classification needs a label column (or --label-column COL)")
    labels = _check_labels([r[label] for _, r in rows], path) if has_label else ("",)
    cols = Columns(
        labels,
        label=label if has_label else None,
        group=group_column or ("group" if "group" in header else None),
        fold="fold" if "fold" in header else None,
        mask="mask_file_name" if kind == "segmentation" else None,
    )
    classes = ("foreground",) if kind == "segmentation" else labels  # a segmentation's labels only stratify
    return kind, classes, rows_to_items(rows, folder, cols, None, path)


def _class_entries(folder: Path) -> list[tuple[str, Path]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise EvaluationError(
            f"{folder}: neither a metadata.csv nor class folders; put each class's files in DIR/<class>/ or "
            "list them in DIR/metadata.csv (file_name, label)"
        )
    entries = []
    for c in classes:
        files = sorted(p for p in (folder / c).iterdir() if not p.name.startswith("."))
        if not files:
            raise EvaluationError(f"{folder / c}: an empty class folder; add its files or remove it")
        entries += [(c, inside(folder, f"{c}/{p.name}", str(folder / c))) for p in files]
    seen: dict[Path, Path] = {}
    for _, p in entries:  # a link to another class's file would put one image in two classes and folds (N1)
        first = seen.setdefault(p.resolve(), p)
        if first != p:
            raise EvaluationError(f"{p}: the same file as {first}; keep each file once, in one class folder")
    return entries


def _from_class_folders(folder: Path, kind: str | None) -> tuple[str, tuple[str, ...], list[Item]]:
    if kind == "segmentation":
        raise EvaluationError(f"{folder}: segmentation needs DIR/metadata.csv with file_name and mask_file_name")
    entries = _class_entries(folder)
    kinds = {p: _kind_of(p) for _, p in entries}
    stray = [p for p, k in kinds.items() if k is None]
    if stray:
        raise EvaluationError(f"{stray[0]}: not an image, a video or a frame folder; remove it from {folder}")
    found = set(kinds.values())
    if len(found) > 1 or (kind is not None and found != {kind}):
        raise EvaluationError(
            f"{folder}: the class folders hold {sorted(k for k in found if k)}, expected one kind"
            f"{f' ({kind})' if kind else ''}; keep images and videos in separate task folders"
        )
    classes = tuple(sorted({c for c, _ in entries}))
    items = [Item(p, classes.index(c), os.path.relpath(p, folder), -1) for c, p in entries]
    return found.pop() or "image", classes, items


def _check_class_sizes(
    items: Sequence[Item], classes: Sequence[str], folds: Sequence[int], folder: Path, csv_path: Path | None
) -> None:
    """Refuse a one-item class, naming its row; warn, naming the rows, about a class missing from a test fold.

    Why: a typo (``malignnat``) or a one-image class becomes a class of its own that most test folds lack, and
    their macro-F1 averages in its zero (about two thirds of the two-class figure), with rc 0 (N6). One item
    can never be both learned and tested, so it is refused; a rare class is real data, so it is a warning."""
    where: dict[int, list[str]] = {}
    lines = _csv_lines(csv_path) if csv_path is not None else {}
    for it in items:
        rel = os.path.relpath(it.path, folder)
        where.setdefault(it.label, []).append(f"line {lines[rel]}" if rel in lines else rel)
    source = csv_path or folder
    for c, at in sorted(where.items()):
        if len(at) == 1:
            raise EvaluationError(
                f"{source}: class {classes[c]!r} has one item ({at[0]}): it can never be both learned and tested, "
                "and the folds without it average a zero into macro-F1; fix the label if it is a typo, or drop it"
            )
        missing = sorted(set(folds) - {it.fold for it in items if it.label == c})
        if missing:
            log.warning(
                "%s: class %r (%d items: %s) is in no test item of fold(s) %s; the macro-F1 of those folds "
                "averages in a zero for it",
                source,
                classes[c],
                len(at),
                ", ".join(at[:8]) + (", ..." if len(at) > 8 else ""),
                ", ".join(map(str, missing)),
            )


def _csv_lines(csv_path: Path) -> dict[str, str]:
    """``file_name`` (normalised) -> its line in the metadata.csv, to name a class's rows."""
    return {os.path.normpath(r["file_name"]): str(line) for line, r in read_metadata(csv_path, ["file_name"])}


def _stable(group: str) -> str:
    return hashlib.sha1(group.encode()).hexdigest()


def assign_folds(items: Sequence[Item], k: int, where: Path) -> list[Item]:
    """Deterministic grouped, label-balanced k-fold: groups, largest first (ties by a hash of the name, so file
    order does not matter), each go to the fold holding fewest items of the group's majority label, then fewest
    items. A group never spans two folds."""
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.group, []).append(i)
    if len(groups) < k:
        raise EvaluationError(f"{where}: {len(groups)} groups cannot fill {k} folds; add data or give a fold column")
    per_label = [Counter() for _ in range(k)]  # type: list[Counter[int]]
    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for g in sorted(groups, key=lambda g: (-len(groups[g]), _stable(g))):
        label = Counter(items[i].label for i in groups[g]).most_common(1)[0][0]
        fold = min(range(k), key=lambda f: (per_label[f][label], sizes[f], f))
        fold_of[g] = fold
        per_label[fold][label] += len(groups[g])
        sizes[fold] += len(groups[g])
    return [Item(it.path, it.label, it.group, fold_of[it.group], it.mask) for it in items]


def task_from_dir(
    folder: str | os.PathLike,
    kind: str | None = None,
    group_column: str | None = None,
    n_folds: int = len(DEFAULT_FOLDS),
    *,
    label_column: str | None = None,
) -> tuple[TaskSpec, list[Item]]:
    """The task (its spec) and items of a user folder; see the module docstring for the layouts.
    ``label_column``: the metadata.csv column holding the class (default: ``label``), e.g. ``diagnosis``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EvaluationError(f"--task-dir {folder}: no such folder")
    if kind is not None and kind not in TASK_KINDS:
        raise EvaluationError(f"--task-kind {kind!r}: choose one of {', '.join(TASK_KINDS)}")
    csv_path = folder / "metadata.csv"
    if csv_path.is_file():
        kind, classes, items = _from_csv(folder, csv_path, kind, group_column, label_column)
        where = csv_path
    else:
        for flag, column in (("--group-column", group_column), ("--label-column", label_column)):
            if column:
                raise EvaluationError(f"{flag} {column}: {folder} has no metadata.csv to hold that column")
        kind, classes, items = _from_class_folders(folder, kind)
        where = folder
    if kind != "segmentation":
        check_classes((it.label for it in items), classes, where)
    if items[0].fold < 0:
        items = assign_folds(items, n_folds, where)
    folds = tuple(sorted({it.fold for it in items}))
    if kind != "segmentation":
        _check_class_sizes(items, classes, folds, folder, csv_path if csv_path.is_file() else None)
    grouped = len({it.group for it in items}) < len(items)
    grouping = f"grouped by {group_column or 'group'}" if grouped else "one file per group"
    if not grouped:
        log.warning(
            "%s: every file is its own group; if several files come from one patient or video, give a group "
            "column in metadata.csv (--group-column) or the folds leak",
            folder,
        )
    spec = TaskSpec(
        name=folder.name,
        folder=str(folder.resolve()),
        kind=kind,  # type: ignore[arg-type]  # one of TASK_KINDS, checked above
        classes=classes,
        finetune="last_block" if kind == "video" else "all",
        description=f"{folder.name}: {len(items)} {kind} items, {len(classes)} classes, {len(folds)} folds {grouping}",
        folds=folds,
    )
    return spec, items
