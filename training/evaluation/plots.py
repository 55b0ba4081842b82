"""The plots of an evaluation result (``timm-uscl evaluate --plots DIR``), two per task:

* ``<task>_confusion.png``: the confusion matrix of each protocol, summed over folds and seeds, from the reported
  scoring's per-item predictions (the chosen epoch; video level for videos: what the table reports), classes on
  both axes. Segmentation tasks have no classes and get none.
* ``<task>_folds.png``: every fold's score (accuracy and macro-F1 at the reported level, or Dice and IoU), one
  marker per seed, a colour per protocol, the mean over runs as a dashed line.

Why: a mean ± std hides which fold failed, whether seeds agree and which class is taken for which. The plots are
drawn from the results alone (the predictions :mod:`.protocols` keeps in every fold record), so a results JSON can
be plotted again later. matplotlib is optional (the ``train`` extra): :func:`check_plotting` runs before anything
is evaluated, as :mod:`..monitor` checks the trainer's optional packages before a run starts. Figures are made
without pyplot (no global state, no backend switch in the caller's session) and replaced atomically.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from timm_uscl.outdir import write_bytes_atomic

from ..errors import EvaluationError

__all__ = ["PLOT_FILES", "check_plotting", "confusion_counts", "fold_scores", "write_plots"]

PLOT_FILES = {"confusion": "{task}_confusion.png", "folds": "{task}_folds.png"}  # the files, per task


def check_plotting(folder: str | Path) -> Path:
    """matplotlib imported and the plots' folder checked now: a missing package or folder is one line before hours
    of evaluation, not after. The folder may exist (plots of the same names are replaced); its parent must."""
    try:
        importlib.import_module("matplotlib")
    except ImportError as err:
        raise EvaluationError(
            "--plots needs the matplotlib package: pip install matplotlib (or drop --plots); nothing was evaluated"
        ) from err
    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--plots {out} is a file; give a folder")
    if not out.parent.is_dir():
        raise EvaluationError(f"--plots {out}: its folder {out.parent} does not exist; create it first")
    return out


def confusion_counts(res: Mapping[str, Any]) -> dict[str, tuple[str, np.ndarray]]:
    """Protocol -> (level, counts [true, predicted]) of one task's reported per-item predictions, summed over every
    fold x seed run; protocols whose runs kept no predictions (older results) and segmentation are left out."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    if res["kind"] == "segmentation":
        return out
    n = len(res["classes"])
    for protocol, pres in res["protocols"].items():
        kept = [r["predictions"]["final"] for r in pres["folds"] if "final" in r.get("predictions", {})]
        if kept:
            counts = np.zeros((n, n), dtype=np.int64)
            for p in kept:
                np.add.at(counts, (np.asarray(p["y"]), np.asarray(p["pred"])), 1)
            out[protocol] = (kept[0]["level"], counts)
    return out


def fold_scores(res: Mapping[str, Any]) -> dict[str, dict[str, list[tuple[int, int | None, float]]]]:
    """Metric label -> protocol -> (fold, seed, value) of every run: accuracy and macro-F1 at the reported level
    (video where the task has videos), or Dice and IoU."""
    seg = res["kind"] == "segmentation"
    out: dict[str, dict[str, list[tuple[int, int | None, float]]]] = {}
    for protocol, pres in res["protocols"].items():
        for run in pres["folds"]:
            m = run["metrics"]
            level = "video" if "video" in m else next(iter(m))
            scores = (
                {"Dice": m["dice"], "IoU": m["iou"]}
                if seg
                else {
                    f"{level} accuracy": m[level]["accuracy"],
                    f"{level} macro-F1": m[level]["macro_f1"],
                }
            )
            for label, value in scores.items():
                if value is not None:
                    out.setdefault(label, {}).setdefault(protocol, []).append((run["fold"], run["seed"], value))
    return out


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _confusion_figure(task: str, res: Mapping[str, Any], counts: dict[str, tuple[str, np.ndarray]]) -> bytes:
    from matplotlib.figure import Figure

    classes = list(res["classes"])
    side = 1.2 + 0.55 * len(classes)
    fig = Figure(figsize=(side * len(counts) + 0.5, side + 1.2), layout="constrained")
    for ax, (protocol, (level, m)) in zip(np.atleast_1d(fig.subplots(1, len(counts))), counts.items()):
        ax.imshow(m, cmap="Blues", vmin=0)
        for (i, j), value in np.ndenumerate(m):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > m.max() / 2 else "black")
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45 if max(map(len, classes)) > 6 else 0, ha="right")
        ax.set_yticks(ticks, classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        runs = len(res["protocols"][protocol]["folds"])
        ax.set_title(f"{res['protocols'][protocol]['name']}\n{level} level, {runs} runs, n={m.sum()}", fontsize=9)
    fig.suptitle(f"{task}: confusion summed over folds and seeds")
    return _png(fig)


def _folds_figure(task: str, res: Mapping[str, Any], scores: dict[str, dict[str, list[Any]]]) -> bytes:
    from matplotlib.figure import Figure

    folds = sorted({fold for per in scores.values() for runs in per.values() for fold, _, _ in runs})
    position = {fold: k for k, fold in enumerate(folds)}
    fig = Figure(figsize=(3.2 + 0.8 * len(folds), 3.6 * len(scores)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(scores), 1))
    for ax, (label, per_protocol) in zip(axes, scores.items()):
        for k, (protocol, runs) in enumerate(per_protocol.items()):
            seeds = sorted({seed for _, seed, _ in runs}, key=lambda s: -1 if s is None else s)
            shift = 0.25 * (k - (len(per_protocol) - 1) / 2)
            xs = [
                position[f] + shift + 0.06 * (seeds.index(s) - (len(seeds) - 1) / 2) for f, s, _ in runs
            ]  # one marker per seed, side by side
            values = [100 * v for _, _, v in runs]
            name = res["protocols"][protocol]["name"]
            dots = ax.plot(xs, values, "o", alpha=0.8, label=f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
            ax.axhline(float(np.mean(values)), color=dots[0].get_color(), linestyle="--", linewidth=1)
        ax.set_xticks(range(len(folds)), [f"fold {f}" for f in folds])
        ax.set_ylabel(f"{label} (%)")
        ax.legend(fontsize=8)
    axes[0].set_title(f"{task}: score per fold (dashed: mean over runs)")
    return _png(fig)


def write_plots(results: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """Both plots of every task of an :func:`.run.evaluate` result into ``folder`` (made if missing; its parent
    must exist); files of the same names are replaced. Returns the files written."""
    out = check_plotting(folder)
    out.mkdir(exist_ok=True)
    written = []
    for task, res in results["tasks"].items():
        counts, scores = confusion_counts(res), fold_scores(res)
        figures = {"confusion": _confusion_figure(task, res, counts) if counts else None}
        figures["folds"] = _folds_figure(task, res, scores) if scores else None
        for kind, png in figures.items():
            if png is not None:
                path = out / PLOT_FILES[kind].format(task=task)
                write_bytes_atomic(path, png)
                written.append(path)
    return written
