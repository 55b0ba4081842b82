"""The reproduction table (method x task) from the folder ``scripts/reproduce.sh`` writes.

``python -m timm_uscl.training.repro runs/repro`` prints markdown: one row per method (``eval_<method>.json``),
the headline metric of each task (mean ± std over folds, epoch chosen without the test fold), and the
pretraining budget read from each run's ``summary.json`` and ``config.yaml``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COLUMNS", "comparison_table"]

METHODS = {"meta_uscl": "Meta-USCL", "uscl": "USCL", "simclr": "SimCLR", "random": "random init"}
# (header, task, protocol, level or None, metric)
COLUMNS = (
    ("POCUS video acc, fine-tune", "pocus", "finetune", "video", "accuracy"),
    ("POCUS video F1, fine-tune", "pocus", "finetune", "video", "macro_f1"),
    ("POCUS video acc, linear", "pocus", "linear", "video", "accuracy"),
    ("BUSI acc, fine-tune", "busi", "finetune", None, "accuracy"),
    ("BUSI acc, linear", "busi", "linear", None, "accuracy"),
    ("BUSI seg Dice", "busi_seg", "finetune", None, "dice"),
)


def _cell(results: dict[str, Any], task: str, protocol: str, level: str | None, metric: str) -> str:
    try:
        metrics = results["tasks"][task]["protocols"][protocol]["summary"]["metrics"]
    except KeyError:
        return "–"
    if level is not None:
        metrics = metrics[level]
    elif metric not in metrics:  # image classification: its single level
        metrics = next(iter(metrics.values()))
    return f"{100 * metrics[metric]['mean']:.1f} ± {100 * metrics[metric]['std']:.1f}"


def _budget(run: Path) -> str:
    summary_path, config_path = run / "summary.json", run / "config.yaml"
    if not summary_path.exists():
        return "no weights (random init)"
    summary = json.loads(summary_path.read_text())
    config = yaml.safe_load(config_path.read_text())
    return (f"{config['epochs']} epochs ({summary['steps']} steps of {config['batch_size']} videos), "
            f"{config['image_size']}px, {config['optimizer']} lr {config['lr']}")


def comparison_table(folder: str | Path) -> str:
    folder = Path(folder)
    rows = ["| method | " + " | ".join(c[0] for c in COLUMNS) + " | pretraining budget |",
            "|---|" + "---:|" * len(COLUMNS) + "---|"]
    setting = ""
    for method, label in METHODS.items():
        path = folder / f"eval_{method}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        cfg = results["config"]
        setting = (f"{len(cfg['folds'])} folds, {cfg['image_size']}px, {cfg['frames_per_video']} frames/video, "
                   f"{cfg['epochs']} epochs, epoch chosen by `{cfg['select']}`, seed {cfg['seed']}")
        cells = [_cell(results, *c[1:]) for c in COLUMNS]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {_budget(folder / method)} |")
    return "\n".join(rows) + f"\n\nEvaluation: {setting}; percent, mean ± std over folds.\n"


if __name__ == "__main__":
    print(comparison_table(sys.argv[1] if len(sys.argv) > 1 else "runs/repro"), end="")
