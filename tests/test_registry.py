"""The plugin's architectures behave as first-class timm models."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch

import timm_uscl
from timm_uscl import WEIGHTS, UnknownWeightsError, WeightsNotPublishedError
from timm_uscl.store import find_installed
from timm_uscl.uscl import ARCHITECTURES


def test_registry_registers_every_table_tag_but_lists_as_pretrained_only_loadable_ones():
    assert "uscl" in timm.list_modules()
    assert set(timm.list_models(module="uscl")) == set(ARCHITECTURES)
    assert set(timm.list_models("*uscl*", include_tags=True)) == set(WEIGHTS)
    loadable = {name for name, entry in WEIGHTS.items() if entry.published or find_installed(name)}
    assert set(timm.list_pretrained("*uscl*")) == loadable
    assert not set(ARCHITECTURES) & set(timm.list_models(module="resnet")), "must not reuse timm arch names"


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_pretrained_cfg_comes_from_weights_table(name):
    entry = WEIGHTS[name]
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg is not None and cfg.mean == entry.mean and cfg.std == entry.std
    assert cfg.input_size == entry.input_size
    assert cfg.num_classes == 0 and cfg.first_conv == "conv1"
    assert cfg.hf_hub_id == (entry.pinned_repo_id if entry.published else None) and cfg.license == entry.license
    assert cfg.mean != timm.data.IMAGENET_DEFAULT_MEAN


def test_headless_by_default_and_data_config():
    model = timm.create_model("resnet18_uscl.metauscl_us4_64")
    assert model.num_classes == 0
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    data_cfg = timm.data.resolve_model_data_config(model)
    assert data_cfg["mean"] == (0.18,) * 3 and data_cfg["std"] == (0.24,) * 3
    assert data_cfg["input_size"] == (3, 64, 64)
    uscl = timm.data.resolve_model_data_config(timm.create_model("resnet18_uscl.uscl_us4_224"))
    assert uscl["mean"] == (0.5,) * 3 and uscl["std"] == (0.25,) * 3


def test_features_only_intermediates_and_reset_classifier():
    feats: Any = timm.create_model("resnet18_uscl", features_only=True, out_indices=(1, 2, 3, 4))
    assert feats.feature_info.channels() == [64, 128, 256, 512]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    outs = feats(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]

    model: Any = timm.create_model("resnet50_uscl")  # timm's model methods: not on nn.Module
    inter = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [t.shape[1] for t in inter] == [64, 256, 512, 1024, 2048]
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_in_chans_1_folds_the_stem_exactly(tmp_path):
    """Grayscale replicated to 3 channels == the same image through in_chans=1 with folded weights."""
    source = timm.create_model("resnet18_uscl").eval()
    timm_uscl.export(source, tmp_path, "resnet18_uscl.metauscl_us4_64")
    overlay = {"file": str(tmp_path / "model.safetensors")}
    rgb = timm.create_model("resnet18_uscl.metauscl_us4_64", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    gray = timm.create_model(
        "resnet18_uscl.metauscl_us4_64", pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1
    ).eval()
    assert gray.get_parameter("conv1.weight").shape[1] == 1
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rgb(x.expand(-1, 3, -1, -1)), source(x.expand(-1, 3, -1, -1)))


def test_unpublished_tag_refuses_instead_of_random_weights():
    with pytest.raises(WeightsNotPublishedError, match="not published.*timm-uscl convert"):
        timm.create_model("resnet18_uscl.metauscl_us4_224", pretrained=True)
    with pytest.raises(WeightsNotPublishedError, match="timm-uscl pretrain"):
        timm.create_model("resnet18_uscl.metauscl_covidblues_64", pretrained=True)


def test_unknown_tag_is_a_clear_error():
    with pytest.raises(UnknownWeightsError, match="resnet18_uscl.nope.*known tags"):
        timm.create_model("resnet18_uscl.nope", pretrained=True)


def test_segmentation_encoder_through_smp():
    import segmentation_models_pytorch as smp

    net = smp.Unet("tu-resnet18_uscl.metauscl_us4_64", encoder_weights=None, in_channels=1, classes=1)
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
