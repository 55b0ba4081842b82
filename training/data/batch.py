"""What a data module hands the training loop, and how a batch becomes its two views on the device.

Both data modules (:mod:`.module`, the stream; :mod:`.store_module`, the frame store) make :class:`PairBatch` es and
turn them into views with :func:`batch_views`, so the augmentation of an item depends only on its keyed identity
(``draw_ids``, :mod:`.draws`), never on the path, the batch it landed in, or the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .augment import AugmentConfig, augmented_images, pair_views
from .draws import view_draws

__all__ = ["PairBatch", "DataStats", "batch_views"]


@dataclass
class PairBatch:
    """One batch: ``frames`` uint8 ``[B, K, C, S, S]`` (K = 2 mixed views, 3 USCL frames or 1 frame to augment
    twice; C = 1 grayscale or 3), ``lam`` float ``[B]`` (USCL mix weight), ``draw_ids`` int64 ``[B]`` (each item's
    keyed identity, from which its augmentation is drawn), names per pair, and a stream worker's bookkeeping
    (``rows`` consumed so far, items decoded and skipped since its last batch, frames of frame videos skipped)."""

    frames: torch.Tensor
    lam: torch.Tensor
    draw_ids: torch.Tensor
    sources: list[str]
    keys: list[str]
    worker: int = 0
    rows: int = 0
    decoded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bad_frames: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def pin_memory(self) -> PairBatch:
        self.frames = self.frames.pin_memory()
        self.lam = self.lam.pin_memory()
        self.draw_ids = self.draw_ids.pin_memory()
        return self


@dataclass
class DataStats:
    """Counters kept by the main process: videos decoded, files skipped (name -> first reason), frames of frame
    videos skipped (``<video>/<frame>`` -> first reason)."""

    decoded: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_frames: dict[str, str] = field(default_factory=dict)
    batches: int = 0


def batch_views(batch: PairBatch, device: torch.device | str, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views, float ``[B, 3, S, S]`` on ``device``: augmented per sample from each item's keyed uniforms,
    normalized, USCL-mixed."""
    x = batch.frames.to(device, non_blocking=True)
    draws = view_draws(batch.draw_ids.to(x.device, non_blocking=True), augmented_images(x.shape[1]))
    return pair_views(x, batch.lam, cfg, draws=draws)
