"""What the engine may call on a data module, and the one place that picks the implementation.

Two implementations serve the same pairs contract (and give every video the same pair and views for the same
seed: :mod:`.draws`): :class:`~.module.PairDataModule` streams videos through
DataLoader workers (any source, any size, CPU-friendly) and :class:`~.store_module.StoreDataModule` samples a
frame store decoded once onto the training device. The engine depends on :class:`DataModule` only, so a third
(or a change to one of them) never reaches the training loop; :func:`data_module` is the only code that names both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch

from ..errors import StoreBudgetError
from .batch import DataStats, PairBatch
from .config import DataConfig
from .module import PairDataModule
from .store_module import StoreDataModule, store_mode

__all__ = ["DataModule", "data_module", "store_taken"]

log = logging.getLogger(__name__)


class DataModule(Protocol):
    """The training-loop side of a data module (``dm``)::

    for batch in dm.train_loader(epoch):        # this rank's batches of one epoch; resumes after load_state_dict
        x1, x2 = dm.gpu_views(batch, device)     # float [B, 3, S, S], augmented per sample, normalized
    m1, m2 = dm.gpu_views(next(dm.meta_iterator()), device)
    dm.state_dict(); dm.load_state_dict(state)  # exact mid-epoch resume (one state per rank)
    """

    stats: DataStats  # decoded / skipped counts for logs and summary.json

    @property
    def num_videos(self) -> int | None:
        """Training videos over all ranks (None when a stream cannot know before reading it)."""
        ...

    @property
    def num_meta_videos(self) -> int | None: ...

    def train_loader(self, epoch: int) -> Iterable[PairBatch]: ...

    def meta_iterator(self) -> Iterator[PairBatch]:
        """Infinite meta batches (the first frame of held-out videos)."""
        ...

    def gpu_views(self, batch: PairBatch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views of ``batch`` on ``device``; an item's views depend only on its keyed identity (:mod:`.draws`),
        so both implementations give a video the same views."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def data_module(
    cfg: DataConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
    need_meta: bool = True,
) -> DataModule:
    """The run's data module: the frame store (``cfg.store`` device/host/auto) or the stream (off, or auto on a CPU
    when the decoded frames pass the budget); the log says which, and why."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if store_mode(cfg, dev) == "off":
        log.info("data: streaming pairs from the files (store=off)")
        return PairDataModule(cfg, rank=rank, world_size=world_size, need_meta=need_meta)
    if cfg.store == "auto" and dev.type == "cpu":
        try:
            module = StoreDataModule(cfg, rank=rank, world_size=world_size, device=dev, need_meta=need_meta)
        except StoreBudgetError as err:
            log.warning("data: streaming pairs from the files, the frame store does not fit: %s", err)
            return PairDataModule(cfg, rank=rank, world_size=world_size, need_meta=need_meta)
        log.info("data: frame store in RAM (store=auto: the decoded frames fit store_budget_mb)")
        return module
    log.info("data: frame store (store=%s)", cfg.store)
    return StoreDataModule(cfg, rank=rank, world_size=world_size, device=dev, need_meta=need_meta)


def store_taken(module: DataModule) -> str:
    """The ``store`` setting that names the path ``module`` takes (``off``: the stream, ``device``: the frame store),
    for the config a run records when it asked for ``auto``."""
    return "off" if isinstance(module, PairDataModule) else "device"
