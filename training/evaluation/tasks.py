"""Downstream evaluation tasks: which files, labels, groups and folds each one uses, decoded into memory.

Every task reads the fixed folds of its ``metadata.csv`` so that numbers are comparable between runs and
models; a fold never shares a patient (POCUS ``group``, COVID-BLUES ``patient``) or a near-duplicate
cluster (BUSI ``dup_group``) with another, and :func:`fold_split` re-checks that instead of trusting it.
Frames and images are resized to ``size``×``size`` once at load, so training only crops and flips.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import EvaluationError
from .config import DEFAULT_TASKS

__all__ = [
    "TASKS",
    "DEFAULT_TASKS",
    "EvaluationError",
    "TaskSpec",
    "Item",
    "TaskData",
    "resolve_data_root",
    "load_items",
    "subsample",
    "load_task",
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
    """A task decoded into memory. ``x`` rows are frames (videos) or images; ``item`` maps a row to its video."""

    spec: TaskSpec
    items: list[Item]
    x: torch.Tensor  # uint8 [N, 3, S, S]
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


def _read_metadata(spec: TaskSpec, data_root: Path) -> list[dict[str, str]]:
    path = data_root / spec.folder / "metadata.csv"
    if not path.is_file():
        raise EvaluationError(
            f"task {spec.name!r}: data not found, {path} is missing; pass --data-root DIR "
            "(the folder holding pocus/, covid_blues/, busi/) or set TIMM_USCL_DATA"
        )
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_items(spec: TaskSpec, data_root: Path) -> list[Item]:
    """The task's eval set in metadata order, with the group that its folds are split by."""
    base = data_root / spec.folder
    rows = _read_metadata(spec, data_root)
    index = {c: i for i, c in enumerate(spec.classes)}
    items: list[Item] = []
    for r in rows:
        if spec.name == "pocus":
            if r["probe"] != "convex" or r["label"] not in index or not r["fold"]:
                continue
            items.append(Item(base / r["file_name"], index[r["label"]], r["group"], int(r["fold"])))
        elif spec.name == "covid_blues":
            items.append(Item(base / r["file_name"], int(r["cov_test"]), f"patient{r['patient']}", int(r["fold"])))
        elif spec.name == "covid_blues_severity":
            items.append(Item(base / r["file_name"], int(r["severity"]), f"patient{r['patient']}", int(r["fold"])))
        else:  # busi, busi_seg: the class also drives subsample()'s stratification for segmentation
            label = BUSI_CLASSES.index(r["label"])
            items.append(Item(base / r["file_name"], label, r["dup_group"], int(r["fold"]), base / r["mask_file_name"]))
    return items


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


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _decode_video(path: Path, k: int, size: int) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), dimension_order="NCHW", num_ffmpeg_threads=1)
    frames = decoder.get_frames_at(frame_indices(len(decoder), k)).data
    return _resize(frames, size)


def _load_image(path: Path, size: int, nearest: bool = False) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        gray = im.convert("L").resize((size, size), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(gray).copy())[None]  # [1, S, S]


def load_task(
    spec: TaskSpec, items: Sequence[Item], size: int, frames_per_video: int, progress: bool = True
) -> TaskData:
    """Decode every item once. BUSI images are squashed to a square and their grey channel repeated to RGB."""
    xs, ys, owner = [], [], []
    for i, it in enumerate(tqdm(items, desc=f"load {spec.name}", disable=not progress, leave=False)):
        if spec.kind == "video":
            frames = _decode_video(it.path, frames_per_video, size)
            xs.append(frames)
            ys.append(torch.full((len(frames),), it.label, dtype=torch.int64))
            owner.append(torch.full((len(frames),), i, dtype=torch.int64))
            continue
        xs.append(_load_image(it.path, size).expand(3, -1, -1)[None])
        if spec.kind == "segmentation":
            assert it.mask is not None
            ys.append((_load_image(it.mask, size, nearest=True) > 127).to(torch.uint8)[None])
        else:
            ys.append(torch.tensor([it.label]))
        owner.append(torch.tensor([i]))
    return TaskData(spec, list(items), torch.cat(xs), torch.cat(ys), torch.cat(owner))


def fold_split(data: TaskData, test_fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) for one test fold; raises if a patient/cluster would be on both sides."""
    folds, groups = data.fold, data.group
    test = np.flatnonzero(folds == test_fold)
    train = np.flatnonzero(folds != test_fold)
    if len(test) == 0:
        raise EvaluationError(f"task {data.spec.name!r}: fold {test_fold} is empty (folds are 0-4)")
    leaked = set(groups[train]) & set(groups[test])
    if leaked:
        raise EvaluationError(
            f"task {data.spec.name!r}: groups {sorted(leaked)[:5]} are in fold {test_fold} and in other folds; "
            "the metadata.csv folds are not grouped, rebuild them with shared/data/tools"
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
