"""The plugin's CLI: list and export (convert/push/pull are covered with their features)."""

from __future__ import annotations

import timm
import torch
from safetensors.torch import save_file

from timm_uscl import WEIGHTS
from timm_uscl.cli import main as cli


def test_list_prints_every_tag_with_its_status(capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["name", "status"]
    assert sorted(line.split()[0] for line in out[1 : len(WEIGHTS) + 1]) == sorted(WEIGHTS)
    assert cli(["list", "*.uscl_us4*"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "resnet18_uscl.uscl_us4_224"


def test_export_from_a_state_dict_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("resnet50_uscl").eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    assert (
        cli(
            [
                "export",
                str(tmp_path / "w.safetensors"),
                "--tag",
                "resnet50_uscl.my_run",
                "--out",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    assert "exported resnet50_uscl.my_run" in capsys.readouterr().out
    loaded = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_export_with_the_wrong_tag_names_the_file(tmp_path, capsys):
    save_file(
        {k: v.contiguous() for k, v in timm.create_model("resnet18_uscl").state_dict().items()},
        tmp_path / "r18.safetensors",
    )
    assert (
        cli(
            [
                "export",
                str(tmp_path / "r18.safetensors"),
                "--tag",
                "resnet50_uscl.mine",
                "--out",
                str(tmp_path / "export"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not fit timm's resnet50" in err
