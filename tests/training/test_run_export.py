"""A trainer export's card describes its own run and claims no results it did not earn (issue 9.2, M7)."""

from __future__ import annotations

import json
from pathlib import Path

from timm_uscl.training.config import load_config
from timm_uscl.training.engine import pretrain

SMOKE = {  # the README smoke run
    "image_size": 32,
    "batch_size": 3,
    "num_workers": 0,
    "meta_batch_size": 2,
    "meta_fraction": 0.3,
    "cache_dir": None,
    "epochs": 1,
}


def test_the_smoke_run_card_names_its_data_size_and_steps_and_holds_no_results(fixtures_dir: Path, tmp_path: Path):
    source = fixtures_dir / "pocus_videos"
    config = load_config("meta_uscl", overrides={**SMOKE, "source": str(source), "out_dir": str(tmp_path / "run")})
    result = pretrain(config, progress=False)
    assert result.export_dir is not None
    card = (result.export_dir / "README.md").read_text()
    assert result.steps == 2
    assert str(source) in card and "32px" in card and "2 steps" in card
    assert "COVID-BLUES at 64px" not in card  # the weights-table row's description is not this run's
    for measured in ("57.2", "43.9", "model-index", "| accuracy"):  # the row's CPU-budget results
        assert measured not in card, measured
    facts = json.loads((result.export_dir / "config.json").read_text())["timm_uscl"]
    run = dict(facts["run"]) if isinstance(facts["run"], list) else facts["run"]
    assert run["image size"] == "32 px" and run["steps"] == str(result.steps) and run["data"] == str(source)
    assert "commit" in run and run["initialisation"] == config.init
    assert run["precision"] in ("fp32", "bf16")  # resolved: what the steps computed in, never "auto"
    assert run["data path"] == "frame store"  # store=auto on a CPU, the fixtures fit


def test_a_full_disk_at_the_export_is_a_one_line_error_that_keeps_the_checkpoint_usable(small_disk, tmp_path):
    import pytest

    from timm_uscl.training.errors import RunFolderError
    from timm_uscl.training.model import ContrastiveModel
    from timm_uscl.training.run_export import export_run

    disk = small_disk("2m")  # a resnet18 backbone is ~45 MB
    config = load_config("meta_uscl", overrides={**SMOKE, "source": "videos", "out_dir": str(disk)})
    with pytest.raises(RunFolderError, match="export could not be written .*--resume to export again") as info:
        export_run(config, ContrastiveModel("resnet18_uscl"), None, disk, steps=2, commit=None)
    assert "\n" not in str(info.value)
    assert not any(p.name != "lost+found" for p in disk.iterdir())  # no half-written export left behind


def test_a_run_stopped_by_max_steps_reports_the_epochs_it_completed_not_the_planned_ones(clip_folder, tmp_path):
    overrides = {**SMOKE, "meta_fraction": 0.2, "epochs": 300, "max_steps": 1, "source": str(clip_folder)}
    result = pretrain(
        load_config("meta_uscl", overrides={**overrides, "out_dir": str(tmp_path / "run")}), progress=False
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (result.epochs, summary["epochs"], summary["epochs_planned"], summary["steps"]) == (0, 0, 300, 1)
    assert result.export_dir is not None
    card = (result.export_dir / "README.md").read_text()
    assert "0 epochs of 300 planned (stopped by max_steps), 1 steps" in card and "| 300 |" not in card
