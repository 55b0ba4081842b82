"""Cards tell the truth about their own weights: measured results only for the weights they were measured on."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import timm
import yaml

import timm_uscl
from timm_uscl import WEIGHTS, CheckpointFormatError
from timm_uscl.checksum import sha256_file
from timm_uscl.export_folder import check_export, update_card
from timm_uscl.training.evaluation.metrics import card_results
from timm_uscl.weights import EvalResult

OWN = "resnet18_uscl.metauscl_covidblues_64"

RESULTS = {
    "config": {"folds": [0, 1, 2, 3, 4], "image_size": 64, "epochs": 30, "select": "final"},
    "tasks": {
        "pocus": {
            "kind": "classification",
            "description": "POCUS convex 3-class",
            "protocols": {
                "finetune": {
                    "name": "fine-tune last block",
                    "summary": {
                        "metrics": {
                            "frame": {"accuracy": {"mean": 0.70, "std": 0.05}, "macro_f1": {"mean": 0.60, "std": 0.04}},
                            "video": {"accuracy": {"mean": 0.75, "std": 0.06}, "macro_f1": {"mean": 0.65, "std": 0.07}},
                        }
                    },
                }
            },
        },
        "busi_seg": {
            "kind": "segmentation",
            "description": "BUSI lesion segmentation",
            "protocols": {
                "finetune": {
                    "name": "U-Net fine-tune",
                    "summary": {"metrics": {"dice": {"mean": 0.55, "std": 0.03}, "iou": {"mean": 0.45, "std": 0.02}}},
                }
            },
        },
    },
}


def test_card_results_pick_video_level_and_segmentation_scores():
    rows = card_results(RESULTS)
    assert [(r.dataset, r.metric, r.value, r.std) for r in rows] == [
        ("pocus", "accuracy", 0.75, 0.06),
        ("pocus", "macro_f1", 0.65, 0.07),
        ("busi_seg", "dice", 0.55, 0.03),
        ("busi_seg", "iou", 0.45, 0.02),
    ]
    assert "5 folds, 64px, 30 epochs, epoch by final" in rows[0].protocol


@pytest.fixture
def export_dir(tmp_path):
    return timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "export", OWN, results=())


def _card(folder) -> str:
    return (folder / "README.md").read_text()


def test_update_card_renders_the_table_and_model_index(export_dir):
    assert "No evaluation results recorded" in _card(export_dir)
    measured = sha256_file(export_dir / "model.safetensors")
    card = update_card(export_dir, card_results(RESULTS), measured).read_text()
    meta = yaml.safe_load(card.split("---")[1])
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "accuracy", "value": 0.75, "name": metrics[0]["name"]}
    assert meta["license"] == "cc-by-nc-nd-4.0" and meta["datasets"] == ["jannisborn/COVID-BLUES"]
    assert "| POCUS convex 3-class | pocus | accuracy (%) | 75.0 ± 6.0 |" in card
    assert "| BUSI lesion segmentation | busi_seg | dice (%) | 55.0 ± 3.0 |" in card
    block = json.loads((export_dir / "config.json").read_text())["timm_uscl"]
    assert block["results_sha256"] == measured and len(block["results"]) == 4


@pytest.mark.parametrize("measured", [None, "0" * 64])
def test_update_card_refuses_results_measured_on_other_weights(export_dir, measured):
    before = _card(export_dir), (export_dir / "config.json").read_text()
    with pytest.raises(CheckpointFormatError, match=r"sha256") as err:
        update_card(export_dir, card_results(RESULTS), measured)
    assert "\n" not in str(err.value) and str(export_dir) in str(err.value)
    assert (_card(export_dir), (export_dir / "config.json").read_text()) == before


def test_update_card_keeps_earlier_results_of_other_tasks(export_dir):
    measured = sha256_file(export_dir / "model.safetensors")
    update_card(export_dir, card_results(RESULTS), measured)
    busi = EvalResult("BUSI 3-class", "busi", "accuracy", 0.5, 0.1, "linear probe", "measured: timm-uscl evaluate")
    card = update_card(export_dir, [busi], measured).read_text()
    assert "| BUSI 3-class | busi | accuracy (%) | 50.0 ± 10.0 |" in card and "| POCUS convex 3-class |" in card


def _malform(folder, how):
    config = folder / "config.json"
    if how == "bad JSON":
        config.write_text('{"architecture": "resnet18",')
        return "config.json", "not valid JSON"
    if how == "no timm_uscl block":
        data = json.loads(config.read_text())
        del data["timm_uscl"]
        config.write_text(json.dumps(data))
        return "config.json", "timm_uscl"
    if how == "missing weights":
        (folder / "model.safetensors").unlink()
        return "model.safetensors", "missing"
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return "pytorch_model.bin", "model.safetensors"


@pytest.mark.parametrize("how", ["bad JSON", "no timm_uscl block", "missing weights", "only pytorch_model.bin"])
def test_a_malformed_export_is_refused_on_one_line_naming_the_file_and_the_fix(export_dir, how):
    file_name, needle = _malform(export_dir, how)
    for call in (lambda: check_export(export_dir), lambda: update_card(export_dir, [], "0" * 64)):
        with pytest.raises(CheckpointFormatError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and file_name in msg and needle in msg and "timm-uscl export" in msg


def test_check_export_refuses_weights_that_do_not_fit_the_named_architecture(export_dir):
    config = export_dir / "config.json"
    config.write_text(config.read_text().replace('"architecture": "resnet18"', '"architecture": "resnet50"'))
    with pytest.raises(CheckpointFormatError, match=r"model\.safetensors.*do not fit.*resnet50"):
        check_export(export_dir)


def test_an_export_whose_weights_declare_4_tib_is_refused_from_its_header(export_dir, capsys):
    """N2: install, push --dry-run, --card and evaluate read the header only, the size bounded first."""
    from safetensors.torch import load_file

    from timm_uscl.cli import main as cli
    from weightfiles import sparse_bomb

    weights = export_dir / "model.safetensors"
    sparse_bomb(weights, [1 << 20, 1 << 20], load_file(weights))
    with pytest.raises(CheckpointFormatError, match=r"model\.safetensors: .* more than resnet18 weights can hold"):
        check_export(export_dir)
    assert cli(["push", str(export_dir), "--repo-id", "someone/x", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than resnet18" in err


def _measured(export_dir):
    update_card(export_dir, card_results(RESULTS), sha256_file(export_dir / "model.safetensors"))
    return json.loads((export_dir / "config.json").read_text())


@pytest.mark.parametrize("edit", ["results for other weights", "a value edited", "a row added"])
def test_recorded_results_not_bound_to_these_weights_are_refused_by_install_push_and_card(
    export_dir, edit, tmp_path, monkeypatch, capsys
):
    """N4: a record whose results_sha256 names other weights (or whose numbers were edited) installed and pushed."""
    from timm_uscl.cli import main as cli

    config = _measured(export_dir)
    block = config["timm_uscl"]
    if edit == "results for other weights":
        block["results_sha256"] = "0" * 64
    elif edit == "a value edited":
        block["results"][0]["value"] = 0.99
    else:
        block["results"].append({**block["results"][0], "task": "busi", "value": 0.999})
    (export_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match=r"config.json: the timm_uscl block's results were not measured"):
        check_export(export_dir)
    monkeypatch.setenv("TIMM_USCL_WEIGHTS", str(tmp_path / "store"))
    assert cli(["install", str(export_dir)]) == 1
    assert cli(["push", str(export_dir), "--repo-id", "someone/x", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "were not measured on these weights" in err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_install_writes_the_card_its_record_renders_not_the_folders(export_dir, tmp_path, monkeypatch):
    from timm_uscl.store import add

    _measured(export_dir)
    rendered = _card(export_dir)
    (export_dir / "README.md").write_text(rendered.replace("75.0 ± 6.0", "99.9 ± 0.1"))
    monkeypatch.setenv("TIMM_USCL_WEIGHTS", str(tmp_path / "store"))
    installed = add(export_dir)
    assert (installed / "README.md").read_text() == rendered


def test_check_export_returns_the_parsed_config(export_dir):
    config = check_export(export_dir)
    assert config["architecture"] == "resnet18" and config["timm_uscl"]["name"] == OWN
    assert config["timm_uscl"]["sha256"] == sha256_file(export_dir / "model.safetensors")


def test_arbitrary_weights_exported_under_a_tag_get_no_results(tmp_path):
    """The CPU-budget rows have results, but measured on weights whose sha256 is unknown: never these."""
    assert WEIGHTS[OWN].results and WEIGHTS[OWN].results_sha256 is None
    folder = timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "export", OWN)
    card = _card(folder)
    assert "model-index" not in card.split("---")[1] and "57.2" not in card
    assert "No evaluation results recorded" in card
    assert json.loads((folder / "config.json").read_text())["timm_uscl"]["results"] == []


def test_authors_reported_figures_never_enter_an_export_card(tmp_path):
    reported = WEIGHTS["resnet18_uscl.metauscl_us4_64"].results[0]
    assert not reported.source.startswith("measured")
    folder = timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "export", "resnet18_uscl.metauscl_us4_64")
    assert "90.9" not in _card(folder) and "model-index" not in _card(folder).split("---")[1]


def test_export_refuses_results_measured_on_other_weights(tmp_path):
    busi = EvalResult("BUSI 3-class", "busi", "accuracy", 0.5, 0.1, "linear probe", "measured: timm-uscl evaluate")
    with pytest.raises(CheckpointFormatError, match=r"update_card"):
        timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "export", OWN, results=[busi])
    assert not (tmp_path / "export").exists()


def test_update_card_renders_from_the_export_record_not_the_weights_table(tmp_path, monkeypatch):
    entry = replace(
        WEIGHTS[OWN],
        description="resnet18 pretrained by this run on 4 fixture videos",
        pretrain_data="tests/fixtures (4 videos)",
        recipe="Meta-USCL smoke run",
        run=(("data", "tests/fixtures"), ("image size", "32 px"), ("epochs", "2")),
    )
    folder = timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "export", entry, results=())
    for card in (_card(folder), None):
        if card is None:
            monkeypatch.setitem(WEIGHTS, OWN, replace(WEIGHTS[OWN], description="OTHER WEIGHTS", recipe="OTHER"))
            card = update_card(folder, [], sha256_file(folder / "model.safetensors")).read_text()
        assert "resnet18 pretrained by this run on 4 fixture videos" in card and "OTHER" not in card
        assert "## Training run" in card and "| image size | 32 px |" in card and "| epochs | 2 |" in card
        assert "tests/fixtures (4 videos)" in card and "Meta-USCL smoke run" in card
