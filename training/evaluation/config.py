"""The evaluation's settings (import-light: the command line reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .tasks import TaskSpec

__all__ = ["PROTOCOLS", "DEFAULT_TASKS", "DEFAULT_FOLDS", "TASK_KINDS", "INITS", "EvalConfig"]

PROTOCOLS: tuple[str, ...] = ("finetune", "linear")
DEFAULT_TASKS: tuple[str, ...] = ("pocus", "covid_blues", "busi", "busi_seg")
DEFAULT_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
TASK_KINDS: tuple[str, ...] = ("image", "segmentation", "video")  # of a --task-dir
INITS: tuple[str, ...] = ("torchvision", "timm")
# (lr, batch size) of the fine-tune by what it trains: the reference's values for the last block, ours for "all".
_FINETUNE_DEFAULTS = {"last_block": (1e-2, 128), "all": (3e-4, 32)}


@dataclass(frozen=True)
class EvalConfig:
    """How each protocol runs; the defaults are the reference's (224 px, 16 frames per video, 30 epochs)."""

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
    task_cache: str | None = None  # folder of decoded tasks (.task_cache): no decoding on a second run
    init: Literal["torchvision", "timm"] = "torchvision"  # random-init baseline: last BN of each block at 1 or 0

    def hyper(self, spec: TaskSpec) -> tuple[float, int]:
        lr, bs = _FINETUNE_DEFAULTS[spec.finetune]
        return (self.lr or lr, self.batch_size or bs)
