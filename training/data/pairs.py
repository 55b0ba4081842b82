"""Positive pair generation (PPG): which frames of a video make a pair, and how they are mixed.

One training item is one video (one pair per video per epoch). The planners below only choose frame
indices and mixing weights from a clip length ``L`` and a NumPy generator; :func:`worker_views` turns the
decoded uint8 frames into what the DataLoader ships; the GPU side (:mod:`.augment`) does the rest.

Pair types (spec section 2, ``Meta-USCL@eca7b48:dataloader.py:122-176``, ``USCL@775ceea:
dataset_wrapper_Ultrasound_Video_Mixup.py:48-106``):

* ``metauscl`` (PPI): L >= 3: offsets ``d1 < d2`` drawn without replacement from
  ``range(1, min(L-1, max_dist) + 1)``, start ``i0`` uniform in ``[0, L-1-d2]``, frames
  ``(i0, i0+d1, i0+d2)``; ``alpha, beta ~ Beta(3, 5)``; mixed in pixel space BEFORE augmentation:
  ``x1 = (1-alpha) F0 + alpha F1``, ``x2 = beta F1 + (1-beta) F2``. L = 2: frames ``(0, 1)`` unmixed.
  L = 1: the frame twice. Ships 2 uint8 views.
* ``uscl`` (SPG): 3 distinct random frames ``(a, b, c)`` in random order, each augmented on its own, then
  one shared ``lam ~ Beta(0.5, 0.5)`` mixes the normalized tensors: ``x1 = lam Fa + (1-lam) Fb``,
  ``x2 = lam Fc + (1-lam) Fb`` (the one augmented ``Fb`` is the anchor of both). L = 2: two random distinct
  frames, unmixed (``lam = 1``); L = 1: the frame twice. Ships 3 uint8 frames and ``lam``.
* ``simclr``: one uniformly random frame, augmented twice. Ships 1 frame.
* ``meta``: the FIRST frame of a held-out meta video, augmented twice (``samples=1`` in the reference).
  Ships 1 frame.

Deviations from the reference (on purpose):

1. Mixed uint8 views are rounded to nearest; the reference truncates with ``np.uint8(...)`` (a -0.5 grey
   level bias).
2. Randomness is per item, seeded from ``(seed, epoch, video key)``, not from per-worker global RNGs: a
   video gets the same frames whatever the worker count, rank or resume point, and runs are reproducible.
   Draws use NumPy's ``Generator`` instead of Python's ``random`` (same distributions).
3. The meta split is a fixed, seeded split by file identity (or by a group column such as a patient id)
   and really held out: meta videos never enter training. The reference shuffles the video list separately
   for the train and meta datasets, so its "held-out" indices point at different videos and overlap
   training.
4. ``max_dist`` must be >= 2 (the reference crashes in ``random.sample`` for ``max_dist = 1`` and L >= 3).
5. Frames come from video files through a decoder (resized by it), not from pre-extracted JPEG frames, and
   grayscale is kept as one channel until the GPU (see :mod:`.decode`); files that fail to decode are
   skipped and counted instead of failing the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .sampling import EpochPlan, EpochSampler, epoch_meta, epoch_metauscl, epoch_simclr, epoch_uscl

__all__ = [
    "PairType",
    "PAIR_TYPES",
    "TRAINING_PAIR_TYPES",
    "PairPlan",
    "plan_pair",
    "views_per_item",
    "worker_views",
    "sample_pairs",
    "plan_epoch",
]

_BETA_PPI = (3.0, 5.0)
_BETA_SPG = (0.5, 0.5)


@dataclass(frozen=True)
class PairPlan:
    """Frames to decode (in the order the views use them) and the mixing weight(s)."""

    indices: tuple[int, ...]
    weights: tuple[float, ...] = ()


def _plan_metauscl(length: int, rng: np.random.Generator, max_dist: int) -> PairPlan:
    if length >= 3:
        d1, d2 = sorted(int(d) for d in rng.choice(np.arange(1, min(length - 1, max_dist) + 1), 2, replace=False))
        i0 = int(rng.integers(0, length - 1 - d2, endpoint=True))
        alpha, beta = (float(w) for w in rng.beta(*_BETA_PPI, size=2))
        return PairPlan((i0, i0 + d1, i0 + d2), (alpha, beta))
    if length == 2:
        return PairPlan((0, 1))
    return PairPlan((0, 0))


def _plan_uscl(length: int, rng: np.random.Generator, max_dist: int) -> PairPlan:
    if length >= 3:
        a, b, c = (int(i) for i in rng.choice(length, 3, replace=False))
        return PairPlan((a, b, c), (float(rng.beta(*_BETA_SPG)),))
    if length == 2:
        a, c = (int(i) for i in rng.permutation(2))
        return PairPlan((a, a, c), (1.0,))
    return PairPlan((0, 0, 0), (1.0,))


def _plan_simclr(length: int, rng: np.random.Generator, max_dist: int) -> PairPlan:
    return PairPlan((int(rng.integers(length)),))


def _plan_meta(length: int, rng: np.random.Generator, max_dist: int) -> PairPlan:
    return PairPlan((0,))


def _mix_in_pixels(frames: torch.Tensor, plan: PairPlan) -> tuple[torch.Tensor, float]:
    """PPI: two uint8 views mixed before augmentation, rounded to nearest (the reference truncates)."""
    if len(plan.weights) != 2:  # a clip of 1-2 frames: its frames unmixed
        return frames[:2], 1.0
    alpha, beta = plan.weights
    f = frames.float()
    x1 = (1 - alpha) * f[0] + alpha * f[1]
    x2 = beta * f[1] + (1 - beta) * f[2]
    return torch.stack([x1, x2]).round_().clamp_(0, 255).to(torch.uint8), 1.0


def _three_frames(frames: torch.Tensor, plan: PairPlan) -> tuple[torch.Tensor, float]:
    """SPG: three frames shipped apart; the device mixes them with ``lam`` after augmentation."""
    return frames[:3], plan.weights[0]


def _one_frame(frames: torch.Tensor, plan: PairPlan) -> tuple[torch.Tensor, float]:
    return frames[:1], 1.0


@dataclass(frozen=True)
class PairType:
    """How one pair type chooses frames, per item in a worker (``plan``) and for a whole epoch on the frames'
    device (``sample``, :mod:`.sampling`), what a worker ships per item (``ship``: ``views`` uint8 images and
    ``lam``) and whether it is a training pair (``meta`` is only the held-out meta batch)."""

    name: str
    views: int
    plan: Callable[[int, np.random.Generator, int], PairPlan]
    sample: EpochSampler
    ship: Callable[[torch.Tensor, PairPlan], tuple[torch.Tensor, float]]
    training: bool = True


PAIR_TYPES: dict[str, PairType] = {
    t.name: t
    for t in (
        PairType("metauscl", 2, _plan_metauscl, epoch_metauscl, _mix_in_pixels),
        PairType("uscl", 3, _plan_uscl, epoch_uscl, _three_frames),
        PairType("simclr", 1, _plan_simclr, epoch_simclr, _one_frame),
        PairType("meta", 1, _plan_meta, epoch_meta, _one_frame, training=False),
    )
}
TRAINING_PAIR_TYPES: tuple[str, ...] = tuple(name for name, t in PAIR_TYPES.items() if t.training)


def _pair_type(name: str) -> PairType:
    try:
        return PAIR_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown pair_type {name!r}; choose one of {list(PAIR_TYPES)}") from None


def views_per_item(pair_type: str) -> int:
    """How many uint8 images one item ships: 2 mixed views, 3 frames to mix later, or 1 frame."""
    return _pair_type(pair_type).views


def plan_pair(pair_type: str, length: int, rng: np.random.Generator, max_dist: int = 999) -> PairPlan:
    """Choose frames (and weights) for one item of a clip with ``length`` >= 1 frames."""
    kind = _pair_type(pair_type)
    if length < 1:
        raise ValueError(f"a clip needs at least one frame, got {length}")
    return kind.plan(length, rng, max_dist)


def worker_views(pair_type: str, frames: torch.Tensor, plan: PairPlan) -> tuple[torch.Tensor, float]:
    """uint8 frames ``[n, C, H, W]`` (in plan order) -> (uint8 ``[K, C, H, W]`` to ship, ``lam``).

    Only ``metauscl`` mixes here, in pixel space before augmentation as the reference does; ``lam`` is the
    USCL weight applied after augmentation on the device (1.0 for the other types).
    """
    return _pair_type(pair_type).ship(frames, plan)


def sample_pairs(
    pair_type: str, lengths: torch.Tensor, generator: torch.Generator, max_dist: int = 999
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame indices within each clip (int64 ``[T, K]``) and mixing weights (float32 ``[T, W]``) for clips of
    ``lengths`` (int64 ``[T]``, each >= 1, on the generator's device), all drawn at once (:mod:`.sampling`)."""
    return _pair_type(pair_type).sample(lengths, generator, max_dist)


def plan_epoch(
    pair_type: str,
    videos: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    generator: torch.Generator,
    max_dist: int = 999,
) -> EpochPlan:
    """Pairs for ``videos`` (store indices, already in epoch order): local draws turned into frame rows."""
    local, weights = sample_pairs(pair_type, lengths[videos], generator, max_dist)
    return EpochPlan(videos, offsets[videos][:, None] + local, weights)
