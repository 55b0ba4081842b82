"""A cache of decoded tasks (``--task-cache DIR``): each task's uint8 rows and item metadata in one ``.pt`` file.

Why: decoding is the slow part of a small evaluation, and a machine without a video decoder (the lent GPU
machine has none) can still evaluate from a folder decoded elsewhere. The key covers everything the decoded
tensors depend on: the task (name, kind, classes), image size, frames per video, ``max_items`` and seed, the
mask rule (segmentation), and a fingerprint of the metadata (every item's relative path, label, group, fold and
mask). Paths are stored relative to the task folder, so the cache still fits when the data root moves. The
cache trusts files not to change in place under an unchanged metadata.csv: delete the folder after replacing a
video or image.
Files are read with ``weights_only=True`` (never unpickling code) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .config import EvalConfig
from .decoding import MaskRule, listing_of, load_task
from .tasks import Item, TaskData, TaskSpec

__all__ = ["cache_key", "load_task_cached"]

_VERSION = 1  # bump when the decoded rows change for the same key (decoder, resampling, channels)


def _rel(path: Path | None, base: Path) -> str | None:
    return None if path is None else os.path.relpath(path, base)


def _records(items: Sequence[Item], base: Path) -> list[list[Any]]:
    return [[_rel(it.path, base), it.label, it.group, it.fold, _rel(it.mask, base)] for it in items]


def _mask_settings(spec: TaskSpec, cfg: EvalConfig) -> dict[str, Any]:
    """The mask rule is in the key of a segmentation task only: other tasks' keys stay as they were."""
    if spec.kind != "segmentation":
        return {}
    return {"mask_foreground": cfg.mask_foreground, "resize_masks": cfg.resize_masks}


def _decode(spec: TaskSpec, items: Sequence[Item], cfg: EvalConfig, where: Path) -> TaskData:
    masks = MaskRule(cfg.mask_foreground, cfg.resize_masks)
    return load_task(spec, items, cfg.image_size, cfg.frames_per_video, cfg.progress, where, masks=masks)


def cache_key(spec: TaskSpec, base: Path, items: Sequence[Item], cfg: EvalConfig) -> str:
    payload = {
        "version": _VERSION,
        "task": [spec.name, spec.kind, list(spec.classes)],
        "image_size": cfg.image_size,
        "frames_per_video": cfg.frames_per_video if spec.kind == "video" else None,
        "max_items": cfg.max_items,
        "seed": cfg.seed,
        "items": _records(items, base),
        **_mask_settings(spec, cfg),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read(path: Path, spec: TaskSpec, base: Path, items: Sequence[Item]) -> TaskData | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or foreign cache file is a miss: decode again and replace it
        return None
    if not isinstance(saved, dict) or saved.get("items") != _records(items, base):
        return None
    return TaskData(spec, list(items), saved["x"], saved["y"], saved["item"])


def _write(path: Path, data: TaskData, base: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"items": _records(data.items, base), "x": data.x, "y": data.y, "item": data.item}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_task_cached(spec: TaskSpec, base: Path, items: Sequence[Item], cfg: EvalConfig) -> TaskData:
    """The decoded task: from ``cfg.task_cache`` when it holds this key, else decoded (and stored there)."""
    where = listing_of(base)
    if cfg.task_cache is None:
        return _decode(spec, items, cfg, where)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
    path = Path(cfg.task_cache).expanduser() / f"{safe}-{cache_key(spec, base, items, cfg)[:32]}.pt"
    data = _read(path, spec, base, items)
    if data is None:
        data = _decode(spec, items, cfg, where)
        _write(path, data, base)
    return data
