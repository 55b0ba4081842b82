"""Backbone + projection head and CMW-Net shapes; any registered timm name works as backbone; the two inits."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torchvision
from timm.models.resnet import BasicBlock, Bottleneck

import timm_uscl  # noqa: F401  (registers the plugin's archs)
from timm_uscl.errors import USCLError
from timm_uscl.training.config import TrainConfig
from timm_uscl.training.errors import ConfigError
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


def _last_bn_weights(model: ContrastiveModel) -> list[torch.Tensor]:
    """The last BatchNorm weight of every residual branch (bn2 of a basic block, bn3 of a bottleneck)."""
    blocks = [m for m in model.backbone.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert blocks
    return [getattr(m, "bn3" if isinstance(m, Bottleneck) else "bn2").weight for m in blocks]


@pytest.mark.parametrize("name", ["resnet18", "resnet26"])  # basic blocks; bottlenecks
def test_timm_init_zeroes_the_last_bn_weight_of_every_residual_branch(name):
    model = ContrastiveModel(name, init="timm")
    assert all(bool((w == 0).all()) for w in _last_bn_weights(model))


@pytest.mark.parametrize("name", ["resnet18", "resnet26"])
def test_torchvision_init_starts_every_residual_branch_with_unit_bn_weights(name):
    torch.manual_seed(0)
    timm_init = ContrastiveModel(name, init="timm")
    torch.manual_seed(0)
    model = ContrastiveModel(name, init="torchvision")
    assert all(bool((w == 1).all()) for w in _last_bn_weights(model))
    last = {id(w) for w in _last_bn_weights(model)}
    for (key, got), want in zip(model.named_parameters(), timm_init.parameters()):
        if id(got) not in last:  # everything else: the same draws from the same seed
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=key)


def test_torchvision_init_follows_torchvision_resnet18_tensor_by_tensor():
    """Same keys as torchvision's ResNet-18 (the reference's backbone); every BatchNorm weight 1 and bias 0 in
    both; every convolution drawn from kaiming_normal(fan_out, relu) in both (sample std within 5 %)."""
    torch.manual_seed(0)
    ours = ContrastiveModel("resnet18", init="torchvision").backbone.state_dict()
    reference = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    assert sorted(ours) == sorted(reference)
    for key, want in reference.items():
        got = ours[key]
        assert got.shape == want.shape, key
        if got.dim() == 4:  # convolution weights: std sqrt(2 / fan_out)
            expected = math.sqrt(2 / (got.shape[0] * got.shape[2] * got.shape[3]))
            for tensor in (got, want):
                assert abs(tensor.std().item() / expected - 1) < 0.05, key
        else:  # BatchNorm weights, biases and running statistics: constants
            torch.testing.assert_close(got, want, msg=key)


def test_torchvision_init_refuses_a_backbone_it_does_not_describe():
    with pytest.raises(ConfigError, match="init='timm'") as info:
        ContrastiveModel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), init="torchvision")
    assert isinstance(info.value, USCLError)
    with pytest.raises(ConfigError, match="pretrained"):
        ContrastiveModel("resnet18", pretrained=True, init="torchvision")  # refused before any download
    with pytest.raises(ConfigError, match="timm or torchvision"):
        ContrastiveModel("resnet18", init="kaiming")


def test_pretraining_from_scratch_defaults_to_the_reference_init_and_batchnorm_batching():
    config = TrainConfig()
    assert (config.init, config.bn_views) == ("torchvision", "per_view")
    model = ContrastiveModel(config.arch, init=config.init)
    assert all(bool((w == 1).all()) for w in _last_bn_weights(model))
