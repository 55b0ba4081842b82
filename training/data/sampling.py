"""Positive-pair sampling for a whole epoch at once, on the device that holds the frames.

The same pair types, constraints and distributions as the per-item planners of :mod:`.pairs` (PPG ``metauscl``,
USCL, SimCLR and the ``meta`` first frame; that table names each type's sampler here), for any number of videos
at once in a handful of tensor operations: a whole epoch on the frame store's device, or one item in a stream
worker. The samplers take their uniforms (:func:`.draws.pair_draws`, keyed by seed, epoch and video), so both
paths give a video the same pair. Nothing here reads a value back to the host, so a GPU epoch plan is a few kernel
launches.

* ``metauscl``, L >= 3: two distinct offsets ``d1 < d2`` from ``1..min(L-1, max_dist)`` (the second drawn from
  the remaining ``m - 1`` values and shifted past the first), start ``i0`` uniform in ``[0, L-1-d2]``, frames
  ``(i0, i0+d1, i0+d2)``; ``alpha, beta ~ Beta(3, 5)`` exactly, as the 3rd smallest of 7 uniforms. L = 2: frames
  ``(0, 1)`` unmixed; L = 1: the frame twice. Both unmixed cases are written as weights ``alpha = 0, beta = 1``
  on frames ``(0, 1, 1)`` / ``(0, 0, 0)``, so one formula mixes every video.
* ``uscl``, L >= 3: three distinct frames in random order (each drawn from what the earlier ones left), one
  ``lam ~ Beta(0.5, 0.5)`` exactly, as ``sin^2(pi U / 2)``. L = 2: ``(a, a, 1-a)``, ``lam = 1``; L = 1: frame 0.
* ``simclr``: one uniform frame. ``meta``: the first frame.

Index draws are ``floor(U n)`` with ``U`` in float64, clamped to ``n - 1`` against rounding at ``U`` near 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "EpochPlan",
    "EpochSampler",
    "epoch_metauscl",
    "epoch_uscl",
    "epoch_simclr",
    "epoch_meta",
    "mix_views",
    "beta_3_5",
    "beta_half_half",
]

# clip lengths int64 [T], uniforms float64 [T, PAIR_DRAWS] (.draws), max_dist -> frame indices within each clip
# int64 [T, K], weights float32 [T, W]
EpochSampler = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's pairs, in epoch order: ``videos`` int64 ``[T]`` (store indices), ``frames`` int64 ``[T, K]``
    (rows of the store's frame tensor, in the order the views use them), ``weights`` float32 ``[T, W]``
    (``metauscl``: alpha, beta; ``uscl``: lam; otherwise ``W = 0``) and ``ids`` int64 ``[T]``, the items' keyed
    identities (:mod:`.draws`), from which their augmentation is drawn."""

    videos: torch.Tensor
    frames: torch.Tensor
    weights: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return self.videos.shape[0]


def _index(u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``floor(u n)`` as int64 in ``[0, n-1]`` (0 where ``n <= 0``; callers mask those rows)."""
    return torch.minimum(torch.floor(u * n).long(), (n - 1).clamp(min=0))


def beta_3_5(u: torch.Tensor) -> torch.Tensor:
    """Exact Beta(3, 5) samples from uniforms ``[..., 7]``: their 3rd order statistic (Beta(k, n+1-k), k = 3, n = 7)."""
    return u.float().sort(dim=-1).values[..., 2]


def beta_half_half(u: torch.Tensor) -> torch.Tensor:
    """Exact Beta(0.5, 0.5) (arcsine) samples from uniforms of any shape: ``sin^2(pi U / 2)``."""
    return torch.sin(u.float() * (math.pi / 2)) ** 2


def epoch_metauscl(lengths: torch.Tensor, u: torch.Tensor, max_dist: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.clamp(lengths - 1, max=max_dist)
    first = _index(u[:, 0], m) + 1  # 1..m
    second = _index(u[:, 1], m - 1) + 1  # 1..m-1, then past the first: uniform over the others
    second = second + (second >= first).long()
    d1, d2 = torch.minimum(first, second), torch.maximum(first, second)
    i0 = _index(u[:, 2], lengths - d2)  # 0..L-1-d2
    idx = torch.stack([i0, i0 + d1, i0 + d2], dim=1)
    w = beta_3_5(u[:, 3:17].view(len(lengths), 2, 7))
    long = (lengths >= 3)[:, None]
    # constants made on the device (a host list would be a blocking copy): (0,1,1) for L = 2, (0,0,0) for L = 1
    short = torch.arange(3, device=lengths.device).clamp(max=1) * (lengths >= 2).long()[:, None]
    unmixed = torch.arange(2, device=lengths.device, dtype=w.dtype)  # alpha = 0, beta = 1: x1 = F0, x2 = F1
    return torch.where(long, idx, short), torch.where(long, w, unmixed)


def epoch_uscl(lengths: torch.Tensor, u: torch.Tensor, max_dist: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = _index(u[:, 0], lengths)
    b = _index(u[:, 1], lengths - 1)
    b = b + (b >= a).long()
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    c = _index(u[:, 2], lengths - 2)
    c = c + (c >= lo).long()
    c = c + (c >= hi).long()
    lam = beta_half_half(u[:, 3:4])
    long = (lengths >= 3)[:, None]
    two = torch.stack([a, a, 1 - a], dim=1) * (lengths == 2).long()[:, None]  # a in {0, 1}; (0,0,0) for L = 1
    return torch.where(long, torch.stack([a, b, c], dim=1), two), torch.where(long, lam, 1.0)


def epoch_simclr(lengths: torch.Tensor, u: torch.Tensor, max_dist: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = _index(u[:, 0], lengths)[:, None]
    return idx, torch.zeros(len(lengths), 0, device=lengths.device)


def epoch_meta(lengths: torch.Tensor, u: torch.Tensor, max_dist: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(len(lengths), 1, dtype=torch.long, device=lengths.device), torch.zeros(
        len(lengths), 0, device=lengths.device
    )


def mix_views(frames: torch.Tensor, weights: torch.Tensor, pair_type: str) -> torch.Tensor:
    """uint8 ``[B, K, C, S, S]`` gathered frames -> what augmentation takes: ``metauscl`` mixes its 3 frames into
    2 views in pixel space before augmentation, rounded to nearest (pairs.py's deviation 1); the others pass."""
    if pair_type != "metauscl":
        return frames
    alpha, beta = (w.view(-1, 1, 1, 1) for w in weights.unbind(1))
    f = frames.float()
    x1 = (1 - alpha) * f[:, 0] + alpha * f[:, 1]
    x2 = beta * f[:, 1] + (1 - beta) * f[:, 2]
    return torch.stack([x1, x2], dim=1).round_().clamp_(0, 255).to(torch.uint8)
