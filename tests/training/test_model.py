"""Backbone + projection head and CMW-Net shapes; any registered timm name works as backbone."""

from __future__ import annotations

import pytest
import timm
import torch

import timm_uscl  # noqa: F401  (registers the plugin's archs)
from timm_uscl.training.model import CMWNet, ContrastiveModel


@pytest.mark.parametrize("name", ["resnet18", "resnet18_uscl"])
def test_contrastive_model_returns_pooled_features_and_projection(name):
    if not timm.is_model(name):
        pytest.skip(f"{name} is not registered")
    model = ContrastiveModel(name, feat_dim=128)
    assert list(model.head.state_dict()) == ["l1.weight", "l1.bias", "l2.weight", "l2.bias"]  # the reference's keys
    h, z = model(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, 512) and z.shape == (2, 128)
    h1, _ = model.eval()(torch.randn(1, 3, 32, 32))  # batch size 1 stays 2-D (the reference squeezed it away)
    assert h1.shape == (1, 512)


def test_cmw_net_gives_one_weight_in_unit_interval_per_pair():
    cmw = CMWNet(in_dim=2 * 16)
    w = cmw(torch.randn(5, 16), torch.randn(5, 16))
    assert w.shape == (5,) and bool(((w > 0) & (w < 1)).all())
    assert [m.out_features for m in (cmw.l1, cmw.l2)] == [10, 1]
