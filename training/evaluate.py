"""Downstream evaluation of a backbone: POCUS, COVID-BLUES, BUSI classification and BUSI lesion segmentation.

Protocols (one function each):

* :func:`finetune_classifier` — the Meta-USCL reference fine-tune for the lung tasks (only the last block of
  the last stage + a new linear head train; Adam lr 0.01, wd 1e-4, cosine, 30 epochs, batch 128,
  RandomResizedCrop(0.8–1, 0.8–1.25) + hflip), and a whole-network fine-tune for BUSI (the reference has no BUSI
  protocol; lr 3e-4, batch 32 are our choice).
* :func:`linear_probe` — logistic regression on standardized frozen features (USCL's ``linear_eval``).
* :func:`finetune_unet` — a smp U-Net on the backbone's ``features_only`` pyramid, whole network trained.

The reference picks each fold's best epoch *on the test fold*. Here the reported epoch is the last one or the
best inner-validation epoch (:func:`select_epoch` never sees test outputs); the test-picked number is kept,
labelled ``optimistic``, only to compare with published figures.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Literal, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from timm_uscl.errors import CheckpointFormatError

from .eval_metrics import (
    classification_metrics,
    results_to_markdown,
    segmentation_metrics,
    summarize,
    video_probs,
)
from .eval_tasks import (
    DEFAULT_TASKS,
    TASKS,
    EvaluationError,
    TaskData,
    TaskSpec,
    fold_split,
    inner_split,
    load_items,
    load_task,
    resolve_data_root,
    subsample,
)
from .provenance import environment

__all__ = [
    "evaluate",
    "results_to_markdown",
    "EvalConfig",
    "Backbone",
    "load_backbone",
    "last_block",
    "random_resized_crop",
    "select_epoch",
    "run_epochs",
    "finetune_classifier",
    "linear_probe",
    "finetune_unet",
    "PROTOCOLS",
]

PROTOCOLS = ("finetune", "linear")
# (lr, batch size) of the fine-tune by what it trains: the reference's values for the last block, ours for "all".
_FINETUNE_DEFAULTS = {"last_block": (1e-2, 128), "all": (3e-4, 32)}
T = TypeVar("T")


@dataclass(frozen=True)
class EvalConfig:
    image_size: int = 224
    frames_per_video: int = 16
    epochs: int = 30
    batch_size: int | None = None  # None: per-protocol default (_FINETUNE_DEFAULTS)
    lr: float | None = None
    weight_decay: float = 1e-4
    select: Literal["final", "val"] = "final"
    val_fraction: float = 0.2
    max_items: int | None = None
    device: str = "cpu"
    seed: int = 0
    progress: bool = True

    def hyper(self, spec: TaskSpec) -> tuple[float, int]:
        lr, bs = _FINETUNE_DEFAULTS[spec.finetune]
        return (self.lr or lr, self.batch_size or bs)


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class Backbone:
    """A headless timm model with its weights loaded, plus what the protocols need to rebuild it per fold."""

    name: str
    arch: str
    model: nn.Module  # num_classes=0, on CPU; deep-copied per fold
    mean: tuple[float, ...]
    std: tuple[float, ...]
    smp_encoder: str | None  # "tu-<name>" when smp can build the encoder, weights included, from timm's registry
    pretrained: bool


def load_backbone(name_or_path: str, arch: str | None = None, pretrained: bool = True) -> Backbone:
    """A timm name (``resnet18``, ``resnet18_uscl.<tag>``), ``hf-hub:``/``local-dir:`` name, or safetensors file."""
    import timm
    from timm.models import get_arch_name

    import timm_uscl  # noqa: F401  (registers the *_uscl archs so their names resolve)

    path = Path(name_or_path)
    if path.suffix == ".pt" and path.is_file():
        return _trainer_checkpoint(path)
    if name_or_path.endswith(".safetensors") or path.is_file():
        if arch is None:
            raise EvaluationError(f"{path}: a checkpoint needs --arch, the timm architecture it holds (e.g. resnet18_uscl)")
        if not timm.is_model(arch):
            raise EvaluationError(f"--arch {arch!r} is not a timm architecture (import the plugin that registers it)")
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        _load_checkpoint(model, path, arch)
        return _backbone(str(path), get_arch_name(arch), model, None, True)
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        model = timm.create_model(name_or_path, pretrained=True, num_classes=0)
        return _backbone(name_or_path, model.pretrained_cfg["architecture"], model, None, True)
    if not timm.is_model(name_or_path):
        raise EvaluationError(
            f"unknown model {name_or_path!r}: give a timm model name, an hf-hub:/local-dir: name, "
            "or a .safetensors checkpoint with --arch"
        )
    model = timm.create_model(name_or_path, pretrained=pretrained, num_classes=0)
    return _backbone(name_or_path, get_arch_name(name_or_path), model, f"tu-{name_or_path}", pretrained)


def _trainer_checkpoint(path: Path) -> Backbone:
    """The backbone of a ``timm-uscl pretrain`` checkpoint (``last.pt``), with the run's own mean/std."""
    import timm
    from timm.models import get_arch_name

    from .checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointFormatError(f"{path}: not a timm-uscl pretrain checkpoint (no model/config/step entries)")
    run = state["config"]
    stats = {"mean": (run["mean"],) * 3, "std": (run["std"],) * 3, "input_size": (3, run["image_size"], run["image_size"])}
    model = timm.create_model(run["arch"], pretrained=False, num_classes=0, pretrained_cfg_overlay=stats)
    model.load_state_dict({k[len("backbone."):]: v for k, v in state["model"].items() if k.startswith("backbone.")})
    return _backbone(f"{path} (step {state['step']})", get_arch_name(run["arch"]), model, None, True)


def _backbone(name: str, arch: str, model: nn.Module, smp_encoder: str | None, pretrained: bool) -> Backbone:
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    return Backbone(name, arch, model.eval(), tuple(cfg["mean"]), tuple(cfg["std"]), smp_encoder, pretrained)


def _load_checkpoint(model: nn.Module, path: Path, arch: str) -> None:
    """Load a timm-keyed backbone state dict; a classifier in the file is ignored, any other mismatch is an error."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise EvaluationError(f"{path}: no such checkpoint file")
    if path.suffix != ".safetensors":
        raise CheckpointFormatError(
            f"{path}: only a .safetensors backbone state dict or a `timm-uscl pretrain` checkpoint (.pt) is "
            "accepted; convert other files with `timm-uscl convert` and pass local-dir:DIR"
        )
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own untyped errors
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e
    head = model.pretrained_cfg.get("classifier") or ""
    state = {k: v for k, v in state.items() if not (head and k.startswith(head + "."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path}: keys do not match timm arch {arch!r} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "save the backbone's timm state_dict() or pass the right --arch"
        )


def last_block(model: nn.Module) -> nn.Module:
    """The last block of the last stage (``layer4[-1]`` for ResNet): all the reference fine-tune trains."""
    stage = model.get_submodule(model.feature_info[-1]["module"])
    blocks = getattr(stage, "blocks", stage)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        return blocks[-1]
    return blocks


class _Normalize:
    """uint8 or 0–255 float pixels -> the model's pretrained_cfg normalization."""

    def __init__(self, backbone: Backbone, device: torch.device) -> None:
        self.mean = 255 * torch.tensor(backbone.mean, device=device).view(1, -1, 1, 1)
        self.std = 255 * torch.tensor(backbone.std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


# ---------------------------------------------------------------------------------------------- training utils


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def _crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling (10 tries, then the whole image), drawn from ``gen``."""
    for _ in range(10):
        area = h * w * _uniform(*scale, gen)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), gen))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (), generator=gen))
            return top, left, ch, cw
    return 0, 0, h, w


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    masks: torch.Tensor | None = None,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (0.8, 1.25),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample RandomResizedCrop back to the input size + horizontal flip; masks get the same crop (nearest).

    Sampled from ``gen`` (not the global RNG) so a fold's augmentation depends on the seed alone.
    """
    size = x.shape[-2:]
    xs, ms = [], []
    for b in range(len(x)):
        top, left, h, w = _crop_box(*size, scale, ratio, gen)
        flip = torch.rand((), generator=gen).item() < 0.5
        crop = F.interpolate(x[b : b + 1, :, top : top + h, left : left + w].float(), size=size,
                             mode="bilinear", align_corners=False, antialias=True)
        xs.append(crop.flip(-1) if flip else crop)
        if masks is not None:
            m = F.interpolate(masks[b : b + 1, :, top : top + h, left : left + w].float(), size=size, mode="nearest")
            ms.append(m.flip(-1) if flip else m)
    return torch.cat(xs), (torch.cat(ms) if masks is not None else None)


def _batches(rows: np.ndarray, batch_size: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches; a trailing batch of one is dropped (BatchNorm cannot train on a single sample)."""
    order = rows[torch.randperm(len(rows), generator=gen).numpy()]
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        if len(batch) > 1:
            yield batch


@torch.no_grad()
def _forward_rows(model: nn.Module, x: torch.Tensor, rows: np.ndarray, norm: _Normalize, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(norm(x[rows[i : i + batch_size]].to(device))).float().cpu()
                      for i in range(0, len(rows), batch_size)])


def select_epoch(val_scores: Sequence[float] | None, epochs: int) -> int:
    """The reported epoch (0-based): the last one, or the first best inner-validation epoch. Never test data."""
    return epochs - 1 if val_scores is None else int(np.argmax(val_scores))


@dataclass
class EpochTrace(Generic[T]):
    chosen: int
    val_scores: list[float] | None
    test: list[T]  # test-fold output after each epoch, read only after the choice


def run_epochs(
    epochs: int,
    fit_epoch: Callable[[int], None],
    eval_test: Callable[[], T],
    eval_val: Callable[[], float] | None = None,
    desc: str = "",
    progress: bool = True,
) -> EpochTrace[T]:
    """Train and record the test fold after every epoch; the choice of epoch uses ``eval_val`` scores only."""
    val: list[float] | None = [] if eval_val is not None else None
    test: list[T] = []
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        fit_epoch(epoch)
        if eval_val is not None:
            assert val is not None
            val.append(eval_val())
        test.append(eval_test())
    return EpochTrace(select_epoch(val, epochs), val, test)


def _levels(data: TaskData, rows: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Frame- and video-level (mean softmax over a video's frames) metrics; images have one level."""
    y, classes = data.y[rows].numpy(), data.spec.classes
    if data.spec.kind != "video":
        return {"image": classification_metrics(y, probs, classes)}
    vp, vy = video_probs(probs, data.item[rows].numpy(), y)
    return {"frame": classification_metrics(y, probs, classes), "video": classification_metrics(vy, vp, classes)}


def _fold_result(fold: int, n_train: int, n_val: int, n_test: int, trace: EpochTrace, metrics: Callable[[Any], dict], score: Callable[[dict], float]) -> dict[str, Any]:
    chosen = metrics(trace.test[trace.chosen])
    per_epoch = [metrics(out) for out in trace.test]
    best = int(np.argmax([score(m) for m in per_epoch]))
    return {
        "fold": fold, "n_train": n_train, "n_val": n_val, "n_test": n_test,
        "epoch": trace.chosen + 1, "metrics": chosen,
        "optimistic": {"epoch": best + 1, **per_epoch[best]},
    }


def _fit_split(data: TaskData, train: np.ndarray, cfg: EvalConfig, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    return inner_split(data, train, cfg.val_fraction, seed) if cfg.select == "val" else (train, None)


# ---------------------------------------------------------------------------------------------- protocols


def finetune_classifier(backbone: Backbone, data: TaskData, fold: int, train: np.ndarray, test: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """One fold of the fine-tune: last block + new head (lung tasks, the reference) or the whole network (BUSI)."""
    seed = cfg.seed + fold
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(cfg.device)
    model = copy.deepcopy(backbone.model)
    model.reset_classifier(len(data.spec.classes))
    if data.spec.finetune == "last_block":
        model.requires_grad_(False)
        last_block(model).requires_grad_(True)
        model.get_classifier().requires_grad_(True)
    model.to(device)
    lr, batch_size = cfg.hyper(data.spec)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    norm = _Normalize(backbone, device)
    fit, val = _fit_split(data, train, cfg, seed)

    def fit_epoch(_: int) -> None:
        model.train()  # BN running stats of frozen layers update too, as in the reference
        for rows in _batches(fit, batch_size, gen):
            x, _ = random_resized_crop(data.x[rows].to(device), gen)
            loss = F.cross_entropy(model(norm(x)), data.y[rows].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()

    def probs(rows: np.ndarray) -> np.ndarray:
        return _forward_rows(model, data.x, rows, norm, device).softmax(1).numpy()

    eval_val = None
    if val is not None:
        eval_val = lambda: float((probs(val).argmax(1) == data.y[val].numpy()).mean())  # noqa: E731
    trace = run_epochs(cfg.epochs, fit_epoch, lambda: probs(test), eval_val,
                       desc=f"{data.spec.name} finetune fold {fold}", progress=cfg.progress)
    level = "frame" if data.spec.kind == "video" else "image"
    return _fold_result(fold, len(fit), 0 if val is None else len(val), len(test), trace,
                        lambda p: _levels(data, test, p), lambda m: m[level]["accuracy"])


def extract_features(backbone: Backbone, data: TaskData, cfg: EvalConfig) -> np.ndarray:
    """Pooled frozen features of every row, computed once per task (the backbone never changes in the probe)."""
    device = torch.device(cfg.device)
    model = copy.deepcopy(backbone.model).to(device)
    rows = np.arange(len(data.x))
    return _forward_rows(model, data.x, rows, _Normalize(backbone, device), device).numpy()


def linear_probe(features: np.ndarray, data: TaskData, fold: int, train: np.ndarray, test: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """Logistic regression (lbfgs, C=1) on standardized frozen features, as USCL's linear_eval. No epochs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = data.y.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(features[train], y[train])
    probs = np.zeros((len(test), len(data.spec.classes)))
    probs[:, clf.classes_] = clf.predict_proba(features[test])  # a class absent from training keeps p = 0
    return {"fold": fold, "n_train": len(train), "n_test": len(test), "metrics": _levels(data, test, probs)}


def build_unet(backbone: Backbone) -> nn.Module:
    """smp U-Net with a ``tu-`` encoder; smp loads registry weights itself, others are copied in here."""
    import segmentation_models_pytorch as smp

    if backbone.smp_encoder is not None:
        return smp.Unet(backbone.smp_encoder, encoder_weights=True if backbone.pretrained else None, classes=1)
    unet = smp.Unet(f"tu-{backbone.arch}", encoder_weights=None, classes=1)
    missing, _ = unet.encoder.model.load_state_dict(backbone.model.state_dict(), strict=False)
    if missing:
        raise EvaluationError(f"{backbone.name}: U-Net encoder keys {missing[:3]} are not in the backbone's weights")
    return unet


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def finetune_unet(backbone: Backbone, data: TaskData, fold: int, train: np.ndarray, test: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """One fold of lesion segmentation: U-Net, whole network, BCE + Dice loss, crop/flip applied to image and mask."""
    seed = cfg.seed + fold
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(cfg.device)
    model = build_unet(backbone).to(device)
    lr, batch_size = cfg.hyper(data.spec)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    norm = _Normalize(backbone, device)
    fit, val = _fit_split(data, train, cfg, seed)

    def fit_epoch(_: int) -> None:
        model.train()
        for rows in _batches(fit, batch_size, gen):
            x, m = random_resized_crop(data.x[rows].to(device), gen, masks=data.y[rows].to(device))
            assert m is not None
            logits = model(norm(x))
            loss = F.binary_cross_entropy_with_logits(logits, m) + _dice_loss(logits, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()

    def scores(rows: np.ndarray) -> dict[str, Any]:
        pred = (_forward_rows(model, data.x, rows, norm, device, batch_size=64) > 0).numpy()[:, 0]
        return segmentation_metrics(pred, data.y[rows].numpy()[:, 0] > 0)

    eval_val = (lambda: scores(val)["dice"]) if val is not None else None
    trace = run_epochs(cfg.epochs, fit_epoch, lambda: scores(test), eval_val,
                       desc=f"{data.spec.name} U-Net fold {fold}", progress=cfg.progress)
    return _fold_result(fold, len(fit), 0 if val is None else len(val), len(test), trace,
                        lambda m: m, lambda m: m["dice"])


# ---------------------------------------------------------------------------------------------- the API


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


def evaluate(
    model_name_or_path: str,
    tasks: Sequence[str] = DEFAULT_TASKS,
    data_root: str | Path | None = None,
    protocol: str | Sequence[str] = PROTOCOLS,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
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
        "model": backbone.name, "arch": backbone.arch, "pretrained": backbone.pretrained,
        "mean": list(backbone.mean), "std": list(backbone.std),
        "config": {**asdict(cfg), "folds": list(folds), "tasks": list(tasks), "protocols": protocols},
        "tasks": {}, "runtime_s": {}, "environment": environment(cfg.device),
    }
    cudnn_flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        for spec in specs:
            start = time.perf_counter()
            data = load_task(spec, items[spec.name], cfg.image_size, cfg.frames_per_video, cfg.progress)
            splits = {f: fold_split(data, f) for f in folds}
            task: dict[str, Any] = {
                "description": spec.description, "kind": spec.kind, "classes": list(spec.classes),
                "n_items": len(data.items), "n_rows": len(data.x), "protocols": {},
            }
            for proto in per_task_protocols[spec.name]:
                if proto == "linear":
                    feats = extract_features(backbone, data, cfg)
                    runs = [linear_probe(feats, data, f, *splits[f], cfg) for f in folds]
                    hyper: dict[str, Any] = {"classifier": "StandardScaler + LogisticRegression(lbfgs, C=1)"}
                else:
                    fn = finetune_unet if spec.kind == "segmentation" else finetune_classifier
                    runs = [fn(backbone, data, f, *splits[f], cfg) for f in folds]
                    lr, bs = cfg.hyper(spec)
                    hyper = {"lr": lr, "batch_size": bs, "epochs": cfg.epochs, "weight_decay": cfg.weight_decay,
                             "trains": "decoder + whole encoder" if spec.kind == "segmentation" else spec.finetune}
                summary = summarize([{k: r[k] for k in ("metrics", "optimistic") if k in r} for r in runs])
                task["protocols"][proto] = {"name": _protocol_name(spec, proto), "hyper": hyper,
                                            "folds": runs, "summary": summary}
            results["tasks"][spec.name] = task
            results["runtime_s"][spec.name] = round(time.perf_counter() - start, 2)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags
    return results
