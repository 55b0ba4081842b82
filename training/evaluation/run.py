"""``evaluate``: a backbone on downstream tasks (POCUS, COVID-BLUES, BUSI classification, BUSI segmentation, or
your own ``--task-dir``).

The reference picks each fold's best epoch *on the test fold* and pools all folds' test frames. Here the
reported epoch is the last one or the best inner-validation epoch (:func:`.fitting.select_epoch` never sees test
outputs), scored per fold and averaged; the test-picked numbers are kept beside it, labelled ``optimistic`` and
``reference_style``, only to compare with published figures. Every fine-tune runs once per seed
(``EvalConfig.seeds``); the results keep every fold x seed run with its per-item predictions, so that
:mod:`.compare` can pair two models run by run and item by item (the JSON layout is documented there).

Order of work: every task's metadata is checked, then the backbone is loaded, matched against ``card_export``
and checked for non-finite values, and only then is anything decoded or trained: bad input fails in seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from timm_uscl.checksum import sha256_file
from timm_uscl.outdir import write_text_atomic

from ..config import PRECISIONS
from ..errors import EvaluationError
from ..provenance import environment
from ..runtime import resolve_precision
from .backbone import Backbone, check_finite, load_backbone
from .config import DEFAULT_TASKS, INITS, PROTOCOLS, REPRO_TASKS, EvalConfig, budget_config
from .leakage import PretrainFiles, warn_leakage
from .mask_files import MaskWriter
from .metadata import fold_range
from .metrics import reference_style, results_to_markdown, strict_json, summarize
from .protocols import extract_features, finetune_classifier, finetune_unet, linear_probe
from .task_cache import load_task_cached
from .task_dir import task_from_dir
from .tasks import (
    TASKS,
    Item,
    TaskData,
    TaskSpec,
    fold_split,
    item_name,
    load_items,
    resolve_data_root,
    subsample,
)
from .units import UnitStore

__all__ = ["evaluate", "evaluate_for_reproduction"]

Source = tuple[TaskSpec, Path, list[Item]]  # a task before decoding: spec, the folder holding its files, items


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


def _tune_unit(
    backbone: Backbone,
    data: TaskData,
    unit: tuple[str, int, int],
    *,
    split: tuple[np.ndarray, np.ndarray],
    cfg: EvalConfig,
    units: UnitStore,
    masks: MaskWriter | None,
) -> dict[str, Any]:
    """One fine-tune unit (protocol, fold, seed), loaded where ``units`` keeps it. With ``masks``, a segmentation
    unit's predicted masks are written before its unit file, and a kept unit without masks is computed again."""
    spec, (protocol, fold, seed) = data.spec, unit
    keep = masks is not None and spec.kind == "segmentation"

    def tune() -> dict[str, Any]:
        if not keep:
            fn = finetune_unet if spec.kind == "segmentation" else finetune_classifier
            return fn(backbone, data, fold, *split, replace(cfg, seed=seed))
        assert masks is not None
        run = finetune_unet(backbone, data, fold, *split, replace(cfg, seed=seed), keep_masks=True)
        items = [data.items[i] for i in run["predictions"]["final"]["item"]]
        masks.write(spec.name, fold, seed, items=items, masks=run.pop("masks"))
        return run

    reuse = masks is None or not keep or masks.has(spec.name, fold, seed)
    run = units.run(spec.name, protocol, fold, seed, tune, reuse=reuse)
    if masks is not None and keep:
        masks.record(spec.name, fold, seed)
    return run


def _run_protocol(
    backbone: Backbone,
    data: TaskData,
    protocol: str,
    splits: dict[int, tuple[np.ndarray, np.ndarray]],
    cfg: EvalConfig,
    units: UnitStore,
    *,
    masks: MaskWriter | None = None,
) -> dict[str, Any]:
    """Every fold (x every seed, for a fine-tune) of one protocol on one task, with its hyper-parameters, the
    mean ± std over runs and the reference-style figure pooled over runs. The linear probe is deterministic:
    one run per fold, ``seeds`` None. A unit ``units`` keeps from an earlier run is loaded, not recomputed;
    ``masks`` writes a segmentation unit's predicted masks (:mod:`.mask_files`)."""
    spec, folds = data.spec, list(splits)
    seeds: list[int] | None = None
    if protocol == "linear":
        feats: list[np.ndarray] = []  # extracted once, and only when a fold still needs them

        def probe(f: int) -> dict[str, Any]:
            if not feats:
                feats.append(extract_features(backbone, data, cfg))
            return linear_probe(feats[0], data, f, *splits[f], cfg)

        runs = [units.run(spec.name, protocol, f, None, partial(probe, f)) for f in folds]
        hyper: dict[str, Any] = {"classifier": "StandardScaler + LogisticRegression(lbfgs, C=1)"}
    else:
        seeds = list(cfg.run_seeds)
        runs = [
            _tune_unit(backbone, data, (protocol, f, s), split=splits[f], cfg=cfg, units=units, masks=masks)
            for s in seeds
            for f in folds
        ]
        lr, bs = cfg.hyper(spec)
        hyper = {
            "lr": lr,
            "batch_size": bs,
            "epochs": cfg.epochs,
            "weight_decay": cfg.weight_decay,
            "trains": "decoder + whole encoder" if spec.kind == "segmentation" else spec.finetune,
        }
    summary = summarize([{k: r[k] for k in ("metrics", "optimistic") if k in r} for r in runs])
    return {
        "name": _protocol_name(spec, protocol),
        "hyper": hyper,
        "seeds": seeds,
        "folds": runs,
        "summary": summary,
        "reference_style": reference_style(runs, spec.kind, spec.classes),
    }


def _evaluate_task(
    backbone: Backbone,
    source: Source,
    protocols: list[str],
    folds: Sequence[int],
    cfg: EvalConfig,
    *,
    units: UnitStore,
    masks: MaskWriter | None,
) -> dict[str, Any]:
    spec, base, items = source
    cfg = cfg.for_task(spec.name)
    data = load_task_cached(spec, base, items, cfg)
    splits = {f: fold_split(data, f) for f in folds}
    return {
        "description": spec.description,
        "kind": spec.kind,
        "classes": list(spec.classes),
        "folds": list(folds),
        "epochs": cfg.epochs,
        "n_items": len(data.items),
        "n_rows": len(data.x),
        "items": [item_name(it, base) for it in data.items],
        "protocols": {
            proto: _run_protocol(backbone, data, proto, splits, cfg, units, masks=masks) for proto in protocols
        },
    }


def _sources(
    tasks: Sequence[str],
    data_root: str | Path | None,
    task_dir: str | Path | None,
    task_kind: str | None,
    group_column: str | None,
    cfg: EvalConfig,
) -> list[Source]:
    """Every task's items, metadata checked (nothing decoded yet), subsampled to ``cfg.max_items`` per fold."""
    out: list[Source] = []
    if tasks:
        root = resolve_data_root(data_root)
        out += [(TASKS[t], root / TASKS[t].folder, load_items(TASKS[t], root)) for t in tasks]
    if task_dir is not None:
        spec, items = task_from_dir(task_dir, task_kind, group_column, label_column=cfg.label_column)
        if spec.name in tasks:
            raise EvaluationError(f"--task-dir {task_dir}: its name {spec.name!r} is a built-in task's; rename it")
        out.append((spec, Path(task_dir).expanduser(), items))
    elif task_kind is not None or group_column is not None or cfg.label_column is not None:
        raise EvaluationError("--task-kind, --group-column and --label-column describe a --task-dir; give one")
    return [(spec, base, subsample(items, cfg.max_items, cfg.seed)) for spec, base, items in out]


def _folds_of(spec: TaskSpec, folds: Sequence[int] | None) -> list[int]:
    if folds is None:
        return list(spec.folds)
    unknown = [f for f in folds if f not in spec.folds]
    if unknown:
        raise EvaluationError(f"--folds {unknown}: task {spec.name!r} has folds {fold_range(spec.folds)}")
    return list(folds)


def _check_card(backbone: Backbone, export: str | Path) -> None:
    """``--card EXPORT`` records measured results only for that export's very weights file."""
    expected = sha256_file(Path(export) / "model.safetensors")
    if backbone.weights_sha256 != expected:
        got = backbone.weights_sha256 or "none: not an export or weights file"
        raise EvaluationError(
            f"--card {export}: the model evaluated ({backbone.name}, sha256 {got}) is not this export's "
            f"model.safetensors (sha256 {expected}); evaluate local-dir:{export} to fill its card"
        )


def _check_request(tasks: Sequence[str], protocols: Sequence[str], cfg: EvalConfig) -> None:
    unknown = [t for t in tasks if t not in TASKS] + [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise EvaluationError(f"unknown task or protocol {unknown}; tasks: {list(TASKS)}, protocols: {list(PROTOCOLS)}")
    if cfg.select not in ("final", "val"):
        raise EvaluationError(f"select must be 'final' or 'val', got {cfg.select!r}")
    if cfg.init not in INITS:
        raise EvaluationError(f"init must be one of {list(INITS)}, got {cfg.init!r}")
    if cfg.seeds < 1:
        raise EvaluationError(f"--seeds {cfg.seeds}: give at least 1 (the number of fine-tunes per fold)")
    if cfg.precision not in PRECISIONS:
        raise EvaluationError(f"--precision {cfg.precision}: give one of {', '.join(PRECISIONS)}")


def _unit_settings(results: dict[str, Any], sources: Sequence[Source]) -> dict[str, Any]:
    """What a kept unit must have been computed under to be reused: the model (weights sha256), every setting
    that changes a number (the resolved precision included), the items of every task and the code commit."""
    ignored = ("progress", "device", "task_cache")  # where it ran and how it printed: not what it measured
    return {
        **{k: results[k] for k in ("model", "arch", "pretrained", "init", "weights_sha256", "mean", "std")},
        "config": {k: v for k, v in results["config"].items() if k not in ignored},
        "items": {spec.name: [item_name(it, base) for it in items] for spec, base, items in sources},
        "commit": results["environment"].get("commit"),
    }


def evaluate(
    model_name_or_path: str,
    tasks: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    protocol: str | Sequence[str] = PROTOCOLS,
    folds: Sequence[int] | None = None,
    *,
    arch: str | None = None,
    pretrained: bool = True,
    task_dir: str | Path | None = None,
    task_kind: str | None = None,
    group_column: str | None = None,
    card_export: str | Path | None = None,
    budget: str | None = None,
    work_dir: str | Path | None = None,
    save_masks: str | Path | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Evaluate a backbone on downstream tasks; returns JSON-ready results (see :func:`results_to_markdown`).

    ``tasks`` are built-in task names (default: :data:`DEFAULT_TASKS`, or none when ``task_dir`` is given);
    ``task_dir`` adds your own folder (:mod:`.task_dir`). ``folds`` are the test folds (default: each task's
    folds); each trains on all the other folds. ``card_export``: refuse unless the evaluated weights file is
    that export's ``model.safetensors``. ``budget``: a named budget (:data:`.config.BUDGETS`) that sets image
    size, frames, per-task epochs and the default number of seeds. ``work_dir``: keep every finished unit there
    and reuse those of an earlier, interrupted run of the same settings (:mod:`.units`). ``save_masks``: a new or
    empty folder that receives every segmentation test image's predicted mask as PNG (:mod:`.mask_files`).
    ``config`` holds :class:`EvalConfig` fields (image_size, frames_per_video, epochs, seeds, batch_size, lr,
    select, max_items, device, seed, task_cache, init, precision, ...); None means the default. ``precision``
    ``auto`` is resolved here, once, and the results record the precision that ran.
    """
    cfg = budget_config(budget, **config)
    protocols = [protocol] if isinstance(protocol, str) else list(protocol)
    tasks = list(tasks) if tasks is not None else ([] if task_dir is not None else list(DEFAULT_TASKS))
    _check_request(tasks, protocols, cfg)
    precision = resolve_precision(cfg.precision, torch.device(cfg.device))
    cfg = replace(cfg, precision=precision.name)
    sources = _sources(tasks, data_root, task_dir, task_kind, group_column, cfg)  # fail fast on data
    test_folds = {spec.name: _folds_of(spec, folds) for spec, _, _ in sources}
    per_task_protocols = {spec.name: _protocols_for(spec, protocols) for spec, _, _ in sources}
    masks = None if save_masks is None else MaskWriter(save_masks, sources, work_dir)  # checked before any work
    if cfg.pretrain_data:  # items the backbone was pretrained on are named before hours of work (.leakage)
        pretrain = PretrainFiles.of(cfg.pretrain_data)
        for spec, base, items in sources:
            warn_leakage(spec, base, items, pretrain, context="evaluate")

    torch.manual_seed(cfg.seed)  # a random-init backbone depends on the seed only
    backbone = load_backbone(model_name_or_path, arch=arch, pretrained=pretrained, init=cfg.init)
    if card_export is not None:
        _check_card(backbone, card_export)
    check_finite(backbone, cfg.image_size)
    used_folds = sorted({f for fs in test_folds.values() for f in fs})
    results: dict[str, Any] = {
        "model": backbone.name,
        "arch": backbone.arch,
        "pretrained": backbone.pretrained,
        "init": backbone.init,
        "weights_sha256": backbone.weights_sha256,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "config": {
            **asdict(cfg),
            "task_epochs": dict(cfg.task_epochs),
            "run_seeds": list(cfg.run_seeds),
            "folds": list(folds) if folds is not None else used_folds,
            "tasks": tasks,
        },
        "tasks": {},
        "runtime_s": {},
        "environment": {**environment(cfg.device), "precision": precision.reason},
    }
    results["config"].update(protocols=protocols, task_dir=None if task_dir is None else str(task_dir))
    planned = sum(
        len(test_folds[name]) * sum(1 if p == "linear" else cfg.seeds for p in per_task_protocols[name])
        for name in test_folds
    )
    units = UnitStore(work_dir, _unit_settings(results, sources), planned=planned)
    cudnn_flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with masks.open() if masks is not None else contextlib.nullcontext() as writer:
            for source in sources:
                name, start = source[0].name, time.perf_counter()
                results["tasks"][name] = _evaluate_task(
                    backbone, source, per_task_protocols[name], test_folds[name], cfg, units=units, masks=writer
                )
                results["runtime_s"][name] = round(time.perf_counter() - start, 2)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags
    return results


def evaluate_for_reproduction(
    model: str,
    out_json: str | Path,
    *,
    budget: str = "repro64",
    seeds: int | None = None,
    data_root: str | Path | None = None,
    random_init: bool = False,
    init: str = "torchvision",
    device: str = "cpu",
    task_cache: str | Path | None = None,
    card_export: str | Path | None = None,
    max_items: int | None = None,
    progress: bool = False,
    precision: str = "auto",
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One row of the reproduction table: ``model`` on :data:`.config.REPRO_TASKS`, both protocols, every fold,
    under ``budget`` (seeds: the budget's unless given), written to ``out_json`` as strict JSON and beside it as
    markdown (``.md``). Both files are replaced atomically once everything ran: an interrupted evaluation leaves
    no results file, so a stage runner can take "``out_json`` exists" as "done". ``random_init``: the baseline
    row (``model`` is then an architecture, e.g. ``resnet18_uscl``); ``max_items`` per fold and ``budget="smoke"``
    make a pipeline check. ``precision``: auto | fp32 | bf16 (auto resolved once, recorded). ``work_dir``: keep
    each finished unit (task, protocol, fold, seed) there, so that a killed evaluation rerun with the same
    settings computes only the missing units (:mod:`.units`). The same as ``timm-uscl evaluate MODEL --tasks pocus
    busi busi_seg --budget repro64 --no-progress --out OUT.json [--precision P --work-dir DIR]`` (which writes the
    markdown only with ``--markdown``)."""
    out = Path(out_json).expanduser()
    if not out.parent.is_dir():
        raise EvaluationError(f"{out}: its folder does not exist; create it first")
    results = evaluate(
        model,
        tasks=list(REPRO_TASKS),
        data_root=data_root,
        protocol=PROTOCOLS,
        pretrained=not random_init,
        card_export=card_export,
        budget=budget,
        seeds=seeds,
        init=init,
        device=device,
        task_cache=None if task_cache is None else str(task_cache),
        max_items=max_items,
        progress=progress,
        precision=precision,
        work_dir=work_dir,
    )
    write_text_atomic(out.with_suffix(".md"), results_to_markdown(results))
    write_text_atomic(out, strict_json(results))
    return results
