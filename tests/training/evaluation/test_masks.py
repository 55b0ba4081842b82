"""Segmentation masks as people store them (issue 18.3): 0/1 and 0/255 binary masks, label maps with a chosen
foreground value, and a mask of another size than its image refused naming the file (stretched only when asked).
Every folder is made by the test (never committed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation.decoding import MaskRule, load_task
from timm_uscl.training.evaluation.task_dir import task_from_dir

TINY = {"image_size": 32, "epochs": 1, "progress": False, "seed": 0}


def _seg_dir(
    folder: Path,
    write_png: Callable[..., Path],
    write_csv: Callable[..., Path],
    *,
    foreground: int = 255,
    extra: int | None = None,
) -> Path:
    """Ten 40x48 speckle images in two folds, each with a rectangle mask of value ``foreground`` (and, with
    ``extra``, a second rectangle of that value: another class of a label map)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        mask = np.zeros((40, 48), np.uint8)
        mask[5 + i : 25 + i, 8:30] = foreground
        image = np.clip(rng.rayleigh(0.3, (40, 48)) * 60 + 20 + 80 * (mask > 0), 0, 255).astype(np.uint8)
        if extra is not None:
            mask[30:38, 34:46] = extra
        write_png(folder / "images" / f"im{i}.png", image)
        write_png(folder / "masks" / f"im{i}.png", mask)
        rows.append([f"images/im{i}.png", f"masks/im{i}.png", f"p{i}", i % 2])
    return write_csv(folder / "metadata.csv", ["file_name", "mask_file_name", "group", "fold"], rows).parent


def _dice(folder: Path, **config: object) -> float:
    results = evaluate("resnet18_uscl", task_dir=folder, pretrained=False, folds=[0], **{**TINY, **config})
    return results["tasks"][folder.name]["protocols"]["finetune"]["summary"]["metrics"]["dice"]["mean"]


def test_a_zero_one_mask_scores_the_same_dice_as_its_zero_255_twin(
    tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]
) -> None:
    """Only pixels > 127 were foreground: a 0/1 mask was empty everywhere and scored Dice 0.0, with rc 0."""
    white = _dice(_seg_dir(tmp_path / "white" / "seg", write_png, write_csv, foreground=255))
    ones = _dice(_seg_dir(tmp_path / "ones" / "seg", write_png, write_csv, foreground=1))
    assert white > 0 and ones == white


def test_a_label_map_is_read_by_its_chosen_foreground_value(
    tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]
) -> None:
    folder = _seg_dir(tmp_path / "labels", write_png, write_csv, foreground=2, extra=1)
    spec, items = task_from_dir(folder)
    with pytest.raises(EvaluationError, match=r"im0\.png: mask values \{0, 1, 2\}.*--mask-foreground"):
        load_task(spec, items, 40, 1, progress=False)
    for value, rows in ((2, slice(5, 25)), (1, slice(30, 38))):
        y = load_task(spec, items[:1], 40, 1, progress=False, masks=MaskRule(foreground=value)).y[0, 0]
        assert y.sum() > 0 and bool(y[rows].any(1).all()) and int(y.sum()) == int(y[rows].sum())
    with pytest.raises(EvaluationError, match="--mask-foreground 0"):
        MaskRule(foreground=0)


def test_a_mask_of_another_size_than_its_image_is_refused_naming_the_file(
    tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to be stretched over its image silently."""
    folder = _seg_dir(tmp_path / "sizes", write_png, write_csv)
    write_png(folder / "masks" / "im3.png", np.zeros((20, 24), np.uint8))
    spec, items = task_from_dir(folder)
    argv = ["evaluate", "resnet18_uscl", "--random-init", "--task-dir", str(folder), "--image-size", "32"]
    assert cli([*argv, "--epochs", "1", "--folds", "0", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks/im3.png: mask is 24x20 px, its image im3.png 48x40" in err[0]
    assert "--resize-masks" in err[0]
    stretched = load_task(spec, items, 32, 1, progress=False, masks=MaskRule(resize=True))
    assert stretched.y.shape == (10, 1, 32, 32) and int(stretched.y[3].sum()) == 0
    assert torch.equal(stretched.y[:3], load_task(spec, items[:3], 32, 1, progress=False).y)
