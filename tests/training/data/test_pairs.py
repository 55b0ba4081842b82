"""Positive pair generation: the reference's index constraints, weight distributions and fallbacks, for the one
sampler of each pair type, one item at a time (a stream worker's call) and in bulk (the frame store's)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from timm_uscl.training.data.draws import PAIR_DRAWS
from timm_uscl.training.data.pairs import PAIR_TYPES, item_pair, sample_pairs, views_per_item, worker_views


def _u(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, PAIR_DRAWS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _reference_ppg(length: int, rng: np.random.Generator, max_dist: int) -> tuple[int, int, int]:
    """Meta-USCL's dataloader (spec section 2): two offsets without replacement, sorted, then a uniform start."""
    d1, d2 = sorted(rng.choice(np.arange(1, min(length - 1, max_dist) + 1), 2, replace=False))
    i0 = int(rng.integers(0, length - 1 - d2, endpoint=True))
    return (i0, i0 + int(d1), i0 + int(d2))


def _reference_spg(length: int, rng: np.random.Generator, max_dist: int) -> tuple[int, int, int]:
    """USCL's dataset wrapper: three distinct random frames in random order."""
    a, b, c = (int(i) for i in rng.choice(length, 3, replace=False))
    return (a, b, c)


@pytest.mark.parametrize("length,max_dist", [(3, 999), (4, 999), (59, 999), (215, 16), (7, 2)])
def test_metauscl_indices_follow_the_reference(length: int, max_dist: int) -> None:
    idx, w = sample_pairs("metauscl", torch.full((500,), length), _u(500), max_dist=max_dist)
    i0, i1, i2 = idx.unbind(1)
    d1, d2 = i1 - i0, i2 - i0
    assert (d1 >= 1).all() and (d1 < d2).all() and (d2 <= min(length - 1, max_dist)).all()
    assert (i0 >= 0).all() and (i0 <= length - 1 - d2).all() and ((w > 0) & (w < 1)).all()
    assert int(d2.max()) == min(length - 1, max_dist)  # the whole offset range is reachable


@pytest.mark.parametrize("pair_type,length,max_dist", [("metauscl", 7, 4), ("metauscl", 5, 999), ("uscl", 5, 999)])
def test_frame_choices_follow_the_reference_distribution(pair_type: str, length: int, max_dist: int) -> None:
    n = 30000
    idx, _ = sample_pairs(pair_type, torch.full((n,), length), _u(n, 3), max_dist=max_dist)
    ours = Counter(map(tuple, idx.tolist()))
    rng = np.random.default_rng(0)
    reference = _reference_ppg if pair_type == "metauscl" else _reference_spg
    theirs = Counter(reference(length, rng, max_dist) for _ in range(n))
    assert set(ours) == set(theirs)  # the same support: every allowed triple, nothing else
    assert 0.5 * sum(abs(ours[k] - theirs[k]) for k in set(ours) | set(theirs)) / n < 0.03  # total variation


def test_mixing_weights_are_beta_3_5_and_beta_half_half() -> None:
    _, weights = sample_pairs("metauscl", torch.full((20000,), 30), _u(20000, 1))
    ab = weights.double().numpy()
    assert abs(ab.mean() - 0.375) < 0.005 and abs(ab[:, 0].var() - 15 / 576) < 0.002  # Beta(3,5): var = 15/576
    assert abs(np.corrcoef(ab.T)[0, 1]) < 0.03  # alpha, beta independent
    _, lam = sample_pairs("uscl", torch.full((20000,), 30), _u(20000, 2))
    assert abs(lam.mean() - 0.5) < 0.01 and abs(lam.var() - 0.125) < 0.005  # Beta(.5,.5): var = 1/8


def test_short_clip_fallbacks() -> None:
    assert item_pair("metauscl", 2, 5).indices == (0, 1, 1)  # x1 = F0, x2 = F1: unmixed
    assert item_pair("metauscl", 2, 5).weights.tolist() == [0.0, 1.0]
    assert item_pair("metauscl", 1, 5).indices == (0, 0, 0)
    for ident in range(20):
        a, b, c = item_pair("uscl", 2, ident).indices
        assert a == b and {a, c} == {0, 1}
    assert item_pair("uscl", 1, 0).indices == (0, 0, 0)
    assert item_pair("simclr", 1, 0).indices == (0,) and item_pair("meta", 50, 0).indices == (0,)
    uscl = [item_pair("uscl", 5, ident).indices for ident in range(200)]
    assert all(len(set(t)) == 3 for t in uscl) and len(set(uscl)) > 30  # distinct, any order
    with pytest.raises(ValueError, match="at least one frame"):
        item_pair("metauscl", 0, 0)


def test_the_same_item_identity_gives_the_same_pair() -> None:
    a = [item_pair("metauscl", 80, 17) for _ in range(3)]
    assert all(p.indices == a[0].indices and torch.equal(p.weights, a[0].weights) for p in a)
    assert item_pair("metauscl", 80, 18).indices != a[0].indices or not torch.equal(
        item_pair("metauscl", 80, 18).weights, a[0].weights
    )


def test_worker_views_mix_in_pixel_space_with_rounding() -> None:
    frames = torch.tensor([10, 20, 201], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    pair = item_pair("metauscl", 10, 3)
    views, lam = worker_views("metauscl", frames, pair)
    alpha, beta = pair.weights.tolist()
    assert views.dtype == torch.uint8 and views.shape == (2, 1, 2, 2) and lam == 1.0
    assert views[0, 0, 0, 0] == round((1 - alpha) * 10 + alpha * 20)
    assert views[1, 0, 0, 0] == round(beta * 20 + (1 - beta) * 201)
    uscl = item_pair("uscl", 10, 3)
    v, lam = worker_views("uscl", frames, uscl)
    assert v.shape[0] == views_per_item("uscl") == 3 and lam == pytest.approx(float(uscl.weights[0]))
    assert worker_views("simclr", frames[:1], item_pair("simclr", 10, 0))[0].shape[0] == 1


@pytest.mark.parametrize("pair_type", sorted(PAIR_TYPES))
def test_each_pair_type_ships_as_many_images_as_it_chooses_frames_for(pair_type: str) -> None:
    lengths = torch.tensor([1, 2, 3, 9])
    idx, _ = sample_pairs(pair_type, lengths, _u(4))
    assert ((idx >= 0) & (idx < lengths[:, None])).all()
    frames = torch.zeros(idx.shape[1], 1, 2, 2, dtype=torch.uint8)
    assert worker_views(pair_type, frames, item_pair(pair_type, 9, 0))[0].shape[0] == views_per_item(pair_type)


def test_an_unknown_pair_type_is_refused_by_the_one_table() -> None:
    for draw in (lambda: item_pair("ppg", 5, 0), lambda: sample_pairs("ppg", torch.ones(2, dtype=torch.long), _u(2))):
        with pytest.raises(ValueError, match="unknown pair_type 'ppg'; choose one of \\['metauscl', 'uscl'"):
            draw()
