"""What is evaluated: non-finite backbones refused (M6), the sha256 of the weights file evaluated and the --card
check (M7), malformed exports as one-line errors (L2), and the random-init baseline's initialisation (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_uscl
from timm_uscl.checksum import sha256_file
from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation.backbone import check_finite, load_backbone
from timm_uscl.training.evaluation.protocols import build_unet

TAG = "resnet18_uscl.metauscl_us4_64"
TINY: dict[str, Any] = dict(
    tasks=["busi"], protocol="linear", folds=[0], image_size=32, epochs=1, max_items=3, progress=False
)
CLI_TINY = ["--tasks", "busi", "--protocol", "linear", "--folds", "0", "--image-size", "32", "--epochs", "1"]
CLI_TINY += ["--max-items", "3", "--no-progress"]


def _export(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return timm_uscl.export(timm.create_model("resnet18_uscl", num_classes=0), folder, TAG)


def _poison(weights: Path, key: str = "layer1.0.conv1.weight", value: float = float("nan")) -> None:
    """Overwrite one tensor of a weights file in place (the NaN export of finding M1, made without the exporter)."""
    state = load_file(str(weights))
    state[key] = torch.full_like(state[key], value)
    save_file(state, str(weights), metadata={"format": "pt"})


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


# M6 ------------------------------------------------------------------------------------------------------------


def test_a_nan_weights_file_is_refused_before_any_number(tmp_path: Path, synthetic_root: Path) -> None:
    path = tmp_path / "nan.safetensors"
    save_file(timm.create_model("resnet18_uscl", num_classes=0).state_dict(), str(path))
    _poison(path)
    with pytest.raises(EvaluationError, match=r"nan\.safetensors.*layer1\.0\.conv1\.weight"):
        evaluate(str(path), arch="resnet18_uscl", data_root=synthetic_root, **TINY)


def test_finite_weights_whose_outputs_are_nan_are_refused(tmp_path: Path) -> None:
    model: Any = timm.create_model("resnet18_uscl", num_classes=0)
    model.bn1.running_var.fill_(-1.0)  # every tensor finite, but BatchNorm takes sqrt(-1): NaN features
    path = tmp_path / "negvar.safetensors"
    save_file(model.state_dict(), str(path))
    backbone = load_backbone(str(path), arch="resnet18_uscl")
    with pytest.raises(EvaluationError, match="non-finite"):
        check_finite(backbone, 32)


def test_a_nan_export_with_card_is_one_line_and_writes_nothing(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path / "nan_export")
    _poison(export / "model.safetensors")
    config = json.loads((export / "config.json").read_text())  # a NaN export whose record is consistent
    config["timm_uscl"]["sha256"] = sha256_file(export / "model.safetensors")
    (export / "config.json").write_text(json.dumps(config))
    card = (export / "README.md").read_text()
    out = tmp_path / "results.json"
    argv = ["evaluate", f"local-dir:{export}", "--data-root", str(synthetic_root), "--out", str(out), *CLI_TINY]
    assert cli([*argv, "--card", str(export)]) == 1
    err = _one_line_error(capsys)
    assert "non-finite" in err or "NaN" in err
    assert (export / "README.md").read_text() == card and not out.exists()


def test_a_diverging_fine_tune_is_refused_not_scored(synthetic_root: Path) -> None:
    kwargs = dict(TINY, protocol="finetune", epochs=2, lr=1e30)
    with pytest.raises(EvaluationError, match="NaN or inf"):
        evaluate("resnet18", pretrained=False, data_root=synthetic_root, **kwargs)


def test_random_init_of_a_weights_file_is_refused(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    for model in (f"local-dir:{export}", str(export / "model.safetensors")):
        with pytest.raises(EvaluationError, match="--random-init"):
            load_backbone(model, arch="resnet18", pretrained=False)


# M7 ------------------------------------------------------------------------------------------------------------


def test_results_record_the_sha256_of_the_weights_file_evaluated(tmp_path: Path, synthetic_root: Path) -> None:
    export = _export(tmp_path / "export")
    weights = export / "model.safetensors"
    assert load_backbone(f"local-dir:{export}").weights_sha256 == sha256_file(weights)
    assert load_backbone(str(weights), arch="resnet18_uscl").weights_sha256 == sha256_file(weights)
    assert load_backbone("resnet18_uscl", pretrained=False).weights_sha256 is None
    results = evaluate(f"local-dir:{export}", data_root=synthetic_root, **TINY)
    assert results["weights_sha256"] == sha256_file(weights)


def test_an_hf_hub_export_records_the_sha256_of_the_downloaded_file(hub: Any, tmp_path: Path) -> None:
    from timm_uscl.upload import push

    export = _export(tmp_path / "export")
    push(export, "someone/eval-sha")
    backbone = load_backbone("hf-hub:someone/eval-sha")
    assert backbone.weights_sha256 == sha256_file(export / "model.safetensors")
    assert torch.equal(backbone.model.conv1.weight, load_file(str(export / "model.safetensors"))["conv1.weight"])


def test_card_refuses_another_models_results_before_evaluating(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from timm_uscl.training.evaluation import decoding

    export = _export(tmp_path / "export")
    other = _export(tmp_path / "other", seed=1)
    card = (export / "README.md").read_text()

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded data although the --card check should have refused first")

    monkeypatch.setattr(decoding, "read_frames", no_decoding)
    monkeypatch.setattr(decoding, "_load_image", no_decoding)
    base = ["evaluate", "--data-root", str(synthetic_root), *CLI_TINY, "--card", str(export)]
    for model in (["resnet18", "--random-init"], [f"local-dir:{other}"], [str(other / "model.safetensors")]):
        argv = base[:1] + model + base[1:] + (["--arch", "resnet18"] if model[0].endswith(".safetensors") else [])
        assert cli(argv) == 1
        err = _one_line_error(capsys)
        assert str(export) in err and f"local-dir:{export}" in err
    assert (export / "README.md").read_text() == card


def test_card_refuses_a_malformed_export_before_evaluating(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path / "export")
    (export / "model.safetensors").unlink()
    argv = ["evaluate", "resnet18", "--random-init", "--data-root", str(synthetic_root), *CLI_TINY]
    assert cli([*argv, "--card", str(export)]) == 1
    assert "model.safetensors" in _one_line_error(capsys)


def test_card_of_the_evaluated_export_is_updated_with_measured_results(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path / "export")
    before = (export / "README.md").read_text()
    argv = ["evaluate", f"local-dir:{export}", "--data-root", str(synthetic_root), *CLI_TINY, "--card", str(export)]
    assert cli(argv) == 0
    after = (export / "README.md").read_text()
    assert after != before and "busi" in after and "busi" not in before
    assert f"updated {export / 'README.md'}" in capsys.readouterr().out


# L2 ------------------------------------------------------------------------------------------------------------


def _wrong_arch(export: Path) -> str:
    config = json.loads((export / "config.json").read_text())
    config["architecture"] = "vit_tiny_patch16_224"
    (export / "config.json").write_text(json.dumps(config))
    return "config.json"


def _no_weights(export: Path) -> str:
    (export / "model.safetensors").unlink()
    return "model.safetensors"


def _only_bin(export: Path) -> str:
    torch.save(load_file(str(export / "model.safetensors")), export / "pytorch_model.bin")
    (export / "model.safetensors").unlink()
    return "pytorch_model.bin"


def _bad_json(export: Path) -> str:
    (export / "config.json").write_text('{"architecture": "resnet18", ')
    return "config.json"


def _unknown_arch(export: Path) -> str:
    (export / "config.json").write_text(json.dumps({"architecture": "no_such_net", "num_classes": 0}))
    return "config.json"


def _no_config(export: Path) -> str:
    (export / "config.json").unlink()
    return "config.json"


@pytest.mark.parametrize("damage", [_wrong_arch, _no_weights, _only_bin, _bad_json, _unknown_arch, _no_config])
def test_a_malformed_export_is_a_one_line_error_naming_the_file(
    damage: Any, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path / "export")
    culprit = damage(export)
    with pytest.raises(EvaluationError, match=culprit) as info:
        load_backbone(f"local-dir:{export}")
    assert "\n" not in str(info.value) and str(export) in str(info.value)
    argv = ["evaluate", f"local-dir:{export}", "--data-root", str(synthetic_root), *CLI_TINY]
    assert cli(argv) == 1
    assert culprit in _one_line_error(capsys)


# issue 12: the random-init baseline ----------------------------------------------------------------------------


def _last_bn_weights(model: Any) -> list[torch.Tensor]:
    return [block.bn2.weight for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]


def test_random_init_is_torchvision_style_by_default_and_timm_on_request(synthetic_root: Path) -> None:
    tv = load_backbone("resnet18", pretrained=False)
    assert tv.init == "torchvision" and all(bool((w == 1).all()) for w in _last_bn_weights(tv.model))
    tm = load_backbone("resnet18", pretrained=False, init="timm")
    assert tm.init == "timm" and all(bool((w == 0).all()) for w in _last_bn_weights(tm.model))
    unet = (
        build_unet(tv).get_submodule("encoder.model").state_dict()
    )  # the U-Net encoder starts from the same initialisation
    assert all(torch.equal(v, unet[k]) for k, v in tv.model.state_dict().items() if k in unet)

    assert evaluate("resnet18", pretrained=False, data_root=synthetic_root, **TINY)["init"] == "torchvision"
    timm_init = evaluate("resnet18", pretrained=False, data_root=synthetic_root, init="timm", **TINY)
    assert timm_init["init"] == "timm" and timm_init["config"]["init"] == "timm"
