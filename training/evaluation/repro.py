"""The reproduction table (method x task) from the folder ``scripts/reproduce.sh`` writes.

``python -m timm_uscl.training.evaluation.repro runs/repro`` prints markdown: one row per method
(``eval_<method>.json``), the headline metric of each task (mean ± std over folds, epoch chosen without the test
fold), the reference-style figure (:data:`REFERENCE_COLUMNS`: test-picked epoch, frame level, folds pooled;
optimistic, to compare with published numbers only), and the pretraining budget read from each run's
``summary.json`` and ``config.yaml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from timm_uscl.cards import percent

from ..config import flat_config
from .config import METHODS
from .metrics import run_epochs, run_seeds

__all__ = ["COLUMNS", "REFERENCE_COLUMNS", "comparison_table", "plot_folds"]

# (header, task, protocol, level or None, metric)
COLUMNS = (
    ("POCUS video acc, fine-tune", "pocus", "finetune", "video", "accuracy"),
    ("POCUS video F1, fine-tune", "pocus", "finetune", "video", "macro_f1"),
    ("POCUS video acc, linear", "pocus", "linear", "video", "accuracy"),
    ("BUSI acc, fine-tune", "busi", "finetune", None, "accuracy"),
    ("BUSI acc, linear", "busi", "linear", None, "accuracy"),
    ("BUSI seg Dice", "busi_seg", "finetune", None, "dice"),
)
# (header, task, protocol, metric): one pooled number each, no std
REFERENCE_COLUMNS = (("POCUS frame acc, fine-tune, reference-style²", "pocus", "finetune", "accuracy"),)


def _pick(metrics: dict[str, Any], level: str | None, metric: str) -> Any:
    if level is not None:
        return metrics[level][metric]
    if metric not in metrics:  # image classification: its single level
        return next(iter(metrics.values()))[metric]
    return metrics[metric]


def _cell(results: dict[str, Any], task: str, protocol: str, level: str | None, metric: str) -> str:
    try:
        stat = _pick(results["tasks"][task]["protocols"][protocol]["summary"]["metrics"], level, metric)
    except KeyError:
        return percent(None)
    return percent(stat["mean"], stat["std"])


def _reference_cell(results: dict[str, Any], task: str, protocol: str, metric: str) -> str:
    try:
        return percent(results["tasks"][task]["protocols"][protocol]["reference_style"][metric])
    except KeyError:
        return percent(None)


def plot_folds(folder: str | Path, out_png: str | Path) -> Path:
    """One panel per table column: every fold's value for every method (a dot each, the mean as a bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    runs = {
        label: json.loads((folder / f"eval_{m}.json").read_text())
        for m, label in METHODS.items()
        if (folder / f"eval_{m}.json").exists()
    }
    fig, axes = plt.subplots(2, (len(COLUMNS) + 1) // 2, figsize=(10, 6))
    for ax, (header, task, protocol, level, metric) in zip(axes.ravel(), COLUMNS):
        for i, results in enumerate(runs.values()):
            folds = results["tasks"].get(task, {}).get("protocols", {}).get(protocol, {}).get("folds", [])
            values = [100 * _pick(f["metrics"], level, metric) for f in folds]
            if values:
                ax.bar(i, sum(values) / len(values), color="#cfd8e3")
                ax.plot([i] * len(values), values, "o", color="#1f4e79", markersize=3)
        ax.set_xticks(range(len(runs)), list(runs), rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{header} (%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def _budget(run: Path) -> str:
    summary_path, config_path = run / "summary.json", run / "config.yaml"
    if not summary_path.exists():
        return "no weights (random init)"
    summary = json.loads(summary_path.read_text())
    config = flat_config(yaml.safe_load(config_path.read_text()))
    return (
        f"{config['epochs']} epochs ({summary['steps']} steps of {config['batch_size']} videos), "
        f"{config['image_size']}px, {config['optimizer']} lr {config['lr']}"
    )


def comparison_table(folder: str | Path) -> str:
    folder = Path(folder)
    headers = [c[0] for c in COLUMNS] + [c[0] for c in REFERENCE_COLUMNS]
    rows = [
        "| method | " + " | ".join(headers) + " | pretraining budget |",
        "|---|" + "---:|" * len(headers) + "---|",
    ]
    setting = ""
    for method, label in METHODS.items():
        path = folder / f"eval_{method}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        cfg = results["config"]
        setting = (
            f"{len(cfg['folds'])} folds, {cfg['image_size']}px, {cfg['frames_per_video']} frames/video, "
            f"{run_epochs(results)}, epoch chosen by `{cfg['select']}`, {run_seeds(cfg)}"
        )
        cells = [_cell(results, *c[1:]) for c in COLUMNS] + [
            _reference_cell(results, *c[1:]) for c in REFERENCE_COLUMNS
        ]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {_budget(folder / method)} |")
    return "\n".join(rows) + (
        f"\n\nEvaluation: {setting}; percent, mean ± std over folds (× seeds for fine-tunes). ² reference-style: "
        "each fold's best epoch picked on its test fold, frame level, all folds' test frames pooled (one number): "
        "optimistic, only to compare with published figures.\n"
    )


if __name__ == "__main__":
    run_folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/repro")
    print(comparison_table(run_folder), end="")
    plot_folds(run_folder, run_folder / "folds.png")
