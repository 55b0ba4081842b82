"""The evaluation protocols, one function per fold each:

* :func:`finetune_classifier` — the Meta-USCL reference fine-tune for the lung tasks (only the last block of
  the last stage + a new linear head train; Adam lr 0.01, wd 1e-4, cosine, 30 epochs, batch 128,
  RandomResizedCrop(0.8–1, 0.8–1.25) + hflip), and a whole-network fine-tune for BUSI (the reference has no BUSI
  protocol; lr 3e-4, batch 32 are our choice).
* :func:`linear_probe` — logistic regression on standardized frozen features (USCL's ``linear_eval``).
* :func:`finetune_unet` — a smp U-Net on the backbone's ``features_only`` pyramid, whole network trained.

Both fine-tunes run :func:`.fitting.fit`; each fold reports the epoch chosen without the test fold, and keeps the
reference's test-picked epoch apart, labelled ``optimistic``. Each fold result also keeps the per-item predictions
of both scorings (``predictions``; the layout is documented in :mod:`.compare`), so that two models evaluated on
the same folds and seeds can be compared item by item.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EvaluationError
from .backbone import Backbone, Normalize, TimmModel, last_block
from .config import EvalConfig
from .fitting import EpochTrace, autocast, channels_last, fit, fit_split, forward_rows, random_resized_crop
from .metrics import classification_metrics, dice_iou, segmentation_metrics, video_probs
from .tasks import TaskData

__all__ = ["finetune_classifier", "extract_features", "linear_probe", "build_unet", "finetune_unet"]


def _levels(data: TaskData, rows: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Frame- and video-level (mean softmax over a video's frames) metrics; images have one level."""
    y, classes = data.y[rows].numpy(), data.spec.classes
    if data.spec.kind != "video":
        return {"image": classification_metrics(y, probs, classes)}
    vp, vy = video_probs(probs, data.item[rows].numpy(), y)
    return {"frame": classification_metrics(y, probs, classes), "video": classification_metrics(vy, vp, classes)}


def _class_predictions(data: TaskData, rows: np.ndarray, probs: np.ndarray, level: str) -> dict[str, Any]:
    """Per-item predictions at one level: ``video`` (a video's mean softmax, one entry per video), else one entry
    per row (``frame`` or ``image``); ``item`` indexes the task's ``items``, ``y`` is the true class."""
    y, items = data.y[rows].numpy(), data.item[rows].numpy()
    if level == "video":
        ids = np.unique(items)
        probs, y = video_probs(probs, items, y)
        items = ids
    return {
        "level": level,
        "item": items.tolist(),
        "y": y.tolist(),
        "pred": probs.argmax(1).tolist(),
        "prob": np.round(probs, 5).tolist(),
    }


def _fold_result(
    fold: int,
    n_train: int,
    n_val: int,
    n_test: int,
    trace: EpochTrace,
    metrics: Callable[[Any], dict],
    score: Callable[[dict], float],
    predictions: Callable[[Any, str], dict] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """One fold's record: the chosen epoch's metrics, the test-picked (optimistic) epoch's, and with
    ``predictions(output, scoring)`` the per-item predictions of both scorings (``final``, ``optimistic``)."""
    chosen = metrics(trace.test[trace.chosen])
    per_epoch = [metrics(out) for out in trace.test]
    best = int(np.argmax([score(m) for m in per_epoch]))
    result = {
        "fold": fold,
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "epoch": trace.chosen + 1,
        "metrics": chosen,
        "optimistic": {"epoch": best + 1, **per_epoch[best]},
    }
    if predictions is not None:
        result["predictions"] = {
            "final": predictions(trace.test[trace.chosen], "final"),
            "optimistic": predictions(trace.test[best], "optimistic"),
        }
    return result


def _fold_seed(cfg: EvalConfig, fold: int) -> tuple[int, torch.Generator, torch.device]:
    """A fold's seed (the global RNG, for its new head's init) and its augmentation generator: a fold's numbers
    depend on the run's seed and the fold alone, whatever ran before it. ``1000 * seed + fold`` keeps every
    (seed, fold) pair's stream distinct (seed 0 draws what it always drew)."""
    seed = 1000 * cfg.seed + fold
    torch.manual_seed(seed)
    return seed, torch.Generator().manual_seed(seed), torch.device(cfg.device)


def finetune_classifier(
    backbone: Backbone, data: TaskData, fold: int, train: np.ndarray, test: np.ndarray, cfg: EvalConfig
) -> dict[str, Any]:
    """One fold of the fine-tune: last block + new head (lung tasks, the reference) or the whole network (BUSI)."""
    seed, gen, device = _fold_seed(cfg, fold)
    model: TimmModel = copy.deepcopy(backbone.model)
    model.reset_classifier(len(data.spec.classes))
    if data.spec.finetune == "last_block":
        model.requires_grad_(False)
        last_block(model).requires_grad_(True)
        model.get_classifier().requires_grad_(True)
    model.to(device).to(memory_format=torch.channels_last)
    lr, batch_size = cfg.hyper(data.spec)
    norm = Normalize(backbone, device)
    fit_rows, val = fit_split(data, train, cfg, seed)

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        x, _ = random_resized_crop(data.x[rows].to(device), gen)
        with autocast(cfg):
            logits = model(channels_last(norm(x)))
        return F.cross_entropy(logits.float(), data.y[rows].to(device))

    def probs(rows: np.ndarray) -> np.ndarray:
        return forward_rows(model, data.x, rows, norm, device, label=backbone.name, cfg=cfg).softmax(1).numpy()

    def val_accuracy() -> float:
        assert val is not None
        return float((probs(val).argmax(1) == data.y[val].numpy()).mean())

    trace = fit(
        model,
        fit_rows,
        batch_loss,
        cfg=cfg,
        lr=lr,
        batch_size=batch_size,
        gen=gen,
        eval_test=lambda: probs(test),
        eval_val=val_accuracy if val is not None else None,
        desc=f"{data.spec.name} finetune fold {fold}",
    )
    level = "frame" if data.spec.kind == "video" else "image"
    final_level = "video" if data.spec.kind == "video" else "image"
    return _fold_result(
        fold,
        len(fit_rows),
        0 if val is None else len(val),
        len(test),
        trace,
        lambda p: _levels(data, test, p),
        lambda m: m[level]["accuracy"],
        lambda p, scoring: _class_predictions(data, test, p, final_level if scoring == "final" else level),
        seed=cfg.seed,
    )


def extract_features(backbone: Backbone, data: TaskData, cfg: EvalConfig) -> np.ndarray:
    """Pooled frozen features of every row, computed once per task (the backbone never changes in the probe)."""
    device = torch.device(cfg.device)
    model = copy.deepcopy(backbone.model).to(device).to(memory_format=torch.channels_last)
    rows, norm = np.arange(len(data.x)), Normalize(backbone, device)
    return forward_rows(model, data.x, rows, norm, device, label=backbone.name, cfg=cfg).numpy()


def linear_probe(
    features: np.ndarray, data: TaskData, fold: int, train: np.ndarray, test: np.ndarray, cfg: EvalConfig
) -> dict[str, Any]:
    """Logistic regression (lbfgs, C=1) on standardized frozen features, as USCL's linear_eval. No epochs, and
    no seed: lbfgs on fixed features is deterministic, so the probe runs once per fold (``seed`` None) and its
    two scorings differ only in level (video, and frames pooled)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = data.y.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(features[train], y[train])
    probs = np.zeros((len(test), len(data.spec.classes)))
    probs[:, clf.classes_] = clf.predict_proba(features[test])  # a class absent from training keeps p = 0
    video = data.spec.kind == "video"
    return {
        "fold": fold,
        "seed": None,
        "n_train": len(train),
        "n_test": len(test),
        "metrics": _levels(data, test, probs),
        "predictions": {
            "final": _class_predictions(data, test, probs, "video" if video else "image"),
            "optimistic": _class_predictions(data, test, probs, "frame" if video else "image"),
        },
    }


def build_unet(backbone: Backbone) -> nn.Module:
    """smp U-Net with a ``tu-`` encoder holding the backbone's own weights, copied in: the evaluated file, or
    the random-init baseline's initialisation (smp would otherwise draw its own, timm-style)."""
    import segmentation_models_pytorch as smp

    unet = smp.Unet(f"tu-{backbone.arch}", encoder_weights=None, classes=1)
    missing, _ = unet.encoder.model.load_state_dict(backbone.model.state_dict(), strict=False)
    if missing:
        raise EvaluationError(f"{backbone.name}: U-Net encoder keys {missing[:3]} are not in the backbone's weights")
    return unet


class _SegScores(NamedTuple):
    metrics: dict[str, Any]
    dice: np.ndarray  # per test image
    packed: np.ndarray | None = None  # the predicted masks, bit-packed along rows (kept only when asked for)


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def finetune_unet(
    backbone: Backbone,
    data: TaskData,
    fold: int,
    train: np.ndarray,
    test: np.ndarray,
    cfg: EvalConfig,
    *,
    keep_masks: bool = False,
) -> dict[str, Any]:
    """One fold of lesion segmentation: U-Net, whole network, BCE + Dice loss, crop/flip applied to image and mask.
    ``keep_masks``: the record also holds the reported epoch's predicted masks (``masks``, boolean [N, S, S] in the
    order of ``predictions["final"]["item"]``; not JSON: the caller takes them out), kept bit-packed per epoch
    until the epoch is chosen."""
    seed, gen, device = _fold_seed(cfg, fold)
    model = build_unet(backbone).to(device).to(memory_format=torch.channels_last)
    lr, batch_size = cfg.hyper(data.spec)
    norm = Normalize(backbone, device)
    fit_rows, val = fit_split(data, train, cfg, seed)

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        x, m = random_resized_crop(data.x[rows].to(device), gen, masks=data.y[rows].to(device))
        assert m is not None
        with autocast(cfg):
            logits = model(channels_last(norm(x))).float()
        return F.binary_cross_entropy_with_logits(logits, m) + _dice_loss(logits, m)

    def scores(rows: np.ndarray) -> _SegScores:
        logits = forward_rows(model, data.x, rows, norm, device, batch_size=64, label=backbone.name, cfg=cfg)
        pred, target = (logits > 0).numpy()[:, 0], data.y[rows].numpy()[:, 0] > 0
        packed = np.packbits(pred, axis=-1) if keep_masks else None
        return _SegScores(segmentation_metrics(pred, target), dice_iou(pred, target)[0], packed)

    def val_dice() -> float:
        assert val is not None
        return scores(val).metrics["dice"]

    def predictions(out: _SegScores, scoring: str) -> dict[str, Any]:
        items = data.item[test].numpy().tolist()
        return {"level": "image", "item": items, "dice": np.round(out.dice, 6).tolist()}

    trace = fit(
        model,
        fit_rows,
        batch_loss,
        cfg=cfg,
        lr=lr,
        batch_size=batch_size,
        gen=gen,
        eval_test=lambda: scores(test),
        eval_val=val_dice if val is not None else None,
        desc=f"{data.spec.name} U-Net fold {fold}",
    )
    result = _fold_result(
        fold,
        len(fit_rows),
        0 if val is None else len(val),
        len(test),
        trace,
        lambda s: s.metrics,
        lambda m: m["dice"],
        predictions,
        seed=cfg.seed,
    )
    packed = trace.test[trace.chosen].packed
    if packed is not None:
        result["masks"] = np.unpackbits(packed, axis=-1, count=data.x.shape[-1]).astype(bool)
    return result
