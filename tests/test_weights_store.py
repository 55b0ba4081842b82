"""An honest registry and the local weights store: list only what loads here, install an export, load it by name."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import timm_uscl
from timm_uscl import WEIGHTS, CheckpointFormatError, ChecksumMismatchError, OutputFolderError, WeightsNotPublishedError
from timm_uscl.cli import main as cli
from timm_uscl.uscl import refresh_registry
from timm_uscl.weights import with_publication

NAME = "resnet18_uscl.metauscl_covidblues_64"


@pytest.fixture
def exported(source, tmp_path) -> Path:
    return timm_uscl.export(source, tmp_path / "export", NAME)


def _same_weights(model: torch.nn.Module, source: torch.nn.Module) -> bool:
    expected = source.state_dict()
    got = model.state_dict()
    return bool(got) and all(torch.equal(v, expected[k]) for k, v in got.items() if k in expected)


def test_list_pretrained_lists_only_tags_that_can_load_here(store, monkeypatch):
    assert timm.list_pretrained("*uscl*") == []
    assert set(timm.list_models("*uscl*", include_tags=True)) >= set(WEIGHTS), "every tag stays registered"
    for name, entry in WEIGHTS.items():
        assert getattr(timm.models.get_pretrained_cfg(name), "mean", None) == entry.mean
    published = with_publication(WEIGHTS[NAME], revision="a" * 40, sha256="0" * 64)
    monkeypatch.setitem(WEIGHTS, NAME, published)
    refresh_registry()
    assert NAME in timm.list_pretrained("*uscl*")
    assert getattr(timm.models.get_pretrained_cfg(NAME), "hf_hub_id", None) == published.pinned_repo_id


def test_an_unavailable_tag_refuses_and_says_how_to_get_it(store):
    with pytest.raises(timm_uscl.WeightsNotPublishedError, match=r"not published.*timm-uscl install"):
        timm.create_model(NAME, pretrained=True)


def test_install_makes_the_tag_loadable_by_name_offline_in_the_same_process(store, exported, source, hub, offline):
    hub.reset_log()
    folder = timm_uscl.install(exported, NAME)
    assert folder == store / NAME and (folder / "model.safetensors").is_file()
    assert timm.list_pretrained("*uscl*") == [NAME]
    assert _same_weights(timm.create_model(NAME, pretrained=True), source)
    assert hub.requests == []


def test_an_installed_tag_loads_by_name_in_a_fresh_process_offline(store, exported, source, tmp_path):
    timm_uscl.install(exported, NAME)
    expected = tmp_path / "expected.pt"
    torch.save(source(torch.ones(1, 3, 64, 64)).detach(), expected)
    code = (
        "import timm, timm_uscl, torch\n"
        f"assert timm.list_pretrained('*uscl*') == [{NAME!r}], timm.list_pretrained('*uscl*')\n"
        f"m = timm.create_model({NAME!r}, pretrained=True).eval()\n"
        f"assert torch.allclose(m(torch.ones(1, 3, 64, 64)), torch.load({str(expected)!r}), atol=1e-6)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TIMM_USCL_WEIGHTS": str(store), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_tampered_installed_weights_are_refused(store, exported):
    folder = timm_uscl.install(exported, NAME)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ChecksumMismatchError, match=r"model\.safetensors.*timm-uscl install"):
        timm.create_model(NAME, pretrained=True)


def test_install_validates_the_export_first(store, exported):
    (exported / "config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match=r"config\.json is not valid JSON"):
        timm_uscl.install(exported, NAME)
    assert not (store / NAME).exists()
    assert timm.list_pretrained("*uscl*") == []


def test_install_refuses_another_tag_than_the_export_records(store, exported):
    with pytest.raises(CheckpointFormatError, match=rf"records {NAME}.*re-export"):
        timm_uscl.install(exported, "resnet18_uscl.uscl_covidblues_64")


def test_install_replaces_an_installed_tag_only_with_overwrite(store, exported, tmp_path):
    timm_uscl.install(exported, NAME)
    torch.manual_seed(1)
    other = timm.create_model("resnet18_uscl").eval()
    second = timm_uscl.export(other, tmp_path / "second", NAME)
    with pytest.raises(OutputFolderError, match="overwrite"):
        timm_uscl.install(second, NAME)
    timm_uscl.install(second, NAME, overwrite=True)
    assert _same_weights(timm.create_model(NAME, pretrained=True), other)


def test_the_installed_exports_preprocessing_is_what_the_name_loads(store, tmp_path):
    """A run at 32 px with USCL statistics installed under a tag: the name gives the export's cfg, not the row's."""
    entry = replace(WEIGHTS[NAME], input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    folder = timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "run", entry, results=())
    timm_uscl.install(folder, NAME)
    for model in (timm.create_model(NAME, pretrained=True), None):
        registered = timm.models.get_pretrained_cfg(NAME)
        assert registered is not None
        cfg = timm.data.resolve_model_data_config(model) if model else registered.to_dict()
        assert tuple(cfg["mean"]) == (0.5,) * 3 and tuple(cfg["input_size"]) == (3, 32, 32)


def test_cli_install_then_list_shows_every_tag_with_its_status(store, exported, capsys, monkeypatch):
    assert cli(["install", str(exported), "--tag", NAME]) == 0
    assert str(store / NAME) in capsys.readouterr().out
    monkeypatch.setitem(
        WEIGHTS,
        "resnet18_uscl.uscl_us4_224",
        with_publication(WEIGHTS["resnet18_uscl.uscl_us4_224"], "a" * 40, "0" * 64),
    )
    assert cli(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "status"]
    status = {line.split()[0]: line for line in lines[1 : len(WEIGHTS) + 1]}
    assert set(status) == set(WEIGHTS)
    assert f"installed at {store / NAME}" in status[NAME]
    assert "published" in status["resnet18_uscl.uscl_us4_224"]
    assert "not available" in status["resnet18_uscl.metauscl_us4_64"]
    how = "\n".join(lines[len(WEIGHTS) + 1 :])
    assert "resnet18_uscl.metauscl_us4_64" in how and "timm-uscl convert" in how and "timm-uscl install" in how
    assert NAME not in how


def test_readme_features_only_and_smp_examples_work_for_an_installed_tag(store, exported, source):
    import segmentation_models_pytorch as smp

    timm_uscl.install(exported, NAME)
    pyramid = timm.create_model(NAME, pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
    assert [o.shape[1] for o in pyramid(torch.randn(1, 3, 64, 64))] == [64, 128, 256, 512]
    assert torch.equal(pyramid.get_parameter("layer4.1.conv2.weight"), source.layer4[1].conv2.weight)
    gray = timm.create_model(NAME, pretrained=True, in_chans=1)
    torch.testing.assert_close(gray.get_parameter("conv1.weight"), source.conv1.weight.sum(1, keepdim=True))
    clf = timm.create_model(NAME, pretrained=True, num_classes=3)
    assert clf(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert list(smp.encoders.get_preprocessing_params(f"tu-{NAME}")["mean"]) == [0.18] * 3
    net = smp.Unet(f"tu-{NAME}", encoder_weights=True, in_channels=1, classes=1)
    encoder = net.encoder.model
    assert torch.equal(encoder.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_installed_tags_pass_timms_own_pretrained_load_checks(store, exported):
    """What timm's tests/test_models.py (test_model_load_pretrained / _features_pretrained) does for each tag."""
    timm_uscl.install(exported, NAME)
    assert timm.list_models("*uscl*", pretrained=True) == [NAME]
    timm.create_model(NAME, pretrained=True, in_chans=1, num_classes=5)
    timm.create_model(NAME, pretrained=True, in_chans=1, num_classes=0)
    timm.create_model(NAME, pretrained=True, features_only=True)


def test_the_bare_architecture_keeps_its_fixed_default_tag_whatever_is_installed(store, exported):
    """timm's rule: a bare name means the architecture's first pretrained tag, never the first one installed."""
    timm_uscl.install(exported, NAME)
    default = timm.models.get_pretrained_cfg("resnet18_uscl")
    assert default is not None and default.tag == "metauscl_us4_224"
    assert not timm.models.is_model_pretrained("resnet18_uscl")  # so timm's own tests do not load it either
    with pytest.raises(
        WeightsNotPublishedError,
        match=r"`resnet18_uscl` alone means its default tag "
        r"resnet18_uscl\.metauscl_us4_224.*timm-uscl convert",
    ):
        timm.create_model("resnet18_uscl", pretrained=True)
    assert timm.create_model("resnet18_uscl").pretrained_cfg["tag"] == "metauscl_us4_224"  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_every_tags_cfg_matches_its_model_as_timm_checks_it(name):
    """timm's test_model_default_cfgs: pool_size, num_features and first_conv agree with the model."""
    model: Any = timm.create_model(name).eval()  # timm's model attributes: not on nn.Module
    cfg = model.pretrained_cfg
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert tuple(features.shape[2:]) == tuple(cfg["pool_size"]) and features.shape[1] == model.num_features
    assert model.num_classes == 0 and cfg["first_conv"] + ".weight" in model.state_dict()
