"""Metrics of the downstream evaluation, their mean ± std over folds, the markdown table of a result and its
strict JSON text.

Kept free of torch so model cards can render a stored results JSON with :func:`results_to_markdown`. An undefined
metric (Dice over lesion images of a fold without lesions) is None, written ``null``: strict JSON parsers reject
``NaN``, and a results file is read by other tools than ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from timm_uscl.cards import percent
from timm_uscl.weights import EvalResult

__all__ = [
    "classification_metrics",
    "video_probs",
    "dice_iou",
    "segmentation_metrics",
    "summarize",
    "reference_style",
    "results_to_markdown",
    "card_results",
    "strict_json",
    "run_seeds",
    "run_epochs",
    "unit_scores",
]


def _auroc(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """One-vs-rest AUROC of each class's probability; None for a class absent from (or alone in) ``y_true``,
    where it is undefined."""
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        positive = y_true == c
        out[name] = float(roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(y_true) else None
    return out


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall of argmax predictions (absent classes score 0), the
    clinical pair per class (sensitivity: recall, under its clinical name; specificity: true negatives over
    actual negatives), one-vs-rest AUROC per class and its macro mean over the classes where it is defined
    (threshold-free: what a reader of a diagnostic paper compares), and the confusion matrix (rows: truth) that
    :func:`reference_style` pools over folds."""
    labels = list(range(len(classes)))
    pred = probs.argmax(1)
    precision, recall, _, _ = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    confusion = confusion_matrix(y_true, pred, labels=labels)
    negatives = len(y_true) - confusion.sum(1)
    false_pos = confusion.sum(0) - np.diag(confusion)
    specificity = [float(1 - fp / n) if n > 0 else None for fp, n in zip(false_pos, negatives)]
    auroc = _auroc(np.asarray(y_true), np.asarray(probs), classes)
    defined = [v for v in auroc.values() if v is not None]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "precision": {c: float(p) for c, p in zip(classes, precision)},
        "recall": {c: float(r) for c, r in zip(classes, recall)},
        "sensitivity": {c: float(r) if n > 0 else None for c, r, n in zip(classes, recall, confusion.sum(1))},
        "specificity": dict(zip(classes, specificity)),
        "auroc": auroc,
        "confusion": confusion.tolist(),
    }


def video_probs(probs: np.ndarray, video: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One prediction per video: the mean of its frames' softmax; returns (probs, labels) in video-id order."""
    ids = np.unique(video)
    out = np.stack([probs[video == v].mean(0) for v in ids])
    labels = np.array([y[video == v][0] for v in ids])
    return out, labels


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of boolean masks [N, H, W].

    An image whose ground truth and prediction are both empty (BUSI's normal cases, correctly left blank) scores
    1; an empty ground truth with any predicted pixel scores 0. Without this rule 0/0 would be undefined.
    """
    p, t = pred.reshape(len(pred), -1).astype(bool), target.reshape(len(target), -1).astype(bool)
    inter = (p & t).sum(1)
    total = p.sum(1) + t.sum(1)
    union = (p | t).sum(1)
    both_empty = total == 0
    dice = np.where(both_empty, 1.0, 2 * inter / np.maximum(total, 1))
    iou = np.where(both_empty, 1.0, inter / np.maximum(union, 1))
    return dice, iou


def segmentation_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Mean per-image Dice/IoU over all images, over lesion images only, and the empty-mask hit rate."""
    dice, iou = dice_iou(pred, target)
    lesion = np.asarray(target.reshape(len(target), -1).any(1))
    empty_pred = ~np.asarray(pred.reshape(len(pred), -1).any(1))
    return {
        "n": int(len(target)),
        "dice": float(dice.mean()),
        "iou": float(iou.mean()),
        "dice_lesion": float(dice[lesion].mean()) if lesion.any() else None,
        "iou_lesion": float(iou[lesion].mean()) if lesion.any() else None,
        "n_empty": int((~lesion).sum()),
        "empty_correct": float(empty_pred[~lesion].mean()) if (~lesion).any() else None,
    }


def summarize(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof=1; 0 for a single fold) over folds of every numeric leaf; undefined values (None) are
    left out, and a leaf undefined in every fold has mean None."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for f in per_fold for k in f)  # a leaf None in the first fold is numeric in another
    for key in keys:
        values = [f.get(key) for f in per_fold]
        if any(isinstance(v, Mapping) for v in values):
            out[key] = summarize([v for v in values if isinstance(v, Mapping)])
        elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)
            out[key] = {
                "mean": float(v.mean()) if len(v) else None,
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            }
    return out


def _from_confusion(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    tp = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {
        "n": int(confusion.sum()),
        "accuracy": float(tp.sum() / max(int(confusion.sum()), 1)),
        "macro_f1": float(f1.mean()),
        "precision": {c: float(p) for c, p in zip(classes, precision)},
        "recall": {c: float(r) for c, r in zip(classes, recall)},
    }


def reference_style(runs: Sequence[Mapping[str, Any]], kind: str, classes: Sequence[str]) -> dict[str, Any]:
    """The figure the reference code reports, for comparison with published numbers: each fold's best epoch
    picked *on its test fold*, frame (or image) level, and all folds' test frames POOLED (their confusion
    matrices summed) instead of a mean over folds. Optimistic: the test fold chose the epoch. A probe without
    epochs pools its only result (``epochs`` None)."""
    chosen = [r.get("optimistic", r.get("metrics", {})) for r in runs]
    epochs = [int(r["optimistic"]["epoch"]) for r in runs] if all("optimistic" in r for r in runs) else None
    if kind == "segmentation":
        n = sum(int(c["n"]) for c in chosen)
        pooled = {k: sum(float(c[k]) * int(c["n"]) for c in chosen) / max(n, 1) for k in ("dice", "iou")}
        return {"level": "image", "n": n, **pooled, "epochs": epochs}
    level = "frame" if kind == "video" else "image"
    confusion = sum(np.asarray(c[level]["confusion"]) for c in chosen)
    return {"level": level, **_from_confusion(np.asarray(confusion), classes), "epochs": epochs}


_LESION_TASKS = frozenset({"busi_seg"})  # built-in segmentation tasks whose foreground is a lesion


def _pm(stat: Mapping[str, float] | None) -> str:
    return percent(stat["mean"], stat["std"]) if stat else percent(None)


def _ref(pres: Mapping[str, Any], key: str) -> str:
    ref = pres.get("reference_style")
    return percent(ref[key]) if ref and key in ref else percent(None)


def _rows(results: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    cls_rows, seg_rows = [], []
    for task, res in results["tasks"].items():
        for pres in res["protocols"].values():
            s = pres["summary"]
            if res["kind"] == "segmentation":
                m = s["metrics"]
                optimistic = _pm(s.get("optimistic", {}).get("dice"))
                seg_rows.append(
                    f"| {task} | {pres['name']} | {_pm(m['dice'])} | {_pm(m['iou'])} | {_pm(m['dice_lesion'])} "
                    f"| {_pm(m['iou_lesion'])} | {_pm(m['empty_correct'])} | {optimistic} | {_ref(pres, 'dice')} |"
                )
                continue
            for level, m in s["metrics"].items():
                opt = s.get("optimistic", {}).get(level, {}).get("accuracy")
                ref = _ref(pres, "accuracy") if level in ("frame", "image") else percent(None)
                cls_rows.append(
                    f"| {task} | {pres['name']} | {level} | {_pm(m['accuracy'])} | {_pm(m['macro_f1'])} "
                    f"| {_pm(m.get('macro_auroc'))} | {_pm(opt)} | {ref} |"
                )
    return cls_rows, seg_rows


def run_seeds(cfg: Mapping[str, Any]) -> str:
    seeds = cfg.get("run_seeds", [cfg["seed"]])  # results written before seeds were repeated: one seed
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds}"


def run_epochs(results: Mapping[str, Any]) -> str:
    """``30 epochs``, or per task when a budget gives tasks their own (``pocus 30, busi 8 epochs``)."""
    per_task = {t: r.get("epochs", results["config"]["epochs"]) for t, r in results["tasks"].items()}
    if len(set(per_task.values())) <= 1:
        return f"{next(iter(per_task.values()), results['config']['epochs'])} epochs"
    return ", ".join(f"{t} {e}" for t, e in per_task.items()) + " epochs"


def results_to_markdown(results: Mapping[str, Any]) -> str:
    """Markdown tables (percent, mean ± std over folds) of an :func:`evaluate` result; reused by model cards.
    Two optimistic columns stand beside the project's score, labelled: the test-picked epoch (mean over folds)
    and the reference-style figure (test-picked epoch, frame level, folds pooled)."""
    cfg = results["config"]
    lines = [
        f"Model `{results['model']}` (arch `{results['arch']}`), {cfg['image_size']}² px, "
        f"{cfg['frames_per_video']} frames/video, {run_epochs(results)}, epoch chosen by `{cfg['select']}`, "
        f"{run_seeds(cfg)}; mean ± std over folds {cfg['folds']}"
        + (" × seeds (fine-tunes)." if len(cfg.get("run_seeds", [])) > 1 else "."),
        "",
    ]
    cls_rows, seg_rows = _rows(results)
    seg_tasks = {t for t, r in results["tasks"].items() if r["kind"] == "segmentation"}
    found = "lesion" if seg_tasks and seg_tasks <= _LESION_TASKS else "foreground"  # BUSI's words on BUSI only
    if cls_rows:
        lines += [
            "| Task | Protocol | Level | Accuracy | Macro-F1 | AUROC, macro one-vs-rest | Accuracy, optimistic¹ "
            "| Accuracy, reference-style² |",
            "|---|---|---|---:|---:|---:|---:|---:|",
            *cls_rows,
            "",
        ]
    if seg_rows:
        lines += [
            f"| Task | Protocol | Dice | IoU | Dice, {found} images | IoU, {found} images | Empty masks kept empty "
            "| Dice, optimistic¹ | Dice, reference-style² |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *seg_rows,
            "",
        ]
    lines.append(
        "¹ best epoch picked on the test fold, as the reference code does: optimistic, for comparison only. "
        "² reference-style: that test-picked epoch, frame level, all folds' test frames pooled into one figure "
        "(no ± : one number), as the reference code reports: optimistic, for comparison with published numbers "
        "only. Dice/IoU are per image; an empty ground truth scores 1 if the prediction is empty too, else 0."
    )
    return "\n".join(lines) + "\n"


def card_results(results: Mapping[str, Any]) -> list[EvalResult]:
    """The headline numbers of an :func:`evaluate` result as weights-table / model-card entries.

    Classification: video-level accuracy and macro-F1 where the task has videos, else image-level; segmentation:
    Dice and IoU. All are means over folds with their std, the epoch chosen without the test fold.
    """
    cfg = results["config"]
    out = []
    for task, res in results["tasks"].items():
        folds = res.get("folds", cfg["folds"])
        items = f", {res['n_items']} items" if "n_items" in res else ""  # a --max-items run says so
        for pres in res["protocols"].values():
            metrics = pres["summary"]["metrics"]
            seeds = pres.get("seeds") or []
            runs = f"{len(folds)} folds" + (f" x {len(seeds)} seeds" if len(seeds) > 1 else "")
            protocol = (
                f"{pres['name']}, {runs}, {cfg['image_size']}px, {res.get('epochs', cfg['epochs'])} epochs, "
                f"epoch by {cfg['select']}{items}"
            )
            if res["kind"] == "segmentation":
                chosen = [("dice", metrics["dice"]), ("iou", metrics["iou"])]
            else:
                level = metrics["video"] if "video" in metrics else next(iter(metrics.values()))
                chosen = [("accuracy", level["accuracy"]), ("macro_f1", level["macro_f1"])]
            for metric, stat in chosen:
                out.append(
                    EvalResult(
                        task=res["description"],
                        dataset=task,
                        metric=metric,
                        value=stat["mean"],
                        std=stat["std"],
                        protocol=protocol,
                        source="measured: timm-uscl evaluate",
                    )
                )
    return out


def unit_scores(metrics: Mapping[str, Any]) -> str:
    """One fold's reported scores as a log line gives them: Dice and IoU, or accuracy and macro-F1 at the level
    the table reports (video where the task has videos)."""
    if "dice" in metrics:
        return f"Dice {percent(metrics['dice'])} %, IoU {percent(metrics['iou'])} %"
    level = "video" if "video" in metrics else next(iter(metrics))
    m = metrics[level]
    return f"{level} accuracy {percent(m['accuracy'])} %, macro-F1 {percent(m['macro_f1'])} %"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def strict_json(results: Any, indent: int | None = 1) -> str:
    """JSON text that every parser accepts: a non-finite float becomes ``null`` (never ``NaN`` or ``Infinity``),
    the one rule for every file the evaluation writes."""
    return json.dumps(_finite_or_none(results), indent=indent, allow_nan=False) + "\n"
