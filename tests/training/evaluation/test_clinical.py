"""Evaluation output for clinicians and researchers (issue 18.6): AUROC, sensitivity and specificity per class,
per-item predictions as CSV beside ``--out``, ``--label-column``, and wording that fits the task."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation.metrics import classification_metrics, results_to_markdown, strict_json
from timm_uscl.training.evaluation.task_dir import task_from_dir


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_classification_metrics_give_auroc_sensitivity_and_specificity_per_class() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.3, 0.7, 0.0], [0.2, 0.8, 0.0]])
    m = classification_metrics(y, probs, ("a", "b", "c"))
    assert m["sensitivity"] == {"a": 0.5, "b": 1.0, "c": None}  # "c" never occurs: undefined, not 0
    assert m["specificity"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert m["auroc"] == {"a": 1.0, "b": 1.0, "c": None} and m["macro_auroc"] == 1.0
    assert m["recall"]["a"] == m["sensitivity"]["a"]
    assert _strict(strict_json(m))["auroc"]["c"] is None


def _markdown(task: str) -> str:
    stat = {"mean": 0.5, "std": 0.1}
    keys = ("dice", "iou", "dice_lesion", "iou_lesion", "empty_correct")
    results = {
        "model": "m",
        "arch": "resnet18_uscl",
        "config": {"image_size": 32, "frames_per_video": 2, "epochs": 1, "select": "final", "seed": 0, "folds": [0]},
        "tasks": {
            task: {
                "kind": "segmentation",
                "protocols": {
                    "finetune": {"name": "U-Net fine-tune", "summary": {"metrics": dict.fromkeys(keys, stat)}}
                },
            }
        },
    }
    return results_to_markdown(results)


def test_segmentation_tables_speak_of_lesions_on_busi_only() -> None:
    assert "Dice, lesion images" in _markdown("busi_seg")
    thyroid = _markdown("thyroid_nodules")
    assert "Dice, foreground images" in thyroid and "lesion" not in thyroid


@pytest.fixture
def diagnosis_dir(tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]) -> Path:
    """Ten speckle images of two classes, the class in a ``diagnosis`` column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        label = ("benign", "malignant")[i % 2]
        pixels = np.clip(rng.rayleigh(0.3, (32, 32)) * 60 + 60 * (i % 2), 0, 255).astype(np.uint8)
        write_png(tmp_path / "nodules" / "images" / f"n{i}.png", pixels)
        rows.append([f"images/n{i}.png", label, f"patient{i}"])
    return write_csv(tmp_path / "nodules" / "metadata.csv", ["file_name", "diagnosis", "patient"], rows).parent


def test_a_label_column_names_the_class_column(diagnosis_dir: Path) -> None:
    with pytest.raises(EvaluationError, match="label column"):
        task_from_dir(diagnosis_dir)
    spec, items = task_from_dir(diagnosis_dir, label_column="diagnosis", group_column="patient")
    assert spec.classes == ("benign", "malignant") and [it.label for it in items[:4]] == [0, 1, 0, 1]
    with pytest.raises(EvaluationError, match="'finding'"):
        task_from_dir(diagnosis_dir, label_column="finding")


def test_evaluate_writes_each_tasks_per_item_predictions_beside_out(diagnosis_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    argv = ["evaluate", "resnet18_uscl", "--random-init", "--task-dir", str(diagnosis_dir), "--label-column"]
    argv += ["diagnosis", "--protocol", "linear", "--image-size", "32", "--no-progress", "--out", str(out)]
    assert cli(argv) == 0
    results = _strict(out.read_text())
    image = results["tasks"]["nodules"]["protocols"]["linear"]["folds"][0]["metrics"]["image"]
    assert set(image["auroc"]) == set(image["specificity"]) == {"benign", "malignant"}
    with (tmp_path / "eval.nodules.predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["item"] for r in rows} == {f"images/n{i}.png" for i in range(10)}
    assert set(rows[0]) == {"protocol", "seed", "fold", "level", "item", "label", "predicted"} | {
        "prob_benign",
        "prob_malignant",
    }
    assert all(r["label"] == ("benign", "malignant")[int(r["item"][8]) % 2] for r in rows)
    assert all(abs(float(r["prob_benign"]) + float(r["prob_malignant"]) - 1) < 1e-3 for r in rows)
