"""A user's own weights under the user's own name: export, convert, install, load by name, list, push; and cards that
describe those weights (their data and its licence, papers, size, the timm-uscl that wrote them), never a built-in
tag's text."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import timm_uscl
from timm_uscl import WEIGHTS, UnknownWeightsError
from timm_uscl.checksum import sha256_file
from timm_uscl.cli import main as cli
from timm_uscl.convert import read_state_dict
from timm_uscl.names import DEFAULT_TAGS, TAG_RULE, check_user_name, safe_tag
from timm_uscl.tensors import WeightsBudget
from timm_uscl.version import package_version

MINE = "resnet18_uscl.my_lung_run"
BUILTIN = "resnet18_uscl.metauscl_covidblues_64"


@pytest.fixture
def weights_file(source, tmp_path) -> Path:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_user_tag_exports_installs_loads_by_name_offline_and_lists_as_yours(
    store, weights_file, source, tmp_path, capsys, offline
):
    out = tmp_path / "export"
    code, _, err = _cli(
        capsys,
        "export",
        str(weights_file),
        "--tag",
        MINE,
        "--out",
        str(out),
        "--image-size",
        "96",
        "--data",
        "our hospital's lung videos",
        "--data-license",
        "internal use only",
    )
    assert code == 0, err
    card = (out / "README.md").read_text()
    assert f"# {MINE}" in card and "our hospital's lung videos" in card and "internal use only" in card
    for builtin_text in (WEIGHTS[BUILTIN].pretrain_data, WEIGHTS[BUILTIN].description, "timm-uscl/resnet18_uscl"):
        assert builtin_text not in card
    assert "96×96" in card and "local-dir:/path/to/export" in card
    code, printed, err = _cli(capsys, "install", str(out))
    assert code == 0, err and MINE in printed
    model = timm.create_model(MINE, pretrained=True).eval()
    x = torch.rand(1, 3, 96, 96)
    torch.testing.assert_close(model(x), source(x))
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 96, 96)
    assert MINE in timm.list_pretrained("*uscl*")
    _, listing, _ = _cli(capsys, "list")
    row = next(line for line in listing.splitlines() if line.startswith(MINE))
    assert "yours, installed at" in row and "our hospital's lung videos" in row
    assert not any(line.startswith(MINE) and "yours" not in line for line in listing.splitlines())


@pytest.mark.parametrize(
    "tag",
    ["resnet18_uscl.", "resnet18_uscl.My Run", "resnet18_uscl.../x", "resnet18_uscl.metauscl_covidblues_64x/", "x"],
)
def test_bad_user_tags_are_refused_on_one_line_with_the_rule_before_anything_is_written(
    tag, weights_file, tmp_path, capsys
):
    out = tmp_path / "export"
    code, _, err = _cli(capsys, "export", str(weights_file), "--tag", tag, "--out", str(out), "--data", "d")
    assert code == 1 and err.count("\n") == 1 and "a tag is 1 to 64 characters" in err
    assert not out.exists()


def test_a_builtin_tag_on_other_weights_is_refused_with_the_rule_and_nothing_is_written(weights_file, tmp_path, capsys):
    out = tmp_path / "export"
    code, _, err = _cli(capsys, "export", str(weights_file), "--tag", BUILTIN, "--out", str(out))
    assert code == 1 and err.count("\n") == 1
    assert "built-in tag" in err and "name them with your own tag" in err and TAG_RULE in err
    assert not out.exists()


def test_a_builtin_tag_is_accepted_for_exactly_its_published_weights(weights_file, tmp_path, capsys, monkeypatch):
    first = timm_uscl.export(read_state_dict(weights_file, WeightsBudget.of("resnet18")), tmp_path / "probe", BUILTIN)
    digest = sha256_file(first / "model.safetensors")
    monkeypatch.setitem(WEIGHTS, BUILTIN, replace(WEIGHTS[BUILTIN], sha256=digest))
    code, _, err = _cli(capsys, "export", str(weights_file), "--tag", BUILTIN, "--out", str(tmp_path / "export"))
    assert code == 0, err


def test_user_tag_rules():
    assert check_user_name("resnet50_uscl.a-b_9") == ("resnet50_uscl", "a-b_9")
    for bad in ("resnet18_uscl.metauscl_us4_64", "resnet18_uscl.", "resnet18_uscl.A", "resnet18.mine", "mine"):
        with pytest.raises(UnknownWeightsError, match="a tag is 1 to 64 characters|<arch>.<tag>"):
            check_user_name(bad)
    assert safe_tag("Smoke Run!") == "smoke_run" and safe_tag("metauscl_us4_64") == "run_metauscl_us4_64"
    assert safe_tag("...") == "run"
    assert DEFAULT_TAGS == {"resnet18_uscl": "metauscl_us4_224", "resnet50_uscl": "metauscl_covidblues_224"}


def test_convert_names_a_timm_layout_file_with_a_user_tag_only(weights_file, tmp_path, capsys):
    code, _, err = _cli(
        capsys, "convert", str(weights_file), "--tag", "resnet18_uscl.metauscl_us4_64", "--out", str(tmp_path / "a")
    )
    assert code == 1 and "authors' checkpoint" in err and not (tmp_path / "a").exists()
    code, _, err = _cli(capsys, "convert", str(weights_file), "--tag", MINE, "--out", str(tmp_path / "b"))
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "config.json").read_text())["timm_uscl"]
    assert record["name"] == MINE and record["origin"] == "converted" and "w.safetensors" in record["recipe"]


def test_install_refuses_a_training_runs_export_under_a_builtin_tag(store, source, tmp_path):
    entry = replace(WEIGHTS[BUILTIN], run=(("data", "fixtures"),))
    folder = timm_uscl.export(source, tmp_path / "run", entry)
    with pytest.raises(UnknownWeightsError, match="built-in tag.*your own tag"):
        timm_uscl.install(folder)
    assert not (store / BUILTIN).exists()


def test_push_points_the_cards_usage_line_at_the_repo_pushed_to(hub, source, tmp_path, capsys):
    folder = timm_uscl.export(source, tmp_path / "export", MINE)
    before = sha256_file(folder / "model.safetensors")
    assert "hf-hub:" not in (folder / "README.md").read_text().split("not pushed yet")[0].split("```python")[1]
    assert cli(["push", str(folder), "--repo-id", "me/lungs"]) == 0
    uploaded = hub.files("me/lungs")["README.md"].decode()
    assert 'timm.create_model("hf-hub:me/lungs", pretrained=True)' in uploaded
    assert json.loads((folder / "config.json").read_text())["timm_uscl"]["repo_id"] == "me/lungs"
    assert sha256_file(folder / "model.safetensors") == before
    timm_uscl.check_export(folder)


def test_cards_link_the_papers_state_size_version_and_the_datas_licence_terms(source, tmp_path):
    folder = timm_uscl.export(source, tmp_path / "export", BUILTIN)
    card = (folder / "README.md").read_text()
    assert "https://arxiv.org/abs/2212.04097" in card and "https://arxiv.org/abs/2011.13066" in card
    assert "11.2 M parameters" in card and "0.15 GMACs at 64×64" in card
    assert f"timm-uscl {package_version()}" in card
    assert "license: cc-by-nc-nd-4.0" in card
    assert "CC BY-NC-ND 4.0 (attribution, non-commercial, no derivatives)" in card
    record = json.loads((folder / "config.json").read_text())["timm_uscl"]
    assert record["software"]["timm_uscl"] == package_version() and "commit" in record["software"]
    assert record["size"] == {"params": 11176512, "gmacs": pytest.approx(0.148, abs=1e-3), "image_size": 64}
    result = timm_uscl.EvalResult("t", "d", "accuracy", 0.5, source=f"measured: {record['sha256']}")
    timm_uscl.update_card(folder, [result], record["sha256"])  # a later card update keeps what the export recorded
    assert json.loads((folder / "config.json").read_text())["timm_uscl"]["software"] == record["software"]
    assert "11.2 M parameters" in (folder / "README.md").read_text()


def test_a_card_of_an_export_without_the_size_record_still_renders(source, tmp_path):
    folder = timm_uscl.export(source, tmp_path / "export", MINE)
    config = json.loads((folder / "config.json").read_text())
    del config["timm_uscl"]["size"], config["timm_uscl"]["software"]  # written by an older timm-uscl
    (folder / "config.json").write_text(json.dumps(config))
    timm_uscl.update_card(folder, [], config["timm_uscl"]["sha256"])
    assert "GMACs" not in (folder / "README.md").read_text()
