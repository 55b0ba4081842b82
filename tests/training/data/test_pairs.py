"""Positive pair generation: the reference's index constraints, weight distributions and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timm_uscl.training.data.pairs import PAIR_TYPES, plan_pair, sample_pairs, views_per_item, worker_views


@pytest.mark.parametrize("length,max_dist", [(3, 999), (4, 999), (59, 999), (215, 16), (7, 2)])
def test_metauscl_indices_follow_the_reference(length: int, max_dist: int) -> None:
    rng = np.random.default_rng(0)
    limit = min(length - 1, max_dist)
    seen_d2 = set()
    for _ in range(500):
        plan = plan_pair("metauscl", length, rng, max_dist)
        i0, i1, i2 = plan.indices
        d1, d2 = i1 - i0, i2 - i0
        assert 1 <= d1 < d2 <= limit and 0 <= i0 <= length - 1 - d2
        assert len(plan.weights) == 2 and all(0 < w < 1 for w in plan.weights)
        seen_d2.add(d2)
    assert max(seen_d2) == limit  # the whole offset range is reachable


def test_mixing_weights_are_beta_3_5_and_beta_half_half() -> None:
    rng = np.random.default_rng(1)
    ab = np.array([plan_pair("metauscl", 30, rng).weights for _ in range(20000)])
    assert abs(ab.mean() - 0.375) < 0.005 and abs(ab[:, 0].var() - 15 / 576) < 0.002  # Beta(3,5): var = 15/576
    assert abs(np.corrcoef(ab.T)[0, 1]) < 0.03  # alpha, beta independent
    lam = np.array([plan_pair("uscl", 30, rng).weights[0] for _ in range(20000)])
    assert abs(lam.mean() - 0.5) < 0.01 and abs(lam.var() - 0.125) < 0.005  # Beta(.5,.5): var = 1/8


def test_short_clip_fallbacks() -> None:
    rng = np.random.default_rng(2)
    assert plan_pair("metauscl", 2, rng).indices == (0, 1) and plan_pair("metauscl", 2, rng).weights == ()
    assert plan_pair("metauscl", 1, rng).indices == (0, 0)
    for _ in range(20):
        a, b, c = plan_pair("uscl", 2, rng).indices
        assert a == b and {a, c} == {0, 1}
    assert plan_pair("uscl", 1, rng).indices == (0, 0, 0)
    assert plan_pair("simclr", 1, rng).indices == (0,) and plan_pair("meta", 50, rng).indices == (0,)
    uscl = [plan_pair("uscl", 5, rng).indices for _ in range(200)]
    assert all(len(set(t)) == 3 for t in uscl) and len(set(uscl)) > 30  # distinct, any order
    with pytest.raises(ValueError):
        plan_pair("metauscl", 0, rng)


def test_same_seed_same_plan() -> None:
    a = [plan_pair("metauscl", 80, np.random.default_rng([0, 1, 7])) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert plan_pair("metauscl", 80, np.random.default_rng([0, 2, 7])) != a[0]


def test_worker_views_mix_in_pixel_space_with_rounding() -> None:
    frames = torch.tensor([10, 20, 201], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    plan = plan_pair("metauscl", 10, np.random.default_rng(3))
    views, lam = worker_views("metauscl", frames, plan)
    alpha, beta = plan.weights
    assert views.dtype == torch.uint8 and views.shape == (2, 1, 2, 2) and lam == 1.0
    assert views[0, 0, 0, 0] == round((1 - alpha) * 10 + alpha * 20)
    assert views[1, 0, 0, 0] == round(beta * 20 + (1 - beta) * 201)
    uscl = plan_pair("uscl", 10, np.random.default_rng(3))
    v, lam = worker_views("uscl", frames, uscl)
    assert v.shape[0] == views_per_item("uscl") == 3 and lam == uscl.weights[0]
    assert worker_views("simclr", frames[:1], plan_pair("simclr", 10, np.random.default_rng(0)))[0].shape[0] == 1


@pytest.mark.parametrize("pair_type", sorted(PAIR_TYPES))
def test_each_pair_types_item_planner_and_epoch_sampler_choose_the_same_number_of_frames(pair_type: str) -> None:
    lengths = torch.tensor([1, 2, 3, 9])
    idx, _ = sample_pairs(pair_type, lengths, torch.Generator().manual_seed(0))
    assert ((idx >= 0) & (idx < lengths[:, None])).all()
    assert idx.shape == (4, len(plan_pair(pair_type, 9, np.random.default_rng(0)).indices))


def test_an_unknown_pair_type_is_refused_by_the_one_table_on_both_paths() -> None:
    for draw in (
        lambda: plan_pair("ppg", 5, np.random.default_rng(0)),
        lambda: sample_pairs("ppg", torch.ones(2), torch.Generator()),
    ):
        with pytest.raises(ValueError, match="unknown pair_type 'ppg'; choose one of \\['metauscl', 'uscl'"):
            draw()
