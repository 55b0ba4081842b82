"""Measured evaluation results flow into the weights-table types and an export's model card."""

from __future__ import annotations

import timm
import yaml

import timm_uscl
from timm_uscl.export_folder import update_card
from timm_uscl.training.evaluation.metrics import card_results

RESULTS = {
    "config": {"folds": [0, 1, 2, 3, 4], "image_size": 64, "epochs": 30, "select": "final"},
    "tasks": {
        "pocus": {
            "kind": "classification",
            "description": "POCUS convex 3-class",
            "protocols": {
                "finetune": {
                    "name": "fine-tune last block",
                    "summary": {
                        "metrics": {
                            "frame": {"accuracy": {"mean": 0.70, "std": 0.05}, "macro_f1": {"mean": 0.60, "std": 0.04}},
                            "video": {"accuracy": {"mean": 0.75, "std": 0.06}, "macro_f1": {"mean": 0.65, "std": 0.07}},
                        }
                    },
                }
            },
        },
        "busi_seg": {
            "kind": "segmentation",
            "description": "BUSI lesion segmentation",
            "protocols": {
                "finetune": {
                    "name": "U-Net fine-tune",
                    "summary": {"metrics": {"dice": {"mean": 0.55, "std": 0.03}, "iou": {"mean": 0.45, "std": 0.02}}},
                }
            },
        },
    },
}


def test_card_results_pick_video_level_and_segmentation_scores():
    rows = card_results(RESULTS)
    assert [(r.dataset, r.metric, r.value, r.std) for r in rows] == [
        ("pocus", "accuracy", 0.75, 0.06),
        ("pocus", "macro_f1", 0.65, 0.07),
        ("busi_seg", "dice", 0.55, 0.03),
        ("busi_seg", "iou", 0.45, 0.02),
    ]
    assert "5 folds, 64px, 30 epochs, epoch by final" in rows[0].protocol


def test_update_card_renders_the_table_and_model_index(tmp_path):
    export_dir = timm_uscl.export(
        timm.create_model("resnet18_uscl"), tmp_path, "resnet18_uscl.metauscl_covidblues_64", results=()
    )
    assert "No evaluation results recorded yet" in (export_dir / "README.md").read_text()
    card = update_card(export_dir, card_results(RESULTS)).read_text()
    meta = yaml.safe_load(card.split("---")[1])
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "accuracy", "value": 0.75, "name": metrics[0]["name"]}
    assert meta["license"] == "cc-by-nc-4.0" and meta["datasets"] == ["jannisborn/COVID-BLUES"]
    assert "| POCUS convex 3-class | pocus | accuracy (%) | 75.0 ± 6.0 |" in card
    assert "| BUSI lesion segmentation | busi_seg | dice (%) | 55.0 ± 3.0 |" in card
