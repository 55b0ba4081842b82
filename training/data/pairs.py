"""Positive pair generation (PPG): which frames of a video make a pair, and how they are mixed.

One training item is one video (one pair per video per epoch). Each pair type has ONE sampler (:mod:`.sampling`):
frame indices and mixing weights from clip lengths and keyed uniforms (:mod:`.draws`). The frame store runs it
over a whole epoch on its device (:func:`plan_epoch`); a stream worker runs it for one item (:func:`item_pair`)
and :func:`worker_views` turns the decoded uint8 frames into what the DataLoader ships; the device side
(:mod:`.augment`) does the rest, from the same item's keyed uniforms.

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
2. Randomness is per item, keyed by ``(seed, epoch, video key)`` (:mod:`.draws`), not from per-worker global
   RNGs: a video gets the same frames, weights and augmentation whatever the path (stream or frame store), the
   device, the worker count, rank or resume point, and runs are reproducible (same distributions).
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

from dataclasses import dataclass

import torch

from .draws import pair_draws
from .sampling import EpochPlan, EpochSampler, epoch_meta, epoch_metauscl, epoch_simclr, epoch_uscl, mix_views

__all__ = [
    "PairType",
    "PAIR_TYPES",
    "TRAINING_PAIR_TYPES",
    "ItemPair",
    "item_pair",
    "views_per_item",
    "worker_views",
    "sample_pairs",
    "plan_epoch",
]


@dataclass(frozen=True)
class PairType:
    """How one pair type chooses frames (``sample``, :mod:`.sampling`: the only sampler of the type, for one item
    or a whole epoch), how many uint8 images an item ships (``views``: 2 mixed views, 3 frames to mix after
    augmentation, or 1 frame to augment twice) and whether it is a training pair (``meta`` is only the held-out
    meta batch)."""

    name: str
    views: int
    sample: EpochSampler
    training: bool = True


PAIR_TYPES: dict[str, PairType] = {
    t.name: t
    for t in (
        PairType("metauscl", 2, epoch_metauscl),
        PairType("uscl", 3, epoch_uscl),
        PairType("simclr", 1, epoch_simclr),
        PairType("meta", 1, epoch_meta, training=False),
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


@dataclass(frozen=True)
class ItemPair:
    """One item's frames to decode (within its clip, in the order the views use them) and its mixing weights
    (float32 ``[W]``: ``metauscl`` alpha, beta; ``uscl`` lam; else empty)."""

    indices: tuple[int, ...]
    weights: torch.Tensor


def sample_pairs(
    pair_type: str, lengths: torch.Tensor, uniforms: torch.Tensor, *, max_dist: int = 999
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame indices within each clip (int64 ``[T, K]``) and mixing weights (float32 ``[T, W]``) for clips of
    ``lengths`` (int64 ``[T]``, each >= 1) from ``uniforms`` (float64 ``[T, PAIR_DRAWS]``, on the same device)."""
    return _pair_type(pair_type).sample(lengths, uniforms, max_dist)  # no check of lengths: it would sync the host


def item_pair(pair_type: str, length: int, item_id: int, *, max_dist: int = 999) -> ItemPair:
    """One item's pair (a stream worker's call): the same sampler and keyed uniforms as the store's epoch plan."""
    if length < 1:
        raise ValueError(f"a clip needs at least one frame, got {length}")
    idx, weights = sample_pairs(
        pair_type, torch.tensor([length]), pair_draws(torch.tensor([item_id], dtype=torch.long)), max_dist=max_dist
    )
    return ItemPair(tuple(int(i) for i in idx[0]), weights[0])


def worker_views(pair_type: str, frames: torch.Tensor, pair: ItemPair) -> tuple[torch.Tensor, float]:
    """uint8 frames ``[n, C, H, W]`` (in ``pair.indices`` order) -> (uint8 ``[K, C, H, W]`` to ship, ``lam``).

    Only ``metauscl`` mixes here, in pixel space before augmentation as the reference does (the store's
    :func:`.sampling.mix_views`, on a batch of one); ``lam`` is the USCL weight applied after augmentation on the
    device (1.0 for the other types).
    """
    views = mix_views(frames[None], pair.weights[None], pair_type)[0]
    lam = float(pair.weights[0]) if pair_type == "uscl" else 1.0
    return views, lam


def plan_epoch(
    pair_type: str,
    videos: torch.Tensor,
    *,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    ids: torch.Tensor,
    max_dist: int = 999,
) -> EpochPlan:
    """Pairs for ``videos`` (store indices, already in epoch order) with item identities ``ids`` (int64 ``[T]``,
    :func:`.draws.item_ids`): local draws turned into frame rows."""
    local, weights = sample_pairs(pair_type, lengths[videos], pair_draws(ids), max_dist=max_dist)
    return EpochPlan(videos, offsets[videos][:, None] + local, weights, ids)
