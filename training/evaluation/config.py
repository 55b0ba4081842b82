"""The evaluation's settings (import-light: the command line reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ..config import PRECISIONS

if TYPE_CHECKING:
    from .tasks import TaskSpec

__all__ = [
    "PROTOCOLS",
    "PRECISIONS",
    "DEFAULT_TASKS",
    "DEFAULT_FOLDS",
    "TASK_KINDS",
    "INITS",
    "METHODS",
    "REPRO_TASKS",
    "Budget",
    "BUDGETS",
    "EvalConfig",
    "budget_config",
]

PROTOCOLS: tuple[str, ...] = ("finetune", "linear")
DEFAULT_TASKS: tuple[str, ...] = ("pocus", "covid_blues", "busi", "busi_seg")
DEFAULT_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
TASK_KINDS: tuple[str, ...] = ("image", "segmentation", "video")  # of a --task-dir
INITS: tuple[str, ...] = ("torchvision", "timm")
REPRO_TASKS: tuple[str, ...] = ("pocus", "busi", "busi_seg")  # the reproduction table's tasks
# the reproduction's methods: evaluation file stem (eval_<name>.json) -> label in its tables
METHODS = {"meta_uscl": "Meta-USCL", "uscl": "USCL", "simclr": "SimCLR", "random": "random init"}
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
    seeds: int = 1  # fine-tunes repeated with seeds seed, seed + 1, ...: one run is one draw of the fine-tune
    task_epochs: tuple[tuple[str, int], ...] = ()  # per-task epochs replacing ``epochs`` (a budget sets them)
    budget: str | None = None  # the named budget (BUDGETS) these settings came from, recorded with the results
    # auto | fp32 | bf16 (PRECISIONS, the trainer's table): bf16 autocast of the forwards; evaluate() resolves auto
    # once (training/runtime.py) and records the precision that ran, so compare can refuse mixing them
    precision: str = "auto"
    mask_foreground: int | None = None  # segmentation: None reads binary masks (0 with 1 or 255); V: label maps' V
    resize_masks: bool = False  # segmentation: stretch a mask of another size than its image instead of refusing
    label_column: str | None = None  # --task-dir: the metadata.csv column of the class (None: "label")
    pretrain_data: tuple[str, ...] = ()  # the backbone's pretraining folders: evaluation items in them are warned of

    def hyper(self, spec: TaskSpec) -> tuple[float, int]:
        lr, bs = _FINETUNE_DEFAULTS[spec.finetune]
        return (self.lr or lr, self.batch_size or bs)

    @property
    def run_seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))

    def for_task(self, task: str) -> EvalConfig:
        """The settings one task runs with: its own epochs where the budget names them."""
        return replace(self, epochs=dict(self.task_epochs).get(task, self.epochs))


@dataclass(frozen=True)
class Budget:
    """A named evaluation budget: every row of one comparison table is evaluated under the same one, so that
    the rows share folds, seeds, frames and epochs (and :mod:`.compare` can pair them)."""

    image_size: int
    frames_per_video: int
    seeds: int
    task_epochs: tuple[tuple[str, int], ...]
    description: str
    epochs: int = EvalConfig.epochs  # of the tasks task_epochs does not name (a --task-dir)

    def settings(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "frames_per_video": self.frames_per_video,
            "seeds": self.seeds,
            "task_epochs": self.task_epochs,
            "epochs": self.epochs,
        }


# Why these numbers: "repro64" runs the reference's POCUS protocol (last block, 30 epochs, 16 frames per video) at
# 64 px, and BUSI's whole-network fine-tunes at the 5 epochs of the earlier CPU tables; it does not fit 30 minutes
# on the 2-core CPU box (POCUS alone is the larger part). "cpu64" keeps the reference's POCUS epochs with 4 frames
# per video and gives BUSI 3 epochs so that one evaluation of REPRO_TASKS x both protocols x 5 folds x 3 seeds fits
# in about 30 minutes there. Measured slices and the extrapolation: benchmarks/RESULTS.md, Evaluation.
_REPRO_EPOCHS = (("pocus", 30), ("covid_blues", 30), ("covid_blues_severity", 30))
BUDGETS: dict[str, Budget] = {
    "repro64": Budget(
        image_size=64,
        frames_per_video=16,
        seeds=3,
        task_epochs=(*_REPRO_EPOCHS, ("busi", 5), ("busi_seg", 5)),
        description="the reference's POCUS protocol (last block, 30 epochs, 16 frames/video) at 64 px; BUSI "
        "classification and segmentation 5 epochs; 3 seeds",
    ),
    "cpu64": Budget(
        image_size=64,
        frames_per_video=4,
        seeds=3,
        task_epochs=(*_REPRO_EPOCHS, ("busi", 3), ("busi_seg", 3)),
        description="sized for 30 min on 2 CPU cores: POCUS last block 30 epochs at 4 frames/video, BUSI 3 epochs, "
        "64 px; 3 seeds",
    ),
    # a pipeline check of the same shape (every task, protocol, fold and >1 seed) in seconds: tests, smoke runs
    "smoke": Budget(
        image_size=32,
        frames_per_video=2,
        seeds=2,
        task_epochs=(),
        description="a pipeline check: 32 px, 2 frames/video, 1 epoch, 2 seeds (numbers mean nothing)",
        epochs=1,
    ),
}


def budget_config(budget: str | None, **config: Any) -> EvalConfig:
    """:class:`EvalConfig` from a named budget and the other settings (None: the default). A setting the budget
    fixes (image size, frames, epochs) is refused when also given: the rows of one table must not differ in it.
    The number of seeds is the budget's default only; :mod:`.compare` refuses rows whose seeds differ."""
    from ..errors import EvaluationError

    given = {k: v for k, v in config.items() if v is not None}
    if budget is None:
        return EvalConfig(**given)
    if budget not in BUDGETS:
        raise EvaluationError(f"unknown budget {budget!r}; budgets: {', '.join(BUDGETS)}")
    settings = BUDGETS[budget].settings()
    clash = [k for k in settings if k in given and k not in ("seeds", "task_epochs")]  # seeds: a default only
    if clash:
        names = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise EvaluationError(f"--budget {budget} sets {names}; drop {names} or the budget")
    return EvalConfig(**{**settings, **given, "budget": budget})
