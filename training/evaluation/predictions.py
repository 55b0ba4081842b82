"""Per-item predictions of an :func:`.run.evaluate` result as CSV tables, one per task (``--out`` writes them
beside the results JSON, ``<out>.<task>.predictions.csv``).

Why: a clinician or a statistician checks a result item by item (which patient's video was missed, a ROC curve
in their own tool, a per-image Dice beside a measurement) in a spreadsheet or pandas, not by walking the JSON.
Each row is one test item of one fold (x seed) run, at the reported scoring (``final``: the chosen epoch, video
level for videos); the item is named by its file relative to the task folder, as in the JSON's ``items``.
Pure Python: no torch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["prediction_tables", "predictions_path"]


def predictions_path(out: Path, task: str) -> Path:
    """Where the predictions of ``task`` go beside the results JSON ``out``."""
    return out.with_name(f"{out.stem}.{task}.predictions.csv")


def _rows(res: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    classes, items = list(res["classes"]), list(res["items"])
    seg = res["kind"] == "segmentation"
    header = ["protocol", "seed", "fold", "level", "item"]
    header += ["dice"] if seg else ["label", "predicted", *(f"prob_{c}" for c in classes)]
    rows: list[list[Any]] = []
    for protocol, pres in res["protocols"].items():
        for run in pres["folds"]:
            p = run.get("predictions", {}).get("final")
            if p is None:  # a result written before predictions were kept
                continue
            seed = "" if run.get("seed") is None else run["seed"]
            for k, i in enumerate(p["item"]):
                row = [protocol, seed, run["fold"], p["level"], items[i]]
                if seg:
                    row.append(p["dice"][k])
                else:
                    row += [classes[p["y"][k]], classes[p["pred"][k]], *p["prob"][k]]
                rows.append(row)
    return header, rows


def prediction_tables(results: Mapping[str, Any]) -> dict[str, str]:
    """Task name -> CSV text of its per-item predictions (tasks without kept predictions are left out)."""
    out = {}
    for task, res in results["tasks"].items():
        header, rows = _rows(res)
        if rows:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            out[task] = text.getvalue()
    return out
