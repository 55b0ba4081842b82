"""The linearised tangent pass equals forward-mode AD of a recomputed forward, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.func import functional_call, jvp

from timm_uscl.training.meta.tangent import Tape, tangent, unsupported_reason
from timm_uscl.training.model import ContrastiveModel


def _reference_jvp(model: nn.Module, x: torch.Tensor, directions: dict[str, torch.Tensor]):
    params = {k: p.detach() for k, p in model.named_parameters()}
    tangents = {k: directions.get(k, torch.zeros_like(p)) for k, p in params.items()}

    def forward(p):  # buffers cloned inside: BN statistics are not touched by the transform
        return functional_call(model, (p, {k: b.clone() for k, b in model.named_buffers()}), (x,))

    return jvp(forward, (params,), (tangents,))[1]


@pytest.mark.parametrize("arch", ["resnet18", "resnet26d"])  # basic blocks; bottlenecks, deep stem, avg-down
@pytest.mark.parametrize("train", [True, False], ids=["batch-stats", "running-stats"])
@pytest.mark.parametrize(
    "moving",
    [None, ("backbone.layer4.", "head."), ("backbone.layer2.0.downsample.",)],
    ids=["all", "layer4+head", "shortcut-only"],  # shortcut-only: `x += shortcut` writes into a zero tangent
)
def test_tangent_equals_forward_mode_ad_of_the_forward(arch, train, moving):
    torch.manual_seed(0)
    model = ContrastiveModel(arch, feat_dim=8).double().train(train)
    assert unsupported_reason(model) is None
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    directions = {k: torch.randn_like(p) for k, p in model.named_parameters() if moving is None or k.startswith(moving)}
    with Tape(model) as tape:
        h, z = model(x)
    got = tangent(model, tape, directions)
    want = _reference_jvp(model, x, directions)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9 * w.abs().max().item())
    assert not h.requires_grad or not got[0].requires_grad  # the tangent carries no graph


def test_a_leaf_called_twice_gets_each_recorded_input_in_turn():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    model = nn.Sequential(conv, nn.ReLU(), conv)  # one module, two calls
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    directions = {"0.weight": torch.randn_like(conv.weight)}
    with Tape(model) as tape:
        model(x)
    torch.testing.assert_close(tangent(model, tape, directions), _reference_jvp(model, x, directions))


def test_an_input_changed_in_place_after_the_forward_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 3)).double()
    with Tape(model) as tape:
        y = model[0](x := torch.randn(1, 3, 7, 7, dtype=torch.float64))
        model[1](y)
    tape.input = x
    y.mul_(2)  # the second convolution's recorded input is no longer what it saw
    with pytest.raises(RuntimeError, match="modified in place.*hypergrad='jvp'"):
        tangent(model, tape, {"1.weight": torch.ones_like(model.get_parameter("1.weight"))})


def test_tangent_without_a_recorded_forward_says_how():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Tape"):
        tangent(model, Tape(model), {})


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), "GELU"),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")), "padding_mode"),
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1)), "dropout"),
        (lambda: timm.create_model("resnet18", num_classes=0, drop_rate=0.2), "drop_rate"),
        (lambda: timm.create_model("seresnet18", num_classes=0), "SEModule"),
    ],
    ids=["gelu", "reflect-padding", "dropout", "resnet-drop-rate", "squeeze-excite"],
)
def test_layers_without_an_exact_rule_are_named(build, words):
    assert words in (unsupported_reason(build()) or "")


def test_inactive_dropout_and_eval_mode_are_accepted():
    assert unsupported_reason(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.0))) is None
    assert unsupported_reason(timm.create_model("resnet18", num_classes=0, drop_rate=0.2).eval()) is None


def _assert_matches_jvp(model: nn.Module, x: torch.Tensor, directions: dict[str, torch.Tensor], rtol=1e-9):
    with Tape(model) as tape:
        model(x)
    got, want = tangent(model, tape, directions), _reference_jvp(model, x, directions)
    # a bias shift through training-mode BatchNorm cancels: the tangent is zero up to rounding
    torch.testing.assert_close(got, want, rtol=rtol, atol=max(rtol * want.abs().max().item(), 1e-12))


@pytest.mark.parametrize(
    "after", [nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(2)], ids=["batchnorm", "conv", "maxpool"]
)
def test_a_bias_alone_moving_at_the_stem_gives_a_full_tangent(after):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 3), after, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    _assert_matches_jvp(model, x, {"0.bias": torch.randn(3, dtype=torch.float64)})


def test_a_weight_shared_by_two_modules_moves_in_both():
    torch.manual_seed(0)
    first, second = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    second.weight = first.weight
    model = nn.Sequential(first, nn.ReLU(), second).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    _assert_matches_jvp(model, x, {"0.weight": torch.randn(4, 4, dtype=torch.float64)})


def test_batch_statistics_stay_accurate_when_the_mean_dwarfs_the_spread():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model.get_parameter("0.bias").fill_(2000.0)  # |mean| / std ~ 1e3 at the BatchNorm input
    x = torch.randn(4, 3, 12, 12)
    directions = {"0.weight": torch.randn_like(model.get_parameter("0.weight"))}
    with Tape(model) as tape:
        model(x)
    got = tangent(model, tape, directions)
    want = _reference_jvp(model.double(), x.double(), {k: d.double() for k, d in directions.items()}).float()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


def test_unsupported_models_and_second_forwards_are_refused_by_the_pass_itself():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    with Tape(model) as tape:
        model(torch.randn(1, 3, 5, 5))
        with pytest.raises(RuntimeError, match="one forward"):
            model(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="GELU"):
        tangent(model, tape, {})
    assert "weight_norm" in (unsupported_reason(nn.Sequential(nn.utils.weight_norm(nn.Conv2d(3, 4, 3)))) or "")
