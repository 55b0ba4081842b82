"""Conversion of the original authors' checkpoints, on checkpoints built with exactly their layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from timm_uscl.cli import main as cli
from timm_uscl.convert import convert, read_state_dict
from timm_uscl.errors import CheckpointFormatError
from timm_uscl.tensors import WeightsBudget
from weightfiles import sparse_bomb

R18 = WeightsBudget.of("resnet18")


class ReferenceModel(nn.Module):
    """The Meta-USCL / USCL model layout: torchvision ResNet children minus fc, then the heads."""

    def __init__(self, depth: int = 18, uscl_heads: bool = False):
        super().__init__()
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        dim = resnet.fc.in_features
        self.features = nn.Sequential(*list(resnet.children())[:-1])
        self.l1, self.l2 = nn.Linear(dim, dim), nn.Linear(dim, 128)
        if uscl_heads:
            self.fc, self.fc1, self.fc2, self.linear = (
                nn.Linear(128, 2),
                nn.Linear(dim, dim),
                nn.Linear(dim, 2),
                nn.Linear(dim, 3),
            )

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial running statistics, so a missed BN buffer would show in the outputs."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _meta_uscl_checkpoint(path, model, half=False, prefix="module."):
    sd = {prefix + k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 299, "state_dict": sd, "optimizer": opt.state_dict()}, path)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = ReferenceModel()
    _randomize_bn(model)
    return model.eval()


def _features_of_export(export_dir, x):
    model = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
    with torch.no_grad():
        return model(x)


def test_meta_uscl_checkpoint_converts_to_identical_features(tmp_path, reference):
    ckpt = tmp_path / "resnet18_64.pth"
    _meta_uscl_checkpoint(ckpt, reference)
    report = convert(ckpt, tmp_path / "export", keep_head=True)
    assert report.source_format == "meta-uscl"
    assert report.dropped == ["l1.bias", "l1.weight", "l2.bias", "l2.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_features_of_export(tmp_path / "export", x), reference.representation(x))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["pretrained_cfg"]["tag"] == "metauscl_us4_64"
    assert config["pretrained_cfg"]["mean"] == [0.18] * 3
    head = read_state_dict(tmp_path / "export" / "projection_head.safetensors", R18)
    torch.testing.assert_close(head["l2.weight"], reference.l2.weight)


def test_fp16_checkpoint_is_cast_and_reported(tmp_path, reference):
    ckpt = tmp_path / "resnet18_224.pth"
    _meta_uscl_checkpoint(ckpt, reference, half=True)
    report = convert(ckpt, tmp_path / "export")
    assert report.cast_from == ["torch.float16"]
    assert not (tmp_path / "export" / "projection_head.safetensors").exists()
    halved = ReferenceModel().eval()
    halved.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_features_of_export(tmp_path / "export", x), halved.representation(x))


def test_uscl_bare_state_dict_through_the_cli(tmp_path, capsys):
    torch.manual_seed(1)
    model = ReferenceModel(uscl_heads=True).eval()
    torch.save(model.state_dict(), tmp_path / "best_model.pth")
    rc = cli(
        [
            "convert",
            str(tmp_path / "best_model.pth"),
            "--tag",
            "resnet18_uscl.uscl_us4_224",
            "--out",
            str(tmp_path / "export"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "uscl checkpoint" in out and "fc1.weight" in out and "linear.weight" in out
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_features_of_export(tmp_path / "export", x), model.representation(x))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == [0.5] * 3


def test_wrong_architecture_names_the_file(tmp_path):
    ckpt = tmp_path / "resnet18_64.pth"
    _meta_uscl_checkpoint(ckpt, ReferenceModel(depth=50))
    with pytest.raises(CheckpointFormatError, match=r"resnet18_64\.pth.*do not fit timm's resnet18"):
        convert(ckpt, tmp_path / "export")


def test_extra_and_missing_keys_name_the_file(tmp_path, reference):
    sd = dict(reference.state_dict())
    extra = tmp_path / "resnet18_64.pth"
    torch.save({**sd, "queue.buffer": torch.zeros(3)}, extra)
    with pytest.raises(CheckpointFormatError, match=r"resnet18_64\.pth.*unexpected keys.*queue\.buffer"):
        convert(extra, tmp_path / "a")
    missing = tmp_path / "m" / "resnet18_64.pth"
    missing.parent.mkdir()
    torch.save({k: v for k, v in sd.items() if k != "features.7.1.bn2.weight"}, missing)
    with pytest.raises(CheckpointFormatError, match=r"resnet18_64\.pth.*missing 1 keys.*layer4\.1\.bn2\.weight"):
        convert(missing, tmp_path / "b")


def test_not_a_state_dict_and_unsafe_pickles_are_refused(tmp_path):
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointFormatError, match=r"list\.pth: is not a state dict"):
        read_state_dict(listed, R18)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": nn.Linear(1, 1)}, unsafe)
    with pytest.raises(CheckpointFormatError, match=r"unsafe\.pth: holds Python objects"):
        read_state_dict(unsafe, R18)


def test_truncated_files_name_the_file(tmp_path, reference):
    from safetensors.torch import save_file

    full = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, full)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match=r"cut\.safetensors: not a readable safetensors file"):
        read_state_dict(cut, R18)
    pth = tmp_path / "resnet18_64.pth"
    _meta_uscl_checkpoint(pth, reference)
    (tmp_path / "cut.pth").write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointFormatError, match=r"cut\.pth: is not a complete PyTorch checkpoint"):
        read_state_dict(tmp_path / "cut.pth", R18)


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "timm_uscl.cli", "convert", str(tmp_path / "model.pth"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "model.pth" in proc.stderr and "--tag" in proc.stderr


# L5: the wording of read_state_dict's refusals


def test_a_refused_pickle_says_it_holds_python_objects_and_how_to_resave(tmp_path, reference):
    unsafe = tmp_path / "resnet18_64.pth"
    torch.save({"state_dict": reference.state_dict(), "model": reference}, unsafe)
    with pytest.raises(CheckpointFormatError) as err:
        read_state_dict(unsafe, R18)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{unsafe}:")
    assert "Python objects" in msg and "not loaded" in msg and "ReferenceModel" in msg
    assert "torch.save(model.state_dict()" in msg
    assert "Re-running torch.load" not in msg and "weights_only set to False" not in msg
    assert msg.rstrip().endswith(".")


def test_a_truncated_pickle_says_truncated_without_a_cut_sentence(tmp_path, reference):
    pth = tmp_path / "resnet18_64.pth"
    _meta_uscl_checkpoint(pth, reference)
    (tmp_path / "cut.pth").write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointFormatError) as err:
        read_state_dict(tmp_path / "cut.pth", R18)
    msg = str(err.value)
    assert "\n" not in msg and "truncated" in msg and "download it again" in msg
    assert "Python objects" not in msg and msg.rstrip().endswith(".")


def test_a_pickle_named_safetensors_is_reported_as_a_pickle(tmp_path, reference):
    wrong = tmp_path / "weights.safetensors"
    torch.save(reference.state_dict(), wrong)
    with pytest.raises(CheckpointFormatError, match=r"weights\.safetensors: is a PyTorch pickle.*\.pth") as err:
        read_state_dict(wrong, R18)
    assert "truncated" not in str(err.value)


def test_a_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(CheckpointFormatError, match=r"is a directory, not a weights file.*model\.safetensors"):
        read_state_dict(tmp_path, R18)
    with pytest.raises(CheckpointFormatError, match=r"no such file"):
        read_state_dict(tmp_path / "missing.pth", R18)


@pytest.mark.parametrize("declared", [[1 << 20, 1 << 20], [1 << 15, 1 << 15]], ids=["4TiB", "4GiB"])
def test_a_weights_file_declaring_more_than_the_architecture_holds_is_refused_before_it_is_read(tmp_path, declared):
    """N2: the 2^40-value declaration gave a raw 'unable to mmap' traceback; 4 GiB peaked at 12 GiB RSS."""
    import resource

    sd = timm.create_model("resnet18", num_classes=0).state_dict()
    bomb = tmp_path / "resnet18_64.safetensors"
    sparse_bomb(bomb, declared, sd)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointFormatError, match=r"resnet18_64\.safetensors: .* MiB, more than resnet18 weights"):
        read_state_dict(bomb, R18)
    pth = tmp_path / "big.pth"
    with open(pth, "wb") as handle:
        handle.truncate(R18.max_bytes + 1)
    with pytest.raises(CheckpointFormatError, match=r"big\.pth: .* more than resnet18 weights"):
        read_state_dict(pth, R18)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing was mapped
    assert cli(["export", str(bomb), "--tag", "resnet18_uscl.metauscl_us4_64", "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()


def test_a_header_whose_offsets_do_not_match_its_shapes_is_one_line(tmp_path):
    import struct

    bad = tmp_path / "w.safetensors"
    header = json.dumps({"conv1.weight": {"dtype": "F32", "shape": [64, 3, 7, 7], "data_offsets": [0, 4]}}).encode()
    bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(
        CheckpointFormatError, match=r"w\.safetensors: not a readable safetensors file .*'conv1.weight'"
    ):
        read_state_dict(bad, R18)
    bad.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    with pytest.raises(CheckpointFormatError, match=r"w\.safetensors: not a safetensors file \(its header length"):
        read_state_dict(bad, R18)


@pytest.mark.parametrize("call", ["os.system", "eval", "a class"])
def test_every_hostile_pickle_is_named_as_refused_never_download_it_again(tmp_path, call):
    """L5: a ``__reduce__`` returning ``(os.system, ...)`` was called corrupt, "download it again"."""
    import os

    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo PWNED",)) if call == "os.system" else (eval, ("1",))

    payload = {"state_dict": {"w": torch.zeros(1)}, "x": Hostile() if call != "a class" else nn.Linear(1, 1)}
    for new_zip in (True, False):
        path = tmp_path / f"hostile_{new_zip}.pth"
        torch.save(payload, path, _use_new_zipfile_serialization=new_zip)
        with pytest.raises(CheckpointFormatError) as err:
            read_state_dict(path, R18)
        msg = str(err.value)
        assert "arbitrary code" in msg and "refused" in msg and "download it again" not in msg and "\n" not in msg
