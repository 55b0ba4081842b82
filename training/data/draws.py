"""Keyed random draws: every uniform an item uses is a pure function of ``(seed, epoch, video key, slot)``.

Why keyed rather than drawn from a generator: the stream (one item at a time in DataLoader workers, in an order set
by ``datasets`` shuffling, workers and ranks) and the frame store (a whole epoch at once, on the training device)
must give a video the same pair, the same mixing weights and the same augmentation for the same seed, on a CPU or
a GPU. A generator's stream depends on how many draws came before and on its device; a counter-based hash of the
item's identity depends on nothing else. The hash is SplitMix64's finalizer in int64 tensor ops (multiplication
wraps, shifts are made logical by a mask), so it runs as a few elementwise kernels on any device, never reads a
value back to the host, and gives bit-identical uniforms on every device.

The two orders that are not per item come from here too: the frame store's epoch permutation
(:func:`epoch_order`) and the meta batches' (:func:`meta_batch`), the latter shared by both data modules.

Slots of one item (``ITEM_SLOTS`` in all): ``[0, PAIR_DRAWS)`` choose the frames and mixing weights
(:mod:`.sampling`), then ``VIEW_DRAWS`` per augmented image (:mod:`.augment`), for at most ``MAX_VIEWS`` images.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = [
    "DRAWS_VERSION",
    "PAIR_DRAWS",
    "VIEW_DRAWS",
    "MAX_VIEWS",
    "key_id",
    "key_ids",
    "item_id",
    "item_ids",
    "pair_draws",
    "view_draws",
    "epoch_order",
    "meta_batch",
]

DRAWS_VERSION = 1  # recorded in the data modules' state: a mid-epoch state of other draws restarts its epoch
PAIR_DRAWS = 17  # metauscl: 3 index uniforms + 2 x 7 for two Beta(3, 5) order statistics (the most of any type)
VIEW_DRAWS = 49  # one augmented image: 10 crop tries x 4, a flip, 4 jitter factors, 4 for the jitter order
MAX_VIEWS = 3  # USCL augments its three frames apart
_VIEW_BASE = 32  # first view slot (room after the pair slots)

_MASK64 = (1 << 64) - 1
_MAX63 = (1 << 63) - 1  # torch.Generator seeds are non-negative
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (the golden ratio in 64 bits)
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 that holds it."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic on signed integers)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer: a bijection of 64-bit words whose output bits each depend on every input bit."""
    z = (z ^ _srl(z, 30)) * _signed(_M1)
    z = (z ^ _srl(z, 27)) * _signed(_M2)
    return z ^ _srl(z, 31)


def _salt(*parts: object) -> int:
    """A 64-bit word from any parts (seed, purpose, epoch ...), as an int64 value."""
    return _signed(int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big"))


def key_id(key: str) -> int:
    """The 64-bit identity of a video key (as int64): what its draws are keyed by on every path."""
    return _signed(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))


def key_ids(keys: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 ``[T]`` identities of ``keys``."""
    return torch.tensor([key_id(k) for k in keys], dtype=torch.long, device=device)


def item_ids(keys: torch.Tensor, *, seed: int, purpose: str, draw: int, rank: int = 0) -> torch.Tensor:
    """int64 ``[T]``: the identity of each video's item in one draw (``purpose`` ``train`` with ``draw`` the epoch;
    ``meta`` with ``draw`` the meta batch's number and ``rank`` the process's: under DDP every rank's meta batch,
    which may hold the same videos, gets views of its own), on ``keys``' device."""
    return _mix(keys ^ _salt(int(seed), purpose, int(draw), int(rank)))


def _uniforms(ids: torch.Tensor, first: int, n: int) -> torch.Tensor:
    """float64 ``[T, n]`` in ``[0, 1)``: slots ``first .. first + n - 1`` of each item (53-bit resolution)."""
    slots = torch.arange(first + 1, first + n + 1, device=ids.device, dtype=torch.long) * _signed(_GAMMA)
    z = _mix(ids[:, None] + slots)
    return _srl(z, 11).double() * 2.0**-53


def pair_draws(ids: torch.Tensor) -> torch.Tensor:
    """float64 ``[T, PAIR_DRAWS]``: the uniforms a pair sampler (:mod:`.sampling`) takes for each item."""
    return _uniforms(ids, 0, PAIR_DRAWS)


def view_draws(ids: torch.Tensor, views: int) -> torch.Tensor:
    """float64 ``[T, views, VIEW_DRAWS]``: the augmentation uniforms of each item's ``views`` images."""
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"an item augments 1 to {MAX_VIEWS} images, got {views}")
    return _uniforms(ids, _VIEW_BASE, views * VIEW_DRAWS).view(len(ids), views, VIEW_DRAWS)


def epoch_order(count: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The frame store's order of its ``count`` training videos in ``epoch`` (int64 ``[count]``, on the host)."""
    return torch.randperm(
        count, generator=torch.Generator().manual_seed(_salt(int(seed), "order", int(epoch)) & _MAX63)
    )


def meta_batch(count: int, batch_size: int, *, seed: int, rank: int, drawn: int) -> torch.Tensor:
    """Which of ``count`` meta videos (sorted by key) make meta batch number ``drawn`` of ``rank`` (int64
    ``[batch_size]``, host): every pass over the split is a fresh permutation, cut into whole batches."""
    cycle, k = divmod(drawn, count // batch_size)
    g = torch.Generator().manual_seed(_salt(int(seed), "meta", int(rank), cycle) & _MAX63)
    return torch.randperm(count, generator=g)[k * batch_size : (k + 1) * batch_size]


def item_id(key: str, *, seed: int, purpose: str, draw: int) -> int:
    """One item's identity (:func:`item_ids` of one key): what a stream worker computes per item."""
    return int(item_ids(torch.tensor([key_id(key)], dtype=torch.long), seed=seed, purpose=purpose, draw=draw)[0])
