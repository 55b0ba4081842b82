"""Export and convert never publish broken weights and never lose or overwrite what a folder already holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_uscl
from timm_uscl.cli import main as cli
from timm_uscl.convert import convert
from timm_uscl.errors import CheckpointFormatError, OutputFolderError

TAG = "resnet18_uscl.metauscl_us4_64"
MINE = "resnet18_uscl.my_weights"  # the command line names a user's weights with a user tag


def _r18_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=0).state_dict().items()}


def _save(tmp_path: Path, name: str, state_dict: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / name
    save_file(state_dict, path)
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr); an uncaught exception fails the test as a traceback would."""
    capsys.readouterr()
    code = cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# M1: non-finite weights


def test_export_refuses_nan_weights_naming_the_first_bad_tensor(tmp_path):
    sd = _r18_state_dict()
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointFormatError, match=r"layer1\.0\.conv1\.weight.*NaN") as err:
        timm_uscl.export(sd, tmp_path / "out", TAG)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_infinite_batchnorm_buffer(tmp_path):
    sd = _r18_state_dict()
    sd["bn1.running_var"][3] = float("inf")
    with pytest.raises(CheckpointFormatError, match=r"bn1\.running_var.*inf"):
        timm_uscl.export(sd, tmp_path / "out", TAG)


def test_export_and_convert_cli_refuse_nan_weights_on_one_line(tmp_path, capsys):
    sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in _r18_state_dict().items()}
    weights = _save(tmp_path, "nan.safetensors", sd)
    for command in ("export", "convert"):
        code, _, err = _cli(capsys, command, str(weights), "--tag", MINE, "--out", str(tmp_path / command))
        assert code == 1 and err.count("\n") == 1 and "conv1.weight" in err and "NaN" in err
        assert not (tmp_path / command).exists()


def test_export_refuses_extra_files_holding_nan(tmp_path):
    head = {"l1.weight": torch.full((4, 4), float("nan"))}
    with pytest.raises(CheckpointFormatError, match=r"projection_head\.safetensors.*l1\.weight.*NaN"):
        timm_uscl.export(_r18_state_dict(), tmp_path / "out", TAG, extra_files={"projection_head.safetensors": head})


# L6: dtypes


def test_export_refuses_integer_weights_where_timm_has_floats(tmp_path, capsys):
    sd = _r18_state_dict()
    sd["conv1.weight"] = torch.ones(64, 3, 7, 7, dtype=torch.int8)
    weights = _save(tmp_path, "i8.safetensors", sd)
    code, _, err = _cli(capsys, "export", str(weights), "--tag", TAG, "--out", str(tmp_path / "i8"))
    assert code == 1 and err.count("\n") == 1 and "conv1.weight" in err and "int8" in err
    assert not (tmp_path / "i8").exists()


def test_export_refuses_a_float_where_timm_keeps_an_integer_buffer(tmp_path):
    sd = _r18_state_dict()
    sd["bn1.num_batches_tracked"] = torch.tensor(3.5)
    with pytest.raises(CheckpointFormatError, match=r"bn1\.num_batches_tracked.*float32.*int64"):
        timm_uscl.export(sd, tmp_path / "out", TAG)


def test_export_keeps_integer_buffers_integer(tmp_path):
    timm_uscl.export(_r18_state_dict(), tmp_path / "out", TAG)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert saved["bn1.num_batches_tracked"].dtype == torch.int64
    assert saved["conv1.weight"].dtype == torch.float32


# M2: the output folder


@pytest.mark.parametrize("out", ["", "   "])
def test_export_refuses_an_empty_out(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("# project readme\n")
    with pytest.raises(OutputFolderError, match="give a folder"):
        timm_uscl.export(_r18_state_dict(), out, TAG)
    assert (tmp_path / "README.md").read_text() == "# project readme\n"


def test_export_cli_refuses_an_empty_out_on_one_line(tmp_path):
    weights = _save(tmp_path, "r18.safetensors", _r18_state_dict())
    proc = subprocess.run(
        [sys.executable, "-m", "timm_uscl.cli", "export", str(weights), "--tag", TAG, "--out", ""],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "give a folder" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.safetensors"]


def test_export_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    out = tmp_path / "m2"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    (out / "cmw_net.safetensors").write_text("older run\n")
    with pytest.raises(OutputFolderError, match=r"m2 is not empty.*README\.md.*overwrite"):
        timm_uscl.export(_r18_state_dict(), out, TAG)
    assert (out / "README.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "cmw_net.safetensors"]


def test_export_overwrite_lists_then_removes_exactly_the_old_files(tmp_path, capsys):
    weights = _save(tmp_path, "r18.safetensors", _r18_state_dict())
    out = tmp_path / "m2"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    (out / "cmw_net.safetensors").write_text("older run\n")
    code, out_text, err = _cli(capsys, "export", str(weights), "--tag", MINE, "--out", str(out), "--overwrite")
    assert code == 0, err
    first = out_text.splitlines()[0]
    assert "README.md" in first and "cmw_net.safetensors" in first
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (out / "README.md").read_text().startswith("---")


def test_export_over_a_previous_export_with_overwrite_loads_the_new_weights(tmp_path):
    first, second = _r18_state_dict(), {k: v.clone() for k, v in _r18_state_dict().items()}
    second["conv1.weight"] += 1
    timm_uscl.export(first, tmp_path / "out", TAG)
    with pytest.raises(OutputFolderError):
        timm_uscl.export(second, tmp_path / "out", TAG)
    timm_uscl.export(second, tmp_path / "out", TAG, overwrite=True)
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["conv1.weight"], second["conv1.weight"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_export_refuses_an_out_folder_that_holds_a_subfolder_even_with_overwrite(tmp_path):
    (tmp_path / "proj" / "src").mkdir(parents=True)
    (tmp_path / "proj" / "README.md").write_text("keep\n")
    with pytest.raises(OutputFolderError, match=r"src.*folder"):
        timm_uscl.export(_r18_state_dict(), tmp_path / "proj", TAG, overwrite=True)
    assert (tmp_path / "proj" / "README.md").read_text() == "keep\n"


# L8: symlinks


def test_export_never_writes_through_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("VICTIM\n")
    out = tmp_path / "l8"
    out.mkdir()
    (out / "config.json").symlink_to(victim)
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError, match=r"config\.json.*symbolic link"):
            timm_uscl.export(_r18_state_dict(), out, TAG, overwrite=overwrite)
    assert victim.read_text() == "VICTIM\n"


def test_export_refuses_a_symlinked_out_folder(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputFolderError, match=r"link.*symbolic link"):
        timm_uscl.export(_r18_state_dict(), tmp_path / "link", TAG)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# convert --keep-head into an existing export


_TO_AUTHORS = {"conv1": "features.0", "bn1": "features.1", "layer1": "features.4", "layer2": "features.5"}
_TO_AUTHORS |= {"layer3": "features.6", "layer4": "features.7"}


def _meta_uscl_checkpoint(path: Path, with_head: bool) -> None:
    """A checkpoint in the original authors' layout (features.N backbone, l1/l2 projection head)."""
    sd = {_TO_AUTHORS[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in _r18_state_dict().items()}
    if with_head:
        sd |= {"l1.weight": torch.zeros(512, 512), "l1.bias": torch.zeros(512)}
    torch.save({"state_dict": sd}, path)


def test_convert_keep_head_into_an_existing_export_leaves_no_stale_head(tmp_path, capsys):
    out = tmp_path / "export"
    _meta_uscl_checkpoint(tmp_path / "resnet18_64.pth", with_head=True)
    convert(tmp_path / "resnet18_64.pth", out, keep_head=True)
    (out / "cmw_net.safetensors").write_bytes(b"older run")
    assert (out / "projection_head.safetensors").exists()
    headless = tmp_path / "headless" / "resnet18_64.pth"
    headless.parent.mkdir()
    _meta_uscl_checkpoint(headless, with_head=False)
    with pytest.raises(OutputFolderError, match="not empty"):
        convert(headless, out, keep_head=True)
    code, out_text, err = _cli(capsys, "convert", str(headless), "--out", str(out), "--keep-head", "--overwrite")
    assert code == 0, err
    assert "projection_head.safetensors" in out_text.splitlines()[0]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]


# issue 11.5: config.json in timm's own save_for_hf layout


def test_export_config_has_timms_save_for_hf_layout_with_model_args(tmp_path):
    model = timm.create_model("resnet18", num_classes=0)
    timm.models.save_for_hf(model, tmp_path / "stock", safe_serialization=True)
    stock = json.loads((tmp_path / "stock" / "config.json").read_text())
    timm_uscl.export(model, tmp_path / "ours", TAG)
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert set(ours) == set(stock) | {"timm_uscl"}
    assert ours["model_args"] == stock["model_args"] == {"num_classes": 0, "in_chans": 3, "global_pool": "avg"}
    assert set(ours["pretrained_cfg"]) >= {"input_size", "mean", "std", "first_conv", "custom_load", "tag"}
    assert ours["pretrained_cfg"]["mean"] == [0.18] * 3 and ours["pretrained_cfg"]["tag"] == "metauscl_us4_64"
    assert ours["timm_uscl"]["name"] == TAG
    gray = timm.create_model(f"local-dir:{tmp_path / 'ours'}", pretrained=True, in_chans=1)
    assert gray.get_parameter("conv1.weight").shape[1] == 1


def test_overwrite_never_deletes_files_an_export_does_not_write(tmp_path):
    import timm

    import timm_uscl
    from timm_uscl.errors import OutputFolderError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    (out / "config.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="holds files an export does not write .*thesis.tex"):
        timm_uscl.export(
            timm.create_model("resnet18", num_classes=0), out, "resnet18_uscl.metauscl_us4_64", overwrite=True
        )
    assert (out / "thesis.tex").read_text() == "months of work" and (out / "config.json").read_text() == "{}"
