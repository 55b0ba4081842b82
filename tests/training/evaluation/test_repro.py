"""The reproduction table and per-fold plot, from evaluation JSONs and run summaries."""

from __future__ import annotations

import json

from timm_uscl.training.evaluation.repro import comparison_table, plot_folds


def _result(acc: list[float], dice: list[float]) -> dict:
    def stat(values):
        mean = sum(values) / len(values)
        return {"mean": mean, "std": 0.0}

    cls = [{"metrics": {"frame": {"accuracy": a, "macro_f1": a}, "video": {"accuracy": a, "macro_f1": a}}} for a in acc]
    seg = [{"metrics": {"dice": d, "iou": d}} for d in dice]
    return {
        "config": {"folds": [0, 1], "image_size": 64, "frames_per_video": 4, "epochs": 5, "select": "final", "seed": 0},
        "tasks": {
            "pocus": {
                "protocols": {
                    "finetune": {
                        "folds": cls,
                        "summary": {"metrics": {"video": {"accuracy": stat(acc), "macro_f1": stat(acc)}}},
                    }
                }
            },
            "busi_seg": {"protocols": {"finetune": {"folds": seg, "summary": {"metrics": {"dice": stat(dice)}}}}},
        },
    }


def test_table_rows_per_method_with_budget_and_plot(tmp_path):
    (tmp_path / "eval_meta_uscl.json").write_text(json.dumps(_result([0.6, 0.8], [0.4, 0.5])))
    (tmp_path / "eval_random.json").write_text(json.dumps(_result([0.5, 0.5], [0.3, 0.3])))
    (tmp_path / "meta_uscl").mkdir()
    (tmp_path / "meta_uscl" / "summary.json").write_text(json.dumps({"steps": 160}))
    (tmp_path / "meta_uscl" / "config.yaml").write_text(
        "epochs: 20\nbatch_size: 32\nimage_size: 64\noptimizer: sgd\nlr: 0.1\n"
    )
    table = comparison_table(tmp_path).splitlines()
    assert table[2].startswith("| Meta-USCL | 70.0 ± 0.0 | 70.0 ± 0.0 | – | – | – | 45.0 ± 0.0 | – | 20 epochs (160")
    assert table[3].startswith("| random init | 50.0 ± 0.0 |") and "no weights" in table[3]
    assert "2 folds, 64px, 4 frames/video, 5 epochs" in table[-1]
    assert plot_folds(tmp_path, tmp_path / "folds.png").stat().st_size > 1000
