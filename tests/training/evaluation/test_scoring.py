"""The reference-style figure (issue 12): best epoch on the test fold, frame level, all folds' test frames pooled,
kept beside the project's score (final epoch, video level, mean over folds) and labelled optimistic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from timm_uscl.training.evaluation.fitting import run_epochs
from timm_uscl.training.evaluation.metrics import classification_metrics, reference_style, results_to_markdown
from timm_uscl.training.evaluation.protocols import _fold_result
from timm_uscl.training.evaluation.repro import comparison_table

CLASSES = ("a", "b")


def _fold(n: int, correct_per_epoch: list[int], fold: int) -> dict[str, Any]:
    """A fold whose test frames are all class 0 and whose epochs get ``correct`` of them right."""
    y = np.zeros(n, dtype=int)

    def probs(correct: int) -> np.ndarray:
        p = np.tile([0.2, 0.8], (n, 1))
        p[:correct] = [0.9, 0.1]
        return p

    outputs = iter([probs(c) for c in correct_per_epoch])
    trace = run_epochs(len(correct_per_epoch), lambda _: None, outputs.__next__, progress=False)
    metrics = lambda p: {"frame": classification_metrics(y, p, CLASSES)}
    return _fold_result(fold, 100, 0, n, trace, metrics, lambda m: m["frame"]["accuracy"])


def test_reference_style_pools_each_folds_best_test_epoch() -> None:
    runs = [_fold(10, [9, 5], 0), _fold(30, [15, 12], 1)]  # best epochs 1 and 1: 9/10 and 15/30
    ref = reference_style(runs, "video", CLASSES)
    assert ref["accuracy"] == (9 + 15) / 40  # pooled, not the mean of 0.9 and 0.5
    assert ref["n"] == 40 and ref["epochs"] == [1, 1] and ref["level"] == "frame"
    assert ref["recall"] == {"a": 0.6, "b": 0.0} and ref["precision"]["a"] == 1.0
    assert np.mean([r["metrics"]["frame"]["accuracy"] for r in runs]) == (0.5 + 0.4) / 2  # the final epochs


def test_reference_style_of_a_linear_probe_pools_its_only_result() -> None:
    y = np.array([0, 1, 1])
    runs = [{"fold": 0, "metrics": {"image": classification_metrics(y, np.eye(2)[[0, 1, 0]], CLASSES)}}]
    runs.append({"fold": 1, "metrics": {"image": classification_metrics(y[:1], np.eye(2)[[0]], CLASSES)}})
    ref = reference_style(runs, "image", CLASSES)
    assert ref["accuracy"] == 3 / 4 and ref["epochs"] is None and ref["level"] == "image"


def test_reference_style_of_segmentation_pools_per_image_dice() -> None:
    runs = [
        {"fold": 0, "optimistic": {"epoch": 2, "dice": 0.8, "iou": 0.7, "n": 10}},
        {"fold": 1, "optimistic": {"epoch": 1, "dice": 0.4, "iou": 0.3, "n": 30}},
    ]
    ref = reference_style(runs, "segmentation", ("lesion",))
    assert ref["dice"] == (0.8 * 10 + 0.4 * 30) / 40 and ref["epochs"] == [2, 1]


def _results(ref_acc: float | None) -> dict[str, Any]:
    stat = {"mean": 0.5, "std": 0.1}
    level = {"accuracy": stat, "macro_f1": stat}
    pres: dict[str, Any] = {
        "name": "fine-tune last block",
        "folds": [],
        "summary": {"metrics": {"frame": level, "video": level}, "optimistic": {"frame": level, "video": level}},
    }
    if ref_acc is not None:
        pres["reference_style"] = {"level": "frame", "accuracy": ref_acc, "macro_f1": 0.5, "n": 40, "epochs": [1]}
    return {
        "model": "m",
        "arch": "resnet18",
        "config": {"folds": [0], "image_size": 32, "frames_per_video": 2, "epochs": 1, "select": "final", "seed": 0},
        "tasks": {"pocus": {"kind": "video", "protocols": {"finetune": pres}}},
    }


def test_markdown_labels_the_reference_style_figure_as_optimistic() -> None:
    md = results_to_markdown(_results(0.875))
    header = next(line for line in md.splitlines() if line.startswith("| Task"))
    assert "reference-style" in header
    row = next(line for line in md.splitlines() if line.startswith("| pocus") and "| frame |" in line)
    assert row.rstrip().endswith("| 87.5 |")
    assert "pooled" in md and "optimistic" in md


def test_repro_table_has_a_reference_style_column(tmp_path: Path) -> None:
    (tmp_path / "eval_meta_uscl.json").write_text(json.dumps(_results(0.875)))
    table = comparison_table(tmp_path)
    header, _, row = table.splitlines()[:3]
    assert "reference-style" in header and "87.5" in row
    assert "optimistic" in table
