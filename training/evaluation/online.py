"""Online evaluation: a cheap probe of the backbone being pretrained, called by the trainer every N epochs.

Built once from a labelled set (a built-in task such as ``pocus``, or a ``--task-dir`` folder), it decodes the
frames and labels once and keeps them (a few MB at 64 px); each call computes the current backbone's frozen
pooled features (eval mode, no grad; every module's train/eval mode restored afterwards) and scores them on the
task's grouped folds with a weighted kNN (cosine similarity, votes ``exp(sim / T)``, as InstDisc/DINO) and/or a
linear probe. The probe is a ridge classifier in closed form (standardized features, one-hot targets), not the
evaluation's logistic regression: lbfgs took most of a minute per call on 448 frames, the solve takes
milliseconds. Accuracy is frame level, pooled over folds: a trend line for the run, not a reported result (that
is ``timm-uscl evaluate``'s job).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EvaluationError
from .config import EvalConfig
from .leakage import PretrainFiles, warn_leakage
from .task_cache import load_task_cached
from .task_dir import task_from_dir
from .tasks import TASKS, fold_split, load_items, resolve_data_root, subsample

__all__ = ["OnlineEvaluator", "knn_predict", "ridge_predict"]


def knn_predict(
    test: torch.Tensor,
    train: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Class of each test row by a vote of its ``k`` most cosine-similar training rows, weighted ``exp(s/T)``."""
    sim = F.normalize(test.float(), dim=1) @ F.normalize(train.float(), dim=1).T
    top, idx = sim.topk(min(k, len(train)), dim=1)
    votes = torch.zeros(len(test), num_classes, dtype=sim.dtype)
    votes.scatter_add_(1, labels[idx], (top / temperature).exp())
    return votes.argmax(1)


def ridge_predict(
    test: torch.Tensor, train: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 1.0
) -> torch.Tensor:
    """A linear classifier in closed form: ridge regression of one-hot targets on standardized features."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    x = ((train - mean) / std).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # bias column
    targets = F.one_hot(labels, num_classes).double()
    w = torch.linalg.solve(x.T @ x + alpha * torch.eye(x.shape[1], dtype=x.dtype), x.T @ targets)
    t = ((test - mean) / std).double()
    return (torch.cat([t, torch.ones(len(t), 1, dtype=t.dtype)], 1) @ w).argmax(1)


def _scalar_or_triple(v: float | Sequence[float]) -> tuple[float, ...]:
    return (float(v),) * 3 if isinstance(v, (int, float)) else tuple(float(x) for x in v)


class OnlineEvaluator:
    """``evaluator(backbone) -> {"knn_acc": ..., "linear_acc": ...}``: frame-level accuracy, pooled over folds.

    ``source`` is a built-in classification task name or a task folder (:func:`.task_dir.task_from_dir`).
    ``mean``/``std`` are the normalization the run trains with (one value per channel, or one for all).
    ``pretrain_data``: the run's source folders; items also in them are warned about (:mod:`.leakage`).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        data_root: str | os.PathLike | None = None,
        image_size: int = 64,
        frames_per_video: int = 4,
        max_items: int | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
        knn: bool = True,
        linear: bool = True,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        batch_size: int = 256,
        task_cache: str | None = None,
        seed: int = 0,
        pretrain_data: Sequence[str | os.PathLike] = (),
    ) -> None:
        if str(source) in TASKS:
            spec = TASKS[str(source)]
            base = resolve_data_root(data_root) / spec.folder
            items = load_items(spec, resolve_data_root(data_root))
        else:
            base = Path(source).expanduser()
            spec, items = task_from_dir(base)
        if spec.kind == "segmentation":
            raise EvaluationError(f"online evaluation scores classes; {spec.name!r} is a segmentation task")
        if not (knn or linear):
            raise EvaluationError("online evaluation needs knn and/or linear")
        cfg = EvalConfig(
            image_size=image_size,
            frames_per_video=frames_per_video,
            max_items=max_items,
            seed=seed,
            progress=False,
            task_cache=task_cache,
        )
        items = subsample(items, max_items, seed)
        pretrain = PretrainFiles.of(pretrain_data)
        self.leaks = warn_leakage(spec, base, items, pretrain, context="online evaluation") if pretrain_data else []
        self.data = load_task_cached(spec, base, items, cfg)
        self.splits = [fold_split(self.data, f) for f in spec.folds if (self.data.fold == f).any()]
        self.mean = torch.tensor(_scalar_or_triple(mean)).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(_scalar_or_triple(std)).view(1, -1, 1, 1) * 255
        self.knn, self.linear, self.k, self.temperature = knn, linear, knn_k, knn_temperature
        self.batch_size = batch_size

    @property
    def num_rows(self) -> int:
        return len(self.data.x)

    @torch.no_grad()
    def features(self, backbone: nn.Module) -> torch.Tensor:
        """Pooled features of every row, in eval mode; each module's own train/eval mode is restored."""
        modes = [(m, m.training) for m in backbone.modules()]
        device = next(backbone.parameters()).device
        mean, std = self.mean.to(device), self.std.to(device)
        try:
            backbone.eval()
            out = [
                backbone((self.data.x[i : i + self.batch_size].to(device).float() - mean) / std).flatten(1).float()
                for i in range(0, len(self.data.x), self.batch_size)
            ]
        finally:
            for m, training in modes:
                m.train(training)
        return torch.cat(out).cpu()

    def __call__(self, backbone: nn.Module) -> dict[str, float]:
        """The metrics of the backbone as it is now; NaN when its features are not finite (a diverging run is
        the trainer's to stop, not this probe's)."""
        feats = self.features(backbone)
        if not bool(torch.isfinite(feats).all()):
            return {k: float("nan") for k, on in (("knn_acc", self.knn), ("linear_acc", self.linear)) if on}
        y, classes = self.data.y, len(self.data.spec.classes)
        out: dict[str, float] = {}
        if self.knn:
            out["knn_acc"] = self._pooled(
                lambda te, tr: knn_predict(feats[te], feats[tr], y[tr], classes, self.k, self.temperature)
            )
        if self.linear:
            out["linear_acc"] = self._pooled(lambda te, tr: ridge_predict(feats[te], feats[tr], y[tr], classes))
        return out

    def _pooled(self, predict: Callable[[np.ndarray, np.ndarray], torch.Tensor]) -> float:
        """Accuracy over every fold's test rows together, each predicted from the other folds."""
        correct = sum(int((predict(te, tr) == self.data.y[te]).sum()) for tr, te in self.splits)
        return correct / sum(len(te) for _, te in self.splits)
