"""What every fine-tune shares: crop + flip augmentation, shuffled batches, the training loop (:func:`fit`) and the
choice of the reported epoch, which never looks at the test fold (:func:`select_epoch`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.augment import AugmentConfig, sample_crop_params
from ..errors import EvaluationError
from .backbone import Normalize
from .config import EvalConfig
from .tasks import TaskData, inner_split

__all__ = [
    "random_resized_crop",
    "batches",
    "forward_rows",
    "autocast",
    "channels_last",
    "select_epoch",
    "EpochTrace",
    "run_epochs",
    "fit_split",
    "fit",
]

T = TypeVar("T")


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    masks: torch.Tensor | None = None,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (0.8, 1.25),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample RandomResizedCrop of square images back to their size + horizontal flip; masks get the same crop
    (nearest). Boxes and flips come from the pretraining augmentation's sampler (:func:`sample_crop_params`, drawn
    from ``gen``, so a fold's augmentation depends on the seed alone); the resample is per sample with antialiasing,
    unlike pretraining's single ``grid_sample``, because a crop here may shrink far below the image size."""
    size = x.shape[-1]
    params = sample_crop_params(len(x), size, AugmentConfig(size, scale, ratio, flip_p=0.5), gen)
    xs, ms = [], []
    for b, (top, left, h, w, flip) in enumerate(
        zip(*(t.tolist() for t in (params.top, params.left, params.height, params.width, params.flip)))
    ):
        top, left, h, w = int(top), int(left), int(h), int(w)
        crop = F.interpolate(
            x[b : b + 1, :, top : top + h, left : left + w].float(),
            size=x.shape[-2:],
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        xs.append(crop.flip(-1) if flip else crop)
        if masks is not None:
            m = F.interpolate(
                masks[b : b + 1, :, top : top + h, left : left + w].float(), size=x.shape[-2:], mode="nearest"
            )
            ms.append(m.flip(-1) if flip else m)
    return torch.cat(xs), (torch.cat(ms) if masks is not None else None)


def batches(rows: np.ndarray, batch_size: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches; a trailing batch of one is dropped (BatchNorm cannot train on a single sample)."""
    order = rows[torch.randperm(len(rows), generator=gen).numpy()]
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        if len(batch) > 1:
            yield batch


def autocast(cfg: EvalConfig) -> torch.autocast:
    """bf16 autocast of a forward where the evaluation's resolved precision is ``bf16`` (a no-op for ``fp32``).
    Only forwards run under it: losses and metrics take the outputs as float32."""
    device = torch.device(cfg.device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A batch of images in channels_last, the layout the model is moved to: oneDNN's fast convolution path."""
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def forward_rows(
    model: nn.Module,
    x: torch.Tensor,
    rows: np.ndarray,
    norm: Normalize,
    device: torch.device,
    batch_size: int = 256,
    label: str = "the model",
    cfg: EvalConfig | None = None,
) -> torch.Tensor:
    """Float32 outputs for ``rows`` in eval mode, under ``cfg``'s precision (:func:`autocast`; None: fp32);
    non-finite outputs stop the run (argmax of NaN would score class 0)."""
    model.eval()
    outs = []
    for i in range(0, len(rows), batch_size):
        batch = channels_last(norm(x[rows[i : i + batch_size]].to(device)))
        with autocast(cfg) if cfg is not None else contextlib.nullcontext():
            outs.append(model(batch).float().cpu())
    out = torch.cat(outs)
    if not bool(torch.isfinite(out).all()):
        raise EvaluationError(f"{label}: non-finite (NaN or inf) outputs; no score is computed from them")
    return out


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
        if eval_val is not None and val is not None:
            val.append(eval_val())
        test.append(eval_test())
    return EpochTrace(select_epoch(val, epochs), val, test)


def fit_split(data: TaskData, train: np.ndarray, cfg: EvalConfig, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The fold's training rows as (fit, inner validation or None), split by whole groups when ``select='val'``."""
    return inner_split(data, train, cfg.val_fraction, seed) if cfg.select == "val" else (train, None)


def fit(
    model: nn.Module,
    fit_rows: np.ndarray,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    *,
    cfg: EvalConfig,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    eval_test: Callable[[], T],
    eval_val: Callable[[], float] | None,
    desc: str,
) -> EpochTrace[T]:
    """The fine-tune loop of every protocol: Adam (weight decay ``cfg.weight_decay``) on the trainable parameters,
    cosine schedule over ``cfg.epochs``, shuffled batches of ``fit_rows`` whose loss ``batch_loss`` computes; the
    test fold (and the inner validation) is scored after every epoch. A non-finite loss stops the run: the
    scores of a diverged fine-tune would look like a model's."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def fit_epoch(epoch: int) -> None:
        model.train()  # BN running stats of frozen layers update too, as in the reference
        losses = []
        for rows in batches(fit_rows, batch_size, gen):
            loss = batch_loss(rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        sched.step()
        if losses and not bool(torch.isfinite(torch.stack(losses)).all()):  # one sync per epoch
            raise EvaluationError(f"{desc}: the loss became NaN or inf in epoch {epoch + 1}; lower --lr")

    return run_epochs(cfg.epochs, fit_epoch, eval_test, eval_val, desc=desc, progress=cfg.progress)
