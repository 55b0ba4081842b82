"""``evaluate``: a backbone on downstream tasks (POCUS, COVID-BLUES, BUSI classification, BUSI segmentation).

The reference picks each fold's best epoch *on the test fold*. Here the reported epoch is the last one or the
best inner-validation epoch (:func:`.fitting.select_epoch` never sees test outputs); the test-picked number is
kept, labelled ``optimistic``, only to compare with published figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EvaluationError
from ..provenance import environment
from .backbone import Backbone, load_backbone
from .config import DEFAULT_FOLDS, DEFAULT_TASKS, PROTOCOLS, EvalConfig
from .metrics import summarize
from .protocols import extract_features, finetune_classifier, finetune_unet, linear_probe
from .tasks import TASKS, TaskData, TaskSpec, fold_split, load_items, load_task, resolve_data_root, subsample

__all__ = ["evaluate"]


def _protocols_for(spec: TaskSpec, wanted: Sequence[str]) -> list[str]:
    available = ("finetune",) if spec.kind == "segmentation" else PROTOCOLS
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise EvaluationError(f"task {spec.name!r} supports protocols {list(available)}, got {list(wanted)}")
    return chosen


def _protocol_name(spec: TaskSpec, protocol: str) -> str:
    if protocol == "linear":
        return "linear probe"
    if spec.kind == "segmentation":
        return "U-Net fine-tune"
    return "fine-tune last block" if spec.finetune == "last_block" else "fine-tune all"


def _run_protocol(
    backbone: Backbone, data: TaskData, protocol: str, splits: dict[int, tuple[np.ndarray, np.ndarray]], cfg: EvalConfig
) -> dict[str, Any]:
    """Every fold of one protocol on one task, with its hyper-parameters and the mean ± std over folds."""
    spec, folds = data.spec, list(splits)
    if protocol == "linear":
        feats = extract_features(backbone, data, cfg)
        runs = [linear_probe(feats, data, f, *splits[f], cfg) for f in folds]
        hyper: dict[str, Any] = {"classifier": "StandardScaler + LogisticRegression(lbfgs, C=1)"}
    else:
        fn = finetune_unet if spec.kind == "segmentation" else finetune_classifier
        runs = [fn(backbone, data, f, *splits[f], cfg) for f in folds]
        lr, bs = cfg.hyper(spec)
        hyper = {
            "lr": lr,
            "batch_size": bs,
            "epochs": cfg.epochs,
            "weight_decay": cfg.weight_decay,
            "trains": "decoder + whole encoder" if spec.kind == "segmentation" else spec.finetune,
        }
    summary = summarize([{k: r[k] for k in ("metrics", "optimistic") if k in r} for r in runs])
    return {"name": _protocol_name(spec, protocol), "hyper": hyper, "folds": runs, "summary": summary}


def _evaluate_task(
    backbone: Backbone, spec: TaskSpec, items: list, protocols: list[str], folds: Sequence[int], cfg: EvalConfig
) -> dict[str, Any]:
    data = load_task(spec, items, cfg.image_size, cfg.frames_per_video, cfg.progress)
    splits = {f: fold_split(data, f) for f in folds}
    return {
        "description": spec.description,
        "kind": spec.kind,
        "classes": list(spec.classes),
        "n_items": len(data.items),
        "n_rows": len(data.x),
        "protocols": {proto: _run_protocol(backbone, data, proto, splits, cfg) for proto in protocols},
    }


def evaluate(
    model_name_or_path: str,
    tasks: Sequence[str] = DEFAULT_TASKS,
    data_root: str | Path | None = None,
    protocol: str | Sequence[str] = PROTOCOLS,
    folds: Sequence[int] = DEFAULT_FOLDS,
    *,
    arch: str | None = None,
    pretrained: bool = True,
    **config: Any,
) -> dict[str, Any]:
    """Evaluate a backbone on downstream tasks; returns JSON-ready results (see :func:`results_to_markdown`).

    ``config`` holds :class:`EvalConfig` fields (image_size, frames_per_video, epochs, batch_size, lr, select,
    max_items, device, seed, ...). ``folds`` are the test folds; each trains on all the other folds.
    """
    cfg = EvalConfig(**config)
    protocols = [protocol] if isinstance(protocol, str) else list(protocol)
    unknown = [t for t in tasks if t not in TASKS] + [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise EvaluationError(f"unknown task or protocol {unknown}; tasks: {list(TASKS)}, protocols: {list(PROTOCOLS)}")
    if cfg.select not in ("final", "val"):
        raise EvaluationError(f"select must be 'final' or 'val', got {cfg.select!r}")
    root = resolve_data_root(data_root)
    specs = [TASKS[t] for t in tasks]
    items = {s.name: subsample(load_items(s, root), cfg.max_items, cfg.seed) for s in specs}  # fail fast on data
    per_task_protocols = {s.name: _protocols_for(s, protocols) for s in specs}

    torch.manual_seed(cfg.seed)  # a random-init backbone depends on the seed only
    backbone = load_backbone(model_name_or_path, arch=arch, pretrained=pretrained)
    results: dict[str, Any] = {
        "model": backbone.name,
        "arch": backbone.arch,
        "pretrained": backbone.pretrained,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "config": {**asdict(cfg), "folds": list(folds), "tasks": list(tasks), "protocols": protocols},
        "tasks": {},
        "runtime_s": {},
        "environment": environment(cfg.device),
    }
    cudnn_flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        for spec in specs:
            start = time.perf_counter()
            results["tasks"][spec.name] = _evaluate_task(
                backbone, spec, items[spec.name], per_task_protocols[spec.name], folds, cfg
            )
            results["runtime_s"][spec.name] = round(time.perf_counter() - start, 2)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags
    return results
