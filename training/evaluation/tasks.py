"""Downstream evaluation tasks: which files, labels, groups and folds each one uses, decoded into memory.

Every task reads the fixed folds of its ``metadata.csv`` so that numbers are comparable between runs and
models; a fold never shares a patient (POCUS ``group``, COVID-BLUES ``patient``) or a near-duplicate
cluster (BUSI ``dup_group``) with another, and :func:`fold_split` re-checks that instead of trusting it.
The metadata is read strictly (:mod:`.metadata`): unknown labels, folds outside the task's folds and files
outside the task folder are refused, never dropped. Decoding is :mod:`.decoding`'s; a user's own folder is
:mod:`.task_dir`'s.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import EvaluationError
from .config import DEFAULT_FOLDS, DEFAULT_TASKS
from .metadata import Columns, Row, check_classes, fold_range, inside, parse_fold, read_metadata, unknown_labels

__all__ = [
    "TASKS",
    "DEFAULT_TASKS",
    "EvaluationError",
    "TaskSpec",
    "Item",
    "TaskData",
    "resolve_data_root",
    "load_items",
    "rows_to_items",
    "subsample",
    "item_name",
    "fold_split",
    "inner_split",
    "frame_indices",
]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    folder: str
    kind: Literal["video", "image", "segmentation"]
    classes: tuple[str, ...]
    finetune: Literal["last_block", "all"]  # what the fine-tune protocol trains
    description: str
    folds: tuple[int, ...] = DEFAULT_FOLDS  # every fold value the metadata may hold


BUSI_CLASSES = ("benign", "malignant", "normal")
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "pocus",
            "pocus",
            "video",
            ("covid", "pneumonia", "regular"),
            "last_block",
            "POCUS convex 3-class, 112 videos, 5 patient-grouped folds",
        ),
        TaskSpec(
            "covid_blues",
            "covid_blues",
            "video",
            ("negative", "positive"),
            "last_block",
            "COVID-BLUES PCR label, 362 videos of 63 patients, 5 patient-level folds",
        ),
        TaskSpec(
            "covid_blues_severity",
            "covid_blues",
            "video",
            ("0", "1", "2", "3"),
            "last_block",
            "COVID-BLUES per-video severity score 0-3, 5 patient-level folds",
        ),
        TaskSpec(
            "busi",
            "busi",
            "image",
            BUSI_CLASSES,
            "all",
            "BUSI 3-class, 780 images, 5 folds grouped by near-duplicate cluster",
        ),
        TaskSpec(
            "busi_seg",
            "busi",
            "segmentation",
            ("lesion",),
            "all",
            "BUSI lesion segmentation (U-Net), 780 images, 5 grouped folds",
        ),
    )
}


@dataclass(frozen=True)
class Item:
    """One video or image of a task's eval set."""

    path: Path
    label: int
    group: str
    fold: int
    mask: Path | None = None


@dataclass
class TaskData:
    """A task decoded into memory. ``x`` rows are frames (videos) or images; ``item`` maps a row to its video.

    Rows are grey, one channel: ultrasound is grey, the pretraining decoder reads luma too, and
    :class:`.backbone.Normalize` broadcasts it to the model's three channels (a third of the memory)."""

    spec: TaskSpec
    items: list[Item]
    x: torch.Tensor  # uint8 [N, 1, S, S]
    y: torch.Tensor  # int64 [N] class, or uint8 [N, 1, S, S] mask (0/1) for segmentation
    item: torch.Tensor  # int64 [N], index into items

    @property
    def fold(self) -> np.ndarray:
        return np.array([self.items[i].fold for i in self.item.tolist()])

    @property
    def group(self) -> np.ndarray:
        return np.array([self.items[i].group for i in self.item.tolist()])


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The folder holding pocus/, covid_blues/, busi/: the argument, else $TIMM_USCL_DATA, else ../shared/data."""
    if data_root is not None:
        return Path(data_root)
    return Path(os.environ.get("TIMM_USCL_DATA") or Path.cwd().parent / "shared" / "data")


# how each built-in task's metadata.csv is read; POCUS's evaluation set is its convex videos with a fold
_COLUMNS = {
    "pocus": Columns(
        TASKS["pocus"].classes,
        group="group",
        extra=("probe",),
        include=lambda r: r["probe"] == "convex" and r["fold"].strip() != "",
    ),
    "covid_blues": Columns(("0", "1"), label="cov_test", group="patient", group_prefix="patient"),
    "covid_blues_severity": Columns(("0", "1", "2", "3"), label="severity", group="patient", group_prefix="patient"),
    "busi": Columns(BUSI_CLASSES, group="dup_group"),
    "busi_seg": Columns(BUSI_CLASSES, group="dup_group", mask="mask_file_name"),  # the class drives subsample()
}


def rows_to_items(
    rows: Sequence[Row], base: Path, cols: Columns, folds: Sequence[int] | None, path: Path
) -> list[Item]:
    """Items of the evaluation set (``cols.include``) in file order; every file (and mask) must lie inside
    ``base``, every fold among ``folds``, and every label among ``cols.values``, or nothing is returned."""
    index = {v: i for i, v in enumerate(cols.values)}
    items: list[Item] = []
    unknown: dict[str, int] = {}
    seen: dict[Path, int] = {}  # resolved file -> its first line: a file is identified by what it is (N1, L15)
    for line, r in rows:
        if cols.include is not None and not cols.include(r):
            continue
        where = f"{path} line {line}"
        if cols.label is not None and r[cols.label] not in index:
            unknown.setdefault(r[cols.label], line)
            continue
        group = r[cols.group].strip() if cols.group else r[cols.file]
        if not group:
            raise EvaluationError(f"{where}: empty {cols.group!r}; every row needs its group (patient, cluster)")
        file = inside(base, r[cols.file], where)
        _refuse_second_listing(seen, file, line, path)
        items.append(
            Item(
                file,
                index[r[cols.label]] if cols.label is not None else 0,
                cols.group_prefix + group,
                parse_fold(r[cols.fold], folds, where) if cols.fold else -1,
                inside(base, r[cols.mask], where) if cols.mask else None,
            )
        )
    unknown_labels(path, cols.label, unknown, cols.values)
    if not items:
        raise EvaluationError(f"{path}: no row belongs to the evaluation set; check the file")
    return items


def _refuse_second_listing(seen: dict[Path, int], file: Path, line: int, path: Path) -> None:
    """Refuse a file listed twice, however it is written (``./x.png``, a link to it): the second row would make
    a test item training data for its own fold (a random-init linear probe went 53 % -> 95 % on 60 BUSI
    images). Comparing resolved paths also caps the rows at the files present, so a huge CSV cannot loop."""
    real = file.resolve()
    first = seen.setdefault(real, line)
    if first != line:
        raise EvaluationError(
            f"{path} lines {first} and {line}: both name {real.name} ({real}); list each file once, in one fold"
        )


def load_items(spec: TaskSpec, data_root: Path) -> list[Item]:
    """A built-in task's evaluation set in metadata order, with the group that its folds are split by."""
    base = data_root / spec.folder
    path = base / "metadata.csv"
    if not path.is_file():
        raise EvaluationError(
            f"task {spec.name!r}: data not found, {path} is missing; pass --data-root DIR "
            "(the folder holding pocus/, covid_blues/, busi/) or set TIMM_USCL_DATA"
        )
    cols = _COLUMNS[spec.name]
    items = rows_to_items(read_metadata(path, cols.required), base, cols, spec.folds, path)
    if spec.kind != "segmentation":
        check_classes((it.label for it in items), spec.classes, path)
    return items


def item_name(item: Item, base: Path) -> str:
    """An item's file relative to its task folder: how two results files name the same video or image."""
    try:
        return item.path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return item.path.as_posix()


def subsample(items: Sequence[Item], max_per_fold: int | None, seed: int) -> list[Item]:
    """At most ``max_per_fold`` items per fold, taken round-robin over labels so tiny runs keep every class."""
    if max_per_fold is None:
        return list(items)
    rng = random.Random(seed)
    keep: set[int] = set()
    for fold in sorted({it.fold for it in items}):
        by_label: dict[int, list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            if it.fold == fold:
                by_label[it.label].append(i)
        queues = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
        taken = 0
        while taken < max_per_fold and any(queues):
            for q in queues:
                if q and taken < max_per_fold:
                    keep.add(q.pop())
                    taken += 1
    return [it for i, it in enumerate(items) if i in keep]


def frame_indices(num_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices from first to last (all frames when the clip is shorter)."""
    if num_frames <= k:
        return list(range(num_frames))
    return sorted({int(round(v)) for v in np.linspace(0, num_frames - 1, k)})


def fold_split(data: TaskData, test_fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) for one test fold; raises if a patient/cluster would be on both sides."""
    folds, groups = data.fold, data.group
    test = np.flatnonzero(folds == test_fold)
    train = np.flatnonzero(folds != test_fold)
    if len(test) == 0:
        raise EvaluationError(
            f"task {data.spec.name!r}: fold {test_fold} is empty (its folds are {fold_range(data.spec.folds)})"
        )
    leaked = set(groups[train]) & set(groups[test])
    if leaked:
        raise EvaluationError(
            f"task {data.spec.name!r}: groups {sorted(leaked)[:5]} are in fold {test_fold} and in other folds; "
            "the metadata.csv folds are not grouped: give every row of a group the same fold"
        )
    if data.spec.kind != "segmentation":
        check_classes(
            data.y[train].tolist(), data.spec.classes, f"task {data.spec.name!r}, training folds of fold {test_fold}"
        )
    return train, test


def inner_split(data: TaskData, rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into (fit, val) by whole groups, so the inner validation is as leak-free as the folds."""
    groups = data.group[rows]
    unique = sorted(set(groups.tolist()))
    random.Random(seed).shuffle(unique)
    val_groups: set[str] = set()
    for g in unique:
        if np.isin(groups, list(val_groups)).sum() >= fraction * len(rows):
            break
        val_groups.add(g)
    is_val = np.isin(groups, list(val_groups))
    if is_val.all() or not is_val.any():
        raise EvaluationError(f"task {data.spec.name!r}: too few groups for an inner validation split")
    return rows[~is_val], rows[is_val]
