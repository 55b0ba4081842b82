"""``--task-cache DIR``: a task decoded once is read back without any decoder (the GPU machine has none), and a
change of what the decode depends on (size, frames, max_items, seed, metadata) never serves the old tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from timm_uscl.training.evaluation import decoding, evaluate
from timm_uscl.training.evaluation.config import EvalConfig
from timm_uscl.training.evaluation.task_cache import load_task_cached
from timm_uscl.training.evaluation.tasks import TASKS, TaskData, load_items, subsample


def _no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the task cache holds this task")

    monkeypatch.setattr(decoding, "read_frames", refuse)
    monkeypatch.setattr(decoding, "_load_image", refuse)


def _load(root: Path, task: str, cache: Path, **cfg: Any) -> TaskData:
    config = EvalConfig(task_cache=str(cache), progress=False, **{"image_size": 24, "frames_per_video": 2, **cfg})
    spec = TASKS[task]
    items = subsample(load_items(spec, root), config.max_items, config.seed)
    return load_task_cached(spec, root / spec.folder, items, config)


def _same(a: TaskData, b: TaskData) -> bool:
    return (
        a.spec == b.spec
        and a.items == b.items
        and all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x", "y", "item"))
    )


@pytest.mark.parametrize("task", ["pocus", "busi_seg"])
def test_a_cached_task_loads_without_a_decoder(
    task: str, root_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(root_copy, task, tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    _no_decoder(monkeypatch)
    assert _same(_load(root_copy, task, tmp_path / "cache"), first)


@pytest.mark.parametrize(
    "change",
    [
        dict(image_size=16),
        dict(frames_per_video=3),
        dict(max_items=2),
        dict(max_items=2, seed=1),
    ],
)
def test_a_changed_setting_is_a_cache_miss(change: dict[str, Any], root_copy: Path, tmp_path: Path) -> None:
    _load(root_copy, "pocus", tmp_path / "cache", max_items=2 if "seed" in change else None)
    _load(root_copy, "pocus", tmp_path / "cache", **change)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_changed_metadata_is_a_cache_miss(
    root_copy: Path, tmp_path: Path, edit_csv: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(root_copy, "busi", tmp_path / "cache")
    edit_csv(
        root_copy / "busi" / "metadata.csv",
        lambda rows: [{**r, "dup_group": "dupX" if i < 2 else r["dup_group"]} for i, r in enumerate(rows)],
    )
    second = _load(root_copy, "busi", tmp_path / "cache")
    assert second.items != first.items and len(list((tmp_path / "cache").iterdir())) == 2


def test_the_cache_survives_a_moved_data_root(root_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _load(root_copy, "pocus", tmp_path / "cache")
    moved = root_copy.rename(tmp_path / "moved")
    _no_decoder(monkeypatch)
    again = _load(moved, "pocus", tmp_path / "cache")
    assert torch.equal(again.x, first.x) and again.items[0].path == moved / "pocus" / "videos" / "covid_0.mp4"


def test_evaluate_with_a_task_cache_gives_the_same_results(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs: dict[str, Any] = dict(
        tasks=["pocus"], protocol="linear", folds=[0, 1], image_size=24, frames_per_video=2, progress=False
    )
    plain = evaluate("resnet18", pretrained=False, data_root=synthetic_root, **kwargs)
    cached = evaluate("resnet18", pretrained=False, data_root=synthetic_root, task_cache=str(tmp_path), **kwargs)
    _no_decoder(monkeypatch)
    again = evaluate("resnet18", pretrained=False, data_root=synthetic_root, task_cache=str(tmp_path), **kwargs)
    assert plain["tasks"] == cached["tasks"] == again["tasks"]
    assert again["config"]["task_cache"] == str(tmp_path)
